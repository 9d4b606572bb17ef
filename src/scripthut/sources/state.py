"""What a sync learned: the commit, the clone's folder, and each workflow file validated.

Pure data plus the per-file validation; `SyncState` is saved as JSON (one private file per
source definition in the sources cache folder, see `cache.state_key`) so the last good clone
outlives the process.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from scripthut.errors import InvalidInput, Issue
from scripthut.private import make_private_dirs
from scripthut.workflow.model import Workflow
from scripthut.workflow.parse import decode_json, parse_document

MAX_ISSUES_SHOWN = 20


@dataclass(frozen=True, slots=True)
class WorkflowFile:
    """One file the glob found: valid (title, task count) or its problems."""

    path: str
    text: str | None
    title: str | None = None
    tasks: int | None = None
    issues: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.issues

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "title": self.title,
            "tasks": self.tasks,
            "valid": self.valid,
            "issues": list(self.issues),
        }


def check_file(path: str, text: str | None, problem: str | None = None) -> WorkflowFile:
    """Validate one file; its problems are kept with it, never raised."""
    if text is None:
        return WorkflowFile(path, None, issues=(problem or "could not be read",))
    try:
        workflow = parse(path, text)
    except InvalidInput as exc:
        shown = [str(i) for i in exc.issues[:MAX_ISSUES_SHOWN]]
        if len(exc.issues) > MAX_ISSUES_SHOWN:
            shown.append(f"... and {len(exc.issues) - MAX_ISSUES_SHOWN} more")
        return WorkflowFile(path, text, issues=tuple(shown))
    return WorkflowFile(path, text, title=workflow.title, tasks=len(workflow.tasks))


def parse(path: str, text: str) -> Workflow:
    return parse_document(decode_json(text, source=path), source=path)


@dataclass(frozen=True, slots=True)
class SyncState:
    """The outcome of the latest sync of one source on one backend and branch."""

    source: str
    backend: str
    branch: str | None  # None for a path source
    sha: str | None = None  # commit of the last good clone
    root: str | None = None  # its folder on the backend (absolute)
    synced_at: float | None = None  # when that clone was last confirmed
    attempted_at: float | None = None
    error: str | None = None  # why the latest attempt failed (None: it worked)
    files: tuple[WorkflowFile, ...] = field(default=())

    def failed(self, error: str, when: float) -> SyncState:
        """The same last good clone, with the latest attempt's error."""
        return replace(self, error=error, attempted_at=when)

    def file(self, path: str) -> WorkflowFile:
        for entry in self.files:
            if entry.path == path:
                return entry
        known = ", ".join(f.path for f in self.files) or "none"
        message = f"no workflow file '{path}' (found: {known})"
        raise InvalidInput([Issue(f"source '{self.source}'", message, "file")], "unknown file")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["files"] = [f.to_json() for f in self.files]
        return out

    def to_disk(self) -> dict[str, Any]:
        out = asdict(self)
        out["files"] = [{"path": f.path, "text": f.text} for f in self.files]
        return out

    @classmethod
    def from_disk(cls, data: dict[str, Any]) -> SyncState:
        files = tuple(check_file(f["path"], f.get("text")) for f in data.get("files", []))
        known: dict[str, Any] = {k: data.get(k) for k in cls.__dataclass_fields__}
        known["files"] = files
        return cls(**known)


class StateFiles:
    """`<cache>/<state key>.json`: every backend/branch state of a source."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def load(self, key: str) -> dict[str, SyncState]:
        try:
            data = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        out: dict[str, SyncState] = {}
        for key, value in data.items():
            try:
                out[key] = SyncState.from_disk(value)
            except (TypeError, KeyError):
                continue
        return out

    def save(self, key: str, states: dict[str, SyncState]) -> None:
        make_private_dirs(self.folder)
        target = self.path(key)
        tmp = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({k: v.to_disk() for k, v in states.items()}, out)
        os.replace(tmp, target)
