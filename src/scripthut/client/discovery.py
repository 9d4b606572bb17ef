"""How a kernel finds the Jupyter server's ScriptHut API without a URL or token typed in.

The server extension puts `SCRIPTHUT_SERVER_URL` (its base URL, base_url included) into
its own environment at start, so every kernel it launches inherits it, and writes a
runtime file (`scripthut-server-<pid>.json`, mode 0600) in Jupyter's runtime directory
with the URL and its token. A client authenticates with, in order: a token given
explicitly, `$SCRIPTHUT_SERVER_TOKEN`, the token in the server's runtime file,
`$JUPYTERHUB_API_TOKEN` (which a JupyterHub single-user server accepts).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from scripthut.processes import pid_alive

ENV_URL = "SCRIPTHUT_SERVER_URL"
ENV_TOKEN = "SCRIPTHUT_SERVER_TOKEN"  # noqa: S105 - a variable name
ENV_HUB_TOKEN = "JUPYTERHUB_API_TOKEN"  # noqa: S105 - a variable name
RUNTIME_PREFIX = "scripthut-server-"
API_PATH = "scripthut/api/"


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """A Jupyter server with the extension: its base URL (ending in '/') and a token."""

    url: str
    token: str | None = None
    pid: int | None = None
    data_dir: str | None = None

    @property
    def api(self) -> str:
        return self.url + API_PATH


def normalize(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def runtime_dir() -> Path:
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir())


def write_runtime_file(info: ServerInfo, directory: Path | None = None) -> Path:
    """The server's file for clients; readable by its owner only (it holds the token)."""
    folder = directory or runtime_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{RUNTIME_PREFIX}{info.pid or os.getpid()}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(asdict(info), file)
    return path


def read_runtime_files(directory: Path | None = None) -> list[ServerInfo]:
    """Servers whose runtime file exists and whose process is alive, newest file first."""
    folder = directory or runtime_dir()
    try:
        files = sorted(folder.glob(f"{RUNTIME_PREFIX}*.json"), key=_mtime, reverse=True)
    except OSError:
        return []
    found = []
    for file in files:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            data = json.loads(file.read_text(encoding="utf-8"))
            info = ServerInfo(
                normalize(str(data["url"])),
                data.get("token") or None,
                int(data["pid"]) if data.get("pid") else None,
                data.get("data_dir"),
            )
            if info.pid is None or pid_alive(info.pid):
                found.append(info)
    return found


def candidates(url: str | None = None, token: str | None = None) -> list[ServerInfo]:
    """Servers to try, best first: the explicit URL, $SCRIPTHUT_SERVER_URL, runtime files."""
    files = read_runtime_files()
    out = []
    for wanted in (url, os.environ.get(ENV_URL)):
        if wanted:
            base = normalize(wanted)
            out.append(ServerInfo(base, _token_for(base, token, files)))
            break
    if url is None:
        seen = {c.url for c in out}
        out.extend(
            ServerInfo(f.url, f.token or _token_for(f.url, token, []), f.pid, f.data_dir)
            for f in files
            if f.url not in seen
        )
    return out


def _token_for(url: str, explicit: str | None, files: list[ServerInfo]) -> str | None:
    if explicit:
        return explicit
    if os.environ.get(ENV_TOKEN):
        return os.environ[ENV_TOKEN]
    for info in files:
        if info.url == url and info.token:
            return info.token
    return os.environ.get(ENV_HUB_TOKEN) or None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
