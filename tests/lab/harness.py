"""Harness of the lab tests: a real JupyterLab with the ScriptHut panel, in Chromium.

Each server is a `jupyter lab` subprocess on 127.0.0.1 with a token, under a JupyterHub-like
base_url, a temporary root directory, isolated Jupyter config/data/runtime/settings
directories, and the ScriptHut extension on a temporary data directory with a config of
its own. The prebuilt labextension is the one built into `src/scripthut/labextension`
(rebuilt first when missing or older than `js/`), made visible to the server through
`JUPYTER_PATH`. Every wait is bounded. Screenshots go to `test-artifacts/lab/`.

Without Chromium or playwright the tests skip; under `CI=true` they fail instead.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "js"
LAB_JS = JS / "lab"
LABEXTENSION = ROOT / "src" / "scripthut" / "labextension"
ARTIFACTS = ROOT / "test-artifacts" / "lab"
BIN = Path(sys.executable).parent
CHROMIUM_CANDIDATES = (
    "/usr/bin/chromium",
    "/usr/lib/chromium/chromium",
    "/usr/bin/chromium-browser",
)
BASE_URL = "/user/tester/"

LOCAL_CONFIG = """\
backends:
  - name: local
    type: local
    max_concurrent: 4
    cpus: 4
settings:
  poll_interval: 2
"""


def missing(reason: str) -> NoReturn:
    """Skip, or fail under CI=true: a CI run must not pass by skipping its browser tests."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: browser tests must run)")
    pytest.skip(reason)


def chromium_path() -> str | None:
    wanted = os.environ.get("SCRIPTHUT_CHROMIUM")
    for candidate in (wanted, *CHROMIUM_CANDIDATES, shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


# -- the labextension ---------------------------------------------------------------------


def _newest_source() -> float:
    sources = [LAB_JS / "package.json", LAB_JS / "build.mjs", JS / "widgets" / "styles.css"]
    for folder in (
        LAB_JS / "src",
        LAB_JS / "style",
        LAB_JS / "schema",
        JS / "widgets" / "components",
    ):
        sources.extend(p for p in folder.rglob("*") if p.is_file())
    return max(p.stat().st_mtime for p in sources if p.exists())


def ensure_labextension() -> Path:
    """The built labextension; built here first when missing or older than its sources."""
    built = LABEXTENSION / "package.json"
    if built.exists() and built.stat().st_mtime >= _newest_source():
        return LABEXTENSION
    npm = shutil.which("npm")
    if npm is None:
        if built.exists():
            return LABEXTENSION  # stale, but nothing can rebuild it here
        missing("the labextension is not built and npm is not installed")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if not (LAB_JS / "node_modules" / "@jupyterlab" / "builder").exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=LAB_JS, env=env, check=True, timeout=600
        )
    subprocess.run([npm, "run", "build"], cwd=LAB_JS, env=env, check=True, timeout=600)
    assert built.exists(), "npm run build did not write src/scripthut/labextension"
    return LABEXTENSION


