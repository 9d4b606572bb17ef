"""One real JupyterHub for the session (see harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hub.harness import Hub, start_hub, stop_hub


@pytest.fixture(scope="session")
def hub() -> Iterator[Hub]:
    running = start_hub("local")
    try:
        yield running
    finally:
        stop_hub(running)
