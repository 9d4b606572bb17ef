"""Sources: sync them on their backend, keep what the last good sync found, read their files.

`Sources` belongs to one event loop and reads one configuration's sources; the `SyncCache`
it is given may be shared by the `Sources` of other folders' configurations. A sync of a
source (per definition, backend and branch) that is already under way is joined, not
repeated: two requests at once cost one round trip; syncs of one repository are
serialised (`SyncCache.repository`). A failed sync keeps the last good clone (its commit,
folder and files) beside the error.
Configured workflows with a `git` block run their command in a clone the same way
(`workflow_command`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scripthut.backends.remote import Section, new_marker, script_end, script_start
from scripthut.config import (
    Config,
    GitSourceConfig,
    PathSourceConfig,
    SourceConfig,
    WorkflowConfig,
    WorkflowGitConfig,
)
from scripthut.config.checks import not_found
from scripthut.errors import BackendUnavailable, InvalidInput, Issue, NotFound
from scripthut.secrets import mask_urls
from scripthut.sources import containers, script
from scripthut.sources.cache import SyncCache, state_key
from scripthut.sources.state import SyncState, WorkflowFile, check_file, parse
from scripthut.transport import LocalTransport, Transport, TransportError
from scripthut.workflow.clone import TaskClone
from scripthut.workflow.model import Workflow

SYNC_TIMEOUT = 600.0
TransportFor = Callable[[str], Transport]


def transports_of(backend: Callable[[str], object]) -> TransportFor:
    """Each backend's own transport (one connection shared with its scheduler traffic);
    this machine's shell for backends without one (the local backend)."""
    shell: list[Transport] = []

    def transport_for(name: str) -> Transport:
        found = getattr(backend(name), "transport", None)
        if isinstance(found, Transport):
            return found
        if not shell:
            shell.append(LocalTransport())
        return shell[0]

    return transport_for


class SyncFailed(BackendUnavailable):
    """A sync (or a workflow command in a clone) could not finish; the message says why."""


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a run's workflow came from; recorded with the run."""

    kind: str  # "git" or "path" or "command"
    name: str  # the source or configured workflow
    root: str  # the clone or folder on the backend: the tasks' base directory
    file: str | None = None
    repo: str | None = None
    branch: str | None = None
    sha: str | None = None
    clone: TaskClone | None = None  # what each task clones at its start (Batch, EC2)

    def document(self) -> dict[str, Any]:
        """The run document's keys: `source`, `git` (which seeds SCRIPTHUT_GIT_*), and
        `task_clone` when the tasks clone the commit themselves."""
        out: dict[str, Any] = {
            "source": {"type": self.kind, "name": self.name, "file": self.file, "root": self.root}
        }
        if self.sha is not None:
            out["git"] = {"repo": self.repo, "branch": self.branch, "sha": self.sha}
        if self.clone is not None:
            out["task_clone"] = self.clone.to_json()
        return out

    def cloned_by_tasks(self, clone: TaskClone) -> Provenance:
        """The same commit, cloned by each task into `clone.root` (the tasks' base dir)."""
        return replace(self, root=clone.root, clone=clone)


