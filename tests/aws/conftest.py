"""Fixtures for the AWS tests: a real moto server (AWS stand-in) on 127.0.0.1.

`moto_server` (session) starts `python -m moto.server` on a free port, points boto3 at it
through the standard `AWS_ENDPOINT_URL` setting (with fake keys and no profile or config
file of the machine's own), and returns the endpoint URL. `moto` (per test) wipes moto's
state first and returns the `MotoServer` to drive it (Batch's Docker mode, state-manager
transitions). When moto cannot start, the tests skip, except under `CI=true`, where they
fail: a CI job must not pass green without them. See docs/testing.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.aws.moto_rig import MotoServer, MotoUnavailableError, start_moto


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"moto cannot start under CI=true: {message}", pytrace=False)
    pytest.skip(f"moto is not available: {message}")


@pytest.fixture(scope="session")
def moto_handle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """The session's moto server, with the AWS environment variables set for this process."""
    try:
        server = start_moto(tmp_path_factory.mktemp("moto"))
    except MotoUnavailableError as exc:
        _unavailable(str(exc))
        raise  # unreachable: skip and fail raise
    patch = pytest.MonkeyPatch()
    patch.delenv("AWS_PROFILE", raising=False)
    patch.delenv("AWS_DEFAULT_PROFILE", raising=False)
    for name, value in server.env.items():
        patch.setenv(name, value)
    try:
        yield server
    finally:
        patch.undo()
        server.stop()


@pytest.fixture(scope="session")
def moto_server(moto_handle: MotoServer) -> str:
    """The endpoint URL of the session's moto server (boto3 already points at it)."""
    return moto_handle.url


@pytest.fixture
def moto(moto_handle: MotoServer) -> MotoServer:
    """The moto server, its state wiped: no resources, Batch without Docker, no transitions."""
    moto_handle.reset()
    return moto_handle
