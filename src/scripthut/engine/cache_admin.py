"""The result cache from outside a run: would these tasks hit (`probe`), what is stored
(`entries`), and removing entries (`clear`) — each one script on the backend."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from scripthut.backends.base import Backend
from scripthut.backends.cache_store import (
    ADMIN_SCRIPT,
    LOOKUP_SCRIPT,
    CacheReply,
    LookupRequest,
    lookup_args,
    parse_reply,
    script_bytes,
)
from scripthut.config import Config
from scripthut.engine.caching import cache_root
from scripthut.engine.create import run_provenance
from scripthut.engine.jobs import RunContext
from scripthut.errors import BackendUnavailable
from scripthut.states import RunState
from scripthut.store.records import RunRecord
from scripthut.workflow.caching import key_prefix
from scripthut.workflow.model import Workflow


@dataclass(frozen=True, slots=True)
class Probe:
    task: str
    outcome: str  # hit | miss | not cacheable
    key: str | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "outcome": self.outcome, "key": self.key, "detail": self.detail}


async def _call(backend: Backend, script: str, args: list[str]) -> CacheReply:
    data = await backend.run_store_script(script_bytes(script, args))
    if data is None:
        raise BackendUnavailable(f"backend '{backend.name}' has no result cache")
    return parse_reply(data)


async def probe(
    config: Config, backend: Backend, workflow: Workflow, base_dir: str | None
) -> list[Probe]:
    """Whether each task would hit the cache now (nothing is restored or run)."""
    document: dict[str, Any] = {"env": [r.model_dump(by_alias=True) for r in workflow.env]}
    document.update(run_provenance(base_dir, False))
    record = RunRecord(
        "probe",
        "probe",
        backend.name,
        RunState.PENDING,
        time.time(),
        None,
        None,
        base_dir,
        document,
    )
    context = RunContext.for_run(config, backend, record)
    out: list[Probe] = []
    requests: list[LookupRequest] = []
    for spec in workflow.tasks:
        if not (spec.outputs and spec.cache):
            out.append(Probe(spec.id, "not cacheable", None, "no outputs, or cache: false"))
            continue
        env, _ = context.resolved(spec)
        prefix = key_prefix(
            command=spec.command,
            notebook=spec.notebook,
            parameters=spec.parameters,
            env=env.as_dict(),
            commit=document.get("git", {}).get("sha"),
            scope=spec.cache_scope,
        )
        requests.append(LookupRequest(spec.id, context.working_dir(spec), prefix, spec.inputs))
    if requests:
        reply = await _call(
            backend, LOOKUP_SCRIPT, lookup_args(cache_root(config, backend.name), requests, False)
        )
        for r in requests:
            key = reply.keys.get(r.task_id)
            if r.task_id in reply.hits:
                out.append(Probe(r.task_id, "hit", key, ""))
            elif key is not None:
                out.append(Probe(r.task_id, "miss", key, reply.misses.get(r.task_id, "")))
            else:
                out.append(
                    Probe(r.task_id, "not cacheable", None, reply.skipped.get(r.task_id, ""))
                )
    order = {t.id: i for i, t in enumerate(workflow.tasks)}
    return sorted(out, key=lambda p: order[p.task])


async def entries(config: Config, backend: Backend) -> list[dict[str, Any]]:
    reply = await _call(backend, ADMIN_SCRIPT, [cache_root(config, backend.name)])
    rows = []
    for key, value in sorted(reply.entries.items()):
        size_kb, _, mtime = value.partition(" ")
        rows.append({"key": key, "size_kb": int(size_kb or 0), "mtime": float(mtime or 0)})
    return rows


async def clear(config: Config, backend: Backend, keys: list[str]) -> list[str]:
    """Remove these entries (`["--all"]`: every one); the names removed."""
    reply = await _call(backend, ADMIN_SCRIPT, [cache_root(config, backend.name), *keys])
    return reply.removed
