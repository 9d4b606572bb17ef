"""Engine.reload: a new configuration without a restart, on a real store and local jobs.

Backends appear and go (their runs stranded, then driven again with the jobs they had),
changed env rules apply to jobs not yet built, and a project file's rules apply to runs
started from its folder only.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripthut.config import Config, ConfigSource
from scripthut.engine.engine import Engine
from scripthut.states import RunState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SCRIPTHUT_CONFIG", "SCRIPTHUT_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def write_global(tmp_path: Path, *, other: bool = True, x: str = "old") -> Path:
    backends: list[dict[str, Any]] = [{"name": "local", "type": "local", "max_concurrent": 4}]
    if other:
        backends.append({"name": "other", "type": "local", "max_concurrent": 4})
    data = {
        "backends": backends,
        "env": [{"set": {"X": x}}],
        "settings": {"data_dir": "data", "poll_interval": 1},
    }
    path = tmp_path / "xdg" / "scripthut" / "scripthut.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def gated(out: Path, flag: Path) -> list[dict[str, Any]]:
    """Task a waits for `flag`; both write $X into `out`/<id>.txt."""
    wait = f"while [ ! -e '{flag}' ]; do sleep 0.05; done"
    return [
        {"id": "a", "command": f"{wait}; echo \"$X\" > '{out}/a.txt'"},
        {"id": "b", "command": f"echo \"$X\" > '{out}/b.txt'", "deps": ["a"]},
    ]


async def until(predicate: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def run_engine(tmp_path: Path, body: Any) -> None:
    source = ConfigSource(start=tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir(exist_ok=True)

    async def main() -> None:
        config = source.load()
        store = Store.in_data_dir(config.data_dir)
        engine = Engine(config, store, min_poll_interval=0.1)
        await engine.start()
        try:
            await body(engine, store, source)
        finally:
            await engine.stop()
            store.close()

    asyncio.run(main())


def test_changed_env_rules_apply_to_jobs_not_yet_built(tmp_path: Path) -> None:
    write_global(tmp_path, x="old")
    out, flag = tmp_path / "out", tmp_path / "flag"
    out.mkdir()

    async def body(engine: Engine, store: Store, source: ConfigSource) -> None:
        run = engine.submit(parse_document(gated(out, flag)), backend="local")
        await until(lambda: store.attempts(run.id), "task a to be submitted")
        write_global(tmp_path, x="new")
        plan = await engine.reload(source.load())
        assert plan.to_json() == {"added": [], "removed": [], "reconnected": [], "resized": {}}
        flag.touch()
        assert (await engine.wait(run.id, timeout=30)).state == RunState.COMPLETED
        assert (out / "a.txt").read_text() == "old\n"  # submitted before: untouched
        assert (out / "b.txt").read_text() == "new\n"

    run_engine(tmp_path, body)


def test_a_removed_backend_strands_its_run_and_its_return_resumes_it(tmp_path: Path) -> None:
    write_global(tmp_path, other=True)
    out, flag = tmp_path / "out", tmp_path / "flag"
    out.mkdir()

    async def body(engine: Engine, store: Store, source: ConfigSource) -> None:
        run = engine.submit(parse_document(gated(out, flag)), backend="other")
        await until(lambda: store.attempts(run.id), "task a to be submitted")
        write_global(tmp_path, other=False)
        plan = await engine.reload(source.load())
        assert plan.removed == ["other"]
        assert "other" not in engine.slots and run.id not in engine.runs
        assert store.get_run(run.id).message == "backend 'other' is not configured"
        # Another run on a backend that stays is driven meanwhile.
        fine = engine.submit(parse_document([{"id": "t", "command": "true"}]), backend="local")
        assert (await engine.wait(fine.id, timeout=30)).state == RunState.COMPLETED
        flag.touch()  # the job goes on and ends while nothing polls it
        await until(lambda: (out / "a.txt").exists(), "the job of task a to end")
        assert not (out / "b.txt").exists()
        assert store.get_run(run.id).state == RunState.RUNNING
        write_global(tmp_path, other=True)
        plan = await engine.reload(source.load())
        assert plan.added == ["other"]
        assert (await engine.wait(run.id, timeout=30)).state == RunState.COMPLETED
        assert store.get_run(run.id).message is None
        assert [a.attempt for a in store.attempts(run.id) if a.task_id == "a"] == [1]

    run_engine(tmp_path, body)


def test_a_changed_limit_applies_at_once(tmp_path: Path) -> None:
    write_global(tmp_path)

    async def body(engine: Engine, store: Store, source: ConfigSource) -> None:
        path = tmp_path / "xdg" / "scripthut" / "scripthut.yaml"
        data = yaml.safe_load(path.read_text())
        data["backends"][0]["max_concurrent"] = 1
        path.write_text(yaml.safe_dump(data))
        plan = await engine.reload(source.load())
        assert plan.resized == {"local": 1}
        assert engine.registry.get("local").max_concurrent == 1

    run_engine(tmp_path, body)


def test_a_project_file_changes_runs_from_its_folder_only(tmp_path: Path) -> None:
    write_global(tmp_path, x="global")
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "scripthut.yaml").write_text(
        "env:\n  - set: {X: project}\nbackends:\n  - name: local\n    env:\n"
        "      - set: {Y: from-project}\n"
    )
    outs = {name: tmp_path / name for name in ("in_repo", "outside")}
    for path in outs.values():
        path.mkdir()

    async def body(engine: Engine, store: Store, source: ConfigSource) -> None:
        runs = {}
        for name, base in (("in_repo", repo / "sub"), ("outside", tmp_path / "elsewhere")):
            doc = [{"id": "t", "command": f"echo \"$X $Y\" > '{outs[name]}/t.txt'"}]
            runs[name] = engine.submit(parse_document(doc), backend="local", base_dir=str(base))
        for run in runs.values():
            assert (await engine.wait(run.id, timeout=30)).state == RunState.COMPLETED
        assert (outs["in_repo"] / "t.txt").read_text() == "project from-project\n"
        assert (outs["outside"] / "t.txt").read_text() == "global \n"

    run_engine(tmp_path, body)


def test_configs_per_folder_are_read_once_per_version(tmp_path: Path) -> None:
    write_global(tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    project = repo / "scripthut.yaml"
    project.write_text("env:\n  - set: {X: one}\n")
    config: Config = ConfigSource(start=tmp_path).load()
    first = config.for_folder(repo)
    assert first is config.for_folder(repo)
    assert [r.set for r in first.env] == [{"X": "old"}, {"X": "one"}]
    project.write_text("env:\n  - set: {X: two, Z: longer}\n")
    assert [r.set for r in config.for_folder(repo).env][-1] == {"X": "two", "Z": "longer"}
    # A broken edit keeps the last good reading, and a new run from there is refused.
    project.write_text("env:\n  - sett: {X: three}\n")
    assert [r.set for r in config.for_folder(repo).env][-1] == {"X": "two", "Z": "longer"}
    with pytest.raises(Exception, match="unknown key 'sett'") as caught:
        config.for_folder(repo, strict=True)
    assert "line 2" in str(caught.value)
    assert config.layers.problems()


def test_a_kernel_hosting_its_engine_reads_its_notebook_folders_project_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scripthut.client.local import LocalClient

    write_global(tmp_path, x="global")
    notebooks = tmp_path / "repo" / "notebooks"
    notebooks.mkdir(parents=True)
    (tmp_path / "repo" / "scripthut.yaml").write_text("env:\n  - set: {X: project}\n")
    monkeypatch.chdir(notebooks)  # a kernel runs in its notebook's folder
    client = LocalClient(data_dir=str(tmp_path / "kernel-data"))
    try:
        out = tmp_path / "x.txt"
        run = client.submit([{"id": "t", "command": f"echo \"$X\" > '{out}'"}])
        assert client.wait(run["id"], timeout=30)["state"] == "completed"
        assert out.read_text() == "project\n"
        files = client.service.config_json()["files"]
        assert [f["layer"] for f in files] == ["global", "project"]
    finally:
        client.close()


def test_an_engine_hosted_by_the_cli_follows_edits(tmp_path: Path) -> None:
    from scripthut.cli.session import open_session

    write_global(tmp_path, other=False)
    (tmp_path / "elsewhere").mkdir()

    async def main() -> None:
        with open_session(None, host_engine=True) as session:
            await session.start()
            try:
                assert session.engine is not None
                assert [b.name for b in session.engine.config.backends] == ["local"]
                write_global(tmp_path, other=True)
                await until(
                    lambda: (
                        [b.name for b in session.engine.config.backends]  # type: ignore[union-attr]
                        == ["local", "other"]
                    ),
                    "the hosted engine to take the edit",
                )
                path = tmp_path / "xdg" / "scripthut" / "scripthut.yaml"
                path.write_text("backends: [oops\n")  # broken: the running config stays
                await asyncio.sleep(2.5)
                assert [b.name for b in session.engine.config.backends] == ["local", "other"]
            finally:
                await session.stop()

    asyncio.run(main())
