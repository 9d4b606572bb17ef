"""Fixtures for tests that need the Slurm + OpenSSH rig (``tests/rig/slurm.sh``).

Start the rig with ``bash tests/rig/slurm.sh up`` (root). Every test under ``tests/slurm`` is
marked ``slurm``. When the rig is not up the ``slurm_rig`` fixture skips the test, except when
``CI=true``, where it fails: a CI job that forgot to start the rig must not pass green.
See docs/testing.md.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
RIG_SCRIPT = HERE.parent / "rig" / "slurm.sh"
ENV_PREFIX = "SCRIPTHUT_RIG_"


class RigUnavailableError(RuntimeError):
    """The rig is not up (or its description could not be read)."""


@dataclass(frozen=True)
class SlurmRig:
    """How to reach the rig, as printed by ``tests/rig/slurm.sh env``."""

    ssh_host: str
    ssh_port: int
    ssh_user: str
    ssh_key: Path
    known_hosts: Path
    ssh_config: Path
    sshd_config: Path
    remote_home: str
    partition: str
    partitions: tuple[str, ...]
    cluster: str
    cpus: int
    min_job_age: int
    slurm_conf: str
    torque_bin: str | None
    state_dir: Path
    log_dir: Path

    @property
    def target(self) -> str:
        return f"{self.ssh_user}@{self.ssh_host}"

    def ssh_argv(
        self,
        *remote: str,
        known_hosts: Path | None = None,
        options: Sequence[str] = (),
    ) -> list[str]:
        """argv for the system OpenSSH client, host key checking on (no ~/.ssh/config)."""
        settings = {
            "IdentitiesOnly": "yes",
            "UserKnownHostsFile": str(known_hosts or self.known_hosts),
            "StrictHostKeyChecking": "yes",
            "BatchMode": "yes",
            "ConnectTimeout": "10",
        }
        argv = ["ssh", "-F", "/dev/null", "-p", str(self.ssh_port), "-i", str(self.ssh_key)]
        for key, value in settings.items():
            argv += ["-o", f"{key}={value}"]
        return [*argv, *options, self.target, *remote]


def parse_env_output(text: str) -> dict[str, str]:
    """Parse ``export NAME=value`` lines (bash %q quoting) into a dict."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            env[name] = value
    return env


def load_rig(script: Path = RIG_SCRIPT, timeout: float = 60) -> SlurmRig:
    if not script.is_file():
        raise RigUnavailableError(f"{script} not found")
    try:
        proc = subprocess.run(
            ["bash", str(script), "env"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RigUnavailableError(f"`{script} env` timed out after {timeout} s") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip() or f"exit {proc.returncode}"
        raise RigUnavailableError(detail)
    env = parse_env_output(proc.stdout)

    def get(name: str) -> str:
        try:
            return env[ENV_PREFIX + name]
        except KeyError:
            raise RigUnavailableError(f"`slurm.sh env` did not print {ENV_PREFIX}{name}") from None

    return SlurmRig(
        ssh_host=get("SSH_HOST"),
        ssh_port=int(get("SSH_PORT")),
        ssh_user=get("SSH_USER"),
        ssh_key=Path(get("SSH_KEY")),
        known_hosts=Path(get("KNOWN_HOSTS")),
        ssh_config=Path(get("SSH_CONFIG")),
        sshd_config=Path(get("SSHD_CONFIG")),
        remote_home=get("SSH_HOME"),
        partition=get("SLURM_PARTITION"),
        partitions=tuple(get("SLURM_PARTITIONS").split()),
        cluster=get("SLURM_CLUSTER"),
        cpus=int(get("SLURM_CPUS")),
        min_job_age=int(get("SLURM_MIN_JOB_AGE")),
        slurm_conf=get("SLURM_CONF"),
        torque_bin=get("TORQUE_BIN") or None,
        state_dir=Path(get("DIR")),
        log_dir=Path(get("LOG_DIR")),
    )


@pytest.fixture(scope="session")
def slurm_rig() -> SlurmRig:
    """The running rig; skips (or fails when CI=true) if it is not up."""
    try:
        return load_rig()
    except RigUnavailableError as exc:
        reason = f"Slurm rig is not up: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Hooks in a conftest see every collected item, not only this directory's.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slurm)
