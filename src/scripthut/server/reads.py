"""Read-side views of the store and the engine, as JSON-able dicts.

Everything here reads what the store recorded (or what the engine tracks right now);
nothing builds a file path from request text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from scripthut.backends.base import BackendInfo, JobStatus
from scripthut.backends.registry import AVAILABLE_TYPES, BackendRegistry
from scripthut.config import BackendConfig, Config
from scripthut.engine.engine import Engine
from scripthut.engine.jobs import RunContext
from scripthut.errors import InvalidInput, Issue, NotFound, ScriptHutError
from scripthut.states import JobState, TaskState
from scripthut.store import RunRecord, Store
from scripthut.workflow.env import EnvOp, EnvValue, ResolvedEnv
from scripthut.workflow.parse import parse_document

INFO_TIMEOUT = 10.0
OPEN_ATTEMPT_STATES = frozenset({"intent", "submitted", "running"})
JOB_STATES = frozenset(s.value for s in JobState)


def run_json(store: Store, record: RunRecord, *, tasks: bool = False) -> dict[str, Any]:
    counts = store.task_counts(record.id)
    out = {**record.to_json(), "counts": counts, "total": sum(counts.values())}
    if tasks:
        out["tasks"] = [t.to_json() for t in store.iter_tasks(record.id)]
    return out


def runs_page(store: Store, limit: int, offset: int) -> dict[str, Any]:
    records = store.list_runs(limit=limit, offset=offset)
    return {
        "runs": [run_json(store, r) for r in records],
        "total": store.count_runs(),
        "limit": limit,
        "offset": offset,
    }


def task_detail(store: Store, run_id: str, task_id: str) -> dict[str, Any]:
    task = store.task(run_id, task_id)
    attempts = [a.to_json() for a in store.attempts(run_id, task_id)]
    return {**task.to_json(), "spec": task.spec, "attempts": attempts}


def task_env(
    store: Store,
    config: Config,
    registry: BackendRegistry,
    run_id: str,
    task_id: str,
    attempt: int | None,
) -> dict[str, Any]:
    """The env of an attempt as recorded, else as the config resolves it now; secrets masked."""
    task = store.task(run_id, task_id)
    try:
        record = store.attempt(run_id, task_id, attempt)
    except NotFound:
        if attempt is not None:
            raise
        run = store.get_run(run_id)
        spec_doc = {k: v for k, v in task.spec.items() if k != "deps"}
        spec = parse_document([spec_doc], source=f"task '{task_id}'").tasks[0]
        context = RunContext.for_run(config, registry.get(run.backend), run)
        env = context.resolve(spec).to_json(mask_secrets=True)
        return {"run": run_id, "task": task_id, "attempt": None, "source": "config", **env}
    masked = masked_env(record.env)
    return {
        "run": run_id,
        "task": task_id,
        "attempt": record.attempt,
        "source": "attempt",
        **masked,
    }


def masked_env(stored: dict[str, Any]) -> dict[str, Any]:
    """A recorded env (ResolvedEnv.to_json) with secret values masked, as ResolvedEnv masks."""
    values = {
        name: EnvValue(v["value"], bool(v["from_runtime"]), [EnvOp(**op) for op in v["ops"]])
        for name, v in stored.get("values", {}).items()
    }
    init = [(entry["value"], EnvOp(**entry)) for entry in stored.get("init", [])]
    env = ResolvedEnv(values, init, list(stored.get("warnings", [])))
    return env.to_json(mask_secrets=True)


def check_job_state(state: str | None) -> None:
    if state is not None and state not in JOB_STATES:
        choices = ", ".join(sorted(JOB_STATES))
        raise InvalidInput([Issue("query", f"unknown state (one of: {choices})", "state")])


def jobs_json(
    engine: Engine | None,
    store: Store,
    *,
    backend: str | None = None,
    state: str | None = None,
    run: str | None = None,
) -> dict[str, Any]:
    """ScriptHut's own jobs and the user's other jobs, in one list."""
    check_job_state(state)
    rows = _engine_jobs(engine) if engine is not None else _stored_jobs(store)
    unknown: list[str] = []
    if engine is not None:
        for name, external in sorted(engine.external_jobs().items()):
            if external is None:
                unknown.append(name)
            else:
                rows.extend(_external_row(name, status) for status in external)
    rows = [
        row
        for row in rows
        if (backend is None or row["backend"] == backend)
        and (state is None or row["state"] == state)
        and (run is None or row["run"] == run)
    ]
    return {"jobs": rows, "external_unknown": unknown}


def _job_row(backend: str, job_id: str, state: str, source: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "backend": backend,
        "job_id": job_id,
        "state": state,
        "source": source,
        "run": None,
        "task": None,
        "name": None,
    }
    row.update(fields)
    return row


def _job_state(state: TaskState) -> str:
    return JobState.RUNNING.value if state == TaskState.RUNNING else JobState.PENDING.value


def _engine_jobs(engine: Engine) -> list[dict[str, Any]]:
    rows = []
    for slot in engine.slots.values():
        for tracked in slot.tracked.values():
            run = engine.runs.get(tracked.run_id)
            spec = run.specs.get(tracked.task_id) if run is not None else None
            rows.append(
                _job_row(
                    slot.backend.name,
                    tracked.ref.job_id,
                    _job_state(tracked.state),
                    "scripthut",
                    run=tracked.run_id,
                    task=tracked.task_id,
                    name=spec.name if spec else tracked.task_id,
                    cpus=spec.cpus if spec else None,
                    submitted_at=tracked.ref.submitted_at,
                    started_at=tracked.started_at,
                )
            )
    return rows


def _stored_jobs(store: Store) -> list[dict[str, Any]]:
    rows = []
    for record in store.unfinished_runs():
        for task in store.tasks(record.id):
            if task.state.is_active and task.job_id:
                rows.append(
                    _job_row(
                        record.backend,
                        task.job_id,
                        _job_state(task.state),
                        "scripthut",
                        run=record.id,
                        task=task.task_id,
                        name=task.spec.get("name", task.task_id),
                        submitted_at=task.submitted_at,
                        started_at=task.started_at,
                    )
                )
    return rows


def _external_row(backend: str, status: JobStatus) -> dict[str, Any]:
    return _job_row(
        backend,
        status.job_id,
        status.state.value,
        "external",
        name=status.name,
        user=status.user,
        partition=status.partition,
        node=status.node,
        cpus=status.cpus,
        reason=status.reason,
        submitted_at=status.submitted_at,
        started_at=status.started_at,
    )


async def backends_json(
    config: Config, registry: BackendRegistry, engine: Engine | None
) -> dict[str, Any]:
    """Every configured backend: whether it can run tasks, and what its cluster says."""
    rows = await asyncio.gather(*(_backend_row(e, registry, engine) for e in config.backends))
    return {"backends": list(rows), "default": config.backends[0].name}


async def _backend_row(
    entry: BackendConfig, registry: BackendRegistry, engine: Engine | None
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": entry.name,
        "type": entry.type,
        "transport": getattr(entry, "transport", None),
        "max_concurrent": entry.max_concurrent,
        "available": entry.type in AVAILABLE_TYPES,
        "active_jobs": None,
    }
    slot = engine.slots.get(entry.name) if engine is not None else None
    if slot is not None:
        row["active_jobs"] = slot.active
    try:
        info = await asyncio.wait_for(registry.get(entry.name).info(), INFO_TIMEOUT)
    except ScriptHutError as exc:
        return {**row, "status": "unavailable", "message": str(exc), "info": None}
    except TimeoutError:
        message = f"no answer within {INFO_TIMEOUT:g} s"
        return {**row, "status": "unreachable", "message": message, "info": None}
    except Exception as exc:
        return {**row, "status": "error", "message": f"{type(exc).__name__}: {exc}", "info": None}
    status = "ok" if info.reachable else "unreachable"
    return {**row, "status": status, "message": info.message, "info": _info_json(info)}


def _info_json(info: BackendInfo) -> dict[str, Any]:
    return {
        "kind": info.kind,
        "reachable": info.reachable,
        "cpus_idle": info.cpus_idle,
        "cpus_total": info.cpus_total,
        "queue_depth": info.queue_depth,
        "partitions": [
            {"name": p.name, "cpus_idle": p.cpus_idle, "cpus_total": p.cpus_total, "state": p.state}
            for p in info.partitions
        ],
    }


def workflows_json(config: Config, addressable: Iterable[str]) -> dict[str, Any]:
    names = set(addressable)
    return {
        "workflows": [
            {
                "name": w.name,
                "backend": w.backend,
                "description": w.description,
                "max_concurrent": w.max_concurrent,
                "command": w.command,
                "git": w.git.repo if w.git else None,
                "addressable": w.name in names,
            }
            for w in config.workflows
        ]
    }
