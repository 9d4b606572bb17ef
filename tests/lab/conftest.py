"""Fixtures of the lab tests (the harness is in harness.py): the built labextension,
JupyterLab servers per module, one Chromium per session, a fresh page per test.

Without Chromium or playwright the tests skip; under `CI=true` they fail instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.harness import (
    Lab,
    LabServer,
    chromium_path,
    ensure_labextension,
    missing,
    start_lab,
    stop_lab,
)


@pytest.fixture(scope="session")
def labextension() -> Path:
    return ensure_labextension()


@pytest.fixture(scope="module")
def lab_factory(
    tmp_path_factory: pytest.TempPathFactory, labextension: Path
) -> Iterator[Callable[..., LabServer]]:
    """Start servers for this module; all are stopped at its end."""
    servers: list[LabServer] = []

    def start(name: str = "lab", **kwargs: Any) -> LabServer:
        server = start_lab(tmp_path_factory.mktemp(name), labextension, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        stop_lab(server)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install playwright)")
    executable = chromium_path()
    if executable is None:
        missing("Chromium is not installed (bash tests/browser/install.sh)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--disable-dev-shm-usage", "--disable-gpu", "--no-sandbox"],
        )
        yield launched
        launched.close()


@pytest.fixture
def open_lab(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[[LabServer], Lab]]:
    """Open JupyterLab on a server in a fresh browser context; screenshot at the end."""
    contexts: list[tuple[Any, Lab]] = []

    def opener(server: LabServer) -> Lab:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(20_000)
        lab = Lab(page, server, request.node.name)
        contexts.append((context, lab))
        return lab

    yield opener
    for context, lab in contexts:
        with contextlib.suppress(Exception):  # a screenshot must not hide the test's error
            lab.screenshot("final")
        context.close()
