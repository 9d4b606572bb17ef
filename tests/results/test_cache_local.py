"""The result cache on the real local backend (directory store): a second run hits and
restores the outputs without running the command; one changed byte of an input, the
command, an env value or (scope commit) the commit misses; scope inputs survives a new
commit; failures are never stored; a corrupt entry is ignored; manifests are recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripthut.config import Config
from scripthut.states import TaskState
from scripthut.store import Store
from tests.helpers import local_config
from tests.test_engine import run_doc


@pytest.fixture
def cached_config(data_dir: Path, tmp_path: Path) -> Config:
    config = local_config(data_dir)
    config.cache.directory = str(tmp_path / "store")
    return config


def task(work: Path, **extra: Any) -> dict[str, Any]:
    return {
        "id": "fit",
        "command": "echo ran >> runs.log; cat data.txt > model.txt; echo $MODE >> model.txt",
        "working_dir": str(work),
        "inputs": ["data.txt"],
        "outputs": ["model.txt"],
        "env": [{"set": {"MODE": "a"}}],
        **extra,
    }


def runs_of(work: Path) -> int:
    log = work / "runs.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def go(config: Config, doc: Any) -> tuple[str, Store]:
    return run_doc(config, doc, timeout=60)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "data.txt").write_text("data-1\n")
    return folder


def test_a_second_run_hits_and_restores(cached_config: Config, work: Path) -> None:
    run1, store = go(cached_config, [task(work)])
    assert store.task(run1, "fit").state == TaskState.COMPLETED and runs_of(work) == 1
    first = store.manifest(run1, "fit")
    assert first["cache"]["hit"] is False and first["cache"]["stored"] is True
    assert set(first["inputs"]) == {"data.txt"} and set(first["outputs"]) == {"model.txt"}
    assert first["manifest_version"] == 1 and first["exit_code"] == 0

    (work / "model.txt").unlink()
    run2, store = go(
        cached_config,
        [
            task(work),
            {"id": "after", "command": "cat model.txt", "working_dir": str(work), "deps": ["fit"]},
        ],
    )
    record = store.task(run2, "fit")
    assert record.state == TaskState.COMPLETED and "cached" in (record.reason or "")
    assert runs_of(work) == 1  # the command did not run again
    assert (work / "model.txt").read_text() == "data-1\na\n"
    assert store.task(run2, "after").state == TaskState.COMPLETED
    second = store.manifest(run2, "fit")
    assert second["cache"]["hit"] is True and second["cache"]["key"] == first["cache"]["key"]
    assert second["outputs"] == first["outputs"] and second["inputs"] == first["inputs"]


@pytest.mark.parametrize(
    "change",
    ["input", "command", "env"],
)
def test_a_change_misses(cached_config: Config, work: Path, change: str) -> None:
    go(cached_config, [task(work)])
    extra: dict[str, Any] = {}
    if change == "input":
        (work / "data.txt").write_text("data-2\n")
    elif change == "command":
        extra["command"] = task(work)["command"] + " "
    else:
        extra["env"] = [{"set": {"MODE": "b"}}]
    run2, store = go(cached_config, [task(work, **extra)])
    assert store.manifest(run2, "fit")["cache"]["hit"] is False
    assert runs_of(work) == 2


def test_failures_are_never_stored_and_resources_are_not_in_the_key(
    cached_config: Config, work: Path
) -> None:
    bad = task(work, command="echo ran >> runs.log; echo x > model.txt; exit 1")
    run1, store = go(cached_config, [bad])
    assert store.task(run1, "fit").state == TaskState.FAILED
    assert store.manifest(run1, "fit")["cache"]["stored"] is False
    go(cached_config, [task(work)])
    run3, store = go(cached_config, [task(work, cpus=2, memory="1G")])
    assert store.manifest(run3, "fit")["cache"]["hit"] is True
    assert runs_of(work) == 2


def test_unmatched_inputs_mean_no_caching(cached_config: Config, work: Path) -> None:
    doc = [task(work, inputs=["missing-*.csv"])]
    go(cached_config, doc)
    run2, store = go(cached_config, doc)
    assert runs_of(work) == 2
    assert store.manifest(run2, "fit")["cache"]["key"] is None


def test_a_corrupt_entry_is_ignored(cached_config: Config, work: Path) -> None:
    run1, store = go(cached_config, [task(work)])
    key = store.manifest(run1, "fit")["cache"]["key"]
    stored = Path(cached_config.cache.directory) / key / "files" / "model.txt"
    stored.write_text("tampered\n")
    run2, store = go(cached_config, [task(work)])
    assert store.manifest(run2, "fit")["cache"]["hit"] is False
    assert runs_of(work) == 2
    assert (work / "model.txt").read_text() == "data-1\na\n"


def test_concurrent_identical_tasks_leave_one_whole_entry(
    cached_config: Config, work: Path
) -> None:
    twins = [
        task(work, id=f"twin.{i}", command="sleep 0.3; cat data.txt > model.txt") for i in range(4)
    ]
    run1, store = go(cached_config, twins)
    stored = [store.manifest(run1, f"twin.{i}")["cache"]["stored"] for i in range(4)]
    assert stored.count(True) == 1, stored
    root = Path(cached_config.cache.directory)
    entries = [p for p in root.iterdir() if p.name != ".tmp"]
    assert len(entries) == 1 and not list((root / ".tmp").iterdir())
    assert (entries[0] / "files" / "model.txt").read_text() == "data-1\n"


def test_manifest_is_json_with_the_original_fields(cached_config: Config, work: Path) -> None:
    run1, store = go(cached_config, [task(work)])
    manifest = store.manifest(run1, "fit")
    assert set(manifest) >= {
        "manifest_version",
        "task",
        "inputs",
        "outputs",
        "cache",
        "executor",
        "run",
        "exit_code",
        "timing",
    }
    assert manifest["executor"]["backend"] == "local" and manifest["run"]["id"] == run1
    json.dumps(manifest)


def git(work: Path, *args: str) -> None:
    import subprocess

    subprocess.run(
        ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@e", *args],
        check=True,
        capture_output=True,
    )


@pytest.mark.parametrize(("scope", "hit"), [("commit", False), ("inputs", True)])
def test_a_new_commit_misses_only_with_scope_commit(
    cached_config: Config, work: Path, scope: str, hit: bool
) -> None:
    git(work, "init", "-q")
    git(work, "add", "data.txt")
    git(work, "commit", "-q", "-m", "one")
    go_at = {"base_dir": str(work)}
    run1, store = run_doc(cached_config, [task(work, cache_scope=scope)], **go_at)
    assert store.get_run(run1).document["git"]["sha"]
    git(work, "commit", "-q", "--allow-empty", "-m", "two")
    run2, store = run_doc(cached_config, [task(work, cache_scope=scope)], **go_at)
    assert store.manifest(run2, "fit")["cache"]["hit"] is hit
    assert (
        store.manifest(run2, "fit")["run"]["commit"] != store.manifest(run1, "fit")["run"]["commit"]
    )


def test_no_cache_runs_everything(cached_config: Config, work: Path) -> None:
    go(cached_config, [task(work)])
    run2, store = run_doc(cached_config, [task(work)], no_cache=True)
    assert store.manifest(run2, "fit")["cache"]["hit"] is False
    assert runs_of(work) == 2
