"""Record a new run in the store: validation that needs the config, then one transaction.

Used by the engine and by clients that do not hold the engine lease (they record the
run, then ask the engine to load it).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scripthut.backends.registry import AVAILABLE_TYPES
from scripthut.config import BackendConfig, Config
from scripthut.engine.ids import new_run_id
from scripthut.env_rules import EnvRule
from scripthut.errors import BackendUnavailable, InvalidInput, Issue, ScriptHutError
from scripthut.states import RunState, TaskState
from scripthut.store import RunRecord, Store, TaskRecord
from scripthut.workflow.env import build_seed, resolve_env
from scripthut.workflow.model import Workflow
from scripthut.workflow.parse import MAX_NAME


@dataclass(frozen=True, slots=True)
class NewRun:
    run: RunRecord
    tasks: list[TaskRecord]


def record_run(
    store: Store,
    config: Config,
    workflow: Workflow,
    *,
    backend: str | None = None,
    name: str | None = None,
    max_concurrent: int | None = None,
    source: str | None = None,
    base_dir: str | None = None,
    workflow_env: Sequence[EnvRule] = (),
    provenance: Mapping[str, Any] | None = None,
    no_cache: bool = False,
    config_dir: str | None = None,
) -> NewRun:
    """Validate against the config and write the run with all its tasks (state pending).

    The run's name is `name`, else the document's title, else the file name (`source`).
    `provenance` (a run from a source or a configured workflow's clone: its `source` and
    `git` keys) is kept in the run's document; `git` seeds SCRIPTHUT_GIT_*.
    `config_dir` (kept in the document) is the folder whose configuration applies, when it
    is not `base_dir` (a kernel's notebook folder; see `RunRecord.config_dir`).
    """
    if max_concurrent is not None and max_concurrent < 1:
        raise InvalidInput([Issue("run", "must be at least 1", "max_concurrent")], "invalid run")
    config = config.for_folder(config_dir or base_dir, strict=True)  # with its project file
    now = time.time()
    run_id = new_run_id(now)
    run_name = name or workflow.title or _file_stem(source)
    if len(run_name) > MAX_NAME or not run_name.isprintable():
        message = f"must be printable and at most {MAX_NAME} characters"
        raise InvalidInput([Issue("run", message, "name")], "invalid run")
    git = (provenance or {}).get("git") or {}
    entry = check_run(
        config, workflow, backend, workflow_env, run_name=run_name, run_id=run_id, now=now, git=git
    )
    document: dict[str, Any] = {
        "env": [
            r.model_dump(by_alias=True, exclude_defaults=True)
            for r in [*workflow_env, *workflow.env]
        ],
        "env_groups": {
            g: [r.model_dump(by_alias=True, exclude_defaults=True) for r in rules]
            for g, rules in workflow.env_groups.items()
        },
    }
    if workflow.title:
        document["title"] = workflow.title
    document.update(run_provenance(base_dir, no_cache))
    if config_dir is not None:
        document["config_dir"] = config_dir
    document.update(provenance or {})
    run = RunRecord(
        id=run_id,
        name=run_name,
        backend=entry.name,
        state=RunState.PENDING,
        created_at=now,
        max_concurrent=max_concurrent,
        source=source,
        base_dir=base_dir,
        document=document,
    )
    tasks = [
        TaskRecord(run_id, task.id, seq, task.to_dict(), workflow.deps.get(task.id, []))
        for seq, task in enumerate(workflow.tasks)
    ]
    store.insert_run(run, tasks)
    return NewRun(run, tasks)


def run_provenance(base_dir: str | None, no_cache: bool) -> dict[str, Any]:
    """The commit the run's folder is at (for the result cache's scope `commit`, manifests
    and $SCRIPTHUT_GIT_SHA) and whether the run may use the result cache."""
    out: dict[str, Any] = {"no_cache": True} if no_cache else {}
    if base_dir is None:
        return out
    try:
        done = subprocess.run(
            ["git", "-C", base_dir, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return out
    sha = done.stdout.strip()
    if done.returncode == 0 and len(sha) in (40, 64):
        out["git"] = {"sha": sha}
    return out


def check_run(
    config: Config,
    workflow: Workflow,
    backend: str | None = None,
    workflow_env: Sequence[EnvRule] = (),
    *,
    run_name: str = "workflow",
    run_id: str = "check",
    now: float | None = None,
    git: Mapping[str, str | None] | None = None,
) -> BackendConfig:
    """Everything a run checks before it is stored: the backend, and every task's env rules."""
    entry = config.backend(backend)
    if entry.type not in AVAILABLE_TYPES:
        raise BackendUnavailable(
            f"backend '{entry.name}' has type '{entry.type}', which is not available yet "
            f"in this version of ScriptHut (available: {', '.join(AVAILABLE_TYPES)})"
        )
    when = time.time() if now is None else now
    rules = [*workflow_env, *workflow.env]
    _check_env(config, entry.name, workflow, rules, run_name, run_id, when, git or {})
    return entry