# -- a JupyterLab server ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LabServer:
    """A running `jupyter lab`: its URL (base_url included), token, root and data dirs."""

    url: str
    token: str
    root: Path
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
        """One ScriptHut API call with the token; (status, JSON body or None)."""
        data = None if body is None else json.dumps(body).encode()
        if data is None and method in ("POST", "DELETE"):
            data = b""
        request = urllib.request.Request(
            f"{self.url}scripthut/api/{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                text = reply.read()
                return reply.status, json.loads(text) if text else None
        except urllib.error.HTTPError as error:
            text = error.read()
            try:
                return error.code, json.loads(text)
            except ValueError:
                return error.code, text.decode(errors="replace")

    def wait_run(self, run_id: str, states: set[str], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            status, last = self.api("GET", f"runs/{run_id}")
            if status == 200 and last["state"] in states:
                return dict(last)
            time.sleep(0.25)
        raise AssertionError(f"run {run_id} not in {states} after {timeout}s: {last}")

    def lab_url(self) -> str:
        return f"{self.url}lab?reset&token={self.token}"

    def tail_log(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_lab(
    base: Path,
    labext: Path,
    *,
    config_text: str | None = LOCAL_CONFIG,
    extension_enabled: bool = True,
    lab_settings: dict[str, dict[str, Any]] | None = None,
    timeout: float = 90,
) -> LabServer:
    """Start `jupyter lab` in `base` (its own dirs under it) and wait until it answers."""
    root = base / "root"
    data_dir = base / "scripthut-data"
    for folder in (
        "root",
        "scripthut-data",
        "config",
        "data",
        "runtime",
        "settings",
        "workspaces",
        "jpath/labextensions",
    ):
        (base / folder).mkdir(parents=True, exist_ok=True)
    (base / "jpath" / "labextensions" / "scripthut").symlink_to(labext, target_is_directory=True)
    server_config: dict[str, Any] = {
        "ServerApp": {"jpserver_extensions": {"scripthut": extension_enabled}},
    }
    (base / "config" / "jupyter_server_config.json").write_text(json.dumps(server_config))
    settings = {
        "@jupyterlab/apputils-extension:notification": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
        **(lab_settings or {}),
    }
    for plugin, values in settings.items():
        package, name = plugin.split(":")
        target = base / "settings" / package / f"{name}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    config_file = base / "scripthut.yaml"
    if config_text is not None:
        config_file.write_text(config_text)

    token = secrets.token_hex(16)
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTER_DATA_DIR": str(base / "data"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "JUPYTER_PATH": str(base / "jpath"),
        "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
        "SCRIPTHUT_DATA_DIR": str(data_dir),
    }
    env.pop("SCRIPTHUT_CONFIG", None)
    env.pop("SCRIPTHUT_SERVER_URL", None)
    argv = [
        str(BIN / "jupyter"),
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.base_url={BASE_URL}",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
        "--ServerApp.allow_unauthenticated_access=False",
        f"--ScriptHut.data_dir={data_dir}",
    ]
    if config_text is not None:
        argv.append(f"--ScriptHut.config_file={config_file}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")
    log = base / "jupyterlab.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = LabServer(
        f"http://127.0.0.1:{port}{BASE_URL}", token, root, data_dir, process, log, env
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited ({process.returncode}):\n{server.tail_log()}")
        try:
            request = urllib.request.Request(
                f"{server.url}api/status", headers={"Authorization": f"token {token}"}
            )
            with urllib.request.urlopen(request, timeout=2):
                break
        except OSError:
            time.sleep(0.2)
    else:
        stop_lab(server)
        raise RuntimeError(f"jupyter lab did not answer in {timeout}s:\n{server.tail_log()}")
    if extension_enabled and config_text is not None:
        wait_health(server, {"ok", "config_error", "error"}, timeout=30)
    return server


def wait_health(server: LabServer, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        code, last = server.api("GET", "health")
        if code == 200 and last.get("status") in statuses:
            return dict(last)
        time.sleep(0.2)
    raise AssertionError(f"health not in {statuses} after {timeout}s: {last}")


def stop_lab(server: LabServer) -> None:
    """Stop the server (SIGTERM to its process group, SIGKILL after 15 s)."""
    process = server.process
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


class Lab:
    """One browser page on a LabServer, with helpers for the ScriptHut panel."""

    def __init__(self, page: Any, server: LabServer, name: str) -> None:
        self.page = page
        self.server = server
        self.name = name
        self.shots: list[Path] = []
        self.api_requests: list[str] = []
        self.console: list[str] = []
        page.on("request", self._request)
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))

    def _request(self, request: Any) -> None:
        if "/scripthut/api/" in request.url:
            self.api_requests.append(request.url.split("/scripthut/api/", 1)[1])

    def open(self) -> None:
        self.page.goto(self.server.lab_url())
        self.page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
        self.page.wait_for_selector(PANEL_TAB, state="attached", timeout=30_000)

    def open_panel(self) -> Any:
        panel = self.page.locator("#scripthut-panel")
        if not panel.is_visible():
            self.page.click(PANEL_TAB)
        panel.wait_for(state="visible", timeout=10_000)
        return panel

    def screenshot(self, label: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{label}.png"
        self.page.screenshot(path=str(path))
        self.shots.append(path)
        return path

    def run_row(self, run_id: str) -> Any:
        return self.page.locator(f'#scripthut-panel .jp-ScriptHut-run[data-run-id="{run_id}"]')


PANEL_TAB = '.jp-SideBar .lm-TabBar-tab[data-id="scripthut-panel"]'


def write_workflow(server: LabServer, relative: str, tasks: list[dict[str, Any]]) -> Path:
    path = server.root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"tasks": tasks}, indent=1))
    return path


def newest_run(server: LabServer, name: str, timeout: float = 20) -> dict[str, Any]:
    """The newest run with this name (runs are listed newest first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, page = server.api("GET", "runs?limit=20")
        if status == 200:
            for run in page["runs"]:
                if run["name"] == name:
                    return dict(run)
        time.sleep(0.2)
    raise AssertionError(f"no run named {name!r} after {timeout}s")
