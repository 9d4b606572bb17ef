"""Sources on the local backend: a git repository (a real bare repo on this machine) and a
path source, synced by the real `scripthut` CLI and run by its engine; the working-dir rule;
a branch override; a configured workflow whose command runs in a clone; a repository that
disappears (the last good clone stays usable); per-file validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripthut.engine.jobs import source_dir
from scripthut.sources.script import GitSpec, git_script
from tests.test_magics import shell  # noqa: F401 - the IPython shell fixture

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}
FLOW = {
    "title": "Local flow",
    "tasks": [
        {"id": "top", "command": 'echo "$SCRIPTHUT_GIT_SHA $SCRIPTHUT_GIT_BRANCH"; cat data.txt'},
        {"id": "rel", "command": "pwd", "working_dir": "sub", "deps": ["top"]},
        {"id": "abs", "command": "pwd", "working_dir": "/tmp"},
    ],
}


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    bare = tmp_path / "demo.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    work = tmp_path / "work"
    git("init", "-q", "-b", "main", str(work), cwd=tmp_path)
    (work / ".hut" / "workflows").mkdir(parents=True)
    (work / "sub").mkdir()
    (work / "sub" / ".keep").write_text("")
    (work / ".hut" / "workflows" / "flow.json").write_text(json.dumps(FLOW))
    (work / ".hut" / "workflows" / "bad.json").write_text('{"tasks": [{"id": "a", "deps": ["x"]}]}')
    (work / "data.txt").write_text("main-data\n")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "one", cwd=work)
    git("push", "-q", str(bare), "main", cwd=work)
    return work


def push(work: Path, data: str, branch: str = "main") -> str:
    (work / "data.txt").write_text(data + "\n")
    git("add", "-A", cwd=work)
    git("commit", "-qm", data, cwd=work)
    git("push", "-q", str(work.parent / "demo.git"), f"HEAD:{branch}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


@pytest.fixture
def config(tmp_path: Path, repo: Path) -> Path:
    data = {
        "backends": [{"name": "local", "type": "local"}],
        "sources": [
            {
                "name": "demo",
                "type": "git",
                "url": str(tmp_path / "demo.git"),
                "clone_dir": str(tmp_path / "clones"),
                "postclone": "echo ready > ready.txt",
            },
            {"name": "here", "type": "path", "path": str(repo), "backend": "local"},
        ],
        "workflows": [
            {
                "name": "gen",
                "backend": "local",
                "command": "cat .hut/workflows/flow.json",
                "git": {"repo": str(tmp_path / "demo.git"), "clone_dir": str(tmp_path / "clones")},
            },
        ],
        "settings": {"data_dir": str(tmp_path / "data")},
    }
    path = tmp_path / "scripthut.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def hut(config: Path, *args: str) -> Any:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "scripthut"), *args, "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout, done.stderr
    return json.loads(done.stdout)


def task_log(config: Path, run: str, task: str) -> str:
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "scripthut"),
            "logs",
            run,
            task,
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_git_source_sync_run_and_a_new_commit(config: Path, repo: Path, tmp_path: Path) -> None:
    listed = hut(config, "sources")["sources"]
    assert [s["name"] for s in listed] == ["demo", "here"] and listed[0]["syncs"] == []

    state = hut(config, "sync", "demo")["sources"][0]
    sha = git("rev-parse", "HEAD", cwd=repo)
    assert state["error"] is None and state["sha"] == sha
    files = {f["path"]: f for f in state["files"]}
    assert files[".hut/workflows/flow.json"] | {"issues": []} == {
        "path": ".hut/workflows/flow.json",
        "title": "Local flow",
        "tasks": 3,
        "valid": True,
        "issues": [],
    }
    assert not files[".hut/workflows/bad.json"]["valid"]
    assert any("'x'" in i for i in files[".hut/workflows/bad.json"]["issues"])
    root = Path(state["root"])
    assert (root / "ready.txt").read_text() == "ready\n"  # postclone ran in the clone

    done = hut(config, "run", "--source", "demo", ".hut/workflows/flow.json")
    assert done["status"] == "completed", done
    assert task_log(config, done["run"], "top") == f"{sha} main\nmain-data\n"
    assert task_log(config, done["run"], "rel") == f"{root}/sub\n"
    assert task_log(config, done["run"], "abs") == "/tmp\n"
    shown = hut(config, "show", done["run"])
    assert shown["provenance"]["git"] == {
        "repo": str(tmp_path / "demo.git"),
        "branch": "main",
        "sha": sha,
    }

    second = push(repo, "second")
    again = hut(config, "sync", "demo")["sources"][0]
    assert again["sha"] == second and Path(again["root"]) != root
    assert (root / "data.txt").read_text() == "main-data\n"


def test_branch_override_and_bad_requests(config: Path, repo: Path) -> None:
    other = push(repo, "other-data", branch="feature")
    dry = hut(
        config, "dry-run", "--source", "demo", ".hut/workflows/flow.json", "--branch", "feature"
    )
    assert dry["provenance"]["git"]["sha"] == other and dry["tasks"] == 3
    assert dry["provenance"]["git"]["branch"] == "feature"

    bad = hut(config, "run", "--source", "demo", ".hut/workflows/bad.json")
    assert bad["error"]["title"] == "invalid workflow file"
    missing = hut(config, "run", "--source", "demo", "nope.json")
    assert "no workflow file 'nope.json'" in missing["error"]["issues"][0]["message"]
    unknown = hut(config, "sync", "ghost")
    assert "ghost" in unknown["error"]["message"]
    branch = hut(config, "sync", "demo", "--branch=--upload-pack=x")
    assert "not a valid branch name" in branch["error"]["issues"][0]["message"]


def test_an_unreachable_repository_keeps_the_last_good_clone(config: Path, tmp_path: Path) -> None:
    good = hut(config, "sync", "demo")["sources"][0]
    (tmp_path / "demo.git").rename(tmp_path / "gone.git")
    down = hut(config, "sync", "demo")["sources"][0]
    assert "ls-remote" in down["error"]
    assert (down["sha"], down["root"]) == (good["sha"], good["root"])
    done = hut(config, "run", "--source", "demo", ".hut/workflows/flow.json")
    assert done["status"] == "completed"


def test_path_source_and_configured_workflow_in_a_clone(config: Path, repo: Path) -> None:
    state = hut(config, "sync", "here")["sources"][0]
    assert state["root"] == str(repo) and state["sha"] is None
    done = hut(config, "run", "--source", "here", ".hut/workflows/flow.json")
    assert done["status"] == "completed"
    assert task_log(config, done["run"], "rel") == f"{repo}/sub\n"

    dry = hut(config, "dry-run", "--workflow", "gen")
    sha = git("rev-parse", "HEAD", cwd=repo)
    assert dry["tasks"] == 3 and dry["provenance"]["git"]["sha"] == sha
    run = hut(config, "run", "--workflow", "gen")
    assert run["status"] == "completed"
    assert task_log(config, run["run"], "top").startswith(f"{sha} main\n")


def test_working_dir_rule() -> None:
    assert source_dir("/c/abc", "~") == "/c/abc"
    assert source_dir("/c/abc", "sub/x") == "/c/abc/sub/x"
    assert source_dir("/c/abc", "../up") == "/c/up"
    assert source_dir("/c/abc", "/abs") == "/abs"
    assert source_dir("/c/abc", "~/mine") == "~/mine"


def test_the_sync_script_quotes_config_values_and_checks_host_keys() -> None:
    spec = GitSpec(
        url="ssh://git@h/r.git; touch /tmp/pwned",
        branch="main",
        clone_dir="~/repos $(id)",
        key_text="-----BEGIN KEY-----\n'quoted'\n",
        key_id="abc",
        postclone="make && echo ok",
    )
    text = git_script("@@m", spec, ":")
    assert "__hut_url='ssh://git@h/r.git; touch /tmp/pwned'" in text
    assert "__hut_dir=\"$HOME\"/'repos $(id)'" in text
    assert "StrictHostKeyChecking=yes" in text and "IdentitiesOnly=yes" in text
    assert "chmod 600" in text and "trap __hut_cleanup EXIT" in text
    accept = git_script("@@m", GitSpec("u", "main", "~/r", accept_new_host_key=True), ":")
    assert "StrictHostKeyChecking=accept-new" in accept and "IdentitiesOnly" not in accept


def test_python_api_and_magics(
    shell: Any,  # noqa: F811
    config: Path,
    repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from scripthut import api
    from scripthut.client.local import LocalClient

    monkeypatch.setenv("SCRIPTHUT_CONFIG", str(config))
    client = LocalClient(data_dir=str(tmp_path / "data"))
    previous = api.set_default_client(client)
    try:
        sha = git("rev-parse", "HEAD", cwd=repo)
        synced = api.sync("demo", client=client)
        rows = synced if isinstance(synced, list) else synced.to_dict("records")
        assert rows[0]["sha"] == sha and rows[0]["files"] == 2
        run = api.run(".hut/workflows/flow.json", source="demo", client=client)
        assert run.wait(60) == "completed"
        assert run.logs("top").startswith(f"{sha} main\n")

        shell.run_cell("%hut sources")
        shell.run_cell("r2 = %hut run --source here .hut/workflows/flow.json --wait")
        assert shell.user_ns["r2"].wait(60) == "completed"
        out = capsys.readouterr()
        assert "error" not in out.err.lower(), out.err
        listed = api.sources(client=client)
        files = listed if isinstance(listed, list) else listed.to_dict("records")
        assert {(r["source"], r["file"], r["valid"]) for r in files} >= {
            ("demo", ".hut/workflows/flow.json", True),
            ("demo", ".hut/workflows/bad.json", False),
            ("here", ".hut/workflows/flow.json", True),
        }
    finally:
        api.set_default_client(previous)
        client.close()
