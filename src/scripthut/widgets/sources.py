"""The data behind each widget: loaded once from a client, then kept current by events.

A source owns meta (a flat dict) and tables of rows keyed by one field, and remembers
which keys events touched since the last flush, so the differ compares only those.
`apply` takes one event (the API's event JSON); `fetch` (off the lock) and `merge` (under
it) refresh what events do not carry, such as other users' jobs or the running cost.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from scripthut.client.base import Client
from scripthut.widgets import api
from scripthut.widgets.cost import Pricing, task_cost
from scripthut.widgets.diff import Row

TASK_FIELDS = (
    "id",
    "name",
    "state",
    "deps",
    "attempt",
    "job_id",
    "exit_code",
    "reason",
    "submitted_at",
    "started_at",
    "ended_at",
    "generated_by",
)
# Task fields an event may change (an event's own "id" is the event's, not the task's).
TASK_EVENT_FIELDS = (
    "state",
    "attempt",
    "job_id",
    "exit_code",
    "reason",
    "submitted_at",
    "started_at",
    "ended_at",
)
RUN_FIELDS = (
    "id",
    "name",
    "backend",
    "state",
    "created_at",
    "started_at",
    "ended_at",
    "counts",
    "total",
    "message",
    "cancel_requested",
)
RUN_EVENT_FIELDS = ("state", "counts", "total", "started_at", "ended_at", "message")
JOB_FIELDS = (
    "backend",
    "job_id",
    "state",
    "source",
    "run",
    "task",
    "name",
    "user",
    "partition",
    "node",
    "cpus",
    "reason",
    "submitted_at",
    "started_at",
    "ended_at",
    "exit_code",
)
# A task's state as the state of its job (a pending or dep_failed task has no job).
JOB_STATE_OF_TASK = {
    "submitted": "pending",
    "running": "running",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}
ACTIVE_RUN_STATES = frozenset({"pending", "running"})
FINAL_JOB_STATES = frozenset({"completed", "failed", "cancelled"})


def pick(data: Mapping[str, Any], fields: Iterable[str]) -> Row:
    return {f: data.get(f) for f in fields}


class Source(ABC):
    """Meta and tables of one widget, with the keys touched since the last flush."""

    tables: ClassVar[dict[str, str]] = {}
    refresh_every: float | None = None

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.rows: dict[str, dict[str, Row]] = {name: {} for name in self.tables}
        self._touched: dict[str, set[str]] = {name: set() for name in self.tables}
        self._full = True

    @abstractmethod
    def load(self, client: Client) -> None:
        """Read the current state (before events are applied)."""

    @abstractmethod
    def apply(self, event: dict[str, Any]) -> bool:
        """Take one event; True when it may have changed something."""

    def fetch(self, client: Client) -> object:
        """Periodic read outside the lock (every `refresh_every` s); handed to `merge`."""
        return None

    def merge(self, data: object) -> bool:
        return False

    def current_meta(self) -> dict[str, Any]:
        return self.meta

    def touch(self, table: str, key: str) -> None:
        self._touched[table].add(key)

    def take_touched(self) -> dict[str, set[str]] | None:
        """The keys touched since the last call; None when everything must be compared."""
        if self._full:
            self._full = False
            touched = None
        else:
            touched = self._touched
        self._touched = {name: set() for name in self.tables}
        return touched


class RunSource(Source):
    """One run: its record (meta) and its tasks."""

    tables: ClassVar[dict[str, str]] = {"tasks": "id"}

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    @property
    def tasks(self) -> dict[str, Row]:
        return self.rows["tasks"]

    def load(self, client: Client) -> None:
        record = client.run(self.run_id, tasks=True)
        self.run_id = str(record["id"])
        self.meta = pick(record, RUN_FIELDS)
        self.rows["tasks"] = {str(t["id"]): pick(t, TASK_FIELDS) for t in record.get("tasks", [])}
        self._full = True

    def apply(self, event: dict[str, Any]) -> bool:
        if event.get("run") != self.run_id:
            return False
        kind = event.get("kind")
        if kind == "task" and event.get("task"):
            task_id = str(event["task"])
            row = self.tasks.get(task_id)
            if row is None:
                row = self.tasks[task_id] = {**dict.fromkeys(TASK_FIELDS), "id": task_id}
                row.update(name=task_id, deps=[], state="pending")
            row.update({f: event[f] for f in TASK_EVENT_FIELDS if f in event})
            self.touch("tasks", task_id)
        elif kind == "tasks_added":
            for task in event.get("tasks") or []:
                task_id = str(task["id"])
                self.tasks[task_id] = pick(task, TASK_FIELDS)
                self.touch("tasks", task_id)
        elif kind == "run":
            self.meta.update({f: event[f] for f in RUN_EVENT_FIELDS if f in event})
        else:
            return False
        return True


class _RunBackends:
    """Which backend each run uses (looked up once per run)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.known: dict[str, str] = {}

    def __call__(self, run_id: str) -> str:
        if run_id not in self.known:
            try:
                self.known[run_id] = str(self.client.run(run_id, tasks=False)["backend"])
            except Exception:
                self.known[run_id] = "?"
        return self.known[run_id]

    def note(self, event: Mapping[str, Any]) -> None:
        if event.get("kind") == "run_created" and event.get("run") and event.get("backend"):
            self.known[str(event["run"])] = str(event["backend"])


