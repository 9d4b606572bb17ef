"""`connect()`: ScriptHut from a kernel, through the Jupyter server or in this process.

In a kernel launched by a Jupyter server with the extension, `connect()` finds the
server's API by itself (see `discovery`). Elsewhere (plain IPython, a headless notebook
run) it hosts the engine here, over the same data directory.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

from scripthut.client.base import Client, EventStream, WorkflowInput

log = logging.getLogger("scripthut.client")

ENV_CONNECT = "SCRIPTHUT_CONNECT"  # "auto" (default), "server" or "local"
Mode = Literal["auto", "server", "local"]


def connect(
    url: str | None = None,
    token: str | None = None,
    *,
    mode: Mode | None = None,
    config_file: str | None = None,
    data_dir: str | None = None,
    timeout: float = 3.0,
) -> Client:
    """A client of the Jupyter server's engine when one answers, else an in-process one.

    `mode="server"` fails when no server answers; `mode="local"` never looks for one
    (the default comes from $SCRIPTHUT_CONNECT, else "auto").
    """
    chosen = mode or os.environ.get(ENV_CONNECT) or "auto"
    if chosen not in ("auto", "server", "local"):
        raise ValueError(f"mode must be 'auto', 'server' or 'local', not {chosen!r}")
    if chosen != "local":
        from scripthut.client.discovery import candidates
        from scripthut.client.http import HTTPClient

        for info in candidates(url, token):
            if data_dir and info.data_dir and not _same_dir(data_dir, info.data_dir):
                continue
            client = HTTPClient(info)
            if client.reachable(timeout):
                return client
            log.info("no ScriptHut API answers at %s", info.api)
        if chosen == "server":
            raise ConnectionError("no Jupyter server with the ScriptHut extension answers")
    from scripthut.client.local import LocalClient

    return LocalClient(config_file=config_file, data_dir=data_dir)


def _same_dir(a: str, b: str) -> bool:
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


__all__ = ["Client", "EventStream", "WorkflowInput", "connect"]
