"""Fixtures for tests that run the PBS backend against the rig's Torque-like commands.

The Slurm rig (``tests/rig/slurm.sh``) installs Slurm's Torque wrappers (qsub, qstat, qdel,
pbsnodes) and prints where they are (``SCRIPTHUT_RIG_TORQUE_BIN``; they leave PATH when a
Grid Engine client is installed beside them). Every test here is marked ``pbs``. When the rig
or its wrappers are not there, ``pbs_rig`` skips the test, except when ``CI=true``, where it
fails: a CI job that forgot to start the rig must not pass green. See docs/testing.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.slurm.conftest import RigUnavailableError, SlurmRig, load_rig

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def pbs_rig() -> SlurmRig:
    """The running rig with its Torque wrappers; skips (fails when CI=true) otherwise."""
    try:
        rig = load_rig()
        if rig.torque_bin is None or not (Path(rig.torque_bin) / "qsub").is_file():
            raise RigUnavailableError("the rig's Torque wrappers (qsub, qstat...) are missing")
    except RigUnavailableError as exc:
        reason = f"PBS rig (Slurm's Torque wrappers) is not up: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return rig


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.pbs)