@dataclass(frozen=True, slots=True)
class JobsListing:
    """One read of `GET jobs` and whether it asked for every user's other jobs."""

    all_users: bool
    reply: Mapping[str, Any]


class JobsSource(Source):
    """ScriptHut's jobs and the user's other jobs; ScriptHut's stay once they end.

    Meta: `user_filter` (whose other jobs are listed; None: everyone's) and
    `default_user_filter` (settings.filter_user), so a view can offer the toggle.
    """

    tables: ClassVar[dict[str, str]] = {"jobs": "key"}
    refresh_every = 10.0

    def __init__(
        self, run: str | None = None, *, history: int = 20_000, all_users: bool = False
    ) -> None:
        super().__init__()
        self.run = run
        self.all_users = all_users  # False: only settings.filter_user's other jobs, if set
        self.history = history
        self.backends: _RunBackends | None = None
        self.current: dict[tuple[str, str], str] = {}  # (run, task) -> its job's key
        self.names: dict[tuple[str, str], str] = {}

    @property
    def jobs(self) -> dict[str, Row]:
        return self.rows["jobs"]

    def load(self, client: Client) -> None:
        self.backends = _RunBackends(client)
        seeds = [] if self.run is None else [self.run]
        for record in client.runs(limit=50):
            self.backends.known[str(record["id"])] = str(record["backend"])
            if record["state"] in ACTIVE_RUN_STATES and record["id"] not in seeds:
                seeds.append(str(record["id"]))
        for run_id in seeds:
            record = client.run(run_id, tasks=True)
            backend = str(record["backend"])
            self.backends.known[str(record["id"])] = backend
            for task in record.get("tasks", []):
                self._seed_task(str(record["id"]), backend, task)
        self.merge(self.fetch(client))
        self._full = True

    def _seed_task(self, run_id: str, backend: str, task: Mapping[str, Any]) -> None:
        self.names[(run_id, str(task["id"]))] = str(task.get("name") or task["id"])
        if task.get("job_id") and task.get("state") in JOB_STATE_OF_TASK:
            key = self._ensure(run_id, str(task["id"]), backend, str(task["job_id"]))
            self._update(key, task)

    def _ensure(self, run_id: str, task_id: str, backend: str, job_id: str) -> str:
        key = f"{backend}/{job_id}"
        self.current[(run_id, task_id)] = key
        if key not in self.jobs:
            row = {**dict.fromkeys(JOB_FIELDS), "key": key}
            row.update(
                backend=backend,
                job_id=job_id,
                state="pending",
                source="scripthut",
                run=run_id,
                task=task_id,
                name=self.names.get((run_id, task_id), task_id),
            )
            self.jobs[key] = row
        self.touch("jobs", key)
        return key

    def _update(self, key: str, task: Mapping[str, Any]) -> None:
        row = self.jobs[key]
        state = JOB_STATE_OF_TASK.get(str(task.get("state")))
        if state is not None:
            row["state"] = state
        for name in ("submitted_at", "started_at", "ended_at", "exit_code", "reason"):
            if name in task:
                row[name] = task[name]
        self.touch("jobs", key)

    def apply(self, event: dict[str, Any]) -> bool:
        assert self.backends is not None, "load() first"
        self.backends.note(event)
        if event.get("kind") == "tasks_added" and event.get("run"):
            for task in event.get("tasks") or []:
                self.names[(str(event["run"]), str(task["id"]))] = str(task.get("name") or "")
            return False
        if event.get("kind") != "task" or not event.get("run") or not event.get("task"):
            return False
        run_id, task_id = str(event["run"]), str(event["task"])
        if "job_id" in event:
            if event["job_id"] is None:
                self.current.pop((run_id, task_id), None)  # a new attempt: its job comes later
                return False
            self._ensure(run_id, task_id, self.backends(run_id), str(event["job_id"]))
        key = self.current.get((run_id, task_id))
        if key is None or key not in self.jobs:
            return False
        self._update(key, event)
        return True

    def fetch(self, client: Client) -> object:
        wanted = self.all_users
        return JobsListing(wanted, api.jobs_listing(client, all_users=wanted))

    def merge(self, data: object) -> bool:
        """Take a `JobsListing` (or a bare list of jobs); a listing asked for with the
        other setting of `all_users` is dropped (the toggle has asked for a new one)."""
        if isinstance(data, JobsListing):
            if data.all_users != self.all_users:
                return False
            self.meta = {
                "user_filter": data.reply.get("user_filter"),
                "default_user_filter": data.reply.get("default_user_filter"),
            }
            data = data.reply.get("jobs")
        if not isinstance(data, list):
            return False
        fresh: dict[str, Mapping[str, Any]] = {
            f"{j['backend']}/{j['job_id']}": j for j in data if isinstance(j, dict)
        }
        for key, job in fresh.items():
            row = self.jobs.get(key)
            if row is None:
                self.jobs[key] = {**pick(job, JOB_FIELDS), "key": key}
                if job.get("run") and job.get("task"):
                    self.current[(str(job["run"]), str(job["task"]))] = key
            elif row["source"] == "external":
                row.update({f: job[f] for f in JOB_FIELDS if job.get(f) is not None})
            else:
                # Events are newer than this list: fill in what they do not carry only.
                row.update({f: job[f] for f in JOB_FIELDS if row.get(f) is None and job.get(f)})
        for key in [k for k, r in self.jobs.items() if r["source"] == "external"]:
            if key not in fresh:
                del self.jobs[key]  # gone from the queue: finished or cancelled
        self._trim()
        self._full = True
        return True

    def _trim(self) -> None:
        extra = len(self.jobs) - self.history
        if extra <= 0:
            return
        finished = sorted(
            (r.get("ended_at") or 0.0, k)
            for k, r in self.jobs.items()
            if r["state"] in FINAL_JOB_STATES
        )
        for _, key in finished[:extra]:
            del self.jobs[key]


