"""A real JupyterLab with the ScriptHut extension, and Chromium driven by Playwright.

Chromium is Debian's (`tests/browser/install.sh` installs it); Playwright's own browser
downloads are not used. Without chromium, playwright or jupyterlab the tests skip, except
under CI=true, where they fail. Screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-extensions",
]
TOKEN = "scripthut-browser-test"
SCRIPTHUT_CONFIG = """\
backends:
  - name: local
    type: local
    max_concurrent: 4
    cpus: 4
settings:
  poll_interval: 2
  filter_user: tester
"""


def missing(what: str) -> None:
    """Skip, or fail under CI=true: a CI job must not pass by skipping its browser tests."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI=true: run tests/browser/install.sh)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is not installed")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing("the playwright package is not installed")
    return CHROMIUM


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Lab:
    url: str  # base URL, ending in "/"
    token: str
    root: Path
    data_dir: Path
    log: Path

    def get(self, path: str, timeout: float = 5.0) -> Any:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def log_tail(self, lines: int = 60) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def wait_until_up(lab: Lab, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited ({process.returncode}):\n{lab.log_tail()}")
        with contextlib.suppress(Exception):
            if lab.get("scripthut/api/health", timeout=2).get("status") == "ok":
                return
        time.sleep(0.25)
    raise RuntimeError(f"jupyter lab did not answer within {timeout:.0f} s:\n{lab.log_tail()}")


def start_jupyter(tmp_path: Path, module: str, expose: str) -> Iterator[Lab]:
    """`python -m <module>` (jupyterlab or notebook) on a free loopback port, ScriptHut on."""
    root = tmp_path / "root"
    root.mkdir()
    home = tmp_path / "jupyter"
    config_dir = home / "config"
    config_dir.mkdir(parents=True)
    settings = home / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    scripthut_yaml = tmp_path / "scripthut.yaml"
    scripthut_yaml.write_text(SCRIPTHUT_CONFIG)
    data_dir = tmp_path / "scripthut-data"
    (config_dir / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "ServerApp": {"jpserver_extensions": {"scripthut": True}},
                "ScriptHut": {"data_dir": str(data_dir), "config_file": str(scripthut_yaml)},
            }
        )
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SCRIPTHUT_") and k != "JUPYTERHUB_API_TOKEN"
    }
    env.update(
        JUPYTER_CONFIG_DIR=str(config_dir),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        IPYTHONDIR=str(home / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
    )
    port = free_port()
    log = tmp_path / f"{module}.log"
    command = [
        sys.executable,
        "-m",
        module,
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_root=True",
        f"--{expose}.expose_app_in_browser=True",  # window.jupyterapp: run cells by command
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    lab = Lab(f"http://127.0.0.1:{port}/", TOKEN, root, data_dir, log)
    try:
        wait_until_up(lab, process, timeout=90)
        yield lab
    finally:
        stop(process)


@pytest.fixture
def jupyter_lab(tmp_path: Path) -> Iterator[Lab]:
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        missing("jupyterlab is not installed")
    yield from start_jupyter(tmp_path, "jupyterlab", "LabApp")


@pytest.fixture
def jupyter_notebook(tmp_path: Path) -> Iterator[Lab]:
    """Notebook 7 (a dev dependency: missing, it skips, or fails under CI=true)."""
    try:
        import notebook  # noqa: F401
    except ImportError:
        missing("the notebook package (Notebook 7) is not installed")
    yield from start_jupyter(tmp_path, "notebook", "JupyterNotebookApp")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server we started (its process group: kernels included), bounded."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
