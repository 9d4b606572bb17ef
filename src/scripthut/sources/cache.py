"""What syncs found, shared by every `Sources` of a process over one cache folder.

A process keeps one `Sources` per folder configuration (the global file plus a project
file), and they all share one `SyncCache`: the states read from and saved to the cache
folder, the syncs under way (joined across folders), and one lock per repository.

- A source's states are filed under its name and definition (`state_key`): two folders
  defining a source of the same name differently never see each other's clone.
- A file is read again when it changes on disk (another process synced), and saved by
  merging the one state that changed into what is on disk, under a lock on that file.
- Syncs of one repository (backend, clone folder, URL) are serialised, in this process
  by an asyncio lock and between processes on this machine (a Jupyter server, a CLI
  command, a notebook hosting its own engine) by a file lock in the cache folder; the
  sync script's own `flock` per commit guards the clone folder on the backend too.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from scripthut.config import SourceConfig
from scripthut.config.layers import Stamp, stamp
from scripthut.private import make_private_dirs
from scripthut.sources.script import key_id
from scripthut.sources.state import StateFiles, SyncState

LOCK_POLL = 0.1  # seconds between two tries of a repository lock another process holds
# what changes neither the clone nor the files a sync finds
_NOT_IDENTITY = frozenset({"description", "max_concurrent", "branch", "backend"})

Inflight = tuple[str, str, str | None]  # state key, backend, branch


def state_key(entry: SourceConfig) -> str:
    """The file a source's states are kept in: its name and what it syncs (URL or path,
    clone folder, glob, postclone, deploy key), not the branch or backend (one state each
    inside the file)."""
    identity = entry.model_dump(mode="json", exclude=set(_NOT_IDENTITY))
    return key_id(json.dumps(identity, sort_keys=True))


class SyncCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files = StateFiles(folder)
        self.inflight: dict[Inflight, asyncio.Task[SyncState]] = {}
        self._states: dict[str, tuple[Stamp, dict[str, SyncState]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def states(self, key: str) -> dict[str, SyncState]:
        """Every backend/branch state of a source, read again when its file changed."""
        current = stamp(self.files.path(key))
        kept = self._states.get(key)
        if kept is None or kept[0] != current:
            kept = (current, self.files.load(key))
            self._states[key] = kept
        return kept[1]

    async def record(self, key: str, which: str, state: SyncState) -> None:
        """Save one state, merged into what the file holds now (another process's too)."""
        self.states(key)[which] = state  # seen at once here, even before it is written
        merged = await asyncio.to_thread(self._merge, key, which, state)
        self._states[key] = merged

    def _merge(self, key: str, which: str, state: SyncState) -> tuple[Stamp, dict[str, SyncState]]:
        path = self.files.path(key)
        with _file_lock(path.with_suffix(".lock"), blocking=True):
            states = self.files.load(key)
            states[which] = state
            self.files.save(key, states)
            return stamp(path), states

    @contextlib.asynccontextmanager
    async def repository(self, backend: str, clone_dir: str, url: str) -> AsyncIterator[None]:
        """Hold the lock of one repository's clones on one backend."""
        name = key_id("\0".join((backend, clone_dir, url)))
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            path = self.folder / "locks" / f"{name}.lock"
            await asyncio.to_thread(make_private_dirs, path.parent)
            while True:
                with _file_lock(path, blocking=False) as held:
                    if held:
                        yield
                        return
                await asyncio.sleep(LOCK_POLL)


@contextlib.contextmanager
def _file_lock(path: Path, *, blocking: bool) -> Iterator[bool]:
    """An exclusive `flock` on `path` (created 0600); False when `blocking` is False and
    another open file holds it. The kernel frees it when its process ends."""
    make_private_dirs(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
