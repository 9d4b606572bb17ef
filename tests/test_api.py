"""The Python API (`import scripthut as hut`) over an in-process engine and real processes."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import scripthut as hut
from scripthut import api
from scripthut.client.local import LocalClient
from scripthut.errors import InvalidInput, NotFound
from tests.helpers import SECRET_WORKFLOW, assert_no_secret

CONFIG = """\
backends:
  - name: local
    type: local
    max_concurrent: 4
    cpus: 4
settings:
  poll_interval: 2
"""


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No Jupyter server to find; config and data in tmp_path."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    for name in ("SCRIPTHUT_SERVER_URL", "SCRIPTHUT_SERVER_TOKEN", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "scripthut.yaml"
    config.write_text(CONFIG)
    monkeypatch.setenv("SCRIPTHUT_CONFIG", str(config))
    monkeypatch.setenv("SCRIPTHUT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SCRIPTHUT_CONNECT", "local")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def client(isolated: Path) -> Iterator[LocalClient]:
    """The API's default client: an engine in this process over tmp_path/data."""
    hosted = LocalClient(data_dir=str(isolated / "data"))
    previous = api.set_default_client(hosted)
    yield hosted
    api.set_default_client(previous)
    hosted.close()


def wait_until(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_dag_of_tasks_runs_in_order(client: LocalClient) -> None:
    tasks = [
        hut.Task("a", "echo A; date +%s%N > a.t", working_dir="."),
        hut.Task("b", "echo B >&2; date +%s%N > b.t", deps="a", working_dir="."),
        hut.Task("c", "cat a.t b.t; printf 'l1\\nl2\\nl3\\n'", deps=["a", "b"], working_dir="."),
    ]
    run = hut.run(tasks, name="dag", max_concurrent=2)
    assert isinstance(run, hut.Run)
    assert run.name == "dag"
    assert run.backend == "local"
    assert run.status in ("pending", "running")
    assert run.wait(timeout=60) == "completed"
    assert run.status == "completed"
    assert [(t["id"], t["state"], t["exit_code"]) for t in run.tasks] == [
        ("a", "completed", 0),
        ("b", "completed", 0),
        ("c", "completed", 0),
    ]
    assert run.logs("a") == "A\n"
    assert run.logs("b", error=True) == "B\n"
    assert run.logs("b") == ""
    stamps = run.logs("c").splitlines()[:2]
    assert int(stamps[0]) <= int(stamps[1])  # b started after a ended
    assert run.logs("c", tail=2) == "l2\nl3\n"
    assert run.info["counts"] == {"completed": 3}


def test_a_file_a_document_and_dicts(client: LocalClient, isolated: Path) -> None:
    flow = isolated / "flow.json"
    flow.write_text(json.dumps([{"id": "only", "command": "echo from file"}]))
    from_file = hut.run(str(flow))
    assert from_file.name == "flow"
    document = {
        "env": [{"set": {"GREETING": "hello"}}],
        "tasks": [hut.Task("greet", 'echo "$GREETING"'), {"id": "d", "command": "echo d"}],
    }
    from_doc = hut.run(document, name="doc")
    single = hut.run(hut.Task("one", "echo one"))
    assert from_file.wait(60) == from_doc.wait(60) == single.wait(60) == "completed"
    assert from_file.logs("only") == "from file\n"
    assert from_doc.logs("greet") == "hello\n"
    assert single.logs("one") == "one\n"
    env = from_doc.env("greet")
    greeting = env["values"]["GREETING"]
    assert greeting["value"] == "hello"
    assert [op["layer"] for op in greeting["ops"]] == ["workflow"]
    assert env["attempt"] == 1


def test_invalid_tasks_are_rejected_whole(client: LocalClient) -> None:
    with pytest.raises(InvalidInput) as err:
        hut.run([hut.Task("a", "echo", deps=["nope"]), hut.Task("a", "echo", cpu=3)])
    text = str(err.value)
    assert "nope" in text
    assert "duplicate" in text
    assert "cpu" in text
    assert hut.runs() is not None
    assert len(hut.runs()) == 0
    with pytest.raises(InvalidInput, match="no such file"):
        hut.run("missing.json")


def test_task_builds_the_json_shape() -> None:
    task = hut.Task("fit.1", "python fit.py", deps="prep", cpus=4, memory="8G")
    assert task.to_dict() == {
        "id": "fit.1",
        "command": "python fit.py",
        "deps": ["prep"],
        "cpus": 4,
        "memory": "8G",
    }
    assert hut.Task("x", "true").to_dict() == {"id": "x", "command": "true"}
    assert task == hut.Task("fit.1", "python fit.py", ["prep"], cpus=4, memory="8G")
    assert "deps=['prep']" in repr(task)


def test_failure_rerun_and_cancel(client: LocalClient, isolated: Path) -> None:
    run = hut.run(
        [
            hut.Task("check", "test -f marker || { echo missing >&2; exit 4; }", working_dir="."),
            hut.Task("after", "echo after", deps=["check"]),
        ]
    )
    assert run.wait(60) == "failed"
    states = {t["id"]: (t["state"], t["exit_code"]) for t in run.tasks}
    assert states == {"check": ("failed", 4), "after": ("dep_failed", None)}
    assert run.logs("check", error=True) == "missing\n"
    (isolated / "marker").write_text("")
    assert run.rerun() is run
    assert run.wait(60) == "completed"
    assert run.logs("check", error=True, attempt=1) == "missing\n"
    assert run.logs("after") == "after\n"

    slow = hut.run([hut.Task("sleep", "sleep 60")])
    wait_until(lambda: slow.status == "running" and len(hut.jobs(run=slow, state="running")))
    assert slow.cancel() in ("running", "cancelled")
    assert slow.wait(30) == "cancelled"
    assert [t["state"] for t in slow.tasks] == ["cancelled"]


def test_jobs_and_runs_are_tables(client: LocalClient, monkeypatch: pytest.MonkeyPatch) -> None:
    pandas = pytest.importorskip("pandas")
    slow = hut.run([hut.Task("nap", "sleep 30")], name="napping")
    wait_until(lambda: len(hut.jobs(run=slow.id)) == 1)
    jobs = hut.jobs(backend="local", run=slow)
    assert isinstance(jobs, pandas.DataFrame)
    assert list(jobs.columns[:7]) == ["backend", "job_id", "state", "source", "run", "task", "name"]
    assert jobs.loc[0, "task"] == "nap"
    assert jobs.loc[0, "source"] == "scripthut"
    assert len(hut.jobs(backend="elsewhere")) == 0
    runs = hut.runs()
    assert isinstance(runs, pandas.DataFrame)
    assert runs.loc[0, "id"] == slow.id
    assert runs.loc[0, "name"] == "napping"
    assert runs.loc[0, "total"] == 1
    assert str(runs["created_at"].dtype).startswith("datetime64")
    assert isinstance(slow.table(), pandas.DataFrame)

    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    plain = hut.jobs(run=slow.id)
    assert isinstance(plain, list)
    assert plain[0]["task"] == "nap"
    rows = hut.runs(limit=1)
    assert rows[0]["id"] == slow.id
    assert rows[0]["pending"] + rows[0]["running"] + rows[0]["submitted"] == 1
    slow.cancel()
    assert slow.wait(30) == "cancelled"


def test_a_run_by_id_prefix_and_its_text_display(client: LocalClient) -> None:
    started = hut.run([hut.Task("ok", "echo ok"), hut.Task("bad", "exit 2")])
    assert started.wait(60) == "failed"
    again = hut.Run(started.id[:17])
    assert again.id == started.id
    assert repr(again) == f"<Run {started.id} 'workflow' on local>"
    bundle = again._repr_mimebundle_()  # no kernel here: the text summary
    assert list(bundle) == ["text/plain"]
    text = bundle["text/plain"]
    assert text.splitlines()[0].startswith(f"run {started.id}")
    assert "failed (1 completed, 1 failed)" in text.splitlines()[0]
    assert text.splitlines()[1] == "  bad: failed (exit code 2)"
    with pytest.raises(NotFound):
        hut.Run("no-such-run")


def test_the_default_client_connects_once(isolated: Path) -> None:
    previous = api.set_default_client(None)
    try:
        first = api.default_client()
        assert isinstance(first, LocalClient)
        assert api.default_client() is first
        assert first.health()["data_dir"] == str(isolated / "data")
        run = hut.run([hut.Task("t", "echo t")])
        assert run.client is first
        assert run.wait(60) == "completed"
    finally:
        mine = api.set_default_client(previous)
        if mine is not None:
            mine.close()


def test_import_is_light_and_entry_points() -> None:
    code = (
        "import sys, scripthut as hut\n"
        "heavy = [m for m in sys.modules if m.startswith(('scripthut.', 'pydantic', 'IPython',"
        " 'pandas', 'jupyter_server', 'tornado'))]\n"
        "assert not heavy, heavy\n"
        "paths = hut._jupyter_labextension_paths()\n"
        "assert paths == [{'src': 'labextension', 'dest': 'scripthut'}]\n"
        "assert {'run', 'Task', 'Run', 'jobs', 'runs', 'connect'} <= set(dir(hut))\n"
        "from scripthut.client import connect\n"
        "assert hut.connect is connect and hut.Task.__module__ == 'scripthut.api.task'\n"
        "assert hut.api.default_client is hut.api.session.default_client\n"
        "try:\n    hut.nothing\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit(1)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


class _Health(http.server.BaseHTTPRequestHandler):
    data_dir = ""

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/base/scripthut/api/health":
            self.send_error(404)
            return
        body = json.dumps({"version": "0", "status": "ok", "data_dir": self.data_dir}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("same_dir", [True, False])
def test_a_server_of_another_data_dir_is_not_used(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, same_dir: bool
) -> None:
    from scripthut.client.http import HTTPClient

    served = isolated / "data" if same_dir else isolated / "elsewhere"
    handler = type("Health", (_Health,), {"data_dir": str(served)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SCRIPTHUT_SERVER_URL", f"http://127.0.0.1:{server.server_port}/base/")
    monkeypatch.delenv("SCRIPTHUT_CONNECT")
    previous = api.set_default_client(None)
    try:
        chosen = api.default_client()
        if same_dir:
            assert isinstance(chosen, HTTPClient)
        else:
            assert isinstance(chosen, LocalClient)
            assert chosen.health()["data_dir"] == str(isolated / "data")
    finally:
        mine = api.set_default_client(previous)
        if mine is not None:
            mine.close()
        server.shutdown()
        server.server_close()


def test_the_python_api_never_returns_a_secret(client: LocalClient) -> None:
    run = hut.run(SECRET_WORKFLOW, name="secretive")
    assert run.wait(60) == "completed"
    env = run.env("a")
    assert env["values"]["API_TOKEN"] == {**env["values"]["API_TOKEN"], "value": "***"}
    script = client.script(run.id, "a")
    assert "export API_TOKEN='***'" in script
    task = client.task(run.id, "a")
    assert task["spec"]["env"][0]["set"]["COPY"] == "prefix-***"
    for shown in (json.dumps(env), script, json.dumps(task), run.summary()):
        assert_no_secret(shown)


def test_a_run_s_cost(client: LocalClient, isolated: Path) -> None:
    """`Run.cost()` is the API's `GET runs/{id}/cost`: the same numbers as the store's."""
    run = hut.run([hut.Task("a", "sleep 0.2"), hut.Task("b", "true", partition="unpriced")])
    assert run.wait(timeout=60) == "completed"
    cost = run.cost()
    assert (cost["priced"], cost["costed"], cost["tasks"], cost["total"]) == (False, 0, 2, 0)
    (isolated / "scripthut.yaml").write_text(
        CONFIG + "pricing:\n  url: http://127.0.0.1:9/x\n  prices: {normal: 3600.0}\n"
    )
    priced = LocalClient(data_dir=str(isolated / "data"))
    try:
        cost = hut.Run(run.id, client=priced).cost()
        a = next(t for t in run.tasks if t["id"] == "a")
        assert cost["total"] == pytest.approx(a["ended_at"] - a["started_at"])
        assert cost["summary"].endswith("(1 of 2 tasks costed), offline prices")
        assert {i["task"]: i["cost"] is None for i in cost["items"]} == {"a": False, "b": True}
        assert "items" not in hut.Run(run.id, client=priced).cost(items=False)
    finally:
        priced.close()


def test_run_with_notify_opts_the_run_in(client: LocalClient, isolated: Path) -> None:
    from scripthut.notify.outbox import Outbox

    noisy = api.run([{"id": "a", "command": "true"}], notify=True)
    quiet = api.run([{"id": "a", "command": "true"}])
    outbox = Outbox(isolated / "data" / "scripthut.db")
    try:
        assert outbox.opted_in([noisy.id, quiet.id]) == {noisy.id}
    finally:
        outbox.close()
