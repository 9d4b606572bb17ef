"""Sending one message: SMTP (STARTTLS and login) or a webhook POST. Blocking: called in a
worker thread. Secrets are read from the environment at the moment of sending."""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import urllib.error
import urllib.request
from typing import Any

from scripthut.config.notifications import EmailConfig, WebhookConfig
from scripthut.errors import ScriptHutError
from scripthut.notify import messages
from scripthut.secrets import mask_urls


class SendError(ScriptHutError):
    """A message could not be delivered (it is retried)."""


def send_email(config: EmailConfig, message: dict[str, Any]) -> None:
    password = _secret(config.password_env) if config.password_env else None
    mail = messages.email(message, config.sender, config.to)
    try:
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout) as smtp:
            if config.starttls:
                cafile = str(config.ca_file.expanduser()) if config.ca_file else None
                smtp.starttls(context=ssl.create_default_context(cafile=cafile))
            if config.username and password is not None:
                smtp.login(config.username, password)
            smtp.send_message(mail)
    except (OSError, smtplib.SMTPException) as exc:
        raise SendError(f"SMTP {config.host}:{config.port}: {exc}") from None


def send_webhook(config: WebhookConfig, message: dict[str, Any]) -> None:
    url = _secret(config.url_env)
    if not url.startswith(("https://", "http://")):
        raise SendError(f"${config.url_env} is not an http(s) URL")
    data = json.dumps(messages.webhook(message, config.format)).encode()
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=config.timeout) as reply:  # noqa: S310
            reply.read(4096)
    except urllib.error.HTTPError as exc:
        raise SendError(f"webhook ${config.url_env}: HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise SendError(f"webhook ${config.url_env}: {mask_urls(str(exc))}") from None


def _secret(name: str | None) -> str:
    value = os.environ.get(name or "")
    if not value:
        raise SendError(f"the environment variable {name} is not set")
    return value