def anchor_working_dirs(
    config: Config, workflow: Workflow, backend: str | None, folder: str | Path
) -> None:
    """For a workflow run from a file on a backend sharing this file system: tasks with no
    working_dir run in the file's folder, relative ones start there (as do their
    output_file, error_file and generates_source). Other backends keep the defaults."""
    if not config.shares_filesystem(backend):
        return
    base = os.path.abspath(folder)
    for position, task in enumerate(workflow.tasks):
        wd = task.working_dir if task.working_dir_given else "."
        if not wd.startswith(("/", "~")):
            resolved = os.path.normpath(os.path.join(base, wd))
            workflow.tasks[position] = replace(task, working_dir=resolved, working_dir_given=True)


def _file_stem(source: str | None) -> str:
    return os.path.splitext(os.path.basename(source))[0] if source else "workflow"


def new_task_records(
    run_id: str, workflow: Workflow, first_seq: int, generated_by: str
) -> list[TaskRecord]:
    """Records for tasks a generates_source file added to a running run."""
    return [
        TaskRecord(
            run_id,
            task.id,
            first_seq + i,
            task.to_dict(),
            workflow.deps.get(task.id, []),
            TaskState.PENDING,
            generated_by=generated_by,
        )
        for i, task in enumerate(workflow.tasks)
    ]


def _check_env(
    config: Config,
    backend: str,
    workflow: Workflow,
    workflow_env: Sequence[EnvRule],
    run_name: str,
    run_id: str,
    now: float,
    git: Mapping[str, str | None],
) -> None:
    """Resolve env rules once per distinct rule set, so include errors stop the run here."""
    entry = config.backend(backend)
    groups = {**entry.env_groups, **config.env_groups, **workflow.env_groups}
    created = datetime.fromtimestamp(now, UTC)
    seed = build_seed(
        backend=backend,
        workflow=run_name,
        run_id=run_id,
        created_at=created,
        git_repo=git.get("repo"),
        git_branch=git.get("branch"),
        git_sha=git.get("sha"),
    )
    base = [(f"backend:{backend}", entry.env), ("server", config.env), ("workflow", workflow_env)]
    issues: list[Issue] = []
    seen: set[tuple[str, ...]] = set()
    for task in workflow.tasks:
        key = tuple(rule.model_dump_json() for rule in task.env)
        if key in seen:
            continue
        seen.add(key)
        try:
            resolve_env([*base, ("task", task.env)], groups, seed)
        except InvalidInput as exc:
            issues.extend(Issue(f"task '{task.id}'", str(i), "env") for i in exc.issues)
        except ScriptHutError as exc:
            issues.append(Issue(f"task '{task.id}'", str(exc), "env"))
        if len(issues) > 50:
            break
    if issues:
        raise InvalidInput(issues, "invalid env rules")