class TimelineSource(Source):
    """Start and end of the tasks that started, of one run or of the recent runs."""

    tables: ClassVar[dict[str, str]] = {"bars": "key"}
    RECENT_RUNS = 5

    def __init__(self, run_id: str | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.backends: _RunBackends | None = None
        self.runs: dict[str, str] = {}  # id -> name

    @property
    def bars(self) -> dict[str, Row]:
        return self.rows["bars"]

    def load(self, client: Client) -> None:
        self.backends = _RunBackends(client)
        if self.run_id is not None:
            ids = [self.run_id]
        else:
            ids = [str(r["id"]) for r in client.runs(limit=self.RECENT_RUNS)]
        for run_id in ids:
            record = client.run(run_id, tasks=True)
            rid = str(record["id"])
            if self.run_id is not None:
                self.run_id = rid
            self.runs[rid] = str(record.get("name") or rid)
            self.backends.known[rid] = str(record["backend"])
            for task in record.get("tasks", []):
                self._put(rid, str(task["id"]), task)
        self.meta = {"run": self.run_id, "runs": dict(self.runs)}
        self._full = True

    def _put(self, run_id: str, task_id: str, fields: Mapping[str, Any]) -> None:
        key = f"{run_id}/{task_id}"
        row = self.bars.get(key)
        if row is None:
            if not fields.get("started_at"):
                return  # drawn once it starts
            assert self.backends is not None
            row = self.bars[key] = {
                "key": key,
                "run": run_id,
                "task": task_id,
                "backend": self.backends(run_id),
                "state": None,
                "submitted_at": None,
                "started_at": None,
                "ended_at": None,
            }
        for name in ("state", "submitted_at", "started_at", "ended_at"):
            if name in fields:
                row[name] = fields[name]
        if not row["started_at"]:
            del self.bars[key]  # a new attempt that has not started yet
        self.touch("bars", key)

    def apply(self, event: dict[str, Any]) -> bool:
        assert self.backends is not None, "load() first"
        self.backends.note(event)
        run_id = event.get("run")
        if not run_id or (self.run_id is not None and run_id != self.run_id):
            return False
        if event.get("kind") == "run_created":
            self.runs[str(run_id)] = str(event.get("name") or run_id)
            self.meta = {"run": self.run_id, "runs": dict(self.runs)}
            return True
        if event.get("kind") != "task" or not event.get("task"):
            return False
        self._put(str(run_id), str(event["task"]), event)
        return True


class CostSource(Source):
    """One run's estimated cost per task and in total."""

    tables: ClassVar[dict[str, str]] = {"tasks": "task"}
    refresh_every = 15.0

    def __init__(self, run_id: str, pricing: Pricing) -> None:
        super().__init__()
        self.run_id = run_id
        self.pricing = pricing
        self.client: Client | None = None
        self.partitions: dict[str, str] = {}
        self.cpus: dict[str, int] = {}
        self.now = time.time()

    @property
    def tasks(self) -> dict[str, Row]:
        return self.rows["tasks"]

    def load(self, client: Client) -> None:
        self.client = client
        record = client.run(self.run_id, tasks=True)
        self.run_id = str(record["id"])
        tasks = record.get("tasks", [])
        self._resources(client, [str(t["id"]) for t in tasks])
        self.meta = {"run": self.run_id, "name": record.get("name")}
        self.now = time.time()
        for task in tasks:
            self._put(str(task["id"]), task)
        self._full = True

    def _resources(self, client: Client, task_ids: list[str]) -> None:
        for task_id, (partition, cpus) in api.task_resources(client, self.run_id, task_ids).items():
            self.partitions[task_id] = partition
            self.cpus[task_id] = cpus

    def _put(self, task_id: str, fields: Mapping[str, Any]) -> None:
        row = self.tasks.get(task_id)
        if row is None:
            row = self.tasks[task_id] = {"task": task_id, "state": None, "started_at": None}
            row["ended_at"] = None
        for name in ("state", "started_at", "ended_at"):
            if name in fields:
                row[name] = fields[name]
        self._cost(row)

    def _cost(self, row: Row) -> None:
        task = {"id": row["task"], "cpus": self.cpus.get(row["task"], 1), **row}
        item = task_cost(task, self.partitions.get(row["task"]), self.pricing, self.now)
        row.update(
            partition=item.partition,
            priced_as=item.priced_as,
            price=item.price,
            hours=item.hours,
            share=item.share,
            cost=item.cost,
        )
        self.touch("tasks", row["task"])

    def apply(self, event: dict[str, Any]) -> bool:
        if event.get("run") != self.run_id:
            return False
        if event.get("kind") == "tasks_added" and self.client is not None:
            self._resources(self.client, [str(t["id"]) for t in event.get("tasks") or []])
            for task in event.get("tasks") or []:
                self._put(str(task["id"]), task)
            return True
        if event.get("kind") != "task" or not event.get("task"):
            return False
        self._put(str(event["task"]), event)
        return True

    def fetch(self, client: Client) -> object:
        return time.time()

    def merge(self, data: object) -> bool:
        if not isinstance(data, float):
            return False
        self.now = data
        running = [r for r in self.tasks.values() if r["started_at"] and not r["ended_at"]]
        for row in running:
            self._cost(row)
        return bool(running)

    def current_meta(self) -> dict[str, Any]:
        costs = [r["cost"] for r in self.tasks.values() if r["cost"] is not None]
        return {
            **self.meta,
            "total": sum(costs),
            "costed": len(costs),
            "tasks": len(self.tasks),
            "priced": self.pricing.active,
            "prices": self.pricing.source,
            "running": sum(1 for r in self.tasks.values() if r["started_at"] and not r["ended_at"]),
        }
