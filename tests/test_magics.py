"""`%hut` / `%%hut` driven through a real IPython shell, over an in-process engine."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from traitlets.config import Config

from scripthut import api
from scripthut.api import display
from scripthut.client.local import LocalClient

CONFIG = """\
backends:
  - name: local
    type: local
    max_concurrent: 4
    cpus: 4
settings:
  poll_interval: 2
"""
FLOW = [
    {"id": "a", "command": "echo A"},
    {"id": "b", "command": "echo B >&2", "deps": ["a"]},
]


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InteractiveShell]:
    """One IPython shell (a process-wide singleton), history in memory, profile in tmp."""
    os.environ.setdefault("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    ip = InteractiveShell.instance(config=config)
    ip.run_cell("%load_ext scripthut")
    yield ip
    ip.run_cell("%unload_ext scripthut")


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalClient]:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("SCRIPTHUT_CONNECT", "local")
    config = tmp_path / "scripthut.yaml"
    config.write_text(CONFIG)
    monkeypatch.setenv("SCRIPTHUT_CONFIG", str(config))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flow.json").write_text(json.dumps(FLOW))
    hosted = LocalClient(data_dir=str(tmp_path / "data"))
    previous = api.set_default_client(hosted)
    yield hosted
    api.set_default_client(previous)
    hosted.close()


def cell(ip: InteractiveShell, code: str) -> ExecutionResult:
    result = ip.run_cell(code, store_history=True)
    assert result.error_in_exec is None, result.error_in_exec
    return result


def wait_until(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_run_show_and_logs(
    shell: InteractiveShell, client: LocalClient, capsys: pytest.CaptureFixture[str]
) -> None:
    cell(shell, "r = %hut run flow.json --name magic --wait")
    run = shell.user_ns["r"]
    assert isinstance(run, api.Run)
    assert capsys.readouterr().out == f"run {run.id}: completed\n"
    assert client.run(run.id)["state"] == "completed"

    cell(shell, f"%hut logs {run.id[:17]} a")
    assert capsys.readouterr().out == "A\n"
    cell(shell, f"%hut logs {run.id} b --error --tail 1")
    assert capsys.readouterr().out == "B\n"

    result = cell(shell, f"%hut show {run.id[:17]}")
    assert result.result is not None
    assert result.result.id == run.id
    out = capsys.readouterr().out  # a terminal: the result's echo shows it
    assert out.count(f"run {run.id}  magic  on local: completed (2 completed)") == 1
    assert "  a: completed\n  b: completed\n" in out


def test_in_a_kernel_the_run_shows_once_even_when_assigned(
    shell: InteractiveShell,
    client: LocalClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(display, "silent_echo", lambda: True)
    cell(shell, "r = %hut run flow.json --wait")
    run = shell.user_ns["r"]
    out = capsys.readouterr().out
    assert out.startswith(f"run {run.id}  flow  on local: ")
    assert out.endswith(f"run {run.id}: completed\n")
    cell(shell, f"%hut show {run.id}\nx = 1")  # shown although not the last line
    assert capsys.readouterr().out.count(f"run {run.id}") == 1
    cell(shell, f"%hut show {run.id}")  # shown by the magic; its echo is skipped
    assert capsys.readouterr().out.count(f"run {run.id}") == 1
    cell(shell, "r")  # a later cell shows the run again
    assert capsys.readouterr().out.count(f"run {run.id}  flow") == 1


def test_cancel_and_rerun(
    shell: InteractiveShell,
    client: LocalClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps([{"id": "nap", "command": "sleep 60"}]))
    cell(shell, "r = %hut run slow.json")
    run = shell.user_ns["r"]
    wait_until(lambda: client.jobs(run=run.id, state="running"))
    capsys.readouterr()
    cell(shell, f"%hut cancel {run.id}")
    assert capsys.readouterr().out == f"run {run.id}: cancelled\n"
    assert [t["state"] for t in client.tasks(run.id)] == ["cancelled"]

    again = cell(shell, f"%hut rerun {run.id[:17]}").result
    assert again.id == run.id
    assert f"run {run.id}  slow  on local: " in capsys.readouterr().out
    wait_until(lambda: client.tasks(run.id)[0]["attempt"] == 2)
    assert client.run(run.id)["state"] in ("pending", "running")
    cell(shell, f"%hut cancel {run.id}")
    assert capsys.readouterr().out == f"run {run.id}: cancelled\n"


def test_the_task_cell_magic(
    shell: InteractiveShell,
    client: LocalClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = "%%hut task --name greet --cpus 2 --memory 1G --time 5:00 --wait\necho hi from $PWD\n"
    result = cell(shell, code)
    run = result.result
    assert isinstance(run, api.Run)
    assert run.name == "greet"
    assert f"run {run.id}: completed\n" in capsys.readouterr().out
    assert run.logs("cell") == f"hi from {tmp_path}\n"  # the notebook's directory
    spec = client.service.store.task(run.id, "cell").spec  # type: ignore[union-attr]
    assert (spec["cpus"], spec["memory"], spec["time_limit"], spec["name"]) == (
        2,
        "1G",
        "5:00",
        "greet",
    )


def test_tables(
    shell: InteractiveShell, client: LocalClient, capsys: pytest.CaptureFixture[str]
) -> None:
    pandas = pytest.importorskip("pandas")
    cell(shell, "r = %hut run flow.json --wait")
    run = shell.user_ns["r"]
    runs = cell(shell, "%hut runs").result
    assert isinstance(runs, pandas.DataFrame)
    assert list(runs["id"]) == [run.id]
    assert runs.loc[0, "completed"] == 2
    jobs = cell(shell, f"%hut jobs --run {run.id[:17]} --backend local").result
    assert isinstance(jobs, pandas.DataFrame)
    assert len(jobs) == 0  # its jobs are over


def assert_one_line(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("scripthut: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_errors_are_one_line(
    shell: InteractiveShell,
    client: LocalClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "x", "comand": "echo"}, {"id": "y", "command": "echo"}] * 2))
    capsys.readouterr()
    cell(shell, "%hut run bad.json")
    assert_one_line(capsys, "invalid run request", "comand", "duplicate")
    cell(shell, "%hut show nosuchrun")
    assert_one_line(capsys, "no run 'nosuchrun'")
    cell(shell, "%hut logs nosuchrun a")
    assert_one_line(capsys, "no run")
    cell(shell, "%hut run flow.json --backend nowhere")
    assert_one_line(capsys, "nowhere")
    cell(shell, "%hut frobnicate")
    assert_one_line(capsys, "invalid choice: 'frobnicate'")
    cell(shell, "%hut run")
    assert_one_line(capsys, "required: file")
    cell(shell, "%hut run 'flow.json")
    assert_one_line(capsys, "No closing quotation")
    cell(shell, "%hut task")
    assert_one_line(capsys, "%%hut task takes a cell")
    cell(shell, "%%hut runs\nfoo")
    assert_one_line(capsys, "only %%hut task takes a cell")
    cell(shell, "%%hut task\n\n")
    assert_one_line(capsys, "the cell is empty")
    assert client.runs() == []


def test_a_broken_config_is_one_line(
    shell: InteractiveShell,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("backends:\n  - name: x\n    type: nosuch\n")
    monkeypatch.setenv("SCRIPTHUT_CONFIG", str(broken))
    monkeypatch.setenv("SCRIPTHUT_CONNECT", "local")
    monkeypatch.setenv("SCRIPTHUT_DATA_DIR", str(tmp_path / "data"))
    previous = api.set_default_client(None)
    try:
        cell(shell, "%hut runs")
        assert_one_line(capsys, str(broken), "type")
    finally:
        api.set_default_client(previous)


def test_help(shell: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    doc = shell.find_line_magic("hut").__doc__ or ""
    assert doc == shell.find_cell_magic("hut").__doc__
    for usage in (
        "%hut run FILE",
        "%hut jobs",
        "%hut runs",
        "%hut show RUN",
        "%hut logs RUN TASK",
        "%hut cancel RUN",
        "%hut rerun RUN",
        "%%hut task",
    ):
        assert usage in doc
    cell(shell, "%hut help")
    out = capsys.readouterr().out
    assert "%hut run FILE [--backend B] [--max-concurrent N] [--name NAME]" in out
    cell(shell, "%hut logs -h")
    assert "--tail N" in capsys.readouterr().out


def test_unload_removes_the_magic(shell: InteractiveShell) -> None:
    cell(shell, "%unload_ext scripthut")
    assert shell.find_line_magic("hut") is None
    assert shell.find_cell_magic("hut") is None
    cell(shell, "%load_ext scripthut")
    assert shell.find_line_magic("hut") is not None
