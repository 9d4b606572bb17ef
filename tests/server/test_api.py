"""Every endpoint of the extension against a real engine on the local backend.

Each test runs twice: under the default base_url and under JupyterHub's `/user/alice/`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripthut.server.app import ScriptHutApp
from tests.server.conftest import FINAL, Api

pytestmark = pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning")


async def start(api: Api, doc: Any, **extra: Any) -> dict[str, Any]:
    run = await api.post("runs", {"workflow": doc, **extra}, expect=201)
    assert run["state"] == "pending"
    return dict(run)


async def test_health_reports_engine_mode(
    api: Api, sh_data_dir: Path, sh_config_file: Path
) -> None:
    health = await api.get("health")
    assert health["status"] == "ok"
    assert health["mode"] == "engine"
    assert health["data_dir"] == str(sh_data_dir)
    assert health["config_file"] == str(sh_config_file)
    assert health["engine"]["active_runs"] == 0


async def test_openapi_is_served(api: Api) -> None:
    text = await api.get("openapi.yaml")
    spec = yaml.safe_load(text)
    assert spec["openapi"].startswith("3.")
    assert "/runs/{run_id}/tasks/{task_id}/logs/{stream}" in spec["paths"]


async def test_backends_show_status_and_explain_unavailable_types(api: Api) -> None:
    reply = await api.get("backends")
    assert reply["default"] == "local"
    by_name = {b["name"]: b for b in reply["backends"]}
    local = by_name["local"]
    assert local["status"] == "ok"
    assert local["available"] is True
    assert local["info"]["cpus_total"] == 4
    assert by_name["hpc"]["transport"] == "local"
    remote = by_name["remote"]
    assert remote["transport"] == "ssh"
    assert remote["status"] in ("unreachable", "unavailable", "error")  # nothing on port 1
    assert remote["message"]


async def test_run_lifecycle_tasks_script_env_and_logs(api: Api) -> None:
    doc = {
        "env": [{"set": {"API_TOKEN": "s3cr3t-value", "GREETING": "hello"}}],
        "tasks": [
            {"id": "a", "command": "echo $GREETING; echo oops >&2; printf 'l1\\nl2\\nl3\\n'"},
            {"id": "b", "command": "echo from-b", "deps": ["a"]},
        ],
    }
    run = await start(api, doc, name="lifecycle", max_concurrent=2)
    assert run["name"] == "lifecycle"
    assert run["total"] == 2
    final = await api.wait_run(run["id"])
    assert final["state"] == "completed"
    assert final["counts"] == {"completed": 2}

    detail = await api.get(f"runs/{run['id']}")
    assert [t["id"] for t in detail["tasks"]] == ["a", "b"]
    assert detail["tasks"][1]["deps"] == ["a"]

    task = await api.get(f"runs/{run['id']}/tasks/a")
    assert task["state"] == "completed"
    assert task["spec"]["command"].startswith("echo $GREETING")
    assert [a["attempt"] for a in task["attempts"]] == [1]
    assert task["attempts"][0]["exit_code"] == 0

    script = await api.get(f"runs/{run['id']}/tasks/a/script")
    assert script.startswith("#!/bin/bash")
    assert "echo oops >&2" in script

    env = await api.get(f"runs/{run['id']}/tasks/a/env")
    assert env["source"] == "attempt"
    assert env["values"]["GREETING"]["value"] == "hello"
    assert env["values"]["API_TOKEN"]["value"] == "***"
    assert env["values"]["API_TOKEN"]["secret"] is True
    assert "s3cr3t-value" not in json.dumps(env)

    out = await api.get(f"runs/{run['id']}/tasks/a/logs/output")
    assert out["text"] == "hello\nl1\nl2\nl3\n"
    assert out["offset"] == 0
    assert out["next_offset"] == out["size"] == len(out["text"])
    assert out["final"] is True
    err = await api.get(f"runs/{run['id']}/tasks/a/logs/error")
    assert err["text"] == "oops\n"
    tail = await api.get(f"runs/{run['id']}/tasks/a/logs/output", params={"tail": "2"})
    assert tail["text"] == "l2\nl3\n"
    part = await api.get(
        f"runs/{run['id']}/tasks/a/logs/output", params={"offset": "6", "limit": "3"}
    )
    assert part["text"] == "l1\n"
    assert part["next_offset"] == 9
    rest = await api.get(
        f"runs/{run['id']}/tasks/a/logs/output", params={"offset": str(part["next_offset"])}
    )
    assert rest["text"] == "l2\nl3\n"


async def test_env_before_the_first_attempt_comes_from_the_config(api: Api) -> None:
    doc = [
        {"id": "first", "command": "sleep 30"},
        {
            "id": "later",
            "command": "true",
            "deps": ["first"],
            "env": [{"set": {"DB_PASSWORD": "hunter22"}}],
        },
    ]
    run = await start(api, doc)
    env = await api.get(f"runs/{run['id']}/tasks/later/env")
    assert env["source"] == "config"
    assert env["attempt"] is None
    assert env["values"]["DB_PASSWORD"]["value"] == "***"
    code, _ = await api.call("GET", f"runs/{run['id']}/tasks/later/script")
    assert code == 404  # not submitted yet: nothing recorded to serve
    code, _ = await api.call("GET", f"runs/{run['id']}/tasks/later/logs/output")
    assert code == 404
    await api.post(f"runs/{run['id']}/cancel")
    assert (await api.wait_run(run["id"]))["state"] == "cancelled"


async def test_runs_are_paged_with_counts(api: Api) -> None:
    ids = [
        (await start(api, [{"id": "t", "command": "true"}], name=f"r{i}"))["id"] for i in range(3)
    ]
    for run_id in ids:
        await api.wait_run(run_id)
    page = await api.get("runs", params={"limit": "2", "offset": "0"})
    assert page["total"] == 3
    assert page["limit"] == 2
    assert [r["name"] for r in page["runs"]] == ["r2", "r1"]
    assert page["runs"][0]["counts"] == {"completed": 1}
    second = await api.get("runs", params={"limit": "2", "offset": "2"})
    assert [r["name"] for r in second["runs"]] == ["r0"]
    code, reply = await api.call("GET", "runs", params={"limit": "zero"})
    assert code == 400
    assert reply["errors"][0]["field"] == "limit"


async def test_invalid_run_requests_list_every_problem(api: Api) -> None:
    body = {
        "workflow": [
            {"id": "a", "command": "true"},
            {"id": "a"},
            {"id": "b", "command": "x", "deps": ["nope"]},
        ],
        "max_concurrent": 0,
        "colour": "blue",
    }
    code, reply = await api.call("POST", "runs", body)
    assert code == 400
    assert reply["reason"] == "invalid_input"
    fields = {(e["field"], e["message"]) for e in reply["errors"]}
    assert (
        "colour",
        "unknown key (known: backend, config_dir, max_concurrent, name, no_cache, path, workflow)",
    ) in fields
    assert any(f == "max_concurrent" for f, _ in fields)
    messages = " | ".join(e["message"] for e in reply["errors"])
    assert "nope" in messages  # unknown dependency
    assert len(reply["errors"]) >= 4  # duplicate id and missing command as well
    assert all(set(e) == {"where", "field", "message"} for e in reply["errors"])

    code, reply = await api.call("POST", "runs", {"workflow": [], "path": "x.json"})
    assert code == 400
    code, reply = await api.call("POST", "runs", body=None)
    assert code == 400
    code, reply = await api.call(
        "POST", "runs", {"workflow": [{"id": "a", "command": "true"}], "backend": "nope"}
    )
    assert code == 404
    assert "nope" in reply["message"]
    assert (await api.get("runs"))["total"] == 0  # nothing was stored


async def test_runs_from_files_stay_inside_the_root_dir(
    api: Api, jp_root_dir: Path, tmp_path: Path
) -> None:
    (jp_root_dir / "flows").mkdir()
    (jp_root_dir / "flows" / "wf.json").write_text(
        json.dumps([{"id": "f", "command": "pwd", "working_dir": "."}])
    )
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps([{"id": "o", "command": "true"}]))
    (jp_root_dir / "link.json").symlink_to(outside)

    run = await api.post("runs", {"path": "flows/wf.json"}, expect=201)
    assert run["name"] == "wf"
    assert run["source"] == str(jp_root_dir / "flows" / "wf.json")
    await api.wait_run(run["id"])
    out = await api.get(f"runs/{run['id']}/tasks/f/logs/output")
    assert out["text"].strip() == str(
        jp_root_dir / "flows"
    )  # relative working dirs: the file's dir

    for path in ("../outside.json", str(outside), "link.json", "flows/../../outside.json"):
        code, reply = await api.call("POST", "runs", {"path": path})
        assert code == 400, path
        assert reply["errors"][0]["field"] == "path"
    code, reply = await api.call("POST", "runs", {"path": "flows/missing.json"})
    assert code == 400
    assert "no such file" in reply["errors"][0]["message"]


async def test_a_config_dir_brings_its_project_file_and_moves_no_task(
    api: Api, jp_root_dir: Path, tmp_path: Path
) -> None:
    real, elsewhere = tmp_path / "real", tmp_path / "elsewhere"
    (real / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    (real / "scripthut.yaml").write_text("env:\n  - set: {WHERE: real}\n")
    (elsewhere / "scripthut.yaml").write_text("env:\n  - set: {WHERE: link}\n")
    (elsewhere / "link").symlink_to(real / "sub")  # read where it really is, not via the link
    doc = [{"id": "t", "command": 'echo "${WHERE:-none} $PWD"', "working_dir": "."}]

    runs = {}
    for folder in (elsewhere / "link", None):
        extra = {"config_dir": str(folder)} if folder else {}
        runs[folder] = (await start(api, doc, **extra))["id"]
    for folder, run_id in runs.items():
        await api.wait_run(run_id)
        out = await api.get(f"runs/{run_id}/tasks/t/logs/output")
        where = "real" if folder else "none"
        assert out["text"].split() == [where, str(jp_root_dir)], folder

    (real / "scripthut.yaml").write_text("settings:\n  data_dir: /elsewhere\n")
    code, reply = await api.call(
        "POST", "runs", {"workflow": doc, "config_dir": str(elsewhere / "link")}
    )
    assert code == 400, reply
    (error,) = reply["errors"]
    assert error["file"] == str(real / "scripthut.yaml") and error["line"] == 2


async def test_cancel_rerun_and_delete(api: Api) -> None:
    run = await start(
        api,
        [
            {"id": "slow", "command": "sleep 60"},
            {"id": "after", "command": "true", "deps": ["slow"]},
        ],
    )
    await api.wait_task(run["id"], "slow", {"running"})
    code, reply = await api.call("DELETE", f"runs/{run['id']}")
    assert code == 409
    assert reply["reason"] == "conflict"
    cancelled = await api.post(f"runs/{run['id']}/cancel")
    assert cancelled["queued"] is False
    final = await api.wait_run(run["id"])
    assert final["state"] == "cancelled"

    again = await api.post(f"runs/{run['id']}/rerun")
    assert again["state"] in ("pending", "running")
    task = await api.wait_task(run["id"], "slow", {"running"})
    assert task["attempt"] == 2
    await api.post(f"runs/{run['id']}/cancel")
    await api.wait_run(run["id"])

    code, _ = await api.call("DELETE", f"runs/{run['id']}")
    assert code == 204
    code, reply = await api.call("GET", f"runs/{run['id']}")
    assert code == 404
    assert reply["reason"] == "not_found"
    code, _ = await api.call("POST", "runs/nosuchrun/cancel", {})
    assert code == 404


async def test_jobs_lists_tracked_jobs_filters_and_cancels(api: Api) -> None:
    run = await start(api, [{"id": "busy", "command": "sleep 60"}])
    await api.wait_task(run["id"], "busy", {"running"})
    jobs = (await api.get("jobs"))["jobs"]
    mine = [j for j in jobs if j["run"] == run["id"]]
    assert len(mine) == 1
    job = mine[0]
    assert (job["backend"], job["task"], job["state"], job["source"]) == (
        "local",
        "busy",
        "running",
        "scripthut",
    )
    assert (await api.get("jobs", params={"state": "pending"}))["jobs"] == []
    assert (await api.get("jobs", params={"backend": "hpc"}))["jobs"] == []
    assert len((await api.get("jobs", params={"run": run["id"], "backend": "local"}))["jobs"]) == 1
    code, reply = await api.call("GET", "jobs", params={"state": "sleeping"})
    assert code == 400

    reply = await api.post(f"jobs/local/{job['job_id']}/cancel", {}, expect=202)
    assert reply["cancel_requested"] is True
    final = await api.wait_run(run["id"])
    assert final["state"] in ("failed", "cancelled")
    assert (await api.get("jobs"))["jobs"] == []
    code, _ = await api.call("POST", "jobs/nowhere/123/cancel", {})
    assert code == 404


async def test_configured_workflows_dry_run_and_run(api: Api) -> None:
    listed = {w["name"]: w for w in (await api.get("workflows"))["workflows"]}
    assert set(listed) == {"demo", "broken", "on-hpc", "on-remote"}
    assert listed["demo"]["addressable"] is True

    dry = await api.post("workflows/demo/dry-run")
    assert (dry["tasks"], dry["edges"]) == (2, 1)
    assert [t["id"] for t in dry["document"]["tasks"]] == ["one", "two"]
    assert (await api.get("runs"))["total"] == 0  # a dry run starts nothing

    run = await api.post("workflows/demo/run", {"max_concurrent": 1}, expect=201)
    assert run["name"] == "demo"
    assert run["max_concurrent"] == 1
    assert (await api.wait_run(run["id"]))["state"] == "completed"
    out = await api.get(f"runs/{run['id']}/tasks/two/logs/output")
    assert out["text"] == "two\n"

    code, reply = await api.call("POST", "workflows/broken/dry-run")
    assert code == 400
    assert "exited with status 3" in reply["errors"][0]["message"]
    code, reply = await api.call("POST", "workflows/on-remote/dry-run")  # needs ssh: not here
    assert code == 503
    assert reply["reason"] == "backend_unavailable"
    assert "backend 'remote' unreachable" in reply["message"]  # tried over its transport
    code, _ = await api.call("POST", "workflows/nope/dry-run")
    assert code == 404
    code, reply = await api.call("POST", "workflows/demo/run", {"colour": 1})
    assert code == 400


async def test_a_folders_configured_workflow_over_http(api: Api, tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "tasks.json").write_text('[{"id": "t", "command": "echo \\"$WHERE\\""}]')
    (folder / "scripthut.yaml").write_text(
        "env:\n  - set: {WHERE: project}\n"
        "workflows:\n  - name: gen\n    backend: local\n    command: cat tasks.json\n"
    )
    mine = {"config_dir": str(folder)}
    listed = (await api.get("workflows", params=mine))["workflows"]
    assert "gen" in [w["name"] for w in listed]
    assert "gen" not in [w["name"] for w in (await api.get("workflows"))["workflows"]]
    code, _ = await api.call("POST", "workflows/gen/dry-run")  # the server's own: unknown
    assert code == 404
    dry = await api.post("workflows/gen/dry-run", mine)  # the command ran in the folder
    assert dry["tasks"] == 1
    run = await api.post("workflows/gen/run", mine, expect=201)
    assert (await api.wait_run(run["id"]))["state"] == "completed"
    out = await api.get(f"runs/{run['id']}/tasks/t/logs/output")
    assert out["text"] == "project\n"  # the run took the folder's env rule


async def test_event_stream_replays_then_follows_live(
    api: Api, scripthut_app: ScriptHutApp, jp_fetch: Any
) -> None:
    first = await start(api, [{"id": "a", "command": "true"}])
    await api.wait_run(first["id"])
    chunks: list[bytes] = []
    stream = asyncio.ensure_future(
        jp_fetch(
            "scripthut",
            "api",
            "events",
            headers={"Last-Event-ID": "0"},
            streaming_callback=chunks.append,
            request_timeout=60,
        )
    )
    second = await start(api, [{"id": "b", "command": "true"}])
    await api.wait_run(second["id"])
    for _ in range(100):
        if b'"state":"completed","counts"' in b"".join(chunks).split(second["id"].encode(), 1)[-1]:
            break
        await asyncio.sleep(0.05)
    await scripthut_app.service.events.close()  # ends every stream cleanly
    response = await stream
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = parse_sse(b"".join(chunks))
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids))  # increasing, no duplicate
    assert ids[0] == 1
    kinds = [(e["run"], e["kind"], e.get("state")) for e in events]
    for run in (first, second):
        assert (run["id"], "run_created", "pending") in kinds
        assert (run["id"], "run", "completed") in kinds


async def test_event_stream_filters_by_run_and_rejects_bad_ids(api: Api, jp_fetch: Any) -> None:
    one = await start(api, [{"id": "a", "command": "true"}])
    two = await start(api, [{"id": "b", "command": "true"}])
    await api.wait_run(one["id"])
    await api.wait_run(two["id"])
    chunks: list[bytes] = []
    with pytest.raises(Exception, match="Timeout"):
        await jp_fetch(
            "scripthut",
            "api",
            "events",
            params={"after": "0", "run": two["id"]},
            streaming_callback=chunks.append,
            request_timeout=2,
        )
    events = parse_sse(b"".join(chunks))
    assert events
    assert {e["run"] for e in events} == {two["id"]}
    code, reply = await api.call("GET", "events", headers={"Last-Event-ID": "abc"})
    assert code == 400
    assert reply["errors"][0]["field"] == "Last-Event-ID"
    code, reply = await api.call("GET", "events", params={"after": "-1"})
    assert code == 400
    assert reply["errors"][0]["field"] == "after"


def parse_sse(data: bytes) -> list[dict[str, Any]]:
    events = []
    for block in data.decode().split("\n\n"):
        lines = block.split("\n")
        ids = [line[4:] for line in lines if line.startswith("id: ")]
        payload = [line[6:] for line in lines if line.startswith("data: ")]
        if payload:
            event = json.loads("\n".join(payload))
            assert ids == [str(event["id"])]
            events.append(event)
    return events


async def test_the_extension_sets_the_kernel_environment(
    api: Api, jp_serverapp: Any, jp_base_url: str
) -> None:
    url = os.environ["SCRIPTHUT_SERVER_URL"]
    assert url == f"http://127.0.0.1:{jp_serverapp.port}{jp_base_url}"
    files = list(Path(jp_serverapp.runtime_dir).glob("scripthut-server-*.json"))
    assert len(files) == 1
    assert files[0].stat().st_mode & 0o077 == 0
    info = json.loads(files[0].read_text())
    assert info["url"] == url
    assert info["token"] == jp_serverapp.identity_provider.token


async def test_final_states_are_the_run_states(api: Api) -> None:
    spec = yaml.safe_load(await api.get("openapi.yaml"))
    states = set(spec["components"]["schemas"]["Run"]["properties"]["state"]["enum"])
    assert states > FINAL


async def test_run_creation_rejects_invalid_input_atomically(api: Api, sh_data_dir: Path) -> None:
    """Bodies are decoded, checked and recorded in the worker thread: every kind of bad
    input still gets its 400 and leaves nothing behind (no run, task, count or event)."""
    many = [{"id": f"t{i}", "command": "true"} for i in range(3_000)]
    bodies: list[Any] = [
        {"workflow": [*many, {"id": "t7", "command": "again"}]},  # duplicate id, at the end
        {"workflow": [*many, {"id": "x", "command": "true", "env": [{"include": ["nope"]}]}]},
        {"workflow": many, "max_concurrent": 0},
        {"workflow": [*many, {"id": "c", "command": "true", "deps": ["c"]}]},  # a cycle
    ]
    for body in bodies:
        code, reply = await api.call("POST", "runs", body)
        assert code == 400, reply
        assert reply["reason"] == "invalid_input"
    response = await api.fetch(
        "scripthut", "api", "runs", method="POST", body=b'{"workflow": [', raise_error=False
    )
    assert response.code == 400
    assert "not valid JSON" in json.loads(response.body)["errors"][0]["message"]
    with sqlite3.connect(sh_data_dir / "scripthut.db") as conn:
        for table in ("runs", "tasks", "run_counts", "events"):
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,), table
    run = await start(api, many[:3])  # and a good one still goes through
    assert (await api.wait_run(run["id"]))["counts"] == {"completed": 3}


async def test_a_folders_sources_follow_its_project_file(api: Api, tmp_path: Path) -> None:
    folder, files = tmp_path / "project", tmp_path / "flows"
    folder.mkdir()
    (files / ".hut" / "workflows").mkdir(parents=True)
    (files / ".hut" / "workflows" / "f.json").write_text('[{"id": "t", "command": "true"}]')
    project = folder / "scripthut.yaml"

    def define(name: str) -> None:
        entry = {"name": name, "type": "path", "path": str(files), "backend": "local"}
        project.write_text(yaml.safe_dump({"sources": [entry]}))

    mine = {"config_dir": str(folder)}
    define("first")
    synced = await api.post("sources/first/sync", mine)
    assert [s["files"][0]["path"] for s in synced["sources"]] == [".hut/workflows/f.json"]
    listed = (await api.get("sources", params=mine))["sources"]
    assert [(s["name"], len(s["syncs"])) for s in listed] == [("first", 1)]
    define("second")  # an edit is taken up by the next request, and after a reload
    for _ in range(2):
        listed = (await api.get("sources", params=mine))["sources"]
        assert [(s["name"], s["syncs"]) for s in listed] == [("second", [])]
        code, _ = await api.call("POST", "sources/first/sync", mine)
        assert code == 404
        await api.post("config/reload")
    assert (await api.get("sources"))["sources"] == []  # the server's own: none