class Sources:
    def __init__(
        self,
        config: Config,
        transport_for: TransportFor,
        timeout: float = SYNC_TIMEOUT,
        cache: SyncCache | None = None,
    ) -> None:
        self.config = config
        self.transport_for = transport_for
        self.timeout = timeout
        self.cache = cache or SyncCache(config.sources_cache_dir)

    # -- reading ------------------------------------------------------------------------

    def entry(self, name: str) -> SourceConfig:
        for entry in self.config.sources:
            if entry.name == name:
                return entry
        raise NotFound(not_found("source", name, [s.name for s in self.config.sources]))

    def backend_of(self, entry: SourceConfig, backend: str | None = None) -> str:
        """Where the source lives: the chosen backend, the configured one, or the first."""
        return self.config.backend(backend or entry.backend).name

    def states(self, name: str) -> dict[str, SyncState]:
        return self.cache.states(state_key(self.entry(name)))

    def state(self, name: str, backend: str, branch: str | None) -> SyncState | None:
        return self.states(name).get(_key(backend, branch))

    def listing(self) -> dict[str, Any]:
        """Every configured source with the latest sync of each backend and branch."""
        out = []
        for entry in self.config.sources:
            states = sorted(self.states(entry.name).values(), key=lambda s: -(s.attempted_at or 0))
            out.append(
                {
                    "name": entry.name,
                    "type": entry.type,
                    "backend": self.backend_of(entry),
                    "url": mask_urls(entry.url) if isinstance(entry, GitSourceConfig) else None,
                    "branch": entry.branch if isinstance(entry, GitSourceConfig) else None,
                    "path": entry.path if isinstance(entry, PathSourceConfig) else None,
                    "workflows_glob": entry.workflows_glob,
                    "description": entry.description,
                    "syncs": [s.to_json() for s in states],
                }
            )
        return {"sources": out}

    # -- syncing ------------------------------------------------------------------------

    async def sync(
        self, name: str, *, backend: str | None = None, branch: str | None = None
    ) -> SyncState:
        """Sync now, or join the sync of the same source, backend and branch under way."""
        entry = self.entry(name)
        where = self.backend_of(entry, backend)
        if isinstance(entry, GitSourceConfig):
            branch = _check_branch(branch or entry.branch)
        else:
            branch = None
        key = (state_key(entry), where, branch)
        inflight = self.cache.inflight
        task = inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._sync(entry, where, branch), name=f"sync-{name}")
            inflight[key] = task
            task.add_done_callback(lambda _t: inflight.pop(key, None))
        return await asyncio.shield(task)

    async def _sync(self, entry: SourceConfig, backend: str, branch: str | None) -> SyncState:
        started = time.time()
        previous = self.state(entry.name, backend, branch) or SyncState(entry.name, backend, branch)
        try:
            found = await self._run_sync(entry, backend, branch)
            state = replace(
                previous,
                sha=found.sha,
                root=found.root,
                files=found.files,
                synced_at=started,
                attempted_at=started,
                error=None,
            )
        except SyncFailed as exc:
            state = previous.failed(str(exc), started)
        await self.cache.record(state_key(entry), _key(backend, branch), state)
        return state

    async def _run_sync(self, entry: SourceConfig, backend: str, branch: str | None) -> SyncState:
        marker = new_marker()
        tail = script.discover(entry.workflows_glob)
        if isinstance(entry, GitSourceConfig):
            spec = _git_spec(entry.name, entry.url, branch or entry.branch, entry)
            if containers.task_clones(self.config, backend):  # read here; tasks clone
                folder = containers.local_clone_dir(self.config, entry.name)
                spec = replace(spec, clone_dir=folder, postclone=None)
            text = script.git_script(marker, spec, tail)
            async with self.cache.repository(backend, spec.clone_dir, spec.url):
                found = await self._script(backend, text, marker, f"source '{entry.name}'")
        else:
            text = script.path_script(marker, entry.path, tail)
            found = await self._script(backend, text, marker, f"source '{entry.name}'")
        sha, root = _root(found, f"source '{entry.name}'")
        files = tuple(_files(found))
        return SyncState(entry.name, backend, branch, sha=sha, root=root, files=files)

    async def _script(
        self, backend: str, text: str, marker: str, where: str, timeout: float | None = None
    ) -> list[Section]:
        transport = self.transport_for(backend)
        try:
            result = await transport.run_script(text, timeout=timeout or self.timeout)
        except TransportError as exc:
            raise SyncFailed(f"{where}: backend '{backend}' unreachable: {exc}") from None
        found = script.sections(result.stdout, marker)
        if not found or found[-1].name != "end":
            detail = result.stderr.strip()[-500:] or f"exit {result.exit_status}"
            raise SyncFailed(f"{where}: the sync stopped early on '{backend}': {detail}")
        _raise_failures(found, where)
        return found

    # -- runs ---------------------------------------------------------------------------

    async def workflow(
        self, name: str, file: str, *, backend: str | None = None, branch: str | None = None
    ) -> tuple[Workflow, Provenance, SyncState]:
        """Sync (joining one under way), then the file's workflow from the last good clone.

        When the sync fails but an earlier clone is known, that clone is used. On Batch and
        EC2 the run's tasks clone the commit themselves (`Provenance.clone`)."""
        entry = self.entry(name)
        target = self.config.backend(self.backend_of(entry, backend))
        clones = containers.task_clones(self.config, target.name)
        if clones:
            containers.check(f"source '{name}'", entry, target)
        state = await self.sync(name, backend=backend, branch=branch)
        if state.root is None:
            raise SyncFailed(state.error or f"source '{name}' was never synced")
        chosen: WorkflowFile = state.file(file)
        if not chosen.valid or chosen.text is None:
            issues = [Issue(f"source '{name}', file '{file}'", i) for i in chosen.issues]
            raise InvalidInput(issues, "invalid workflow file")
        workflow = parse(f"{name}:{file}", chosen.text)
        provenance = Provenance(
            kind=entry.type,
            name=name,
            root=state.root,
            file=file,
            repo=entry.url if isinstance(entry, GitSourceConfig) else None,
            branch=state.branch,
            sha=state.sha,
        )
        if clones and isinstance(entry, GitSourceConfig) and state.sha is not None:
            clone = containers.task_clone(entry, target, state.branch or entry.branch, state.sha)
            provenance = provenance.cloned_by_tasks(clone)
        return workflow, provenance, state

    async def workflow_command(
        self, entry: WorkflowConfig, git: WorkflowGitConfig, timeout: float | None = None
    ) -> tuple[str, Provenance]:
        """A configured workflow's command run in its clone: its output and where it ran."""
        marker = new_marker()
        where = f"workflow '{entry.name}'"
        key = f"workflow:{entry.name}"
        spec = _git_spec(key, git.repo, _check_branch(git.branch), git)
        target = self.config.backend(entry.backend)
        clones = containers.task_clones(self.config, target.name)
        if clones:  # the command runs here, in a clone of its own; the tasks clone again
            containers.check(where, git, target)
            spec = replace(spec, clone_dir=containers.local_clone_dir(self.config, key))
        text = script.git_script(marker, spec, script.command(entry.command))
        async with self.cache.repository(entry.backend, spec.clone_dir, spec.url):
            found = await self._script(entry.backend, text, marker, where, timeout)
        sha, root = _root(found, where)
        output = command_output(found, where)
        provenance = Provenance("command", entry.name, root, None, git.repo, git.branch, sha)
        if clones and sha is not None:
            clone = containers.task_clone(git, target, git.branch, sha)
            provenance = provenance.cloned_by_tasks(clone)
        return output, provenance

    async def plain_command(self, entry: WorkflowConfig, timeout: float | None = None) -> str:
        """A configured workflow's command run in the home folder of its backend."""
        marker = new_marker()
        text = "\n".join([script_start(marker), script.command(entry.command), script_end()])
        where = f"workflow '{entry.name}'"
        found = await self._script(entry.backend, text, marker, where, timeout)
        return command_output(found, where)


