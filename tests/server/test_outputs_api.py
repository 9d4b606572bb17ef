"""Task outputs and the run summary through the REST API of a real jupyter_server."""

from __future__ import annotations

from typing import Any

from tests.server.conftest import Api
from tests.server.test_api import start

WRITER = (
    'printf "a,b\\n1,2\\n" > "$SCRIPTHUT_OUTPUT_DIR/t.csv"; '
    "printf '<b>x</b><img src=x onerror=alert(1)>' > \"$SCRIPTHUT_OUTPUT_DIR/r.html\"; "
    'echo "done **well**" > "$SCRIPTHUT_RUN_SUMMARY"'
)


async def test_outputs_listing_file_and_summary(api: Api) -> None:
    run = await start(api, {"tasks": [{"id": "a", "command": WRITER}]})
    await api.wait_run(run["id"])
    base = f"runs/{run['id']}/tasks/a/outputs"

    listing = await api.get(base)
    assert [(f["path"], f["kind"]) for f in listing["files"]] == [
        ("r.html", "html"),
        ("t.csv", "table"),
    ]
    assert listing["attempt"] == 1
    code, body = await api.call("GET", f"{base}/file", params={"path": "t.csv"})
    assert (code, body) == (200, "a,b\n1,2\n")
    code, body = await api.call("GET", f"{base}/file", params={"path": "r.html"})
    assert (code, body) == (200, "<b>x</b><img>")

    summary: dict[str, Any] = await api.get(f"runs/{run['id']}/summary")
    assert summary["tasks"][0]["summary"] == "done **well**\n"
    assert "- `t.csv` (8 B)" in summary["markdown"]


async def test_only_recorded_outputs_are_served(api: Api) -> None:
    run = await start(api, {"tasks": [{"id": "a", "command": "true"}]})
    await api.wait_run(run["id"])
    base = f"runs/{run['id']}/tasks/a/outputs/file"
    for path, status in (("../a.1.out", 400), ("/etc/passwd", 400), ("", 400), ("x", 404)):
        code, body = await api.call("GET", base, params={"path": path})
        assert code == status, (path, code, body)
        assert body["reason"] in ("invalid_input", "not_found")
    code, _ = await api.call("GET", f"runs/{run['id']}/tasks/nope/outputs")
    assert code == 404


async def test_manifest_of_a_task_with_outputs(api: Api, tmp_path: Any) -> None:
    work = str(tmp_path)
    task = {"id": "m", "command": "echo 1 > o.txt", "working_dir": work, "outputs": ["o.txt"]}
    run = await start(api, {"tasks": [task, {"id": "n", "command": "true"}]})
    await api.wait_run(run["id"])
    manifest = await api.get(f"runs/{run['id']}/tasks/m/manifest")
    assert manifest["manifest_version"] == 1 and "o.txt" in manifest["outputs"]
    code, body = await api.call("GET", f"runs/{run['id']}/tasks/n/manifest")
    assert code == 404 and "no manifest" in body["message"]


async def test_a_cache_hit_answers_every_view(api: Api, tmp_path: Any) -> None:
    work = str(tmp_path)
    task = {
        "id": "m",
        "command": "echo ran >> ran.log; echo 1 > o.txt",
        "working_dir": work,
        "outputs": ["o.txt"],
    }
    first = await start(api, {"tasks": [task]})
    await api.wait_run(first["id"])
    run = await start(api, {"tasks": [task]})
    assert (await api.wait_run(run["id"]))["state"] == "completed"
    base = f"runs/{run['id']}/tasks/m"
    key = (await api.get(f"{base}/manifest"))["cache"]["key"]
    assert (await api.get(f"{base}/manifest"))["cache"]["hit"] is True

    detail = await api.get(base)
    assert detail["job_id"] is None and detail["attempt"] == 1
    [attempt] = detail["attempts"]
    assert (attempt["state"], attempt["cached"], attempt["job_id"]) == ("completed", True, None)
    assert attempt["cache_key"] == key
    code, script = await api.call("GET", f"{base}/script")
    assert code == 200 and f"restored from cache {key}" in script
    for stream in ("output", "error"):
        log = await api.get(f"{base}/logs/{stream}")
        assert f"restored from cache {key}" in log["text"] and log["final"] is True
        assert log["next_offset"] == log["size"] and log["missing"] is False
    listing = await api.get(f"{base}/outputs")
    assert listing["cached"] is True and listing["files"] == []
    assert (await api.get(f"{base}/env"))["attempt"] == 1
    assert (tmp_path / "ran.log").read_text() == "ran\n"


async def test_no_cache_in_a_run_request(api: Api, tmp_path: Any) -> None:
    task = {
        "id": "m",
        "command": "echo ran >> ran.log; echo 1 > o.txt",
        "working_dir": str(tmp_path),
        "outputs": ["o.txt"],
    }
    for _ in range(2):
        run = await start(api, {"tasks": [task]}, no_cache=True)
        await api.wait_run(run["id"])
        manifest = await api.get(f"runs/{run['id']}/tasks/m/manifest")
        assert manifest["cache"]["hit"] is False and manifest["cache"]["stored"] is False
    assert (tmp_path / "ran.log").read_text() == "ran\nran\n"
    for value in ("yes", 1, [True]):
        body = {"workflow": {"tasks": [task]}, "no_cache": value}
        code, reply = await api.call("POST", "runs", body)
        assert code == 400, (value, reply)
        assert [e["field"] for e in reply["errors"]] == ["no_cache"], reply
        assert "true or false" in reply["errors"][0]["message"]
    dry = await api.post("workflows/demo/dry-run", {"no_cache": True})
    assert dry["no_cache"] is True and dry["tasks"] == 2
    code, reply = await api.call("POST", "workflows/demo/dry-run", {"no_cache": "no"})
    assert code == 400 and [e["field"] for e in reply["errors"]] == ["no_cache"]
    code, reply = await api.call("POST", "workflows/demo/run", {"no_cache": 0})
    assert code == 400 and [e["field"] for e in reply["errors"]] == ["no_cache"]
