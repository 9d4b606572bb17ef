"""Errors that carry what is wrong and where, for every layer to raise."""

from __future__ import annotations

import difflib
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
    file: str | None = None  # the file the problem is in, when it comes from one
    line: int | None = None

    def to_json(self) -> dict[str, object]:
        """`where`, `field`, `message`, and `file` and `line` when the issue is in a file."""
        out: dict[str, object] = {"where": self.where, "field": self.field}
        out["message"] = self.message
        if self.file is not None:
            out |= {"file": self.file, "line": self.line}
        return out

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


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for a real near-miss of `word` among `choices`, else "".

    A near-miss is very similar (difflib ratio >= 0.7) or one edit away (a typo, a
    transposition: 'hcp' -> 'hpc'); 'inputs' is not a near-miss of 'cpus'.
    """
    for close in difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6):
        ratio = difflib.SequenceMatcher(None, word, close).ratio()
        if ratio >= 0.7 or _one_edit(word, close):
            return f" (did you mean '{close}'?)"
    return ""


def _one_edit(a: str, b: str) -> bool:
    """One insertion, deletion, substitution or swap of neighbours turns `a` into `b`."""
    if abs(len(a) - len(b)) > 1:
        return False
    start = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
    if start is None:
        return True
    i = start
    return (
        a[i + 1 :] == b[i + 1 :]
        or a[i + 1 :] == b[i:]
        or a[i:] == b[i + 1 :]
        or (a[i : i + 2] == b[i : i + 2][::-1] and a[i + 2 :] == b[i + 2 :])
    )