def _key(backend: str, branch: str | None) -> str:
    return f"{backend}\n{branch or ''}"


def _check_branch(branch: str) -> str:
    bad = not branch or branch.startswith("-") or any(c in branch for c in " ~^:?*[\\\0\n")
    if bad or ".." in branch:
        raise InvalidInput([Issue("sync", f"'{branch}' is not a valid branch name", "branch")])
    return branch


def _git_spec(
    name: str, url: str, branch: str, entry: GitSourceConfig | WorkflowGitConfig
) -> script.GitSpec:
    key_text = None
    if entry.deploy_key is not None:
        path = Path(entry.deploy_key).expanduser()
        try:
            key_text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SyncFailed(
                f"{name}: cannot read deploy_key {path}: {exc.__class__.__name__}"
            ) from None
    return script.GitSpec(
        url=url,
        branch=branch,
        clone_dir=entry.clone_dir,
        key_text=key_text,
        key_id=script.key_id(name),
        accept_new_host_key=entry.accept_new_host_key,
        postclone=entry.postclone,
    )


_FAILURES = {
    "lsremote": "cannot resolve the branch with git ls-remote",
    "nobranch": "the branch does not exist in the repository",
    "clonefail": "git clone failed",
    "postclonefail": "postclone failed",
    "pathfail": "the folder is missing",
}


def _raise_failures(found: list[Section], where: str) -> None:
    for section in found:
        reason = _FAILURES.get(section.name)
        if reason is not None and section.rc() not in (0, None):
            detail = mask_urls(section.body.strip())[-1500:]
            raise SyncFailed(f"{where}: {reason}" + (f": {detail}" if detail else ""))


def _root(found: list[Section], where: str) -> tuple[str | None, str]:
    for section in found:
        if section.name == "clone" and len(section.words) > 1:
            return section.words[1], section.body.strip("\n")
        if section.name == "root":
            return None, section.body.strip("\n")
    raise SyncFailed(f"{where}: the sync did not report its folder")


def _files(found: list[Section]) -> list[WorkflowFile]:
    out = []
    for section in found:
        if section.name not in ("file", "big"):
            continue
        path, _, text = section.body.partition("\n")
        path = path.removeprefix("./")
        if section.name == "big":
            out.append(check_file(path, None, f"larger than {script.MAX_FILE_BYTES} bytes"))
        else:
            out.append(check_file(path, text))
    return sorted(out, key=lambda f: f.path)


def command_output(found: list[Section], where: str) -> str:
    rc, output, stderr = None, "", ""
    for section in found:
        if section.name == "command":
            rc, output = section.rc(), section.body
        elif section.name == "stderr":
            stderr = section.body.strip()
    if rc is None:
        raise SyncFailed(f"{where}: the command did not run")
    if rc != 0:
        detail = f": {mask_urls(stderr)[-2000:]}" if stderr else ""
        raise InvalidInput(
            [Issue(where, f"command exited with status {rc}{detail}", "command")],
            f"{where} failed",
        )
    return output
