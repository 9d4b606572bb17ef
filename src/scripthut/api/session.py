"""The one client the Python API and the magics share, created on first use."""

from __future__ import annotations

import os
import threading

from scripthut.client import Client, connect

_lock = threading.Lock()
_default: Client | None = None


def default_client() -> Client:
    """The shared client: `connect()` on first use (the server's engine, else one here).

    When `$SCRIPTHUT_DATA_DIR` names a data directory, a server that drives another one
    is not used: the engine then runs here, over the directory asked for.
    """
    global _default
    with _lock:
        if _default is None:
            _default = _connect(os.environ.get("SCRIPTHUT_DATA_DIR") or None)
        return _default


def _connect(data_dir: str | None) -> Client:
    client = connect(data_dir=data_dir)
    if data_dir is None or client.mode != "server":
        return client
    served = client.health().get("data_dir")
    if served and _same_dir(served, data_dir):
        return client
    client.close()
    return connect(mode="local", data_dir=data_dir)


def _same_dir(a: str, b: str) -> bool:
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def set_default_client(client: Client | None) -> Client | None:
    """Use `client` from now on (None: connect again on next use); returns the previous one.

    The previous client is not closed: whoever made it decides.
    """
    global _default
    with _lock:
        previous, _default = _default, client
    return previous


def resolve(client: Client | None) -> Client:
    return client if client is not None else default_client()
