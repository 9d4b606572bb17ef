"""A broken config does not stop Jupyter; another lease holder puts the server in client mode."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripthut.server.app import ScriptHutApp
from scripthut.store import Store
from tests.server.conftest import Api
from tests.server.test_api import parse_sse


class TestBrokenConfig:
    @pytest.fixture
    def sh_config_text(self) -> str:
        return "backends:\n  - name: hpc\n    type: slurmm\nsettings:\n  poll_interval: 0\n"

    async def test_health_reports_the_config_errors(self, api: Api, sh_config_file: Path) -> None:
        health = await api.get("health")
        assert health["status"] == "config_error"
        assert health["mode"] == "config_error"
        assert str(sh_config_file) in health["message"]
        fields = {e["field"] for e in health["errors"]}
        assert {"type", "poll_interval"} <= fields
        assert all(e["where"] for e in health["errors"])

    async def test_other_endpoints_answer_503_with_the_errors(
        self, api: Api, jp_fetch: Any
    ) -> None:
        for method, path in [
            ("GET", "runs"),
            ("POST", "runs"),
            ("GET", "backends"),
            ("GET", "jobs"),
            ("GET", "workflows"),
            ("GET", "events"),
            ("GET", "runs/abc/tasks/a/logs/output"),
        ]:
            code, reply = await api.call(
                method, path, {"workflow": []} if method == "POST" else None
            )
            assert code == 503, (method, path)
            assert reply["reason"] == "service_unavailable"
            assert len(reply["errors"]) == 2
        status = await jp_fetch("api", "status")  # Jupyter itself is fine
        assert status.code == 200


@pytest.fixture
def other_engine(sh_data_dir: Path) -> Iterator[Store]:
    """Another live process's lease on the data directory (this test process is alive)."""
    store = Store.in_data_dir(sh_data_dir)
    assert store.acquire_lease("elsewhere:1:cli", ttl=60)
    yield store
    store.close()


async def test_client_mode_queues_requests_and_takes_over_when_the_lease_is_free(
    other_engine: Store, api: Api, scripthut_app: ScriptHutApp, jp_fetch: Any
) -> None:
    health = await api.get("health")
    assert health["mode"] == "client"
    assert health["status"] == "ok"
    assert "another process drives this data directory" in health["message"]
    assert health["lease"]["owner"] == "elsewhere:1:cli"
    assert "engine" not in health

    run = await api.post("runs", {"workflow": [{"id": "t", "command": "echo driven"}]}, expect=201)
    cancel = await api.post("runs/nosuch/cancel", expect=404)
    assert cancel["reason"] == "not_found"
    code, reply = await api.call("DELETE", f"runs/{run['id']}")
    assert code == 409, reply
    assert (await api.get("jobs"))["jobs"] == []
    commands = other_engine.take_commands()
    assert [(kind, run_id) for _, kind, run_id, _ in commands] == [("load", run["id"])]

    chunks: list[bytes] = []
    stream = asyncio.ensure_future(
        jp_fetch("scripthut", "api", "events", streaming_callback=chunks.append, request_timeout=60)
    )
    await asyncio.sleep(0.3)
    written = other_engine.append_events([("run", run["id"], None, {"state": "running"})])
    deadline = time.monotonic() + 10
    while b'"state":"running"' not in b"".join(chunks):
        assert time.monotonic() < deadline, b"".join(chunks)
        await asyncio.sleep(0.05)
    assert [e["id"] for e in parse_sse(b"".join(chunks))] == [written[0].id]

    other_engine.release_lease("elsewhere:1:cli")
    deadline = time.monotonic() + 30
    while (await api.get("health"))["mode"] != "engine":
        assert time.monotonic() < deadline, "the server did not take over the free lease"
        await asyncio.sleep(0.2)
    final = await api.wait_run(run["id"])
    assert final["state"] == "completed"
    out = await api.get(f"runs/{run['id']}/tasks/t/logs/output")
    assert out["text"] == "driven\n"
    deadline = time.monotonic() + 10
    while b'"state":"completed","counts"' not in b"".join(chunks):  # the stream followed along
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await scripthut_app.service.events.close()
    await stream
    ids = [e["id"] for e in parse_sse(b"".join(chunks))]
    assert ids == sorted(set(ids))


async def test_stopping_releases_the_lease_in_bounded_time(
    scripthut_app: ScriptHutApp, sh_data_dir: Path
) -> None:
    store = Store.in_data_dir(sh_data_dir)
    try:
        assert store.lease_holder() is not None
        started = time.monotonic()
        await scripthut_app.stop_extension()
        assert time.monotonic() - started < scripthut_app.settings_object.stop_timeout + 1.5
        assert store.lease_holder() is None
        assert json.dumps(scripthut_app.service.health())  # still answers, as "stopped"
        assert scripthut_app.service.health()["status"] == "stopped"
    finally:
        store.close()


class TestHeartbeats:
    @pytest.fixture
    def jp_server_config(self, jp_server_config: dict[str, Any]) -> dict[str, Any]:
        return {
            **jp_server_config,
            "ScriptHut": {**jp_server_config["ScriptHut"], "heartbeat_interval": 0.2},
        }

    async def test_an_idle_stream_gets_keepalive_comments(
        self, api: Api, scripthut_app: ScriptHutApp, jp_fetch: Any
    ) -> None:
        chunks: list[bytes] = []
        stream = asyncio.ensure_future(
            jp_fetch(
                "scripthut", "api", "events", streaming_callback=chunks.append, request_timeout=30
            )
        )
        await asyncio.sleep(1.0)
        await scripthut_app.service.events.close()
        response = await stream
        assert response.code == 200
        text = b"".join(chunks).decode()
        assert text.startswith("retry: 2000\n")
        assert text.count(": keepalive\n\n") >= 3
        assert "data:" not in text
