"""Reaching a task instance: SSM port forwarding, an ephemeral key, a pinned host key.

No inbound port is opened and no key pair is kept. For each look at an instance:
1. `PortForward.open` starts `aws ssm start-session --document-name
   AWS-StartPortForwardingSession` (the AWS CLI and its `session-manager-plugin`) for the
   instance's port 22 on a free local port, and waits until it says it is listening;
2. a fresh ed25519 key is made (`new_key`) and its public half pushed with EC2 Instance
   Connect (valid 60 s);
3. SSH connects through the forwarded port and trusts exactly the host keys the instance
   printed on its console at boot (`host_keys_from_console`): the cloud-init block between
   `-----BEGIN SSH HOST KEY KEYS-----` and `-----END SSH HOST KEY KEYS-----`. A key that
   differs is refused, never accepted.
4. `read_result` reads the sentinel and, when the task has ended, copies the log.

The port forward is a child process found on PATH, so a test can put a stand-in there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncssh

from scripthut.backends.ec2_userdata import InstancePaths
from scripthut.errors import ScriptHutError
from scripthut.private import PRIVATE_FILE, make_private_dirs

BEGIN_KEYS = "-----BEGIN SSH HOST KEY KEYS-----"
END_KEYS = "-----END SSH HOST KEY KEYS-----"
READY_TEXT = b"Waiting for connections"
TOOLS_HINT = (
    "the EC2 backend reaches instances through SSM port forwarding: install the AWS CLI "
    "(https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html) and the "
    "Session Manager plugin (https://docs.aws.amazon.com/systems-manager/latest/userguide/"
    "session-manager-working-with-install-plugin.html)"
)
KeyFactory = Callable[[], Any]


class AccessError(ScriptHutError):
    """The instance could not be reached or read this time (its task's state is unknown)."""


def missing_tools() -> list[str]:
    """The programs of the port forward that are not on PATH."""
    return [name for name in ("aws", "session-manager-plugin") if shutil.which(name) is None]


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise ScriptHutError(f"{' and '.join(missing)} not found on PATH; {TOOLS_HINT}")


def new_key() -> Any:
    """A fresh ed25519 key for one connection."""
    return asyncssh.generate_private_key("ssh-ed25519", comment="scripthut-ephemeral")


def public_line(key: Any) -> str:
    return bytes(key.export_public_key()).decode("ascii").strip()


def host_keys_from_console(text: str) -> list[str]:
    """The `type base64` lines of every host-key block of a console output."""
    keys: list[str] = []
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.endswith(BEGIN_KEYS):
            inside = True
        elif line.endswith(END_KEYS):
            inside = False
        elif inside:
            words = line.split()
            if len(words) >= 2 and words[0].startswith(("ssh-", "ecdsa-")):
                keys.append(f"{words[0]} {words[1]}")
    return keys


def import_host_keys(lines: Sequence[str]) -> list[Any]:
    keys = []
    for line in lines:
        with contextlib.suppress(asyncssh.KeyImportError, ValueError):
            keys.append(asyncssh.import_public_key(line))
    return keys


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortForward:
    """`aws ssm start-session` forwarding an instance's port 22 to a local port."""

    def __init__(self, region: str, profile: str | None, open_timeout: float = 45.0) -> None:
        self.region = region
        self.profile = profile
        self.open_timeout = open_timeout

    def command(self, instance_id: str, local_port: int) -> list[str]:
        argv = ["aws", "ssm", "start-session", "--target", instance_id]
        argv += ["--document-name", "AWS-StartPortForwardingSession"]
        argv += ["--parameters", f"portNumber=22,localPortNumber={local_port}"]
        argv += ["--region", self.region]
        return argv + (["--profile", self.profile] if self.profile else [])

    @contextlib.asynccontextmanager
    async def open(self, instance_id: str) -> AsyncIterator[int]:
        """The local port forwarded to the instance, while the context lasts."""
        require_tools()
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            *self.command(instance_id, port),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        drain: asyncio.Task[None] | None = None
        try:
            await self._ready(process, instance_id)
            # Keep reading its output so a chatty plugin never blocks on a full pipe.
            assert process.stdout is not None
            drain = asyncio.create_task(_drain(process.stdout))
            yield port
        finally:
            await _stop(process)
            if drain is not None:
                drain.cancel()

    async def _ready(self, process: asyncio.subprocess.Process, instance_id: str) -> None:
        assert process.stdout is not None
        seen = b""
        try:
            async with asyncio.timeout(self.open_timeout):
                while READY_TEXT not in seen:
                    chunk = await process.stdout.read(4096)
                    if not chunk:
                        break
                    seen = (seen + chunk)[-8192:]
        except TimeoutError:
            raise AccessError(
                f"{instance_id}: the SSM port forward did not open within {self.open_timeout:g} s"
            ) from None
        if READY_TEXT not in seen:
            text = seen.decode(errors="replace").strip()[-500:]
            raise AccessError(f"{instance_id}: the SSM port forward ended: {text or 'no output'}")


async def _drain(stream: asyncio.StreamReader) -> None:
    with contextlib.suppress(Exception):
        while await stream.read(65536):
            pass


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        async with asyncio.timeout(5):
            await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        await process.wait()


async def read_result(
    *,
    port: int,
    user: str,
    client_key: Any,
    host_keys: Sequence[Any],
    paths: InstancePaths,
    local_log: str,
    connect_timeout: float = 30.0,
) -> int | None:
    """The task's exit status from the sentinel (None while it runs). When it has ended, the
    log is first copied to `local_log` (private, replaced atomically)."""
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            port=port,
            username=user,
            client_keys=[client_key],
            known_hosts=(list(host_keys), [], []),
            agent_path=None,
            connect_timeout=connect_timeout,
        ) as conn:
            code = await _sentinel(conn, paths.done)
            if code is not None:
                await _copy(conn, paths.log, local_log)
            return code
    except asyncssh.HostKeyNotVerifiable as exc:
        raise AccessError(
            f"the instance's SSH host key is not the one it reported on its console; "
            f"refusing to connect ({exc})"
        ) from exc
    except (asyncssh.Error, OSError, TimeoutError) as exc:
        raise AccessError(f"SSH through the port forward failed: {exc}") from exc


async def _sentinel(conn: Any, done: str) -> int | None:
    quoted = shlex.quote(done)
    result = await conn.run(f"if [ -f {quoted} ]; then cat -- {quoted}; else echo running; fi")
    text = str(result.stdout or "").strip()
    if result.exit_status != 0:
        raise AccessError(f"cannot read {done}: {str(result.stderr or '').strip()}")
    if text == "running" or text == "":
        return None
    if not text.lstrip("-").isdigit():
        raise AccessError(f"{done} holds {text[:40]!r}, not an exit status")
    return int(text)


async def _copy(conn: Any, remote: str, local: str) -> None:
    make_private_dirs(os.path.dirname(local))
    partial = f"{local}.part"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(partial, flags, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as file:
        result = await conn.run(
            f"cat -- {shlex.quote(remote)}", stdout=file, encoding=None, check=False
        )
    if result.exit_status != 0:
        os.unlink(partial)
        raise AccessError(f"cannot copy {remote}: {bytes(result.stderr or b'').decode()[:300]}")
    os.replace(partial, local)
