"""The `notifications:` section of scripthut.yaml: what the engine sends, where, for which runs.

Secrets are never written in the file: the SMTP password and each webhook URL are read from
the environment variables it names, when a message is sent.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

EventName = Literal["run_completed", "run_failed", "task_failed"]
ALL_EVENTS: list[EventName] = ["run_completed", "run_failed", "task_failed"]
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class EmailConfig(_Model):
    """SMTP with STARTTLS (port 587) and login, or plain SMTP on a trusted relay."""

    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    ca_file: Path | None = None  # CA bundle for the server's certificate (default: the system's)
    username: str | None = None
    password_env: str | None = Field(default=None, pattern=ENV_NAME)
    sender: str = Field(alias="from", pattern=ADDRESS.pattern)
    to: list[Annotated[str, Field(pattern=ADDRESS.pattern)]] = Field(min_length=1)
    timeout: float = Field(default=30.0, gt=0)


class WebhookConfig(_Model):
    """A JSON POST to an incoming-webhook URL kept in the environment variable `url_env`."""

    url_env: str = Field(pattern=ENV_NAME)
    format: Literal["slack", "mattermost", "teams"] = "slack"
    timeout: float = Field(default=30.0, gt=0)


class NotificationsConfig(_Model):
    events: list[EventName] = Field(default_factory=lambda: list(ALL_EVENTS))
    # opted_in: only runs started with --notify / notify=True / the panel's switch
    runs: Literal["opted_in", "all"] = "opted_in"
    email: EmailConfig | None = None
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    give_up_after_hours: float = Field(default=72.0, gt=0)
    failed_tasks_listed: int = Field(default=20, ge=0)
