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
