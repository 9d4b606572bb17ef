"""The broadcaster: one source for every listener, replay then live, drops and resumes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from scripthut.engine.events import EventBus
from scripthut.server import stream
from scripthut.server.stream import Broadcaster, Chunk, Listener, encode
from scripthut.store import EventRecord, Store


def commit(store: Store, bus: EventBus | None, n: int, run: str = "r1") -> list[EventRecord]:
    """What the engine does: persist events, then publish them."""
    events = store.append_events([("task", run, f"t{i}", {"state": "running"}) for i in range(n)])
    if bus is not None:
        bus.publish(events)
    return events


async def drain(listener: Listener, until: int, timeout: float = 10.0) -> list[int]:
    ids: list[int] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while not ids or ids[-1] < until:
        assert asyncio.get_running_loop().time() < deadline, ids[-5:]
        batch = await listener.next_batch(0.2)
        assert batch is not None
        ids += event_ids(batch)
    return ids


def event_ids(batch: list[Chunk]) -> list[int]:
    ids = [p.event.id for delivered in batch for p in delivered.packets]
    assert b"".join(c.sse for c in batch).count(b"id: ") == len(ids)  # frames match packets
    return ids


def run(tmp_path: Path, body: Callable[[Store, EventBus], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        store = Store.in_data_dir(tmp_path)
        try:
            return await body(store, EventBus())
        finally:
            store.close()

    return asyncio.run(main())


def test_frames_are_server_sent_events() -> None:
    event = EventRecord(7, 1.5, "task", "r", "t", {"reason": "line one\nline two"})
    frame = encode(event)
    assert frame.startswith(b"id: 7\ndata: ")
    assert frame.endswith(b"\n\n")
    assert frame.count(b"\n") == 3  # the newline in the value is escaped inside the JSON
    assert json.loads(frame.split(b"data: ", 1)[1]) == event.to_json()


def test_many_listeners_share_one_subscription(tmp_path: Path) -> None:
    async def body(store: Store, bus: EventBus) -> None:
        broadcaster = Broadcaster()
        broadcaster.attach(store, bus)
        await asyncio.sleep(0)
        listeners = [broadcaster.listen(None) for _ in range(50)]
        assert bus.subscriber_count == 1
        assert broadcaster.clients == 50
        events = commit(store, bus, 30)
        for listener in listeners:
            assert await drain(listener, events[-1].id) == [e.id for e in events]
        batch = await listeners[0].next_batch(0.05)
        assert batch == []  # nothing more: a heartbeat is due
        await broadcaster.close()
        assert bus.subscriber_count == 0
        assert await listeners[0].next_batch(1.0) is None

    run(tmp_path, body)


def test_replay_then_live_without_gap_or_duplicate(tmp_path: Path) -> None:
    async def body(store: Store, bus: EventBus) -> None:
        old = commit(store, bus, 2_500)  # more than one replay page
        broadcaster = Broadcaster()
        broadcaster.attach(store, bus)
        listener = broadcaster.listen(after=100)
        ids: list[int] = []
        for _ in range(4):  # new events arrive while the listener replays
            batch = await listener.next_batch(0.2)
            assert batch is not None
            ids += event_ids(batch)
            commit(store, bus, 7)
            await asyncio.sleep(0)
        last = commit(store, bus, 3)[-1].id
        ids += await drain(listener, last)
        assert ids == list(range(101, last + 1))
        assert old[-1].id == 2_500
        await broadcaster.close()

    run(tmp_path, body)


def test_a_slow_listener_is_dropped_and_can_resume(tmp_path: Path) -> None:
    async def body(store: Store, bus: EventBus) -> None:
        broadcaster = Broadcaster(buffer_size=10)
        broadcaster.attach(store, bus)
        await asyncio.sleep(0)
        slow, fast = broadcaster.listen(None), broadcaster.listen(None)
        first = commit(store, bus, 5)
        assert await drain(fast, first[-1].id) == [e.id for e in first]
        got = await slow.next_batch(1.0)
        assert got is not None
        seen = slow.last_id
        for _ in range(3):
            commit(store, bus, 5)
            await asyncio.sleep(0)  # the broadcaster delivers; `slow` does not read
            await fast.next_batch(0.2)
        assert slow.dropped
        assert await slow.next_batch(1.0) is None
        assert broadcaster.dropped == 1
        assert broadcaster.clients == 1
        resumed = broadcaster.listen(after=seen)
        assert await drain(resumed, store.last_event_id()) == list(range(seen + 1, 21))
        await broadcaster.close()

    run(tmp_path, body)


def test_a_lagged_engine_subscription_resyncs_from_the_store(tmp_path: Path) -> None:
    async def body(store: Store, bus: EventBus) -> None:
        broadcaster = Broadcaster(buffer_size=20_000)
        broadcaster.attach(store, bus)
        await asyncio.sleep(0)
        listener = broadcaster.listen(None)
        burst = commit(store, bus, 10_050)  # more than the subscription's queue holds
        more = commit(store, bus, 5)
        assert await drain(listener, more[-1].id) == list(range(1, more[-1].id + 1))
        assert burst[-1].id == 10_050
        await broadcaster.close()

    run(tmp_path, body)


def test_without_the_engine_events_are_read_from_the_store(tmp_path: Path) -> None:
    async def body(store: Store, bus: EventBus) -> None:
        broadcaster = Broadcaster(store_poll=0.05)
        broadcaster.attach(store, None)
        listener = broadcaster.listen(None)
        other = Store.in_data_dir(tmp_path)  # another process, writing
        try:
            written = commit(other, None, 12)
            assert await drain(listener, written[-1].id) == [e.id for e in written]
        finally:
            other.close()
        await broadcaster.close()

    run(tmp_path, body)


def test_a_listener_can_follow_one_run(tmp_path: Path) -> None:
    async def body(store: Store, bus: EventBus) -> None:
        broadcaster = Broadcaster()
        broadcaster.attach(store, bus)
        commit(store, bus, 3, run="a")
        commit(store, bus, 3, run="b")
        replaying = broadcaster.listen(after=0, run="b")
        live = broadcaster.listen(None, run="a")
        late = commit(store, bus, 2, run="a")
        assert await drain(replaying, 6) == [4, 5, 6]
        assert await drain(live, late[-1].id) == [e.id for e in late]
        await broadcaster.close()

    run(tmp_path, body)


def test_concurrent_replays_take_turns_over_shared_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten clients replaying a history of many pages (some resuming mid-page) each get
    every event once and in order, while new events arrive; the store is read once per
    complete page, not once per page and client."""
    reads: list[int] = []
    original = stream.read_page

    def counted(store: Store, index: int) -> stream.Page:
        reads.append(index)
        return original(store, index)

    monkeypatch.setattr(stream, "read_page", counted)

    async def body(store: Store, bus: EventBus) -> None:
        history = commit(store, bus, stream.REPLAY_PAGE * 6 + 37)
        broadcaster = Broadcaster(buffer_size=100_000)
        broadcaster.attach(store, bus)
        starts = [0, 0, 0, 1, 199, 200, 201, 555, 0, 1_000]
        listeners = [broadcaster.listen(after=a) for a in starts]

        async def follow(listener: Listener, until: int) -> list[int]:
            return await drain(listener, until, timeout=30)

        followers = [asyncio.create_task(follow(x, history[-1].id + 20)) for x in listeners]
        for _ in range(4):  # new events while they replay
            commit(store, bus, 5)
            await asyncio.sleep(0)
        results = await asyncio.gather(*followers)
        last = store.last_event_id()
        for start, ids in zip(starts, results, strict=True):
            assert ids == list(range(start + 1, last + 1))
        pages = len(history) // stream.REPLAY_PAGE + 1
        # complete pages are read once for all; only the last, open one per client
        assert len(reads) <= pages + 2 * len(starts) < len(starts) * pages
        await broadcaster.close()

    run(tmp_path, body)


