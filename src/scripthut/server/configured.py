"""Configured workflows and sources, each read in the configuration of a folder: the part of
`ScriptHutService` behind `workflows/...` and `sources/...`.

A request may name the folder whose configuration applies (`config_dir`: the global file plus
the project file found walking up from it); without it, the server's configuration applies.
Each folder configuration has its own `Sources`, all sharing one `SyncCache`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripthut.config import Config, WorkflowConfig
from scripthut.env_rules import EnvRule
from scripthut.server import reads
from scripthut.server.commands import CommandSlots, workflow_tasks
from scripthut.server.ids import addressable_source, addressable_workflow
from scripthut.server.requests import (
    RunRequest,
    read_config_dir,
    read_run_options,
    read_source_request,
)
from scripthut.sources import Provenance, Sources, SyncCache, transports_of
from scripthut.workflow.model import Workflow

if TYPE_CHECKING:
    from scripthut.backends.registry import BackendRegistry
    from scripthut.server.service import ServiceOptions
    from scripthut.store import Store


class ConfiguredRuns:
    """Workflows named in a configuration and its sources: list, dry-run, run, sync."""

    options: ServiceOptions
    commands: CommandSlots
    _sources: dict[int, Sources]  # per folder configuration (by identity)
    _sync_cache: SyncCache | None  # shared by them all

    if TYPE_CHECKING:

        def _ready(self) -> tuple[Config, Store]: ...

        def _registry(self) -> BackendRegistry: ...

        def _config_file(self) -> str | None: ...

        async def _start(
            self,
            read: Callable[[], RunRequest],
            workflow_env: Sequence[EnvRule] = (),
            provenance: Provenance | None = None,
        ) -> dict[str, Any]: ...

    # -- configured workflows -------------------------------------------------------------

    def workflows(self, config_dir: str | None = None) -> dict[str, Any]:
        """The configured workflows of the server's configuration, or of `config_dir`'s
        (the global file plus the project file found from it)."""
        config = self._config_for(read_config_dir(config_dir))
        names = [w.name for w in config.workflows if addressable_workflow(w.name)]
        return reads.workflows_json(config, names)

    async def dry_run(self, name: str, body: object = None) -> dict[str, Any]:
        options = read_run_options(body, dry=True)
        config = self._config_for(options.config_dir)
        entry = config.workflow(name)
        workflow, provenance = await self._command(config, entry, options.config_dir)
        return {
            **reads.dry_run_json(entry, workflow),
            **reads.provenance_json(provenance),
            "no_cache": options.no_cache,
        }

    async def run_workflow(self, name: str, body: object) -> dict[str, Any]:
        options = read_run_options(body)
        config = self._config_for(options.config_dir)
        entry = config.workflow(name)
        workflow, provenance = await self._command(config, entry, options.config_dir)
        workflow.env_groups = {**entry.env_groups, **workflow.env_groups}
        where = options.config_dir or self._config_file() or "the config"
        request = RunRequest(
            workflow,
            backend=entry.backend,
            name=options.name or entry.name,
            max_concurrent=options.max_concurrent or entry.max_concurrent,
            source=f"workflow '{entry.name}' in {where}",
            base_dir=provenance.root if provenance else str(self._cwd(options.config_dir)),
            config_dir=options.config_dir,
            no_cache=options.no_cache,
        )
        return await self._start(lambda: request, entry.env, provenance)

    async def _command(
        self, config: Config, entry: WorkflowConfig, config_dir: str | None
    ) -> tuple[Workflow, Provenance | None]:
        """The tasks a workflow's command prints, within the server's command slots; a
        command run here starts in `config_dir` when given (as in a notebook's own engine)."""
        with self.commands.slot():
            return await workflow_tasks(
                config,
                entry,
                self._cwd(config_dir),
                self.options.command_timeout,
                self._source_syncs(config_dir),
            )

    def _config_for(self, config_dir: str | None) -> Config:
        """The server's configuration, or `config_dir`'s; a broken project file there is a
        400 with its located errors."""
        config, _ = self._ready()
        return config if config_dir is None else config.for_folder(config_dir, strict=True)

    # -- sources --------------------------------------------------------------------------

    def _source_syncs(self, config_dir: str | None = None) -> Sources:
        """The sources of one folder configuration; one `Sources` each, sharing one cache."""
        config = self._config_for(config_dir)
        found = self._sources.get(id(config))
        if found is None or found.config is not config:
            cache = self._sync_cache
            if cache is None or cache.folder != config.sources_cache_dir:
                cache = self._sync_cache = SyncCache(config.sources_cache_dir)
            found = Sources(config, transports_of(lambda b: self._registry().get(b)), cache=cache)
            self._sources[id(config)] = found
        return found

    def sources(self, config_dir: str | None = None) -> dict[str, Any]:
        """Every source and its latest syncs; `addressable`: its name fits in an API path."""
        listing = self._source_syncs(read_config_dir(config_dir)).listing()
        for source in listing["sources"]:
            source["addressable"] = addressable_source(source["name"])
        return listing

    async def sync(self, name: str | None = None, body: object = None) -> dict[str, Any]:
        """Sync one source (or all); each reply carries its error, if any, beside the last
        good clone. Syncs of the same source under way are joined."""
        choice = read_source_request(body, file=False)
        backend, branch = choice.backend, choice.branch
        syncs = self._source_syncs(choice.config_dir)
        names = [name] if name is not None else [s.name for s in syncs.config.sources]
        for each in names:
            syncs.entry(each)  # unknown names: 404 before anything runs
        states = await asyncio.gather(
            *(syncs.sync(each, backend=backend, branch=branch) for each in names)
        )
        return {"sources": [state.to_json() for state in states]}

    async def source_dry_run(self, name: str, body: object) -> dict[str, Any]:
        """The tasks and DAG of a source's workflow file, nothing started."""
        choice = read_source_request(body)
        workflow, provenance, _ = await self._source_syncs(choice.config_dir).workflow(
            name, choice.file, backend=choice.backend, branch=choice.branch
        )
        dry = reads.source_dry_run_json(name, choice.file, workflow, provenance)
        return {**dry, "no_cache": choice.options.no_cache}

    async def run_source(self, name: str, body: object) -> dict[str, Any]:
        """Start a run of a source's workflow file at the branch head (synced first)."""
        choice = read_source_request(body, run=True)
        options = choice.options
        syncs = self._source_syncs(choice.config_dir)
        workflow, provenance, state = await syncs.workflow(
            name, choice.file, backend=choice.backend, branch=choice.branch
        )
        entry = syncs.entry(name)
        request = RunRequest(
            workflow,
            backend=state.backend,
            name=options.name,
            max_concurrent=options.max_concurrent or entry.max_concurrent,
            source=f"{name}:{choice.file}",
            base_dir=provenance.root,
            config_dir=choice.config_dir,
            no_cache=options.no_cache,
        )
        return await self._start(lambda: request, (), provenance)

    def _cwd(self, config_dir: str | None = None) -> Path:
        if config_dir is not None:
            return Path(config_dir)
        return self.options.root_dir or Path.cwd()
