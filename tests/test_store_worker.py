"""Store work off the event loop: the worker thread, its connection, the collector's pauses."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path

from scripthut.states import RunState
from scripthut.store import RunRecord, Store, StoreWorker, drop_resident, keep_resident, release
from scripthut.store.worker import RESIDENT_THRESHOLD


def test_calls_run_in_one_thread_on_a_second_connection(tmp_path: Path) -> None:
    async def main() -> None:
        store = Store(tmp_path / "s.db")
        worker = StoreWorker(store.path)
        try:
            seen = await worker.call(lambda s: (threading.get_ident(), s is store, gc.isenabled()))
            again = await worker.call(lambda s: threading.get_ident(), heavy=True)
            assert seen[0] == again != threading.get_ident()
            assert seen[1:] == (False, True)
            paused = await worker.call(lambda s: gc.isenabled(), heavy=True)
            assert not paused  # paused while a heavy call runs ...
            assert gc.isenabled()  # ... and back on after
            run = RunRecord("r1", "wf", "local", RunState.PENDING, time.time())
            await worker.call(lambda s: s.insert_run(run, []))
            assert store.get_run("r1").name == "wf"  # written there, seen here
        finally:
            worker.close()
            store.close()

    asyncio.run(main())


def test_release_empties_a_list_in_pages() -> None:
    items = list(range(2_345))
    release(items)
    assert items == []


def test_a_large_resident_structure_is_kept_out_of_full_collections() -> None:
    assert gc.get_freeze_count() == 0
    keep_resident(1, RESIDENT_THRESHOLD - 1)  # small: nothing changes
    assert gc.get_freeze_count() == 0
    keep_resident(2, RESIDENT_THRESHOLD)
    keep_resident(3, RESIDENT_THRESHOLD)
    assert gc.get_freeze_count() > 0
    drop_resident(2)
    assert gc.get_freeze_count() > 0  # another is still resident
    drop_resident(3)
    drop_resident(1)  # never kept: ignored
    assert gc.get_freeze_count() == 0  # the collector has everything back
