"""A real `jupyter server` started with a hub's credentials in its environment: tasks never
see them, the env view lists them as withheld, and a log replaced by a link is not served."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.test_process import Server, start_server, stop_server

pytestmark = pytest.mark.slow

CREDENTIALS = {
    "JUPYTER_TOKEN": "jt-0123456789abcdef",
    "JUPYTERHUB_API_TOKEN": "hub-api-0123456789abcdef",
    "JPY_API_TOKEN": "jpy-api-0123456789abcdef",
    "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-alice-client",
    "JUPYTERHUB_OAUTH_CALLBACK_URL": "/user/alice/oauth_callback_0123",
    "SCRIPTHUT_SERVER_URL": "http://127.0.0.1:1/user/alice/stale-url-0123",
    "SCRIPTHUT_SERVER_TOKEN": "hut-token-0123456789abcdef",
}
KEPT = {"HUT_PLAIN_SETTING": "plain-value-kept", "MY_API_KEY": "user-api-key-kept"}


@pytest.fixture(scope="module")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(
        tmp_path_factory.mktemp("hub"), "/user/alice/", extra_env={**CREDENTIALS, **KEPT}
    )
    yield running
    stop_server(running)


def run_to_end(server: Server, doc: Any, timeout: float = 60) -> str:
    code, run = server.request("POST", "scripthut/api/runs", {"workflow": doc, "backend": "local"})
    assert code == 201, run
    deadline = time.monotonic() + timeout
    while True:
        code, body = server.request("GET", f"scripthut/api/runs/{run['id']}")
        assert code == 200, body
        if body["state"] in ("completed", "failed", "cancelled"):
            assert body["state"] == "completed", body
            return str(run["id"])
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def test_a_local_task_never_sees_the_servers_credentials(hub_server: Server) -> None:
    run_id = run_to_end(hub_server, [{"id": "env", "command": "env"}])
    code, log = hub_server.request("GET", f"scripthut/api/runs/{run_id}/tasks/env/logs/output")
    assert code == 200, log
    printed = dict(line.split("=", 1) for line in log["text"].splitlines() if "=" in line)
    for name, value in CREDENTIALS.items():
        assert name not in printed
        assert value not in log["text"]
    assert {name: printed.get(name) for name in KEPT} == KEPT
    assert printed["SCRIPTHUT_RUN_ID"] == run_id

    code, env = hub_server.request("GET", f"scripthut/api/runs/{run_id}/tasks/env/env")
    assert code == 200, env
    inherited = env["inherited"]
    assert inherited["layer"] == "inherited" and inherited["known"] is True
    assert set(CREDENTIALS) <= set(inherited["withheld"])
    assert not set(CREDENTIALS) & set(inherited["values"])
    assert inherited["values"]["HUT_PLAIN_SETTING"]["value"] == "plain-value-kept"
    assert inherited["values"]["MY_API_KEY"] == {"value": "***", "secret": True}
    for value in CREDENTIALS.values():
        assert value not in str(env)


def test_the_log_endpoint_refuses_a_log_that_is_a_symbolic_link(
    hub_server: Server, tmp_path: Path
) -> None:
    secret, work = tmp_path / "secret.txt", tmp_path / "work"
    secret.write_text("the secret\n")
    work.mkdir()
    task = {
        "id": "plant",
        "command": f"echo mine; ln -s {secret} out.new && mv -f out.new out.txt",
        "working_dir": str(work),
        "output_file": "out.txt",
    }
    run_id = run_to_end(hub_server, [task])
    assert os.path.islink(work / "out.txt")
    for query in ("", "?tail=5", "?offset=-3"):
        code, body = hub_server.request(
            "GET", f"scripthut/api/runs/{run_id}/tasks/plant/logs/output{query}"
        )
        assert code == 403, body
        assert body["reason"] == "unsafe_path"
        assert body["message"] == f"{work / 'out.txt'}: is a symbolic link; refusing to read it"
        assert "the secret" not in str(body)
