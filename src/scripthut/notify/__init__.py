"""Notifications sent by the engine when runs end or tasks fail (email, webhooks)."""

from scripthut.notify.outbox import opt_in

__all__ = ["opt_in"]
