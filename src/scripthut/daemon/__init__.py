"""The standalone engine: a process of its own that drives a data directory, survives the
Jupyter server and the user's logout, and hands the lease over with a server-hosted engine.

`files` names its pid and log files, `control` starts, stops and inspects it from another
process, `run` is the process itself (`scripthut engine start --foreground`).
"""

from scripthut.daemon.files import EngineFiles, role_of

__all__ = ["EngineFiles", "role_of"]
