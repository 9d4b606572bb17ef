"""Start and drive a moto server (AWS stand-in) on 127.0.0.1 for the AWS tests.

`start_moto()` runs `python -m moto.server` on a free loopback port and waits until it
answers; `MotoServer` wraps moto's control API (`/moto-api/...`): reset the state between
tests, switch Batch's Docker mode, set state-manager transitions. boto3 reaches the server
through the standard `AWS_ENDPOINT_URL` setting (see `aws_environment`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 30.0
REGION = "us-east-1"


class MotoUnavailableError(RuntimeError):
    """moto (with its server extra) is not installed, or its server did not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoServer:
    """A running moto server and its control API."""

    url: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    def api(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """POST (with `body`) or GET one `/moto-api/...` path; the decoded JSON reply."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/moto-api/{path}", data=data)
        with urllib.request.urlopen(request, timeout=10) as reply:
            text = reply.read().decode() or "null"
        try:
            return json.loads(text)
        except ValueError:
            return text

    def reset(self) -> None:
        """Wipe every resource, Batch's Docker mode off and no state-manager transition."""
        self.api("reset", {})
        self.batch_docker(False)
        self.api("state-manager/unset-transition", {"model_name": "batch::job"})

    def batch_docker(self, on: bool) -> None:
        """With Docker on (and none here) jobs go SUBMITTED..FAILED; off, SUCCEEDED at once."""
        self.api("config", {"batch": {"use_docker": on}})

    def batch_progression(self, seconds: float) -> None:
        """Docker mode + a time transition: each Batch state lasts `seconds`, ending FAILED."""
        self.batch_docker(True)
        self.api(
            "state-manager/set-transition",
            {
                "model_name": "batch::job",
                "transition": {"progression": "time", "seconds": seconds},
            },
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def aws_environment(url: str) -> dict[str, str]:
    """What boto3 needs to reach moto and nothing else: fake keys, no profile or config files."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _wait_ready(server: MotoServer, deadline: float) -> None:
    while True:
        if server.process is not None and server.process.poll() is not None:
            raise MotoUnavailableError(
                f"moto_server exited with {server.process.returncode}: {_tail(server.log_path)}"
            )
        try:
            server.api("config")
            return
        except (OSError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise MotoUnavailableError(
                    f"moto_server did not answer on {server.url}: {_tail(server.log_path)}"
                ) from None
            time.sleep(0.05)


def _tail(path: Path | None) -> str:
    if path is None or not path.exists():
        return "(no log)"
    return path.read_text(errors="replace")[-2000:] or "(empty log)"


def start_moto(log_dir: Path, extra_env: Mapping[str, str] | None = None) -> MotoServer:
    """A moto server on a free port of 127.0.0.1, ready; MotoUnavailableError if it cannot be."""
    for module in ("moto", "flask", "boto3"):
        if importlib.util.find_spec(module) is None:
            raise MotoUnavailableError(
                f"{module} is not installed: bash scripts/setup.sh installs moto[server] and boto3"
            )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = log_dir / f"moto-{port}.log"
    env = {**os.environ, **aws_environment(url), **(extra_env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = MotoServer(url, process, log_path, aws_environment(url))
    try:
        _wait_ready(server, time.monotonic() + READY_TIMEOUT_S)
        server.reset()
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def running_moto(log_dir: Path, extra_env: Mapping[str, str] | None = None) -> Iterator[MotoServer]:
    server = start_moto(log_dir, extra_env)
    try:
        yield server
    finally:
        server.stop()
