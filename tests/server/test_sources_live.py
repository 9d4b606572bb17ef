"""Sources defined only in a notebook folder's project file, through a real `jupyter server`.

A kernel started for a notebook in that folder lists them, syncs them and runs their
workflow files over HTTP (the server's engine), and the runs take that folder's
configuration; a kernel of another folder does not see them. Two folders defining a source
of one repository differently sync it at the same time: both succeed, one intact clone.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml

from tests.server.test_config_live import EMPTY_NOTEBOOK, Kernel, server  # noqa: F401
from tests.server.test_process import Server
from tests.test_sources import git

pytestmark = pytest.mark.slow


def git_repo(tmp_path: Path, out: Path) -> Path:
    """A bare repository whose two workflow files write $WHERE and the commit to `out`."""
    bare, work = tmp_path / "demo.git", tmp_path / "demo-work"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("init", "-q", "-b", "main", str(work), cwd=tmp_path)
    command = f'echo "$WHERE $SCRIPTHUT_GIT_SHA" > {out}'
    for folder in ("flows", "other-flows"):
        (work / folder).mkdir()
        (work / folder / "flow.json").write_text(json.dumps([{"id": "t", "command": command}]))
    git("add", "-A", cwd=work)
    git("commit", "-qm", "one", cwd=work)
    git("push", "-q", str(bare), "main", cwd=work)
    return bare


def project_file(folder: Path, where: str, sources: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"env": [{"set": {"WHERE": where}}], "sources": sources}
    (folder / "scripthut.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (folder / "nb.ipynb").write_text(json.dumps(EMPTY_NOTEBOOK))


IN_KERNEL = """
import json, os, scripthut as hut
from scripthut.api import default_client
from scripthut.errors import NotFound
c = default_client()
out = {"mode": c.mode, "cwd": os.getcwd(), "names": [s["name"] for s in c.sources()]}
try:
    out["synced"] = [[s["source"], s["error"], s["sha"]] for s in c.sync()]
    runs = [hut.run("flows/flow.json", source="demo"), hut.run("n.json", source="notes")]
    out["runs"] = [r.wait(60) for r in runs]
except NotFound as exc:
    out["not_found"] = str(exc)
print(json.dumps(out))
"""


def test_a_notebook_folders_sources_over_http(server: Server, tmp_path: Path) -> None:  # noqa: F811
    root = server.root
    git_out, notes_out = tmp_path / "git.txt", tmp_path / "notes.txt"
    bare, clones = git_repo(tmp_path, git_out), tmp_path / "clones"
    notes = tmp_path / "notes-src"  # a path source outside the notebook's folder
    notes.mkdir()
    (notes / "n.json").write_text(
        json.dumps([{"id": "t", "command": f"echo $WHERE > {notes_out}"}])
    )
    demo = {"name": "demo", "type": "git", "url": str(bare), "clone_dir": str(clones)}
    note = {"name": "notes", "type": "path", "path": str(notes), "backend": "local"}
    note["workflows_glob"] = "*.json"
    project_file(root / "analysis", "analysis", [{**demo, "workflows_glob": "flows/*.json"}, note])
    project_file(root / "other", "other", [{**demo, "workflows_glob": "other-flows/*.json"}])
    (root / "plain").mkdir()
    (root / "plain" / "nb.ipynb").write_text(json.dumps(EMPTY_NOTEBOOK))

    code, listed = server.request("GET", "scripthut/api/sources")
    assert code == 200 and listed["sources"] == []  # the server's own configuration has none

    seen = {}
    for name in ("analysis", "plain"):
        kernel = Kernel(server, f"{name}/nb.ipynb")
        try:
            seen[name] = json.loads(kernel.run(IN_KERNEL))
        finally:
            kernel.close()
    sha = git("rev-parse", "main", cwd=bare)
    analysis = seen["analysis"]
    assert analysis["mode"] == "server" and analysis["cwd"] == str(root / "analysis")
    assert analysis["names"] == ["demo", "notes"]
    assert analysis["synced"] == [["demo", None, sha], ["notes", None, None]], analysis
    assert analysis["runs"] == ["completed", "completed"], analysis
    # the runs took the folder's configuration: its env rule, not the global one
    assert git_out.read_text() == f"analysis {sha}\n"
    assert notes_out.read_text() == "analysis\n"
    plain = seen["plain"]
    assert plain["mode"] == "server" and plain["names"] == [], plain
    assert "no source named 'demo'" in plain["not_found"], plain

    # Two folders sync their own definitions of one repository at the same time.
    replies: dict[str, tuple[int, Any]] = {}

    def sync(folder: str) -> None:
        body = {"config_dir": str(root / folder)}
        replies[folder] = server.request("POST", "scripthut/api/sources/demo/sync", body)

    threads = [threading.Thread(target=sync, args=(f,)) for f in ("analysis", "other", "other")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for folder in ("analysis", "other"):
        code, reply = replies[folder]
        assert code == 200, reply
        ((state,),) = [reply["sources"]]
        assert state["error"] is None and state["sha"] == sha, reply
    files = {f: [x["path"] for x in replies[f][1]["sources"][0]["files"]] for f in replies}
    assert files == {"analysis": ["flows/flow.json"], "other": ["other-flows/flow.json"]}
    assert sorted(p.name for p in clones.iterdir()) == [f".{sha}.lock", f".{sha}.ok", sha]
    assert git("rev-parse", "HEAD", cwd=clones / sha) == sha
    assert git("status", "--porcelain", cwd=clones / sha) == ""
    git("fsck", "--no-progress", cwd=clones / sha)
    for folder, glob in (("analysis", "flows/flow.json"), ("other", "other-flows/flow.json")):
        query = urlencode({"config_dir": str(root / folder)})
        code, listed = server.request("GET", f"scripthut/api/sources?{query}")
        assert code == 200, listed
        (entry,) = [s for s in listed["sources"] if s["name"] == "demo"]
        assert [f["path"] for f in entry["syncs"][0]["files"]] == [glob]
