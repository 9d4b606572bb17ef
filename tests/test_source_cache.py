"""One sources cache shared by several folder configurations and processes: a real bare
repository synced by real bash on this machine's shell.

Two folders defining a source of the same name differently each keep their own clone; the
same definition from two folders is one sync; a sync waits for the repository lock another
process holds; states saved by two processes are merged, and each sees the other's."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from scripthut.config import Config
from scripthut.sources import Sources, SyncCache, SyncState
from scripthut.sources.cache import state_key
from scripthut.transport import LocalTransport
from scripthut.transport.base import DEFAULT_TIMEOUT, CommandResult
from tests.test_sources import git

FLOW = {"tasks": [{"id": "a", "command": "true"}]}


def bare_repo(tmp_path: Path, name: str, data: str) -> Path:
    bare, work = tmp_path / f"{name}.git", tmp_path / f"{name}-work"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("init", "-q", "-b", "main", str(work), cwd=tmp_path)
    (work / ".hut" / "workflows").mkdir(parents=True)
    (work / ".hut" / "workflows" / f"{name}.json").write_text(json.dumps(FLOW))
    (work / "data.txt").write_text(data)
    git("add", "-A", cwd=work)
    git("commit", "-qm", data, cwd=work)
    git("push", "-q", str(bare), "main", cwd=work)
    return bare


def folder_config(tmp_path: Path, url: Path, **source: Any) -> Config:
    """What one folder's configuration says (the same global settings and cache)."""
    entry = {"name": "demo", "type": "git", "url": str(url), **source}
    entry.setdefault("clone_dir", str(tmp_path / "clones"))
    return Config.model_validate(
        {
            "backends": [{"name": "local", "type": "local"}],
            "sources": [entry],
            "settings": {"data_dir": str(tmp_path / "data")},
        }
    )


class CountingShell(LocalTransport):
    """This machine's shell, counting the scripts it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts = 0

    async def run_script(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        self.scripts += 1
        return await super().run_script(script, timeout=timeout)


def test_two_folders_naming_different_repositories_alike_keep_their_own(tmp_path: Path) -> None:
    first, second = bare_repo(tmp_path, "first", "one\n"), bare_repo(tmp_path, "second", "two\n")
    shell = CountingShell()
    cache = SyncCache(tmp_path / "data" / "sources")
    a = Sources(folder_config(tmp_path, first), lambda _b: shell, cache=cache)
    b = Sources(folder_config(tmp_path, second), lambda _b: shell, cache=cache)

    async def both() -> list[SyncState]:
        return list(await asyncio.gather(a.sync("demo"), b.sync("demo")))

    one, two = asyncio.run(both())
    assert one.error is None and two.error is None, (one, two)
    assert [f.path for f in one.files] == [".hut/workflows/first.json"]
    assert [f.path for f in two.files] == [".hut/workflows/second.json"]
    assert one.sha != two.sha and shell.scripts == 2
    assert a.listing()["sources"][0]["syncs"][0]["sha"] == one.sha
    assert b.listing()["sources"][0]["syncs"][0]["sha"] == two.sha
    files = sorted(p.name for p in cache.folder.glob("*.json"))
    assert len(files) == 2 and state_key(a.entry("demo")) != state_key(b.entry("demo"))


def test_the_same_source_from_two_folders_is_one_sync(tmp_path: Path) -> None:
    url = bare_repo(tmp_path, "repo", "one\n")
    shell = CountingShell()
    cache = SyncCache(tmp_path / "data" / "sources")
    a = Sources(folder_config(tmp_path, url, description="A"), lambda _b: shell, cache=cache)
    b = Sources(folder_config(tmp_path, url, description="B"), lambda _b: shell, cache=cache)

    async def both() -> list[SyncState]:
        return list(await asyncio.gather(a.sync("demo"), b.sync("demo")))

    one, two = asyncio.run(both())
    assert one == two and one.error is None and shell.scripts == 1


HOLDER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from scripthut.sources import SyncCache

    async def hold() -> None:
        cache = SyncCache(Path(sys.argv[1]))
        async with cache.repository("local", sys.argv[2], sys.argv[3]):
            Path(sys.argv[4]).touch()
            while not Path(sys.argv[5]).exists():
                await asyncio.sleep(0.05)

    asyncio.run(hold())
    """
)


def test_a_sync_waits_for_the_repository_lock_another_process_holds(tmp_path: Path) -> None:
    url = bare_repo(tmp_path, "repo", "one\n")
    conf = folder_config(tmp_path, url)
    held, release = tmp_path / "held", tmp_path / "release"
    args = [str(conf.sources_cache_dir), str(tmp_path / "clones"), str(url), str(held)]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, *args, str(release)])
    try:
        deadline = time.monotonic() + 60
        while not held.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        syncs = Sources(conf, lambda _b: LocalTransport())

        async def sync_after_release() -> SyncState:
            task = asyncio.create_task(syncs.sync("demo"))
            await asyncio.sleep(1.0)
            assert not task.done()  # waiting for the other process
            assert not (tmp_path / "clones").exists()
            release.touch()
            return await task

        state = asyncio.run(sync_after_release())
        assert holder.wait(timeout=30) == 0
    finally:
        release.touch()
        holder.wait(timeout=30)
    assert state.error is None and state.root == str(tmp_path / "clones" / str(state.sha))


def test_states_two_processes_save_are_merged_and_seen(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    mine, theirs = SyncCache(folder), SyncCache(folder)  # two processes' caches
    key = "k"
    assert theirs.states(key) == {}  # read before the other one saves

    async def save() -> None:
        await mine.record(key, "local\nmain", SyncState("demo", "local", "main", sha="a" * 40))
        await theirs.record(key, "local\ndev", SyncState("demo", "local", "dev", sha="b" * 40))

    asyncio.run(save())
    on_disk = json.loads((folder / f"{key}.json").read_text())
    assert sorted(on_disk) == ["local\ndev", "local\nmain"]
    assert sorted(mine.states(key)) == ["local\ndev", "local\nmain"]  # read again
    assert (folder / f"{key}.json").stat().st_mode & 0o777 == 0o600
    assert not list(folder.glob("*.tmp"))
