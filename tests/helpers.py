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
