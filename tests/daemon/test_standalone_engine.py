"""The standalone engine as real processes: the CLI starts, inspects and stops it; it hands
the lease over with a real `jupyter server` and back without losing or repeating a task."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripthut.notify.outbox import Outbox
from scripthut.store import Store
from tests.server.test_process import Server, start_server, stop_server

pytestmark = pytest.mark.slow

CONFIG = """\
backends:
  - name: local
    type: local
    max_concurrent: 3
    cpus: 3
settings:
  poll_interval: 2
"""


def cli(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "scripthut.cli", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    (tmp_path / "scripthut.yaml").write_text(CONFIG)
    values = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTHUT_")}
    values["SCRIPTHUT_CONFIG"] = str(tmp_path / "scripthut.yaml")
    values["SCRIPTHUT_DATA_DIR"] = str(tmp_path / "data")
    yield values
    cli(values, "engine", "stop")  # never leave an engine behind


def workflow(tmp_path: Path, count: int, pause: float) -> tuple[Path, Path]:
    """`count` tasks that each append their id to one file, then sleep."""
    out = tmp_path / "ran.txt"
    tasks = [
        {"id": f"t{i:03d}", "command": f"echo t{i:03d} >> {out}; sleep {pause}"}
        for i in range(count)
    ]
    path = tmp_path / "work.json"
    path.write_text(json.dumps({"tasks": tasks}))
    return path, out


def wait_for(what: str, check: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def run_state(data_dir: Path, run_id: str) -> str:
    store = Store.in_data_dir(data_dir)
    try:
        return store.get_run(run_id).state.value
    finally:
        store.close()


def lease(data_dir: Path) -> dict[str, Any] | None:
    store = Store.in_data_dir(data_dir)
    try:
        return store.lease_holder()
    finally:
        store.close()


def test_engine_start_status_stop_and_a_detached_run(tmp_path: Path, env: dict[str, str]) -> None:
    data = Path(env["SCRIPTHUT_DATA_DIR"])
    assert cli(env, "engine", "status").returncode == 3
    started = cli(env, "engine", "start")
    assert started.returncode == 0, started.stderr
    status = json.loads(cli(env, "engine", "status", "--json").stdout)
    assert status["running"] and status["host"] == socket.gethostname()
    assert status["lease"]["role"] == "daemon" and status["lease"]["pid"] == status["pid"]
    for path in (data / "engine.pid", data / "engine.log"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    again = cli(env, "engine", "start", "--json")  # a second start names the running one
    assert json.loads(again.stdout)["pid"] == status["pid"]

    flow, out = workflow(tmp_path, 6, 0.1)
    detached = cli(env, "run", str(flow), "--detach", "--json")
    assert detached.returncode == 0, detached.stderr
    run_id = json.loads(detached.stdout)["run"]
    wait_for("the run to complete", lambda: run_state(data, run_id) == "completed")
    assert sorted(out.read_text().split()) == [f"t{i:03d}" for i in range(6)]
    assert "engine started" in cli(env, "engine", "logs").stdout

    stopped = cli(env, "engine", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not (data / "engine.pid").exists()
    assert lease(data) is None
    assert cli(env, "engine", "status").returncode == 3


def test_run_detach_starts_the_engine_when_none_runs(tmp_path: Path, env: dict[str, str]) -> None:
    data = Path(env["SCRIPTHUT_DATA_DIR"])
    flow, out = workflow(tmp_path, 3, 0.1)
    detached = cli(env, "run", str(flow), "--detach", "--notify", "--json")
    assert detached.returncode == 0, detached.stderr
    assert "started the standalone engine" in detached.stderr
    run_id = json.loads(detached.stdout)["run"]
    outbox = Outbox(data / "scripthut.db")
    assert outbox.opted_in([run_id]) == {run_id}  # --notify
    outbox.close()
    wait_for("the run to complete", lambda: run_state(data, run_id) == "completed")
    assert sorted(out.read_text().split()) == ["t000", "t001", "t002"]
    assert json.loads(cli(env, "engine", "status", "--json").stdout)["running"]


def test_a_lease_held_on_another_host_is_never_taken_while_it_lives(
    tmp_path: Path, env: dict[str, str]
) -> None:
    data = Path(env["SCRIPTHUT_DATA_DIR"])
    store = Store.in_data_dir(data)
    # the engine of another machine sharing this home: its pid means nothing here
    assert store.grant_lease("daemon/login01:4242:abcd", 4242, "login01", ttl=600)
    store.close()
    started = cli(env, "engine", "start", "--foreground", timeout=60)
    assert started.returncode == 1
    assert "pid 4242 on login01" in started.stderr
    assert lease(data)["host"] == "login01"  # type: ignore[index]


def server_health(server: Server) -> dict[str, Any]:
    code, health = server.request("GET", "scripthut/api/health")
    assert code == 200
    return dict(health)


def test_hand_over_between_a_server_and_the_standalone_engine(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "scripthut.yaml").write_text(CONFIG)
    server = start_server(tmp_path)
    try:
        flow, out = workflow(tmp_path, 30, 0.3)
        doc = json.loads(flow.read_text())
        code, run = server.request("POST", "scripthut/api/runs", {"workflow": doc})
        assert code == 201, run
        done = lambda n: len(out.read_text().split()) >= n if out.exists() else False  # noqa: E731
        wait_for("a few tasks", lambda: done(4))
        # server -> standalone: the server's engine hands the lease over and becomes a client
        started = cli(env, "engine", "start")
        assert started.returncode == 0, started.stderr
        health = wait_for(
            "client mode", lambda: (h := server_health(server))["mode"] == "client" and h
        )
        assert health["lease"]["role"] == "daemon"
        wait_for("more tasks", lambda: done(12))
        # standalone -> server: the engine stops, the server takes the lease back
        assert cli(env, "engine", "stop").returncode == 0
        wait_for("engine mode", lambda: server_health(server)["mode"] == "engine")
        wait_for(
            "the run to end",
            lambda: (
                server.request("GET", f"scripthut/api/runs/{run['id']}")[1]["state"] != "running"
            ),
        )
        _, final = server.request("GET", f"scripthut/api/runs/{run['id']}")
        assert final["state"] == "completed", final
    finally:
        stop_server(server)
    ran = out.read_text().split()
    assert sorted(ran) == [f"t{i:03d}" for i in range(30)]  # each task once: none lost, none twice


def test_engine_mode_daemon_outlives_the_server(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "scripthut.yaml").write_text(CONFIG)
    server = start_server(tmp_path, extra_args=("--ScriptHut.engine=daemon",), mode="client")
    data = server.data_dir
    try:
        wait_for(
            "the standalone engine",
            lambda: (lease(data) or {}).get("owner", "").startswith("daemon/"),
        )
        flow, out = workflow(tmp_path, 8, 0.4)
        code, run = server.request(
            "POST", "scripthut/api/runs", {"workflow": json.loads(flow.read_text())}
        )
        assert code == 201, run
        wait_for("a first task", lambda: out.exists())
    finally:
        server.proc.kill()  # as abrupt as it gets: the run must not notice
        server.proc.wait(timeout=30)
    wait_for("the run to complete", lambda: run_state(data, run["id"]) == "completed")
    assert sorted(out.read_text().split()) == [f"t{i:03d}" for i in range(8)]
    env["SCRIPTHUT_DATA_DIR"] = str(data)
    assert cli(env, "engine", "stop").returncode == 0
