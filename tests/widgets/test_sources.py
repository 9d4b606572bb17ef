"""Sources apply events and refreshes to their rows, and record which keys they touched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripthut.client.local import LocalClient
from scripthut.widgets import JobTable, RunView
from scripthut.widgets.sources import JobsListing, JobsSource, RunSource, TimelineSource
from tests.helpers import SECRET_TOKEN, SECRET_WORKFLOW, assert_no_secret
from tests.widgets.conftest import CONFIG, apply, front_end, wait_for
from tests.widgets.test_feed import comm_of


class Reads:
    """Just the reads a source makes at load (runs, run, jobs), from fixed data."""

    def __init__(self, runs: list[dict[str, Any]], jobs: list[dict[str, Any]]) -> None:
        self._runs = runs
        self._jobs = jobs

    def runs(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "tasks"} for r in self._runs]

    def run(self, run_id: str, *, tasks: bool = True) -> dict[str, Any]:
        return next(r for r in self._runs if r["id"].startswith(run_id))

    def jobs(self, **_: Any) -> list[dict[str, Any]]:
        return list(self._jobs)


def external(job_id: str, state: str = "running") -> dict[str, Any]:
    return {"backend": "hpc", "job_id": job_id, "state": state, "source": "external", "user": "bob"}


RUN = {
    "id": "r1",
    "name": "fits",
    "backend": "hpc",
    "state": "running",
    "counts": {"running": 1, "pending": 1},
    "total": 2,
    "tasks": [
        {
            "id": "a",
            "name": "A",
            "state": "running",
            "job_id": "101",
            "deps": [],
            "started_at": 5.0,
        },
        {"id": "b", "name": "B", "state": "pending", "job_id": None, "deps": ["a"]},
    ],
}


def test_jobs_from_the_run_events_and_the_queue() -> None:
    reads = Reads(
        [RUN],
        [external("900"), {**external("101"), "source": "scripthut", "run": "r1", "task": "a"}],
    )
    source = JobsSource()
    source.load(reads)  # type: ignore[arg-type]
    assert source.take_touched() is None  # a load is compared in full
    jobs = source.rows["jobs"]
    assert set(jobs) == {"hpc/101", "hpc/900"}
    assert jobs["hpc/101"]["name"] == "A" and jobs["hpc/101"]["state"] == "running"
    assert jobs["hpc/900"]["source"] == "external" and jobs["hpc/900"]["user"] == "bob"

    assert source.apply(
        {"kind": "task", "run": "r1", "task": "b", "state": "submitted", "job_id": "102"}
    )
    assert source.apply(
        {"kind": "task", "run": "r1", "task": "a", "state": "completed", "ended_at": 9.0}
    )
    assert source.take_touched() == {"jobs": {"hpc/101", "hpc/102"}}
    assert jobs["hpc/102"]["state"] == "pending" and jobs["hpc/102"]["name"] == "B"
    assert jobs["hpc/101"]["state"] == "completed"

    # The queue read later still lists 101 as running: the newer event wins; 900 left.
    source.merge(
        [{**external("101"), "source": "scripthut", "run": "r1", "task": "a", "node": "n7"}]
    )
    assert jobs["hpc/101"]["state"] == "completed" and jobs["hpc/101"]["node"] == "n7"
    assert "hpc/900" not in jobs
    assert "hpc/102" in jobs  # ScriptHut's own jobs stay (they end through events)


def test_a_rerun_starts_a_new_row_and_keeps_the_old_one() -> None:
    source = JobsSource(run="r1")
    source.load(Reads([{**RUN, "state": "failed"}], []))  # type: ignore[arg-type]
    source.apply({"kind": "task", "run": "r1", "task": "a", "state": "failed", "ended_at": 9.0})
    assert not source.apply(
        {"kind": "task", "run": "r1", "task": "a", "state": "pending", "job_id": None}
    )
    source.apply({"kind": "task", "run": "r1", "task": "a", "state": "submitted", "job_id": "201"})
    jobs = source.rows["jobs"]
    assert jobs["hpc/101"]["state"] == "failed"
    assert jobs["hpc/201"]["state"] == "pending"


def test_new_runs_take_their_backend_from_run_created() -> None:
    source = JobsSource()
    source.load(Reads([], []))  # type: ignore[arg-type]
    source.apply(
        {"kind": "run_created", "run": "r9", "backend": "gpu", "name": "x", "state": "pending"}
    )
    source.apply({"kind": "task", "run": "r9", "task": "t", "state": "running", "job_id": "7"})
    assert source.rows["jobs"]["gpu/7"]["state"] == "running"


def test_history_keeps_the_most_recent_finished_jobs() -> None:
    source = JobsSource(history=3)
    source.load(Reads([], []))  # type: ignore[arg-type]
    for i in range(5):
        source.apply({"kind": "run_created", "run": "r", "backend": "b"})
        source.apply(
            {"kind": "task", "run": "r", "task": f"t{i}", "state": "running", "job_id": str(i)}
        )
        source.apply(
            {
                "kind": "task",
                "run": "r",
                "task": f"t{i}",
                "state": "completed",
                "ended_at": float(i),
            }
        )
    source.merge([])
    assert sorted(source.rows["jobs"]) == ["b/2", "b/3", "b/4"]


def test_run_source_applies_task_run_and_added_events() -> None:
    source = RunSource("r1")
    source.load(Reads([RUN], []))  # type: ignore[arg-type]
    source.take_touched()
    assert not source.apply({"kind": "task", "run": "other", "task": "a", "state": "failed"})
    source.apply({"id": 77, "kind": "task", "run": "r1", "task": "a", "state": "completed"})
    source.apply(
        {
            "kind": "tasks_added",
            "run": "r1",
            "tasks": [{"id": "c", "name": "c", "state": "pending", "deps": ["a"]}],
        }
    )
    source.apply(
        {
            "kind": "run",
            "run": "r1",
            "state": "running",
            "counts": {"completed": 1, "pending": 2},
            "total": 3,
        }
    )
    tasks = source.rows["tasks"]
    assert tasks["a"]["id"] == "a"  # the event's own id is not the task's
    assert tasks["a"]["state"] == "completed" and tasks["c"]["deps"] == ["a"]
    assert source.current_meta()["total"] == 3
    assert source.take_touched() == {"tasks": {"a", "c"}}


def test_timeline_draws_tasks_once_they_start() -> None:
    source = TimelineSource("r1")
    source.load(Reads([RUN], []))  # type: ignore[arg-type]
    assert set(source.rows["bars"]) == {"r1/a"}
    source.apply({"kind": "task", "run": "r1", "task": "b", "state": "submitted", "job_id": "5"})
    assert set(source.rows["bars"]) == {"r1/a"}
    source.apply({"kind": "task", "run": "r1", "task": "b", "state": "running", "started_at": 7.0})
    assert source.rows["bars"]["r1/b"]["backend"] == "hpc"
    source.apply({"kind": "task", "run": "r1", "task": "b", "state": "pending", "started_at": None})
    assert set(source.rows["bars"]) == {"r1/a"}  # a rerun: drawn again when it starts


class AskedFor(Reads):
    """Reads that remember the job filter they were asked for."""

    def __init__(self) -> None:
        super().__init__([], [])
        self.asked: list[dict[str, Any]] = []

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        self.asked.append(filters)
        return []


def test_job_table_asks_for_every_user_only_when_told() -> None:
    reads = AskedFor()
    source = JobsSource()
    source.load(reads)  # type: ignore[arg-type]
    source.all_users = True
    source.fetch(reads)  # type: ignore[arg-type]
    assert reads.asked == [{"all_users": False}, {"all_users": True}]


def listing(all_users: bool, jobs: list[dict[str, Any]], user: str | None) -> JobsListing:
    reply = {"jobs": jobs, "user_filter": user, "default_user_filter": "alice"}
    return JobsListing(all_users, reply)


def test_the_user_filter_is_meta_and_a_listing_for_the_other_toggle_is_dropped() -> None:
    source = JobsSource()
    source.load(Reads([], []))  # type: ignore[arg-type]
    assert source.current_meta() == {"user_filter": None, "default_user_filter": None}
    alices = {**external("900"), "user": "alice"}
    assert source.merge(listing(False, [alices], "alice"))
    assert source.current_meta() == {"user_filter": "alice", "default_user_filter": "alice"}
    source.all_users = True  # the toggle: a read still under way answers the old question
    assert not source.merge(listing(False, [], "alice"))
    assert set(source.rows["jobs"]) == {"hpc/900"}
    assert source.merge(listing(True, [alices, external("901")], None))
    assert set(source.rows["jobs"]) == {"hpc/900", "hpc/901"}
    assert source.current_meta()["user_filter"] is None
    source.all_users = False
    assert source.merge(listing(False, [alices], "alice"))
    assert set(source.rows["jobs"]) == {"hpc/900"}  # bob's job is no longer listed


@pytest.mark.usefixtures("recording_comm")
def test_the_toggle_reads_the_jobs_again_at_once(tmp_path: Path, client: LocalClient) -> None:
    """With settings.filter_user, the front end's toggle (the `all_users` trait) makes the
    kernel ask for every user's jobs now, not at the next refresh (an hour away here)."""
    config = tmp_path / "filtered.yaml"
    config.write_text(CONFIG.replace("settings:\n", "settings:\n  filter_user: alice\n", 1))
    filtered = LocalClient(config_file=str(config), data_dir=str(tmp_path / "filtered"))
    table = JobTable(client=filtered, refresh=3600)
    try:
        assert table._snapshot["meta"] == {"user_filter": "alice", "default_user_filter": "alice"}
        baseline = table._snapshot
        front_end(table, {"type": "ready", "seq": baseline["seq"]})
        table._handle_msg(
            {
                "content": {"data": {"method": "update", "state": {"all_users": True}}},
                "buffers": [],
            }
        )
        assert table.all_users is True
        held = wait_for(
            lambda: (
                (h := apply(baseline, comm_of(table).customs()))["meta"]["user_filter"] is None
                and h
            ),
            what="the jobs read again for every user",
        )
        assert held["meta"]["default_user_filter"] == "alice"
        table.all_users = False  # from Python: the same
        wait_for(
            lambda: apply(baseline, comm_of(table).customs())["meta"]["user_filter"] == "alice",
            what="the jobs read again for alice",
        )
    finally:
        table.close()
        filtered.close()


