"""What a task inherits from the process that starts it: everything but the server's credentials.

A task runs as its user and gets that user's environment (modules, PATH, conda, licence
servers...), as a Slurm job does by default. What it must not get are the credentials of
the Jupyter server that launched it: with them any task, or any program a task runs,
could act on the server or the hub as the user (open kernels, read every file the server
can, start and stop servers). The rule is a deny-list, applied by every backend and
transport (the local backend's processes, the local shell that runs sbatch and squeue):

- `JUPYTERHUB_*`: every variable a JupyterHub single-user server gets (JUPYTERHUB_API_TOKEN,
  JUPYTERHUB_CLIENT_ID, JUPYTERHUB_OAUTH_*, JUPYTERHUB_API_URL, JUPYTERHUB_USER...).
- `JPY_*`: JPY_API_TOKEN (the hub's older name of the API token), JPY_COOKIE_SECRET, and
  what jupyter_server and jupyter_client give kernels (JPY_SESSION_NAME, JPY_PARENT_PID).
- `JUPYTER_TOKEN`, and `JUPYTER_SERVER_*`, `JUPYTER_GATEWAY_*` (a gateway's auth token).
- `SCRIPTHUT_SERVER_*`: the URL and token kernels use to find this server.

Other `JUPYTER_*` variables (JUPYTER_CONFIG_DIR, JUPYTER_PATH...) are configuration, not
credentials, and are inherited. docs/env-rules.md explains the choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

WITHHELD_NAMES = frozenset({"JUPYTER_TOKEN"})
WITHHELD_PREFIXES = (
    "JUPYTERHUB_",
    "JPY_",
    "JUPYTER_SERVER_",
    "JUPYTER_GATEWAY_",
    "SCRIPTHUT_SERVER_",
)

K = TypeVar("K", str, bytes)


def is_withheld(name: str | bytes) -> bool:
    """Whether a variable of the server's environment is kept from tasks."""
    text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
    return text in WITHHELD_NAMES or text.startswith(WITHHELD_PREFIXES)


def inherited(environ: Mapping[K, K]) -> dict[K, K]:
    """`environ` without the withheld variables (str or bytes keys, as os.environb)."""
    return {name: value for name, value in environ.items() if not is_withheld(name)}


def withheld(environ: Mapping[str, str]) -> list[str]:
    """The names `inherited` leaves out, sorted."""
    return sorted(name for name in environ if is_withheld(name))
