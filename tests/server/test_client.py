"""`connect()` without a server: the in-process client over the same data directory."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from scripthut.client import connect
from scripthut.client.discovery import (
    ServerInfo,
    candidates,
    read_runtime_files,
    write_runtime_file,
)
from scripthut.client.local import LocalClient
from scripthut.errors import InvalidInput, NotFound
from scripthut.store import Store
from tests.server.conftest import CONFIG


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No server to find: an empty runtime dir and no server variables."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    for name in (
        "SCRIPTHUT_SERVER_URL",
        "SCRIPTHUT_SERVER_TOKEN",
        "JUPYTERHUB_API_TOKEN",
        "SCRIPTHUT_CONNECT",
    ):
        monkeypatch.delenv(name, raising=False)
    return runtime


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "scripthut.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def client(isolated: Path, config_file: Path, tmp_path: Path) -> Any:
    hosted = connect(config_file=str(config_file), data_dir=str(tmp_path / "data"))
    yield hosted
    hosted.close()


def test_without_a_server_the_engine_runs_in_process(client: Any, tmp_path: Path) -> None:
    assert isinstance(client, LocalClient)
    assert client.mode == "engine"
    assert client.health()["data_dir"] == str(tmp_path / "data")
    seen: list[dict[str, Any]] = []
    stop = client.on_event(seen.append)
    run = client.submit(
        [{"id": "a", "command": "echo A"}, {"id": "b", "command": "echo B >&2", "deps": ["a"]}]
    )
    final = client.wait(run["id"], timeout=60)
    assert final["state"] == "completed"
    assert [t["state"] for t in client.tasks(run["id"])] == ["completed", "completed"]
    assert client.logs(run["id"], "a")["text"] == "A\n"
    assert client.logs(run["id"], "b", error=True, tail=1)["text"] == "B\n"
    assert [r["id"] for r in client.runs()] == [run["id"]]
    assert client.task(run["id"], "b")["deps"] == ["a"]
    assert client.env(run["id"], "a")["values"]["SCRIPTHUT_RUN_ID"]["value"] == run["id"]
    assert "echo B >&2" in client.script(run["id"], "b", attempt=1)
    deadline = time.monotonic() + 10
    while not any(e["kind"] == "run" and e["state"] == "completed" for e in seen):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stop()
    ids = [e["id"] for e in seen]
    assert ids == sorted(set(ids))
    replay = client.events(after=0, run=run["id"], timeout=2)
    replayed = list(replay)
    assert [e["id"] for e in replayed] == [e["id"] for e in seen if e["run"] == run["id"]]
    with pytest.raises(NotFound):
        client.run("nosuch")


def test_files_cancel_rerun_and_jobs(client: Any, tmp_path: Path) -> None:
    flow = tmp_path / "flow.json"
    flow.write_text('[{"id": "slow", "command": "sleep 60"}]')
    run = client.submit(flow, name="from-file")
    assert run["name"] == "from-file"
    deadline = time.monotonic() + 30
    while not client.jobs(run=run["id"], state="running"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cancelled = client.cancel(run["id"])
    assert cancelled["queued"] is False
    assert client.wait(run["id"], timeout=30)["state"] == "cancelled"
    again = client.rerun(run["id"])
    assert again["state"] in ("pending", "running")
    client.cancel(run["id"])
    assert client.wait(run["id"], timeout=30)["state"] == "cancelled"
    with pytest.raises(InvalidInput) as err:
        client.submit([{"id": "x"}], max_concurrent=0)
    fields = {i.field for i in err.value.issues}
    assert {"max_concurrent", "command"} <= fields


def test_closing_releases_the_lease_and_a_second_client_uses_the_store(
    isolated: Path, config_file: Path, tmp_path: Path
) -> None:
    data = str(tmp_path / "data")
    first = connect(config_file=str(config_file), data_dir=data)
    second = connect(config_file=str(config_file), data_dir=data, mode="local")
    try:
        assert (first.mode, second.mode) == ("engine", "store")
        run = second.submit([{"id": "q", "command": "echo queued"}])
        assert first.wait(run["id"], timeout=60)["state"] == "completed"  # the lease holder ran it
        assert second.logs(run["id"], "q")["text"] == "queued\n"
        assert second.cancel(run["id"])["queued"] is True
    finally:
        second.close()
        first.close()
    store = Store.in_data_dir(data)
    try:
        assert store.lease_holder() is None
    finally:
        store.close()


def test_a_broken_config_raises_at_connect(isolated: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("backends: 3\n")
    with pytest.raises(InvalidInput) as err:
        connect(config_file=str(broken), data_dir=str(tmp_path / "d"))
    assert str(broken) in str(err.value)
    assert not [t for t in threading.enumerate() if t.name == "scripthut-engine"]


def test_server_mode_needs_a_server(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConnectionError):
        connect(mode="server", timeout=0.5)
    monkeypatch.setenv("SCRIPTHUT_SERVER_URL", "http://127.0.0.1:9/nobody/")
    with pytest.raises(ConnectionError):
        connect(mode="server", timeout=0.5)
    with pytest.raises(ValueError, match="mode"):
        connect(mode="remote")  # type: ignore[arg-type]


def test_discovery_order_and_tokens(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_runtime_file(
        ServerInfo("http://127.0.0.1:8888/user/alice/", "file-token", None, "/d"), isolated
    )
    assert path.stat().st_mode & 0o777 == 0o600
    (isolated / "scripthut-server-999999999.json").write_text(
        '{"url": "http://127.0.0.1:1/", "token": "t", "pid": 999999999}'
    )
    assert [s.url for s in read_runtime_files(isolated)] == ["http://127.0.0.1:8888/user/alice/"]
    monkeypatch.setenv("SCRIPTHUT_SERVER_URL", "http://127.0.0.1:8888/user/alice")
    (found,) = candidates()
    assert (found.url, found.token) == ("http://127.0.0.1:8888/user/alice/", "file-token")
    assert found.api == "http://127.0.0.1:8888/user/alice/scripthut/api/"
    path.unlink()
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-token")
    assert candidates()[0].token == "hub-token"
    monkeypatch.setenv("SCRIPTHUT_SERVER_TOKEN", "explicit-env")
    assert candidates()[0].token == "explicit-env"
    assert candidates(token="given")[0].token == "given"
