"""Shared fixtures: a config and store in a temporary data directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripthut.config import Config
from tests.helpers import local_config


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def config(data_dir: Path) -> Config:
    return local_config(data_dir)
