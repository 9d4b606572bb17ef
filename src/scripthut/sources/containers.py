"""Sources on backends whose tasks run in fresh containers (AWS Batch, EC2).

No clone made by a sync is visible to such a task, so the sync runs on this machine: it
resolves the branch head with `git ls-remote` and reads the workflow files from a clone
in the sources cache folder (no `postclone`: nothing runs there). The run records that
commit, and each task clones exactly it at its start (`workflow.clone`). What cannot
reach a container safely is refused here, before anything runs:

- a path source (its folder is not in the container);
- a repository URL carrying a password or token (it would travel in the job request);
- a `deploy_key` on EC2 (an instance's user data is readable by anyone who may describe
  it), or on Batch without a `job_definition` of the user's (the key reaches the
  container only as a secret of the job definition, in `KEY_VARIABLE`).
"""

from __future__ import annotations

from pathlib import Path

from scripthut.config import (
    BackendConfig,
    BatchBackendConfig,
    Config,
    GitSourceConfig,
    SourceConfig,
    WorkflowGitConfig,
)
from scripthut.errors import InvalidInput, Issue
from scripthut.secrets import url_secrets
from scripthut.sources.script import key_id
from scripthut.workflow.clone import DEFAULT_CLONE_DIR, KEY_VARIABLE, TaskClone, clones_at_start

CACHE_CLONES = "clones"


def task_clones(config: Config, backend: str) -> bool:
    """True when the tasks of `backend` clone their run's commit themselves."""
    return clones_at_start(config.backend(backend).type)


def local_clone_dir(config: Config, name: str) -> str:
    """Where this machine keeps the clones it reads a source's files from (private)."""
    return str(Path(config.sources_cache_dir).absolute() / CACHE_CLONES / key_id(name))


def check(where: str, entry: SourceConfig | WorkflowGitConfig, backend: BackendConfig) -> None:
    """Refuse what a container cannot get safely; InvalidInput naming what and why."""
    issues: list[Issue] = []
    if not isinstance(entry, GitSourceConfig | WorkflowGitConfig):
        message = (
            f"a path source's folder is not visible to the tasks of {backend.type} backend "
            f"'{backend.name}' (each runs in a fresh container): use a git source"
        )
        raise InvalidInput([Issue(where, message, "backend")], "source not usable there")
    url = entry.url if isinstance(entry, GitSourceConfig) else entry.repo
    if url_secrets(url):
        message = (
            f"the repository URL carries a credential, which the tasks of backend "
            f"'{backend.name}' would receive in their job request: use a URL without one "
            f"(and {KEY_VARIABLE} for an SSH deploy key)"
        )
        field = "url" if isinstance(entry, GitSourceConfig) else "repo"
        issues.append(Issue(where, message, field))
    if entry.deploy_key is not None:
        problem = _key_problem(backend)
        if problem is not None:
            issues.append(Issue(where, problem, "deploy_key"))
    if issues:
        raise InvalidInput(issues, "source not usable there")


def _key_problem(backend: BackendConfig) -> str | None:
    never = "ScriptHut never sends deploy_key to AWS"
    if isinstance(backend, BatchBackendConfig):
        if backend.job_definition is not None:
            return None
        return (
            f"{never}; on AWS Batch the key reaches a task only as a secret of its job "
            f"definition: set job_definition on backend '{backend.name}' to a definition whose "
            f"secrets give {KEY_VARIABLE} (from Secrets Manager or SSM Parameter Store)"
        )
    return (
        f"{never}, and an EC2 instance cannot receive it safely (its user data is readable "
        f"by anyone who may describe it): use a repository the instance can read without a "
        f"key, or a batch backend whose job definition gives {KEY_VARIABLE} as a secret"
    )


def task_clone(
    entry: GitSourceConfig | WorkflowGitConfig, backend: BackendConfig, branch: str, sha: str
) -> TaskClone:
    """What each task of a run on `backend` clones: this commit, into the backend's
    `clone_dir` (default `workflow.clone.DEFAULT_CLONE_DIR`)."""
    url = entry.url if isinstance(entry, GitSourceConfig) else entry.repo
    folder = getattr(backend, "clone_dir", "") or DEFAULT_CLONE_DIR
    return TaskClone(
        url=url,
        branch=branch,
        sha=sha,
        clone_dir=folder,
        postclone=entry.postclone,
        key=entry.deploy_key is not None,
        accept_new_host_key=entry.accept_new_host_key,
    )
