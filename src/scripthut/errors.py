"""Errors that carry what is wrong and where, for every layer to raise."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class ScriptHutError(Exception):
    """Base of every error ScriptHut raises on purpose."""


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem in user input: where it is, which field, what is wrong."""

    where: str
    message: str
    field: str | None = None

    def __str__(self) -> str:
        place = f"{self.where}, field '{self.field}'" if self.field else self.where
        return f"{place}: {self.message}"


class InvalidInput(ScriptHutError):
    """User input (a workflow, a config file, a request) has one or more issues."""

    def __init__(self, issues: Iterable[Issue], title: str = "invalid input") -> None:
        self.issues = list(issues)
        self.title = title
        super().__init__(self.render())

    def render(self) -> str:
        lines = [
            f"{self.title} ({len(self.issues)} problem{'s' if len(self.issues) != 1 else ''}):"
        ]
        lines.extend(f"  - {issue}" for issue in self.issues)
        return "\n".join(lines)


class NotFound(ScriptHutError):
    """A run, task, backend or workflow that does not exist."""


class BackendUnavailable(ScriptHutError):
    """A backend that is configured but cannot be used (no driver yet, unreachable)."""


class LeaseHeld(ScriptHutError):
    """Another engine already drives this data directory."""


class UnsafePath(ScriptHutError):
    """A file ScriptHut refuses to open: a log path that is a symbolic link."""
