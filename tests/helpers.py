"""Helpers shared by test modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scripthut.config import Config, parse_config


def local_config(data_dir: Path, **local: Any) -> Config:
    """A config with one local backend named 'local' and settings suited to tests."""
    backend = {"name": "local", "type": "local", "max_concurrent": 4, "cpus": 4, **local}
    return parse_config(
        {"backends": [backend], "settings": {"data_dir": str(data_dir), "poll_interval": 2}},
        source="test",
    )


# A workflow whose env holds secrets of every kind the masking rule knows (scripthut.secrets).
SECRET_TOKEN = "tok-1234abcd"
SECRET_HOOK = "hookpath99"
SECRET_PASSWORD = "pw-98765"
SECRET_VALUES = (SECRET_TOKEN, SECRET_HOOK, SECRET_PASSWORD)
SECRET_WORKFLOW: dict[str, Any] = {
    "env": [
        {
            "set": {
                "API_TOKEN": SECRET_TOKEN,
                "SLACK_URL": f"https://hooks.slack.com/services/T1/B2/{SECRET_HOOK}",
                "DB_URL": f"postgres://ann:{SECRET_PASSWORD}@db.example/x",
            }
        }
    ],
    "tasks": [
        {
            "id": "a",
            "command": "echo done",
            "env": [{"set": {"COPY": f"prefix-{SECRET_TOKEN}", "MY_PASSWORD": "pa"}}],
        }
    ],
}


def assert_no_secret(text: str) -> None:
    """None of SECRET_WORKFLOW's clear values is in `text` (the short one as its export)."""
    for secret in SECRET_VALUES:
        assert secret not in text, secret
    assert "MY_PASSWORD='pa'" not in text and '"MY_PASSWORD": "pa"' not in text
