"""Fixtures for tests that need the Grid Engine rig (``tests/rig/sge.sh``).

Start it with ``bash tests/rig/slurm.sh up && bash tests/rig/sge.sh up`` (root): the SGE rig
uses the Slurm rig's OpenSSH server and user. Every test under ``tests/sge`` is marked ``sge``.
When the rig is not up the ``sge_rig`` fixture skips the test, except when ``CI=true``, where
it fails: a CI job that forgot to start the rig must not pass green. See docs/testing.md.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.slurm.conftest import RigUnavailableError, parse_env_output

HERE = Path(__file__).resolve().parent
RIG_SCRIPT = HERE.parent / "rig" / "sge.sh"
ENV_PREFIX = "SCRIPTHUT_RIG_"


@dataclass(frozen=True)
class SGERig:
    """How to reach the rig, as printed by ``tests/rig/sge.sh env``."""

    ssh_host: str
    ssh_port: int
    ssh_user: str
    ssh_key: Path
    known_hosts: Path
    remote_home: str
    queue: str
    parallel_env: str
    slots: int
    script: Path

    @property
    def target(self) -> str:
        return f"{self.ssh_user}@{self.ssh_host}"

    def ssh_argv(self, *remote: str, options: Sequence[str] = ()) -> list[str]:
        """argv for the system OpenSSH client, host key checking on (no ~/.ssh/config)."""
        settings = {
            "IdentitiesOnly": "yes",
            "UserKnownHostsFile": str(self.known_hosts),
            "StrictHostKeyChecking": "yes",
            "BatchMode": "yes",
            "ConnectTimeout": "10",
        }
        argv = ["ssh", "-F", "/dev/null", "-p", str(self.ssh_port), "-i", str(self.ssh_key)]
        for key, value in settings.items():
            argv += ["-o", f"{key}={value}"]
        return [*argv, *options, self.target, *remote]

    def ssh(self, command: str, stdin: bytes | None = None, timeout: float = 60) -> str:
        """Run `command` (trusted test text) as the rig user; its stdout."""
        done = subprocess.run(
            self.ssh_argv(command), input=stdin, capture_output=True, timeout=timeout, check=True
        )
        return done.stdout.decode()


def load_rig(script: Path = RIG_SCRIPT, timeout: float = 60) -> SGERig:
    if not script.is_file():
        raise RigUnavailableError(f"{script} not found")
    try:
        proc = subprocess.run(
            ["bash", str(script), "env"], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise RigUnavailableError(f"`{script} env` timed out after {timeout} s") from exc
    if proc.returncode != 0:
        raise RigUnavailableError((proc.stderr or proc.stdout).strip() or f"exit {proc.returncode}")
    env = parse_env_output(proc.stdout)

    def get(name: str) -> str:
        try:
            return env[ENV_PREFIX + name]
        except KeyError:
            raise RigUnavailableError(f"`sge.sh env` did not print {ENV_PREFIX}{name}") from None

    return SGERig(
        ssh_host=get("SSH_HOST"),
        ssh_port=int(get("SSH_PORT")),
        ssh_user=get("SSH_USER"),
        ssh_key=Path(get("SSH_KEY")),
        known_hosts=Path(get("KNOWN_HOSTS")),
        remote_home=get("SSH_HOME"),
        queue=get("SGE_QUEUE"),
        parallel_env=get("SGE_PE"),
        slots=int(get("SGE_SLOTS")),
        script=Path(get("SGE_SCRIPT")),
    )


@pytest.fixture(scope="session")
def sge_rig() -> SGERig:
    """The running rig; skips (or fails when CI=true) if it is not up."""
    try:
        return load_rig()
    except RigUnavailableError as exc:
        reason = f"Grid Engine rig is not up: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.sge)
