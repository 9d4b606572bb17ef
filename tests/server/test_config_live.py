"""A real `jupyter server` takes configuration changes without a restart, a kernel alive.

The global file gains a backend: the API lists it and polls it, the server process and the
kernel are the same and the kernel's variables are still there. A broken edit keeps the
running configuration (errors located in `health` and `GET config`; a run goes on to its
end); the fix is taken up. A project file in a folder changes the env rules of runs started
from that folder and of no other; an infrastructure key in it is refused, located. Runs a
kernel starts over HTTP take the configuration of its notebook's folder, not the server
root's; their tasks' relative working dirs still start at the server's root.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.server.test_process import Server, start_server, stop_server

pytestmark = pytest.mark.slow

GLOBAL: dict[str, Any] = {
    "backends": [{"name": "local", "type": "local", "max_concurrent": 4, "cpus": 4}],
    "env": [{"set": {"WHERE": "global"}}],
    "settings": {"poll_interval": 2},
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path)
    write_global(running, GLOBAL)
    wait_for(running, lambda h: h["config"]["reloads"] == 1, "the test's config")
    yield running
    stop_server(running)


def global_file(server: Server) -> Path:
    return server.root.parent / "scripthut.yaml"


def write_global(server: Server, data: dict[str, Any] | str) -> None:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    global_file(server).write_text(text)


def health(server: Server) -> dict[str, Any]:
    code, reply = server.request("GET", "scripthut/api/health")
    assert code == 200, reply
    return dict(reply)


def wait_for(
    server: Server, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        reply = health(server)
        if predicate(reply):
            return reply
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {reply}"
        time.sleep(0.2)


def backend_names(server: Server) -> list[str]:
    code, reply = server.request("GET", "scripthut/api/backends")
    assert code == 200, reply
    return [b["name"] for b in reply["backends"]]


class Kernel:
    """A kernel the server started, driven over its websocket as the front end does."""

    def __init__(self, server: Server, notebook: str | None = None) -> None:
        websocket = pytest.importorskip("websocket")
        self.session = None
        if notebook is None:
            code, kernel = server.request("POST", "api/kernels", {"name": "python3"})
        else:  # as Lab opens a notebook: a session, its kernel in the notebook's folder
            body = {"path": notebook, "name": Path(notebook).name, "type": "notebook"}
            code, session = server.request("POST", "api/sessions", body | {"kernel": {}})
            self.session, kernel = session["id"], session["kernel"]
        assert code == 201, kernel
        self.id, self.server = kernel["id"], server
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}{server.base_url}api/kernels/{self.id}/channels",
            header=[f"Authorization: token {server.token}"],
            timeout=120,
        )

    def run(self, code: str) -> str:
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex}
        header |= {"username": "test", "version": "5.3", "date": ""}
        content = {"code": code, "silent": False, "store_history": False}
        content |= {"user_expressions": {}, "allow_stdin": False, "stop_on_error": True}
        message = {"header": header, "parent_header": {}, "metadata": {}, "channel": "shell"}
        self.ws.send(json.dumps({**message, "buffers": [], "content": content}))
        output, deadline = "", time.monotonic() + 120
        while time.monotonic() < deadline:
            reply = json.loads(self.ws.recv())
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = reply["header"]["msg_type"]
            if kind == "stream":
                output += reply["content"]["text"]
            elif kind == "error":
                raise AssertionError("\n".join(reply["content"]["traceback"]))
            elif kind == "status" and reply["content"]["execution_state"] == "idle":
                return output  # iopub's idle follows the cell's output; execute_reply may not
        raise AssertionError("the kernel did not answer")

    def close(self) -> None:
        self.ws.close()
        if self.session is not None:
            self.server.request("DELETE", f"api/sessions/{self.session}")
        else:
            self.server.request("DELETE", f"api/kernels/{self.id}")


def test_a_backend_added_broken_and_fixed_without_a_restart(server: Server) -> None:
    kernel = Kernel(server)
    try:
        pid = kernel.run("import os\nx = 41\nprint(os.getpid())").strip()
        flag = server.root / "flag"
        doc = [{"id": "gate", "command": f"while [ ! -e '{flag}' ]; do sleep 0.1; done"}]
        code, run = server.request("POST", "scripthut/api/runs", {"workflow": doc})
        assert code == 201, run
        assert backend_names(server) == ["local"]

        # A backend added to the global file appears without a restart.
        added = {**GLOBAL, "backends": [*GLOBAL["backends"], {"name": "second", "type": "local"}]}
        write_global(server, added)
        wait_for(server, lambda h: h["config"]["reloads"] >= 2, "the reload")
        assert backend_names(server) == ["local", "second"]
        seen = kernel.run(
            "from scripthut.client import connect\n"
            "c = connect()\n"
            "names = [b['name'] for b in c.request('GET', 'backends')['backends']]\n"
            "print(x + 1, os.getpid(), names)"
        )
        assert seen.strip().split(maxsplit=2) == ["42", pid, "['local', 'second']"]
        assert server.proc.poll() is None
        code, kernels = server.request("GET", "api/kernels")
        assert [k["id"] for k in kernels] == [kernel.id]

        # A broken edit: the running config stays, the errors are located.
        text = yaml.safe_dump(added, sort_keys=False).replace("type: local", "type: locl", 1)
        write_global(server, text)
        line = text.splitlines().index("  type: locl") + 1
        broken = wait_for(server, lambda h: h["config"]["status"] == "error", "the error")
        assert broken["mode"] == "engine" and broken["status"] == "ok"
        (issue,) = broken["config"]["errors"]
        assert issue["file"] == str(global_file(server)) and issue["line"] == line
        assert "unknown type 'locl'" in issue["message"]
        code, shown = server.request("GET", "scripthut/api/config")
        assert shown["status"] == "error" and shown["errors"] == broken["config"]["errors"]
        assert backend_names(server) == ["local", "second"]
        flag.touch()  # the run started before the edits goes on to its end
        wait_for(
            server,
            lambda _: (
                server.request("GET", f"scripthut/api/runs/{run['id']}?tasks=0")[1]["state"]
                == "completed"
            ),
            "the run to complete",
        )
        assert "42" in kernel.run("print(x + 1)")

        # The fix is taken up by itself; a reload on request says the same.
        write_global(server, GLOBAL)
        fixed = wait_for(server, lambda h: h["config"]["status"] == "ok", "the fix")
        assert fixed["config"]["errors"] == [] and fixed["config"]["changes"]["removed"] == [
            "second"
        ]
        assert backend_names(server) == ["local"]
        code, again = server.request("POST", "scripthut/api/config/reload")
        assert code == 200 and again["status"] == "ok"
    finally:
        kernel.close()


def test_a_project_file_changes_runs_from_its_folder_only(server: Server) -> None:
    repo, other = server.root / "repo", server.root / "other"
    (repo / "analysis").mkdir(parents=True)
    other.mkdir()
    (repo / "scripthut.yaml").write_text("env:\n  - set: {WHERE: project}\n")
    outputs = {}
    for name, folder in (("repo", repo / "analysis"), ("other", other)):
        out = server.root / f"{name}.txt"
        wf = folder / "wf.json"
        wf.write_text(json.dumps([{"id": "t", "command": f"echo \"$WHERE\" > '{out}'"}]))
        code, run = server.request("POST", "scripthut/api/runs", {"path": str(wf)})
        assert code == 201, run
        outputs[name] = (run["id"], out)
    for run_id, _ in outputs.values():
        wait_for(
            server,
            lambda _, r=run_id: (
                server.request("GET", f"scripthut/api/runs/{r}?tasks=0")[1]["state"] == "completed"
            ),
            "the runs",
        )
    assert outputs["repo"][1].read_text() == "project\n"
    assert outputs["other"][1].read_text() == "global\n"

    (repo / "scripthut.yaml").write_text("env: []\nsettings:\n  data_dir: /elsewhere\n")
    code, refused = server.request(
        "POST", "scripthut/api/runs", {"path": str(repo / "analysis" / "wf.json")}
    )
    assert code == 400, refused
    (error,) = refused["errors"]
    assert error["file"] == str(repo / "scripthut.yaml") and error["line"] == 3
    assert "belongs in the global file" in error["message"]


KERNEL_RUN = """
import json, os, scripthut as hut
from scripthut.api import default_client
from scripthut.errors import InvalidInput
try:
    task = {{"id": "t", "command": 'echo "$WHERE ${{ROOT_ONLY:-no}}" > {out}', "working_dir": "."}}
    run = hut.run([task])
    print(json.dumps([default_client().mode, os.getcwd(), run.wait(60)]))
