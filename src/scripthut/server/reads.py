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
from scripthut.config import BackendConfig, Config, WorkflowConfig
from scripthut.engine.engine import Engine
from scripthut.engine.jobs import RunContext
from scripthut.errors import InvalidInput, Issue, NotFound, ScriptHutError
from scripthut.secrets import (
    SecretMasker,
    document_pairs,
    env_pairs,
    mask_document,
    mask_spec,
    mask_urls,
    rule_pairs,
    spec_pairs,
)
from scripthut.sources import Provenance
from scripthut.states import JobState, TaskState
from scripthut.store import AttemptRecord, RunRecord, Store, TaskRecord
from scripthut.workflow.env import EnvOp, EnvValue, ResolvedEnv, inherited_layer
from scripthut.workflow.model import Workflow
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
    """A task with its spec (secret values masked) and every attempt."""
    task = store.task(run_id, task_id)
    records = store.attempts(run_id, task_id)
    masker = task_masker(store.get_run(run_id), task, records)
    attempts = [a.to_json() for a in records]
    return {**task.to_json(), "spec": mask_spec(task.spec, masker), "attempts": attempts}


def task_script(store: Store, run_id: str, task_id: str, attempt: int | None) -> str:
    """The script an attempt ran, its secret values masked (the file itself keeps them)."""
    task = store.task(run_id, task_id)
    record = store.attempt(run_id, task_id, attempt)
    if record.cached:
        return record.cache_note()
    return task_masker(store.get_run(run_id), task, [record]).script(record.script)


def cached_log(record: AttemptRecord, offset: int) -> dict[str, Any]:
    """The log of an attempt the result cache completed: one line saying so (no file)."""
    text = record.cache_note()
    size = len(text.encode())
    start = size if offset >= size else max(0, offset if offset >= 0 else size + offset)
    body = text.encode()[start:].decode("utf-8", errors="replace")
    return {"text": body, "offset": start, "next_offset": size, "size": size, "missing": False}


def task_masker(
    run: RunRecord, task: TaskRecord, attempts: Iterable[AttemptRecord]
) -> SecretMasker:
    """Everything secret a task's views could show: its rules, its run's, its attempts' env."""
    pairs = [*document_pairs(run.document), *spec_pairs(task.spec)]
    for record in attempts:
        pairs.extend(env_pairs(record.env))
    return SecretMasker(pairs)


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
        backend = registry.get(run.backend)
        context = RunContext.for_run(config.for_folder(run.config_dir), backend, run)
        env = context.resolve(spec).to_json(mask_secrets=True)
        return {
            "run": run_id,
            "task": task_id,
            "attempt": None,
            "source": "config",
            **env,
            "inherited": inherited_layer(*backend.inherited_env()),
        }
    masked = masked_env(record.env)
    return {
        "run": run_id,
        "task": task_id,
        "attempt": record.attempt,
        "source": "attempt",
        **masked,
        "inherited": inherited_layer(*registry.get(record.backend).inherited_env()),
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
    user: str | None = None,
    default_user: str | None = None,
) -> dict[str, Any]:
    """ScriptHut's own jobs and the user's other jobs, in one list.

    `user` keeps only the other jobs of that scheduler user (ScriptHut's own jobs always
    stay); `default_user` (settings.filter_user) is echoed so views can offer a toggle.
    """
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
        and (user is None or row["source"] == "scripthut" or row.get("user") == user)
    ]
    return {
        "jobs": rows,
        "external_unknown": unknown,
        "user_filter": user,
        "default_user_filter": default_user,
    }


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
        raw_state=status.raw_state or None,
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
    """The configured workflows; secrets in their commands (webhooks, URL passwords) masked."""
    names = set(addressable)
    return {
        "workflows": [
            {
                "name": w.name,
                "backend": w.backend,
                "description": w.description,
                "max_concurrent": w.max_concurrent,
                "command": workflow_masker(w).text(w.command),
                "git": mask_urls(w.git.repo) if w.git else None,
                "addressable": w.name in names,
            }
            for w in config.workflows
        ]
    }


def workflow_masker(entry: WorkflowConfig, document: object = None) -> SecretMasker:
    """The secrets of a configured workflow's env rules and of the document it printed."""
    rules = [r.model_dump(by_alias=True, exclude_defaults=True) for r in entry.env]
    for group in entry.env_groups.values():
        rules.extend(r.model_dump(by_alias=True, exclude_defaults=True) for r in group)
    return SecretMasker([*rule_pairs(rules), *document_pairs(document)])


def dry_run_json(entry: WorkflowConfig, workflow: Workflow) -> dict[str, Any]:
    """What a dry run shows: counts and the task document, secret values masked."""
    document = workflow.to_document()
    return {
        "workflow": entry.name,
        "backend": entry.backend,
        "tasks": len(workflow.tasks),
        "edges": sum(len(d) for d in workflow.deps.values()),
        "document": mask_document(document, workflow_masker(entry, document)),
    }


def provenance_json(provenance: Provenance | None) -> dict[str, Any]:
    """Where a workflow came from (a source's clone or folder, a command's clone)."""
    if provenance is None:
        return {}
    document = provenance.document()
    git = document.get("git")
    if git is not None:
        git = {**git, "repo": mask_urls(git["repo"]) if git.get("repo") else None}
    return {"provenance": {**document["source"], "git": git}}


def source_dry_run_json(
    name: str, file: str, workflow: Workflow, provenance: Provenance
) -> dict[str, Any]:
    """A source file's dry run: counts and the document (secret values masked), and where
    it came from. Nothing is started."""
    document = workflow.to_document()
    masker = SecretMasker(list(document_pairs(document)))
    return {
        "source": name,
        "file": file,
        "tasks": len(workflow.tasks),
        "edges": sum(len(d) for d in workflow.deps.values()),
        "deps": {task: list(deps) for task, deps in workflow.deps.items() if deps},
        "document": mask_document(document, masker),
        **provenance_json(provenance),
    }
