"""Private files, `~` paths and symlinked logs, on a real data dir, checked as another user.

The tests run as root; `runuser -u nobody` is the other user of a shared login node. Each
test works under a folder of /tmp that nobody may traverse (0711), so a "Permission
denied" comes from ScriptHut's own modes, never from pytest's private tmp folder; a
control file in the same folder proves nobody can read what is not private.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from scripthut import task_env
from scripthut.states import RunState, TaskState
from scripthut.store import Store
from scripthut.workflow.env import inherited_layer
from tests.helpers import local_config
from tests.test_engine import run_doc

OTHER = "nobody"


def as_other(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", OTHER, "--", *argv], capture_output=True, text=True, timeout=30
    )


def assert_denied(*argv: str) -> None:
    result = as_other(*argv)
    assert result.returncode != 0, (argv, result.stdout)
    assert "Permission denied" in result.stderr, (argv, result.stderr)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A folder another user may traverse (but not list), with a readable control file."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root and runuser to act as another user")
    base = Path(tempfile.mkdtemp(prefix="hut-privacy-", dir="/tmp"))
    os.chmod(base, 0o711)
    control = base / "control.txt"
    control.write_text("readable\n")
    os.chmod(control, 0o644)
    result = as_other("cat", str(control))
    assert result.returncode == 0 and result.stdout == "readable\n", result.stderr
    try:
        yield base
    finally:
        shutil.rmtree(base)


def open_to_traversal(*folders: Path) -> None:
    """Let the other user reach the files below (but not list them): only their own modes
    can protect them then."""
    for folder in folders:
        os.chmod(folder, 0o711)


def test_a_data_dir_made_by_the_engine_is_private_even_under_umask_0(shared: Path) -> None:
    data = shared / "new" / "data"
    old_umask = os.umask(0)
    try:
        run_id, store = run_doc(local_config(data), [{"id": "a", "command": "echo sekrit"}])
    finally:
        os.umask(old_umask)
    try:
        assert store.get_run(run_id).state is RunState.COMPLETED
        db = data / "scripthut.db"
        wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
        run_logs = data / "logs" / run_id
        task_files = sorted(p for p in run_logs.iterdir() if p.is_file())
        assert [p.name for p in task_files] == ["a.1.err", "a.1.exit", "a.1.out", "a.1.sh"]
        outputs = run_logs / "a.1.outputs"  # the task's $SCRIPTHUT_OUTPUT_DIR
        assert (run_logs / "a.1.out").read_text() == "sekrit\n"
        tags = list((data / "logs" / ".tags").iterdir())
        assert wal.exists() and shm.exists()  # the store is open
        folders = [shared / "new", data, data / "logs", run_logs, data / "logs" / ".tags"]
        folders.append(outputs)
        files = [db, wal, shm, *task_files, *tags]
        assert {p.name: mode(p) for p in folders} == {p.name: 0o700 for p in folders}
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
        # As the data dir is: nothing in it can even be named.
        assert_denied("ls", str(data))
        assert_denied("cat", str(db))
        # With every folder opened to traversal, each file's own mode still refuses.
        open_to_traversal(*folders)
        for path in files:
            assert_denied("cat", str(path))
        assert_denied("ls", str(data / "logs"))
        assert_denied("ls", str(run_logs))
    finally:
        store.close()


def _loose_data_dir(data: Path) -> list[Path]:
    """A data dir as an earlier version left it: 0755 folders, 0644 files."""
    old_umask = os.umask(0o022)
    try:
        data.mkdir(parents=True)
        conn = sqlite3.connect(data / "scripthut.db")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        conn.close()
        log = data / "logs" / "r-1" / "a.1.out"
        log.parent.mkdir(parents=True)
        log.write_text("old secret\n")
    finally:
        os.umask(old_umask)
    loose = [data, data / "scripthut.db", data / "logs", log.parent, log]
    assert {mode(p) for p in loose} == {0o755, 0o644}
    return loose


def test_an_existing_loose_data_dir_is_tightened_once_with_one_log_line(
    shared: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = shared / "old"
    loose = _loose_data_dir(data)
    assert as_other("cat", str(data / "logs" / "r-1" / "a.1.out")).returncode == 0
    with caplog.at_level(logging.INFO, logger="scripthut.store"):
        Store.in_data_dir(data).close()
        Store.in_data_dir(data).close()  # a second start finds nothing to do
    lines = [r.getMessage() for r in caplog.records if "tightened" in r.getMessage()]
    assert lines == [f"tightened permissions of {len(loose)} paths under {data} (now 0700/0600)"]
    assert {p.name: mode(p) for p in loose} == {
        "old": 0o700, "scripthut.db": 0o600, "logs": 0o700, "r-1": 0o700, "a.1.out": 0o600,
    }  # fmt: skip
    assert_denied("cat", str(data / "scripthut.db"))
    open_to_traversal(data, data / "logs", data / "logs" / "r-1")
    assert_denied("cat", str(data / "scripthut.db"))
    assert_denied("cat", str(data / "logs" / "r-1" / "a.1.out"))
    assert_denied("ls", str(data / "logs"))


def test_a_loose_database_in_a_private_folder_is_tightened(shared: Path) -> None:
    data = shared / "half"
    _loose_data_dir(data)
    os.chmod(data, 0o700)
    Store.in_data_dir(data).close()
    assert mode(data / "scripthut.db") == 0o600
    assert mode(data / "logs") == 0o700


def test_tilde_in_task_paths_is_the_home_of_the_local_backend(
    shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, cwd = shared / "home", shared / "notebooks"
    (home / "work").mkdir(parents=True)
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    child = json.dumps([{"id": "child", "command": "echo child", "output_file": "~/child.txt"}])
    doc = [
        {
            "id": "parent",
            "command": f"pwd; echo oops >&2; printf '%s' '{child}' > \"$HOME/gen.json\"",
            "working_dir": "~/work",
            "output_file": "~/out/parent.txt",
            "error_file": "err.txt",
            "generates_source": "~/gen.json",
        }
    ]
    run_id, store = run_doc(local_config(shared / "data"), doc)
    try:
        tasks = {t.task_id: t for t in store.tasks(run_id)}
        assert {k: t.state for k, t in tasks.items()} == {
            "parent": TaskState.COMPLETED,
            "child": TaskState.COMPLETED,
        }, [t.reason for t in tasks.values()]
        assert (home / "out" / "parent.txt").read_text() == f"{home / 'work'}\n"
        assert (home / "work" / "err.txt").read_text() == "oops\n"
        assert (home / "child.txt").read_text() == "child\n"
        attempt = store.attempt(run_id, "parent", None)
        assert attempt.stdout_path == str(home / "out" / "parent.txt")
        assert not (cwd / "~").exists()
        assert not (shared / "data" / "~").exists()
    finally:
        store.close()


@pytest.fixture
def cli_env(shared: Path) -> dict[str, str]:
    config = shared / "scripthut.yaml"
    backend = {"name": "local", "type": "local", "max_concurrent": 2, "cpus": 2}
    settings = {"data_dir": str(shared / "data"), "poll_interval": 2}
    config.write_text(yaml.safe_dump({"backends": [backend], "settings": settings}))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTHUT_")}
    return {**clean, "SCRIPTHUT_CONFIG": str(config)}


def hut(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "scripthut.cli", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def symlinking_task(secret: Path, work: Path) -> dict[str, str]:
    """A task that replaces its own output log by a link to a file it could read."""
    return {
        "id": "plant",
        "command": f"echo mine; ln -s {secret} out.new && mv -f out.new out.txt",
        "working_dir": str(work),
        "output_file": "out.txt",
    }


def test_cli_logs_refuses_a_log_that_is_a_symbolic_link(
    shared: Path, cli_env: dict[str, str]
) -> None:
    secret, work = shared / "secret.txt", shared / "work"
    secret.write_text("the secret\n")
    work.mkdir()
    flow = shared / "wf.json"
    flow.write_text(json.dumps([symlinking_task(secret, work)]))
    ran = hut("run", str(flow), "--json", env=cli_env)
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run"]
    assert (work / "out.txt").is_symlink()
    result = hut("logs", run_id, "plant", env=cli_env)
    assert result.returncode != 0
    assert "the secret" not in result.stdout + result.stderr
    message = f"{work / 'out.txt'}: is a symbolic link; refusing to read it"
    assert message in " ".join(result.stderr.split())  # rich wraps long lines
    (work / "out.txt").unlink()
    (work / "out.txt").write_text("plain\n")
    result = hut("logs", run_id, "plant", env=cli_env)
    assert (result.returncode, result.stdout) == (0, "plain\n"), result.stderr


def test_the_deny_list_withholds_the_servers_credentials_and_nothing_else() -> None:
    environ = {
        "JUPYTER_TOKEN": "a",
        "JUPYTERHUB_API_TOKEN": "b",
        "JUPYTERHUB_CLIENT_ID": "c",
        "JUPYTERHUB_OAUTH_SCOPES": "d",
        "JPY_API_TOKEN": "e",
        "JPY_SESSION_NAME": "f",
        "JUPYTER_SERVER_ROOT": "g",
        "JUPYTER_GATEWAY_AUTH_TOKEN": "h",
        "SCRIPTHUT_SERVER_URL": "i",
        "SCRIPTHUT_SERVER_TOKEN": "j",
        "PATH": "/usr/bin",
        "JUPYTER_CONFIG_DIR": "/cfg",
        "AWS_SECRET_ACCESS_KEY": "mine",
        "SCRIPTHUT_DATA_DIR": "/data",
    }
    kept = {"PATH", "JUPYTER_CONFIG_DIR", "AWS_SECRET_ACCESS_KEY", "SCRIPTHUT_DATA_DIR"}
    assert set(task_env.inherited(environ)) == kept
    assert task_env.withheld(environ) == sorted(set(environ) - kept)
    raw = {k.encode(): v.encode() for k, v in environ.items()}
    assert set(task_env.inherited(raw)) == {k.encode() for k in kept}
    layer = inherited_layer(environ, "here")
    assert layer["values"]["AWS_SECRET_ACCESS_KEY"] == {"value": "***", "secret": True}
    assert layer["withheld"] == task_env.withheld(environ)
    assert inherited_layer(None, "there") == {
        "layer": "inherited", "source": "there", "known": False, "values": {}, "withheld": [],
    }  # fmt: skip


def test_a_local_task_whose_log_path_is_a_link_is_not_started(shared: Path) -> None:
    target, work = shared / "target.txt", shared / "work"
    target.write_text("untouched\n")
    work.mkdir()
    (work / "out.txt").symlink_to(target)
    doc = [
        {"id": "a", "command": "echo written", "working_dir": str(work), "output_file": "out.txt"}
    ]
    run_id, store = run_doc(local_config(shared / "data"), doc)
    try:
        task = store.task(run_id, "a")
        assert task.state is TaskState.FAILED
        assert f"{work / 'out.txt'}: is a symbolic link; logs are not written through one" in (
            task.reason or ""
        )
        assert target.read_text() == "untouched\n"
    finally:
        store.close()