@pytest.mark.usefixtures("recording_comm")
def test_the_script_env_and_task_tabs_get_masked_data(client: LocalClient) -> None:
    """What the RunView drawer's Script, Env and Task tabs receive from the kernel (the
    JupyterLab panel reads the same service over REST, see tests/server/test_read_paths)."""
    run = client.submit(SECRET_WORKFLOW)
    client.wait(run["id"], timeout=60)
    store = client.service.store
    assert store is not None
    record = client.call(lambda: store.attempt(run["id"], "a"))
    assert SECRET_TOKEN in record.script  # the job had the clear value
    view = RunView(run["id"], client=client)
    try:
        for ask, op in enumerate(("script", "env", "task"), start=1):
            args = {"run": run["id"], "task": "a"}
            front_end(view, {"type": "request", "id": ask, "op": op, "args": args})
        replies = wait_for(
            lambda: (
                (r := {m["id"]: m for m in comm_of(view).customs() if m["type"] == "reply"})
                and len(r) == 3
                and r
            ),
            what="the drawer's replies",
        )
        assert all(reply["ok"] for reply in replies.values()), replies
        assert "export API_TOKEN='***'" in replies[1]["data"]
        for reply in replies.values():
            data = reply["data"]
            assert_no_secret(data if isinstance(data, str) else json.dumps(data))
    finally:
        view.close()
