"""Turn one task of a run into a ready-to-submit job: env, script, paths."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scripthut.backends.base import Backend, JobPaths, JobSpec
from scripthut.config import BackendConfig, Config, shares_filesystem
from scripthut.engine.ids import attempt_tag
from scripthut.env_rules import EnvRule
from scripthut.outputs import output_paths
from scripthut.store.records import RunRecord
from scripthut.workflow.clone import TaskClone, clone_lines
from scripthut.workflow.env import ResolvedEnv, build_seed, resolve_env
from scripthut.workflow.model import TaskSpec
from scripthut.workflow.script import env_lines, render_task_script


@dataclass(frozen=True, slots=True)
class BuiltJob:
    spec: JobSpec
    env: dict[str, Any]


@dataclass(slots=True)
class RunContext:
    """What every job of one run shares: config layers, seed, backend."""

    config: Config
    entry: BackendConfig
    backend: Backend
    run: RunRecord
    workflow_env: Sequence[EnvRule]
    groups: Mapping[str, Sequence[EnvRule]]
    seed: Mapping[str, str]
    clone: TaskClone | None = None  # the commit each task clones at its start (Batch, EC2)
    _envs: dict[tuple[int, ...], tuple[ResolvedEnv, dict[str, Any]]] = field(default_factory=dict)
    _env_lines: dict[tuple[int, ...], list[str]] = field(default_factory=dict)

    @classmethod
    def for_run(cls, config: Config, backend: Backend, run: RunRecord) -> RunContext:
        entry = config.backend(run.backend)
        doc = run.document
        workflow_env = [EnvRule.model_validate(r) for r in doc.get("env", [])]
        doc_groups = {
            name: [EnvRule.model_validate(r) for r in rules]
            for name, rules in doc.get("env_groups", {}).items()
        }
        groups: dict[str, Sequence[EnvRule]] = {
            **entry.env_groups,
            **config.env_groups,
            **doc_groups,
        }
        seed = build_seed(
            backend=run.backend,
            workflow=run.name,
            run_id=run.id,
            created_at=datetime.fromtimestamp(run.created_at, UTC),
            git_repo=doc.get("git", {}).get("repo"),
            git_branch=doc.get("git", {}).get("branch"),
            git_sha=doc.get("git", {}).get("sha"),
        )
        clone = TaskClone.from_json(doc.get("task_clone"))
        return cls(config, entry, backend, run, workflow_env, groups, seed, clone)

    def resolved(self, task: TaskSpec) -> tuple[ResolvedEnv, dict[str, Any]]:
        """The task's env and its JSON form, computed once per distinct set of task rules."""
        key = tuple(map(id, task.env))
        cached = self._envs.get(key)
        if cached is None:
            env = self.resolve(task)
            cached = self._envs[key] = (env, env.to_json())
        return cached

    def script_env(self, task: TaskSpec) -> tuple[ResolvedEnv, dict[str, Any], list[str]]:
        """`resolved(task)` and its script lines, rendered once per distinct set of rules."""
        env, env_json = self.resolved(task)
        key = tuple(map(id, task.env))
        lines = self._env_lines.get(key)
        if lines is None:
            lines = self._env_lines[key] = env_lines(env)
        return env, env_json, lines

    def resolve(self, task: TaskSpec) -> ResolvedEnv:
        layers: list[tuple[str, Sequence[EnvRule]]] = [
            (f"backend:{self.entry.name}", self.entry.env),
            ("server", self.config.env),
            ("workflow", self.workflow_env),
            ("task", task.env),
        ]
        return resolve_env(layers, self.groups, self.seed)

    def working_dir(self, task: TaskSpec) -> str:
        """The task's directory as the backend's host sees it (`~` is the home there).

        Relative working dirs on backends sharing this file system start at the base dir.
        In a run from a source, `~` (the default) is the clone or folder and relative dirs
        start there, on every backend (on Batch and EC2, the clone each task makes).
        """
        wd = task.working_dir
        root = self.run.base_dir if self.run.document.get("source") else None
        if root is not None:
            return self.backend.host_path(source_dir(root, wd))
        if shares_filesystem(self.entry) and self.run.base_dir and not _is_rooted(wd):
            return os.path.normpath(os.path.join(self.run.base_dir, wd))
        return self.backend.host_path(wd)

    def task_path(self, task: TaskSpec, path: str) -> str:
        """A file the task names (output_file, error_file, generates_source) as the backend's
        host sees it: relative to the task's directory, `~` the home there."""
        return self.backend.host_path(join_path(self.working_dir(task), path))

    def build(self, task: TaskSpec, seq: int, attempt: int) -> BuiltJob:
        tag = attempt_tag(self.run.id, seq, attempt)
        env, env_json, lines = self.script_env(task)
        working_dir = self.working_dir(task)
        defaults = self.backend.job_paths(self.run.id, task.id, attempt)
        paths = JobPaths(
            stdout=self.task_path(task, task.output_file) if task.output_file else defaults.stdout,
            stderr=self.task_path(task, task.error_file) if task.error_file else defaults.stderr,
            exit_code=defaults.exit_code,
            script=defaults.script,
        )
        body = render_task_script(
            task,
            env,
            exit_path=paths.exit_code,
            login_shell=bool(getattr(self.entry, "login_shell", False)),
            tag=tag,
            before_cd=clone_lines(self.clone) if self.clone else (),
            outputs=output_paths(paths.exit_code),
            working_dir=working_dir,
            prepared_env=lines,
        )
        values = env.as_dict()

        def spec(script: str) -> JobSpec:
            return JobSpec(
                tag=tag,
                run_id=self.run.id,
                task_id=task.id,
                attempt=attempt,
                name=task.name,
                script=script,
                paths=paths,
                working_dir=working_dir,
                cpus=task.cpus,
                memory_mb=task.memory_mb,
                time_limit_s=task.time_limit_s,
                partition=task.partition,
                gres=task.gres,
                image=task.image,
                env=values,
            )

        # Built twice rather than through dataclasses.replace, which costs several times more.
        return BuiltJob(spec=spec(self.backend.render_script(spec(""), body)), env=env_json)


def source_dir(root: str, working_dir: str) -> str:
    """A task's directory in a run from a source: omitted or `~` is `root`, relative ones
    start there, absolute ones and `~/...` are kept as written."""
    if working_dir in ("~", "", "."):
        return root
    if _is_rooted(working_dir):
        return working_dir
    return os.path.normpath(os.path.join(root, working_dir))


def join_path(working_dir: str, path: str) -> str:
    """`path` relative to `working_dir`, keeping `~` for the backend's shell to expand."""
    if _is_rooted(path):
        return path
    if working_dir in ("~", ""):
        return f"~/{path}"
    return f"{working_dir.rstrip('/')}/{path}"


def _is_rooted(path: str) -> bool:
    return path.startswith(("/", "~"))
