"""placeholder"""

from __future__ import annotations

from scripthut.store import Store


def opt_in(store: Store, run_id: str) -> None:
    """Mark a run as one whose events are notified."""
    raise NotImplementedError
