"""Errors of the API layer and the one table that maps every error to an HTTP status.

The table is read in both directions: handlers turn an exception into a status and a
reason, and the HTTP client turns a status and reason back into the same exception type.
"""

from __future__ import annotations

from typing import Any

from scripthut.errors import (
    BackendUnavailable,
    InvalidInput,
    Issue,
    LeaseHeld,
    NotFound,
    ScriptHutError,
    UnsafePath,
)


class Conflict(ScriptHutError):
    """The request does not fit the current state (deleting a run that is not final)."""


class ServiceUnavailable(ScriptHutError):
    """The API cannot serve this now: the config is broken or the engine failed to start."""

    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message)
        self.issues = list(issues or [])


class PayloadTooLarge(ScriptHutError):
    """The request body is larger than `ScriptHut.max_body_mb` allows."""


class TooManyRequests(ScriptHutError):
    """Too many workflow commands are running already; the request may be retried later."""


# (exception type, HTTP status, reason); the first matching row wins.
STATUS_TABLE: tuple[tuple[type[ScriptHutError], int, str], ...] = (
    (InvalidInput, 400, "invalid_input"),
    (NotFound, 404, "not_found"),
    (UnsafePath, 403, "unsafe_path"),
    (Conflict, 409, "conflict"),
    (PayloadTooLarge, 413, "payload_too_large"),
    (TooManyRequests, 429, "too_many_requests"),
    (ServiceUnavailable, 503, "service_unavailable"),
    (BackendUnavailable, 503, "backend_unavailable"),
    (LeaseHeld, 503, "lease_held"),
    (ScriptHutError, 500, "error"),
)


def issues_json(issues: list[Issue]) -> list[dict[str, Any]]:
    return [i.to_json() for i in issues]


def error_reply(exc: ScriptHutError) -> tuple[int, dict[str, Any]]:
    """The status and JSON body for an error raised on purpose."""
    status, reason = next((s, r) for t, s, r in STATUS_TABLE if isinstance(exc, t))
    body: dict[str, Any] = {"message": str(exc), "reason": reason}
    if isinstance(exc, InvalidInput):
        body["message"] = exc.title
        body["errors"] = issues_json(exc.issues)
    elif isinstance(exc, ServiceUnavailable) and exc.issues:
        body["errors"] = issues_json(exc.issues)
    return status, body


def error_from_reply(status: int, body: dict[str, Any]) -> ScriptHutError:
    """The exception an error reply stands for (the inverse of `error_reply`)."""
    reason = str(body.get("reason") or "")
    message = str(body.get("message") or f"HTTP {status}")
    issues = [
        Issue(
            str(e.get("where", "")),
            str(e.get("message", "")),
            e.get("field"),
            e.get("file"),
            e.get("line"),
        )
        for e in body.get("errors") or []
        if isinstance(e, dict)
    ]
    for kind, known_status, known_reason in STATUS_TABLE:
        if known_reason == reason and known_status == status:
            if kind is InvalidInput:
                return InvalidInput(issues, message)
            if kind is ServiceUnavailable:
                return ServiceUnavailable(message, issues)
            return kind(message)
    return ScriptHutError(f"HTTP {status}: {message}")
