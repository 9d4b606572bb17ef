"""Transports: how backends run scheduler commands and read files (SSH or the local shell)."""

from scripthut.transport.quiet import quiet_asyncssh_warnings

quiet_asyncssh_warnings()  # before ssh.py imports asyncssh

# ruff: noqa: E402

from scripthut.transport.base import (
    CommandResult,
    Transport,
    TransportError,
    TransportStats,
    quote_argv,
)
from scripthut.transport.local import LocalTransport
from scripthut.transport.ssh import SSHTransport

__all__ = [
    "CommandResult",
    "LocalTransport",
    "SSHTransport",
    "Transport",
    "TransportError",
    "TransportStats",
    "quote_argv",
]
