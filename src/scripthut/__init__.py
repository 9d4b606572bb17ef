"""ScriptHut: run and watch batches of shell tasks on Slurm, PBS, AWS and this machine.

`import scripthut as hut` stays light: the public names below load their modules on
first use, and the Jupyter entry points import nothing until Jupyter calls them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from scripthut import api
    from scripthut.api import Run, Task, jobs, run, runs, sources, sync
    from scripthut.client import connect

__version__ = "0.1.0"

_LAZY = {
    "run": "scripthut.api",
    "Task": "scripthut.api",
    "Run": "scripthut.api",
    "jobs": "scripthut.api",
    "runs": "scripthut.api",
    "sources": "scripthut.api",
    "sync": "scripthut.api",
    "connect": "scripthut.client",
}


def __getattr__(name: str) -> Any:
    if name == "api":  # hut.api.default_client(), ...
        return importlib.import_module("scripthut.api")
    if name not in _LAZY:
        raise AttributeError(f"module 'scripthut' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "api"})


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    """The Jupyter server extension (imported only when a server loads it)."""
    from scripthut.server.app import ScriptHutApp

    return [{"module": "scripthut", "app": ScriptHutApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension (the side panel)."""
    return [{"src": "labextension", "dest": "scripthut"}]


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """`%load_ext scripthut`: the `%hut` and `%%hut` magics."""
    from scripthut.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    from scripthut.magics import unload_ipython_extension as unload

    unload(ipython)


__all__ = [
    "Run",
    "Task",
    "__version__",
    "api",
    "connect",
    "jobs",
    "run",
    "runs",
    "sources",
    "sync",
]
