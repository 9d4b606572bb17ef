"""Workflows the config names: a source's file (`--source`) or a workflow command
(`--workflow`), for `scripthut run` and `scripthut dry-run`; tables of sources and syncs."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from scripthut.cli.session import Session
from scripthut.env_rules import EnvRule
from scripthut.secrets import SecretMasker, document_pairs, mask_document, mask_urls
from scripthut.server.commands import workflow_tasks
from scripthut.sources import Provenance
from scripthut.workflow.model import Workflow

SHOWN_TASKS = 30


@dataclass(frozen=True, slots=True)
class Chosen:
    """A workflow to run or preview, with where it came from."""

    workflow: Workflow
    backend: str
    name: str | None
    source: str
    provenance: Provenance | None
    max_concurrent: int | None = None
    env: Sequence[EnvRule] = ()


async def chosen(session: Session, args: argparse.Namespace) -> Chosen:
    """The workflow `--source S FILE` or `--workflow NAME` stands for (synced or run now)."""
    if args.workflow is not None:
        entry = session.config.workflow(args.workflow)
        workflow, provenance = await workflow_tasks(
            session.config, entry, Path.cwd(), sources=session.sources
        )
        workflow.env_groups = {**entry.env_groups, **workflow.env_groups}
        return Chosen(
            workflow,
            entry.backend,
            entry.name,
            f"workflow '{entry.name}'",
            provenance,
            entry.max_concurrent,
            entry.env,
        )
    workflow, provenance, state = await session.sources.workflow(
        args.source, args.file, backend=args.backend, branch=args.branch
    )
    source = session.sources.entry(args.source)
    name = f"{args.source}:{args.file}"
    return Chosen(workflow, state.backend, None, name, provenance, source.max_concurrent)


def preview(choice: Chosen) -> dict[str, Any]:
    """What a dry run shows: counts, provenance and the document (secret values masked)."""
    document = choice.workflow.to_document()
    provenance = choice.provenance.document() if choice.provenance else {}
    git = provenance.get("git")
    if git is not None and git.get("repo"):
        git = {**git, "repo": mask_urls(git["repo"])}
    return {
        "workflow": choice.source,
        "backend": choice.backend,
        "tasks": len(choice.workflow.tasks),
        "edges": sum(len(d) for d in choice.workflow.deps.values()),
        "provenance": {**provenance.get("source", {}), "git": git} if provenance else None,
        "document": mask_document(document, SecretMasker(list(document_pairs(document)))),
    }


def preview_text(doc: Mapping[str, Any]) -> str:
    lines = [f"{doc['workflow']}: {doc['tasks']} tasks, {doc['edges']} dependencies"]
    lines.append(f"backend {doc['backend']}")
    provenance = doc.get("provenance") or {}
    git = provenance.get("git") or {}
    if git:
        lines.append(f"commit {git['sha']} of {git['repo']} ({git['branch']})")
    if provenance.get("root"):
        lines.append(f"in {provenance['root']}")
    tasks = doc["document"].get("tasks", []) if isinstance(doc["document"], dict) else []
    for task in tasks[:SHOWN_TASKS]:
        deps = ", ".join(task.get("deps", []))
        lines.append(f"  {task['id']}" + (f"  <- {deps}" if deps else ""))
    if len(tasks) > SHOWN_TASKS:
        lines.append(f"  ... and {len(tasks) - SHOWN_TASKS} more")
    return "\n".join(lines)


def sources_table(sources: Sequence[Mapping[str, Any]]) -> Table:
    table = Table("source", "backend", "branch", "commit", "file", "title", "tasks", "problem")
    for source in sources:
        syncs = source.get("syncs") or []
        if not syncs:
            table.add_row(source["name"], source["backend"], source.get("branch"), "never synced")
        for state in syncs:
            sha = (state.get("sha") or "")[:12] or (state.get("root") or "")
            error = state.get("error") or ""
            files = state.get("files") or [{}]
            for file in files:
                issues = "; ".join(file.get("issues") or []) or error
                tasks = "" if file.get("tasks") is None else str(file["tasks"])
                table.add_row(
                    source["name"],
                    state["backend"],
                    state.get("branch") or "",
                    sha,
                    file.get("path") or "",
                    file.get("title") or "",
                    tasks,
                    issues,
                )
    return table


def sync_table(states: Sequence[Mapping[str, Any]]) -> Table:
    table = Table("source", "backend", "branch", "commit", "files", "error")
    for state in states:
        sha = (state.get("sha") or "")[:12] or (state.get("root") or "")
        table.add_row(
            state["source"],
            state["backend"],
            state.get("branch") or "",
            sha,
            str(len(state.get("files") or [])),
            state.get("error") or "",
        )
    return table
