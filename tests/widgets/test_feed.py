"""Widgets over the real in-process client: snapshot, resync, patches from the feed thread."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from scripthut.client.local import LocalClient
from scripthut.widgets import CostView, JobTable, RunView, Timeline
from tests.widgets.conftest import RecordingComm, apply, front_end, ready, wait_for

pytestmark = pytest.mark.usefixtures("recording_comm")

FLOW = [
    {"id": "prep", "command": "echo preparing; sleep 0.5"},
    *({"id": f"sim.{i}", "command": f"echo sim {i}", "deps": ["prep"]} for i in range(3)),
    {"id": "report", "command": "echo done >&2", "deps": ["sim.*"]},
]


def comm_of(widget: Any) -> RecordingComm:
    assert isinstance(widget.comm, RecordingComm)
    return widget.comm


def test_the_first_snapshot_travels_with_the_widget_and_resync_sends_another(
    client: LocalClient,
) -> None:
    run = client.submit(FLOW, name="demo")
    view = RunView(run["id"][:12], client=client)  # a unique prefix is enough
    try:
        assert view.run_id == run["id"]
        opened = comm_of(view).sent[0]
        assert opened.msg_type == "comm_open"
        first = opened.data["state"]["_snapshot"]
        assert first["type"] == "snapshot"
        assert first["meta"]["id"] == run["id"]
        assert {r["id"] for r in first["tables"]["tasks"]["rows"]} == {t["id"] for t in FLOW}
        assert opened.data["state"]["_kind"] == "runview"
        before = view._snapshot["seq"]
        front_end(view, {"type": "resync"})
        latest = comm_of(view).snapshots()[-1]
        assert latest["seq"] == before + 1
        assert latest["tables"]["tasks"]["key"] == "id"
    finally:
        view.close()


def test_after_ready_updates_are_patches_of_changed_fields_only(client: LocalClient) -> None:
    run = client.submit(FLOW, name="demo")
    view = RunView(run["id"], client=client)
    try:
        ready(view)
        baseline = view._snapshot
        client.wait(run["id"], timeout=60)
        done = wait_for(
            lambda: apply(baseline, comm_of(view).customs())["meta"].get("state") == "completed",
            what="the run's end in the patches",
        )
        assert done
        patches = [m for m in comm_of(view).customs() if m["type"] == "patch"]
        assert patches
        for patch in patches:
            for row in patch.get("tables", {}).get("tasks", {}).get("set", []):
                assert "deps" not in row and "name" not in row  # never re-sent: unchanged
        held = apply(baseline, comm_of(view).customs())
        assert {k: r["state"] for k, r in held["tables"]["tasks"].items()} == dict.fromkeys(
            (t["id"] for t in FLOW), "completed"
        )
        assert held["meta"]["counts"] == {"completed": len(FLOW)}
        # what the front end holds is what the kernel holds
        assert held["tables"]["tasks"] == view.source.rows["tasks"]
    finally:
        view.close()


def test_before_ready_the_feed_publishes_snapshots_not_patches(client: LocalClient) -> None:
    run = client.submit(FLOW, name="demo")
    view = RunView(run["id"], client=client)
    try:
        client.wait(run["id"], timeout=60)
        wait_for(
            lambda: view._snapshot["meta"]["state"] == "completed",
            what="a snapshot of the finished run",
        )
        assert not [m for m in comm_of(view).customs() if m["type"] == "patch"]
        assert len(comm_of(view).snapshots()) >= 2
    finally:
        view.close()


def test_patches_flow_from_the_feed_thread_while_the_main_thread_is_blocked(
    client: LocalClient,
) -> None:
    run = client.submit([{"id": "a", "command": "sleep 1"}, {"id": "b", "command": "true"}])
    view = RunView(run["id"], client=client)
    try:
        ready(view)
        start = time.monotonic()
        blocked = threading.Event()
        blocked.wait(6.0)  # the main thread does nothing at all for 6 s
        end = time.monotonic()
        during = [s for s in comm_of(view).sent if start <= s.at <= end]
        patches = [s for s in during if s.data.get("content", {}).get("type") == "patch"]
        assert patches, "no patch was sent while the main thread was blocked"
        assert {s.thread for s in patches} == {"scripthut-widget-feed"}
        baseline = view._snapshot
        held = apply(baseline, [s.data["content"] for s in patches])
        assert held["meta"]["state"] == "completed"
    finally:
        view.close()


def test_requests_are_answered_from_a_worker(client: LocalClient) -> None:
    run = client.submit(FLOW, name="demo")
    client.wait(run["id"], timeout=60)
    view = RunView(run["id"], client=client)
    try:
        asks = [
            {"id": 1, "op": "log", "args": {"run": run["id"], "task": "prep"}},
            {"id": 2, "op": "log", "args": {"run": run["id"], "task": "report", "error": True}},
            {"id": 3, "op": "script", "args": {"run": run["id"], "task": "sim.1"}},
            {"id": 4, "op": "env", "args": {"run": run["id"], "task": "sim.1"}},
            {"id": 5, "op": "task", "args": {"run": run["id"], "task": "report"}},
            {"id": 6, "op": "log", "args": {"run": run["id"], "task": "nosuch"}},
            {"id": 7, "op": "format_disk", "args": {}},
            {"id": 8, "op": "log", "args": {"run": run["id"], "task": "prep", "offset": 3}},
        ]
        for ask in asks:
            front_end(view, {"type": "request", **ask})
        replies = wait_for(
            lambda: (
                (r := {m["id"]: m for m in comm_of(view).customs() if m["type"] == "reply"})
                and len(r) == len(asks)
                and r
            ),
            what="every reply",
        )
        assert replies[1]["ok"] and replies[1]["data"]["text"] == "preparing\n"
        assert replies[2]["data"]["text"] == "done\n"
        assert "echo sim 1" in replies[3]["data"]
        assert replies[4]["data"]["values"]["SCRIPTHUT_RUN_ID"]["value"] == run["id"]
        assert replies[5]["data"]["deps"] == ["sim.0", "sim.1", "sim.2"]
        assert replies[6]["ok"] is False and "nosuch" in replies[6]["error"]
        assert replies[7] == {
            "type": "reply",
            "id": 7,
            "ok": False,
            "error": "unknown request 'format_disk'",
        }
        assert replies[8]["data"]["text"] == "paring\n"
    finally:
        view.close()


def test_job_table_lists_jobs_and_cancels_one(client: LocalClient) -> None:
    run = client.submit([{"id": "long", "command": "sleep 60"}, {"id": "quick", "command": "true"}])
    wait_for(lambda: client.jobs(state="running"), what="a running job")
    table = JobTable(client=client, run=run["id"])
    try:
        ready(table)
        assert table.filters == {"backend": "", "state": "", "run": run["id"], "text": ""}
        jobs = table.source.rows["jobs"]
        long_key = next(k for k, r in jobs.items() if r["task"] == "long")
        assert jobs[long_key]["source"] == "scripthut"
        job_id = jobs[long_key]["job_id"]
        front_end(
            table,
            {
                "type": "request",
                "id": 1,
                "op": "cancel_job",
                "args": {"backend": "local", "job_id": job_id},
            },
        )
        wait_for(lambda: [m for m in comm_of(table).customs() if m.get("id") == 1], what="reply")
        baseline = table._snapshot
        held = wait_for(
            lambda: (
                (h := apply(baseline, comm_of(table).customs()))["tables"]["jobs"]
                .get(long_key, {})
                .get("state")
                == "cancelled"
                and h
            ),
            what="the cancelled job in the patches",
        )
        assert held["tables"]["jobs"][long_key]["state"] == "cancelled"
        assert "cancelled" in table.summary_text()
    finally:
        table.close()
        client.cancel(run["id"])


def test_timeline_and_cost_views(client: LocalClient) -> None:
    run = client.submit(
        [
            {"id": "a", "command": "sleep 0.3", "partition": "cpu"},
            {"id": "b", "command": "sleep 0.3", "partition": "gpu", "deps": ["a"]},
            {"id": "c", "command": "true", "partition": "debug", "deps": ["a"]},
        ]
    )
    client.wait(run["id"], timeout=60)
    pricing = {"prices": {"c5": 3600.0, "gpu": 7200.0}, "partitions": {"cpu": "c5"}}
    cost = CostView(run["id"], client=client, pricing=pricing)
    timeline = Timeline(run["id"], client=client)
    recent = Timeline(client=client)
    try:
        meta = cost.source.current_meta()
        assert (meta["costed"], meta["tasks"]) == (2, 3)
        rows = cost.source.rows["tasks"]
        assert rows["a"]["priced_as"] == "c5" and rows["b"]["priced_as"] == "gpu"
        assert rows["c"]["cost"] is None
        assert rows["a"]["cost"] == pytest.approx(rows["a"]["hours"] * 3600.0, rel=1e-3)
        assert meta["total"] == pytest.approx(rows["a"]["cost"] + rows["b"]["cost"], rel=1e-3)
        assert "2 of 3 tasks costed" in cost.summary_text()
        bars = timeline.source.rows["bars"]
        assert set(bars) == {f"{run['id']}/{t}" for t in "abc"}
        assert {b["backend"] for b in bars.values()} == {"local"}
        assert all(b["ended_at"] >= b["started_at"] for b in bars.values())
        assert set(recent.source.rows["bars"]) == set(bars)
    finally:
        cost.close()
        timeline.close()
        recent.close()


def test_a_widget_for_an_unknown_run_raises_and_leaves_no_feed(client: LocalClient) -> None:
    from scripthut.errors import NotFound

    before = {t.name for t in threading.enumerate()}
    with pytest.raises(NotFound):
        RunView("nosuchrun", client=client)
    assert "scripthut-widget-feed" not in {t.name for t in threading.enumerate()} - before


def test_one_event_stream_per_client_closed_with_the_last_widget(client: LocalClient) -> None:
    from scripthut.widgets.feed import hub_for

    run = client.submit([{"id": "a", "command": "true"}])
    first = RunView(run["id"], client=client)
    second = JobTable(client=client)
    hub = hub_for(client)
    assert first._feed._hub is hub and second._feed._hub is hub
    assert hub.running
    thread = hub._thread
    first.close()
    assert hub.running and hub._thread is thread
    second.close()
    assert thread is not None
    thread.join(timeout=10)
    assert not hub.running
    third = RunView(run["id"], client=client)  # a new widget opens a new stream
    try:
        assert hub.running
    finally:
        third.close()
