"""What a notification says, and its form for each channel. Pure: no I/O.

A message is a small JSON-able dict: `event` (run_completed, run_failed, task_failed), the
run's id, name, backend and state, counts per task state, the failed tasks (id and reason,
at most `failed_tasks_listed`) and, for task_failed, the task. Texts are masked by
`secrets.mask_urls` so a webhook URL in a reason is never sent on.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

from scripthut.secrets import mask_urls

FINAL_EVENTS = {"completed": "run_completed", "failed": "run_failed"}


def event_name(kind: str, data: dict[str, Any]) -> str | None:
    """The notification event a store event is, if any."""
    state = data.get("state")
    if kind == "run" and isinstance(state, str):
        return FINAL_EVENTS.get(state)
    if kind == "task" and state == "failed":
        return "task_failed"
    return None


def build(
    event: str,
    run: dict[str, Any],
    counts: dict[str, int],
    failed: list[dict[str, Any]],
    task: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "event": event,
        "run": {k: run.get(k) for k in ("id", "name", "backend", "state")},
        "counts": dict(sorted(counts.items())),
        "total": sum(counts.values()),
        "failed_tasks": [
            {"id": t["id"], "reason": mask_urls(t.get("reason") or "")} for t in failed
        ],
        "task": None if task is None else {**task, "reason": mask_urls(task.get("reason") or "")},
    }


def subject(message: dict[str, Any]) -> str:
    run = message["run"]
    name = f"{run['name']} ({run['id']})"
    if message["event"] == "task_failed":
        return f"ScriptHut: task {message['task']['id']} of run {name} failed"
    return f"ScriptHut: run {name} {run['state']}"


def body(message: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {state}" for state, n in message["counts"].items())
    lines = [subject(message).removeprefix("ScriptHut: ").capitalize() + "."]
    lines.append(f"Backend: {message['run']['backend']}. Tasks: {message['total']} ({counts}).")
    if message["task"] is not None:
        lines.append(f"Task {message['task']['id']}: {message['task']['reason'] or 'failed'}")
    if message["failed_tasks"]:
        lines.append("Failed tasks:")
        lines += [f"- {t['id']}: {t['reason'] or 'failed'}" for t in message["failed_tasks"]]
    return "\n".join(lines)


def email(message: dict[str, Any], sender: str, to: list[str]) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = subject(message)
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["X-ScriptHut-Event"] = message["event"]
    mail["X-ScriptHut-Run"] = str(message["run"]["id"])
    mail.set_content(body(message) + "\n")
    return mail


def webhook(message: dict[str, Any], form: str) -> dict[str, Any]:
    """The JSON body Slack and Mattermost (`text`) or Teams (a MessageCard) accept."""
    text = body(message)
    if form == "teams":
        color = "2E7D32" if message["event"] == "run_completed" else "C62828"
        return {
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": subject(message),
            "title": subject(message),
            "themeColor": color,
            "text": text.replace("\n", "\n\n"),
        }
    return {"text": text}
