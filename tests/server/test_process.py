"""A real `jupyter server` process with the extension, used as users and kernels use it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripthut.client.local import LocalClient
from scripthut.store import Store
from tests.server.conftest import CONFIG

pytestmark = pytest.mark.slow

JUPYTER = Path(sys.executable).with_name("jupyter")


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    base_url: str
    token: str
    env: dict[str, str]
    data_dir: Path
    root: Path
    runtime: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_url}"

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 60
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body)
            headers = {"Authorization": f"token {self.token}", "Content-Type": "application/json"}
            conn.request(method, f"{self.base_url}{path}", body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        kind = response.getheader("Content-Type") or ""
        return response.status, json.loads(raw) if "json" in kind and raw else raw.decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    tmp_path: Path,
    base_url: str = "/",
    extra_env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    mode: str = "engine",
) -> Server:
    root, data, runtime = tmp_path / "root", tmp_path / "data", tmp_path / "runtime"
    for folder in (root, data, runtime, tmp_path / "jconfig", tmp_path / "jdata"):
        folder.mkdir(exist_ok=True)
    config = tmp_path / "scripthut.yaml"
    if not config.exists():
        config.write_text(CONFIG)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SCRIPTHUT_", "JUPYTER"))},
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jconfig"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jdata"),
        "JUPYTER_PLATFORM_DIRS": "1",
        **(extra_env or {}),
    }
    port, token = free_port(), uuid.uuid4().hex
    argv = [
        str(JUPYTER),
        "server",
        "--no-browser",
        "--ServerApp.open_browser=False",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--ServerApp.base_url={base_url}",
        f"--ScriptHut.config_file={config}",
        f"--ScriptHut.data_dir={data}",
        *extra_args,
    ]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, port, base_url, token, env, data, root, runtime, log)
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            code, health = server.request("GET", "scripthut/api/health", timeout=5)
            if code == 200 and health["mode"] == mode:
                return server
        except OSError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def stop_server(server: Server) -> float:
    started = time.monotonic()
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)
    return time.monotonic() - started


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path, "/user/alice/")
    yield running
    stop_server(running)


def read_events(server: Server, run_id: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Follow `GET events` with a plain HTTP client until the run is final."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    events: list[dict[str, Any]] = []
    try:
        headers = {"Authorization": f"token {server.token}", "Last-Event-ID": "0"}
        conn.request("GET", f"{server.base_url}scripthut/api/events", headers=headers)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        deadline = time.monotonic() + timeout
        event_id = None
        while time.monotonic() < deadline:
            line = response.readline().decode().rstrip("\n")
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                assert event["id"] == event_id
                events.append(event)
                if (
                    event["kind"] == "run"
                    and event["run"] == run_id
                    and event["state"] in ("completed", "failed", "cancelled")
                ):
                    return events
        raise AssertionError(f"run {run_id} did not end in the stream: {events[-3:]}")
    finally:
        conn.close()


def test_a_run_followed_through_the_stream_and_its_log_read(server: Server) -> None:
    doc = {
        "tasks": [
            {"id": "prep", "command": "echo preparing; sleep 0.5"},
            {"id": "work.1", "command": "echo one", "deps": ["prep"]},
            {"id": "work.2", "command": "echo two", "deps": ["prep"]},
            {"id": "report", "command": "seq 1 5", "deps": ["work.*"]},
        ]
    }
    code, run = server.request("POST", "scripthut/api/runs", {"workflow": doc, "backend": "local"})
    assert code == 201, run
    events = read_events(server, run["id"])
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids))
    mine = [e for e in events if e["run"] == run["id"]]
    assert mine[-1]["state"] == "completed"
    for task in ("prep", "work.1", "work.2", "report"):
        states = [e["state"] for e in mine if e["kind"] == "task" and e["task"] == task]
        # "running" may be skipped when a task ends between two polls
        assert states in (["submitted", "running", "completed"], ["submitted", "completed"]), (
            task,
            states,
        )
    sent = {e["task"]: e["id"] for e in mine if e["kind"] == "task" and e["state"] == "submitted"}
    ended = {e["task"]: e["id"] for e in mine if e["kind"] == "task" and e["state"] == "completed"}
    assert ended["prep"] < min(sent["work.1"], sent["work.2"])
    assert max(ended["work.1"], ended["work.2"]) < sent["report"]
    code, log = server.request(
        "GET", f"scripthut/api/runs/{run['id']}/tasks/report/logs/output?tail=2"
    )
    assert code == 200
    assert log["text"] == "4\n5\n"
    assert log["final"] is True


def client_script(body: str) -> str:
    return textwrap.dedent(
        """
        import json
        from scripthut.client import connect
        client = connect()
        """
    ) + textwrap.dedent(body)


def run_python(code: str, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_connect_in_a_process_with_the_server_environment_finds_the_server(server: Server) -> None:
    env = {**server.env, "SCRIPTHUT_SERVER_URL": server.url}  # what the server gives its kernels
    flow = server.root / "flow.json"
    flow.write_text('[{"id": "hello", "command": "echo hello from the server engine"}]')
    out = run_python(
        client_script(
            """
            run = client.submit("flow.json")
            final = client.wait(run["id"], timeout=120)
            print(json.dumps({
                "mode": client.mode, "url": client.server.url, "state": final["state"],
                "log": client.logs(run["id"], "hello")["text"],
                "task": client.task(run["id"], "hello")["state"],
                "script": "echo hello from" in client.script(run["id"], "hello"),
                "env": client.env(run["id"], "hello", attempt=1)["source"],
            }))
            """
        ),
        env,
        server.root,
    )
    assert out == {
        "mode": "server",
        "url": server.url,
        "state": "completed",
        "log": "hello from the server engine\n",
        "task": "completed",
        "script": True,
        "env": "attempt",
    }


def test_connect_under_jupyterhub_uses_the_hub_token(server: Server, tmp_path: Path) -> None:
    empty = tmp_path / "kernel-runtime"
    empty.mkdir()
    env = {
        **server.env,
        "SCRIPTHUT_SERVER_URL": server.url,
        "JUPYTERHUB_API_TOKEN": server.token,  # the single-user server accepts it
        "JUPYTER_RUNTIME_DIR": str(empty),  # no runtime file to read a token from
    }
    out = run_python(
        client_script(
            """
            run = client.submit([{"id": "t", "command": "echo hub"}])
            stream = client.events(after=0, run=run["id"], timeout=60)
            kinds = []
            for event in stream:
                kinds.append([event["kind"], event.get("state")])
                if event["kind"] == "run" and event["state"] == "completed":
                    stream.close()
            print(json.dumps({"mode": client.mode, "kinds": kinds, "jobs": client.jobs()}))
            """
        ),
        env,
        server.root,
    )
    assert out["mode"] == "server"
    assert out["kinds"][0] == ["run_created", "pending"]
    assert out["kinds"][-1] == ["run", "completed"]
    assert out["jobs"] == []
    refused = {**env, "JUPYTERHUB_API_TOKEN": "wrong", "SCRIPTHUT_DATA_DIR": str(tmp_path / "own")}
    # its global file is the server's (else that file, above the root, is a project layer)
    refused["SCRIPTHUT_CONFIG"] = str(tmp_path / "scripthut.yaml")
    out = run_python(
        client_script('print(json.dumps({"mode": client.mode}))'), refused, server.root
    )
    assert out["mode"] == "engine"  # the server refuses the token: the kernel hosts its own engine


def test_a_kernel_started_by_the_server_finds_it_by_itself(server: Server) -> None:
    websocket = pytest.importorskip("websocket")
    code, kernel = server.request("POST", "api/kernels", {"name": "python3"})
    assert code == 201, kernel
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}{server.base_url}api/kernels/{kernel['id']}/channels",
        header=[f"Authorization: token {server.token}"],
        timeout=120,
    )
    try:
        code_text = (
            "from scripthut.client import connect\n"
            "c = connect()\n"
            "print('RESULT', c.mode, c.server.url, c.health()['mode'])\n"
        )
        msg_id = uuid.uuid4().hex
        ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "session": uuid.uuid4().hex,
                        "username": "test",
                        "version": "5.3",
                        "date": "",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "channel": "shell",
                    "buffers": [],
                    "content": {
                        "code": code_text,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                }
            )
        )
        output, deadline = "", time.monotonic() + 120
        while time.monotonic() < deadline:
            message = json.loads(ws.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["header"]["msg_type"]
            if kind == "stream":
                output += message["content"]["text"]
            elif kind == "error":
                raise AssertionError("\n".join(message["content"]["traceback"]))
            elif kind == "execute_reply":
                break
        assert f"RESULT server {server.url} engine" in output, output
    finally:
        ws.close()
        server.request("DELETE", f"api/kernels/{kernel['id']}")


def test_the_server_stops_in_bounded_time_and_cleans_up(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    code, run = server.request(
        "POST", "scripthut/api/runs", {"workflow": [{"id": "long", "command": "sleep 300"}]}
    )
    assert code == 201
    assert list(server.runtime.glob("scripthut-server-*.json"))
    took = stop_server(server)
    assert server.proc.returncode is not None
    assert took < 20, took
    assert not list(server.runtime.glob("scripthut-server-*.json"))
    store = Store.in_data_dir(server.data_dir)
    try:
        assert store.lease_holder() is None  # released: the next engine may start at once
        assert store.get_run(run["id"]).state.value in ("pending", "running")
    finally:
        store.close()
    # The job outlived the server; an in-process engine adopts it, and cancels it.
    client = LocalClient(
        config_file=str(tmp_path / "scripthut.yaml"), data_dir=str(server.data_dir)
    )
    try:
        assert client.mode == "engine"
        client.cancel(run["id"])
        assert client.wait(run["id"], timeout=60)["state"] == "cancelled"
    finally:
        client.close()