except InvalidInput as exc:
    print(json.dumps([[i.file, i.line, i.message] for i in exc.issues]))
"""


def test_runs_from_a_kernel_take_its_notebook_folders_project_file(server: Server) -> None:
    root = server.root
    (root / "scripthut.yaml").write_text(
        'env:\n  - set: {WHERE: root-project}\n  - set: {ROOT_ONLY: "yes"}\n'
    )
    for name in ("analysis", "plain"):
        (root / name).mkdir()
        (root / name / "nb.ipynb").write_text(json.dumps(EMPTY_NOTEBOOK))
    analysis_file = root / "analysis" / "scripthut.yaml"
    analysis_file.write_text("env:\n  - set: {WHERE: analysis}\n")
    seen = {}
    for name in ("analysis", "plain"):
        kernel = Kernel(server, f"{name}/nb.ipynb")
        try:
            reply = json.loads(kernel.run(KERNEL_RUN.format(out=f"{name}.txt")))
            assert reply == ["server", str(root / name), "completed"], reply
            if name == "analysis":  # an infrastructure key: refused, located
                analysis_file.write_text("env: []\nsettings:\n  data_dir: /elsewhere\n")
                refused = json.loads(kernel.run(KERNEL_RUN.format(out="never.txt")))
                ((file, line, message),) = refused
                assert (file, line) == (str(analysis_file), 3), refused
                assert "belongs in the global file" in message
        finally:
            kernel.close()
        seen[name] = (root / f"{name}.txt").read_text()  # relative dirs: the server's root
    # The analysis folder's file wins over the root's, whose rules do not leak into it; a
    # folder without a file walks up to the root's.
    assert seen == {"analysis": "analysis no\n", "plain": "root-project yes\n"}
    assert not (root / "never.txt").exists()


EMPTY_NOTEBOOK = {
    "cells": [],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}
