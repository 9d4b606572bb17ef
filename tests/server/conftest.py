"""Fixtures of the server extension tests: a config with a local backend, the server, the API.

pytest-jupyter's server plugin (`pytest_jupyter.jupyter_server`: `jp_fetch`, `jp_serverapp`,
...) is imported here rather than named in `pytest_plugins`: a plugin named in a test module
is registered for the whole session, and its autouse fixtures (an event loop and a
`ServerApp` cleanup per test) would then run for every other test of the suite. Imported
into this conftest, its fixtures and hooks apply to `tests/server` only.

`jp_serverapp` does not run the extensions' async start; `scripthut_app` does, so the
engine really runs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403 - fixtures and hooks, this directory only

from scripthut.server.app import ScriptHutApp

Fetch = Callable[..., Awaitable[Any]]
FINAL = {"completed", "failed", "cancelled"}

CONFIG = """\
backends:
  - name: local
    type: local
    max_concurrent: 4
    cpus: 4
  - name: hpc
    type: pbs
    transport: local
  - name: remote
    type: slurm
    ssh:
      host: 127.0.0.1
      port: 1
      user: nobody
      connect_timeout: 5
settings:
  poll_interval: 2
workflows:
  - name: demo
    backend: local
    description: two tasks printed by a command
    command: |-
      printf '%s' '[{"id": "one", "command": "echo one"},
        {"id": "two", "command": "echo two", "deps": ["one"]}]'
  - name: broken
    backend: local
    command: |-
      echo 'not json'; exit 3
  - name: on-remote
    backend: remote
    command: echo '[]'
  - name: on-hpc
    backend: hpc
    command: |-
      printf '%s' '[{"id": "x", "command": "hostname"}]'
"""


@pytest.fixture
def sh_data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "scripthut-data"
    path.mkdir()
    return path


@pytest.fixture
def sh_config_text() -> str:
    return CONFIG


@pytest.fixture
def sh_config_file(tmp_path: Path, sh_config_text: str) -> Path:
    path = tmp_path / "scripthut.yaml"
    path.write_text(sh_config_text)
    return path


@pytest.fixture
def jp_server_config(sh_data_dir: Path, sh_config_file: Path) -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"scripthut": True, "jupyter_server_terminals": False},
            "allow_unauthenticated_access": False,
        },
        "ScriptHut": {"data_dir": str(sh_data_dir), "config_file": str(sh_config_file)},
    }


@pytest.fixture(params=["/", "/user/alice/"], ids=["root", "hub"])
def jp_base_url(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def extension_app(serverapp: Any) -> ScriptHutApp:
    apps = serverapp.extension_manager.extension_apps["scripthut"]
    (app,) = apps
    assert isinstance(app, ScriptHutApp)
    return app


@pytest.fixture
def scripthut_app(
    jp_serverapp: Any, jp_asyncio_loop: asyncio.AbstractEventLoop
) -> Iterator[ScriptHutApp]:
    """The extension, started as the server would start it (engine included)."""
    app = extension_app(jp_serverapp)
    jp_asyncio_loop.run_until_complete(app._start_jupyter_server_extension(jp_serverapp))
    yield app
    jp_asyncio_loop.run_until_complete(app.stop_extension())


class Api:
    """JSON calls to `scripthut/api/...` through jp_fetch (token auth), errors returned."""

    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch

    async def call(
        self, method: str, path: str, body: Any = None, **kwargs: Any
    ) -> tuple[int, Any]:
        if body is not None:
            kwargs["body"] = json.dumps(body)
        elif method in ("POST", "PUT"):
            kwargs["body"] = b""
        response = await self.fetch(
            "scripthut", "api", *path.split("/"), method=method, raise_error=False, **kwargs
        )
        raw = response.body.decode() if response.body else ""
        kind = response.headers.get("Content-Type", "")
        return response.code, (json.loads(raw) if raw and "json" in kind else raw)

    async def get(self, path: str, **kwargs: Any) -> Any:
        code, data = await self.call("GET", path, **kwargs)
        assert code == 200, (path, code, data)
        return data

    async def post(self, path: str, body: Any = None, expect: int = 200, **kwargs: Any) -> Any:
        code, data = await self.call("POST", path, body, **kwargs)
        assert code == expect, (path, code, data)
        return data

    async def wait_run(self, run_id: str, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = await self.get(f"runs/{run_id}", params={"tasks": "0"})
            if run["state"] in FINAL:
                return dict(run)
            assert time.monotonic() < deadline, f"run {run_id} still {run['state']}"
            await asyncio.sleep(0.1)

    async def wait_task(
        self, run_id: str, task_id: str, states: set[str], timeout: float = 60.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            task = await self.get(f"runs/{run_id}/tasks/{task_id}")
            if task["state"] in states:
                return dict(task)
            assert time.monotonic() < deadline, f"task {task_id} still {task['state']}"
            await asyncio.sleep(0.1)


@pytest.fixture
def api(scripthut_app: ScriptHutApp, jp_fetch: Fetch) -> Api:
    return Api(jp_fetch)