def test_replay_skips_pruned_events_and_gaps(tmp_path: Path) -> None:
    async def body(store: Store, bus: EventBus) -> None:
        commit(store, bus, stream.REPLAY_PAGE * 3)
        store.prune_events(keep=stream.REPLAY_PAGE + 10)  # whole pages gone from the start
        broadcaster = Broadcaster()
        broadcaster.attach(store, bus)
        listener = broadcaster.listen(after=0)
        last = store.last_event_id()
        assert await drain(listener, last) == list(range(last - stream.REPLAY_PAGE - 9, last + 1))
        late = commit(store, bus, 3)
        assert await drain(listener, late[-1].id) == [e.id for e in late]
        await broadcaster.close()

    run(tmp_path, body)


def test_a_burst_from_the_engine_arrives_whole_and_in_order(tmp_path: Path) -> None:
    """A burst larger than one slice (a 100,000-task cancel) is delivered in slices."""

    async def body(store: Store, bus: EventBus) -> None:
        broadcaster = Broadcaster(buffer_size=100_000)
        broadcaster.attach(store, bus)
        await asyncio.sleep(0)
        listener = broadcaster.listen(None)
        burst = commit(store, bus, stream.REPLAY_PAGE * 5 + 3)
        assert await drain(listener, burst[-1].id) == [e.id for e in burst]
        await broadcaster.close()

    run(tmp_path, body)


def test_closing_ends_a_stream_still_replaying(tmp_path: Path) -> None:
    async def body(store: Store, bus: EventBus) -> None:
        commit(store, bus, stream.REPLAY_PAGE * 3)
        broadcaster = Broadcaster()
        broadcaster.attach(store, bus)
        listener = broadcaster.listen(after=0)
        first = await listener.next_batch(1.0)
        assert first is not None and event_ids(first)[0] == 1
        await broadcaster.close()
        assert await listener.next_batch(1.0) is None

    run(tmp_path, body)
