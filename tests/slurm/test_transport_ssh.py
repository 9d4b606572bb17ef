"""The SSH transport against the rig's real OpenSSH server (127.0.0.1:2222, MaxSessions 10)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest

from scripthut.transport import SSHTransport, TransportError

pytestmark = pytest.mark.slurm

T = TypeVar("T")

HOSTILE = [
    "plain",
    "two words",
    "",
    "it's",
    '"double"',
    "$(touch /tmp/scripthut-ssh-pwned)",
    "`id`",
    "$HOME",
    "${PATH}",
    "a; echo injected",
    "x && y || z",
    "line1\nline2\n",
    "tab\there",
    "héllo wörld ✓ 日本",
    "*",
    "~",
    "~/x",
    "-n",
    "back\\slash",
    "'\"'\"'",
    "!event",
    "#comment",
    "a|b>c<d&",
    " leading and trailing ",
]

TEST_DIR = ".scripthut-transport-test"


def arun(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def make(rig: Any, **overrides: Any) -> SSHTransport:
    options: dict[str, Any] = {
        "host": rig.ssh_host,
        "port": int(rig.ssh_port),
        "user": rig.ssh_user,
        "key_path": str(rig.ssh_key),
        "known_hosts": str(rig.known_hosts),
        "connect_timeout": 10,
    }
    options.update(overrides)
    return SSHTransport(**options)


async def _with(rig: Any, body: Any, **overrides: Any) -> Any:
    transport = make(rig, **overrides)
    try:
        return await body(transport)
    finally:
        await transport.close()


# -- commands ---------------------------------------------------------------------------------


def test_hostile_arguments_arrive_byte_exact(slurm_rig: Any) -> None:
    async def body(t: SSHTransport) -> Any:
        return await t.run(["printf", "%s\\0", *HOSTILE])

    result = arun(_with(slurm_rig, body))
    assert result.exit_status == 0, result.stderr
    assert result.stdout.split("\0")[:-1] == HOSTILE
    check = arun(_with(slurm_rig, lambda t: t.run(["test", "-e", "/tmp/scripthut-ssh-pwned"])))
    assert check.exit_status == 1


def test_stdin_exit_status_and_signal(slurm_rig: Any) -> None:
    blob = bytes(range(256)) * 2000

    async def body(t: SSHTransport) -> list[Any]:
        return [
            await t.run(["sha256sum"], stdin=blob),
            await t.run(["cat"], timeout=10),
            await t.run(["bash", "-c", "echo out; echo err >&2; exit 3"]),
            await t.run(["bash", "-c", "kill -9 $$"]),
            await t.run(["printenv", "USER"]),
        ]

    digest, empty, failed, killed, user = arun(_with(slurm_rig, body))
    assert digest.stdout.split()[0] == hashlib.sha256(blob).hexdigest()
    assert (empty.exit_status, empty.stdout) == (0, "")
    assert (failed.exit_status, failed.stdout, failed.stderr) == (3, "out\n", "err\n")
    assert killed.exit_status == 128 + 9
    assert user.stdout.strip() == slurm_rig.ssh_user


def test_run_script_many_lines_in_one_round_trip(slurm_rig: Any) -> None:
    lines = [f"echo 'line {i}: it'\"'\"'s'" for i in range(1000)]
    script = "cat   # reads EOF, not the script\n" + "\n".join(lines) + "\nsqueue -h >/dev/null\n"

    async def body(t: SSHTransport) -> tuple[Any, int]:
        result = await t.run_script(script)
        return result, t.stats.commands

    result, commands = arun(_with(slurm_rig, body))
    assert result.exit_status == 0, result.stderr
    assert result.stdout.splitlines() == [f"line {i}: it's" for i in range(1000)]
    assert commands == 1


def test_thirty_concurrent_commands_share_one_connection(slurm_rig: Any) -> None:
    async def body(t: SSHTransport) -> tuple[list[Any], int]:
        results = await asyncio.gather(
            *(t.run(["bash", "-c", f"sleep 0.3; echo {i}"]) for i in range(30))
        )
        return list(results), t.stats.connects

    results, connects = arun(_with(slurm_rig, body, max_channels=10))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(30)]
    assert connects == 1


def test_timeout_raises_kills_the_command_and_connection_survives(slurm_rig: Any) -> None:
    marker = f"sleep 37.{os.getpid()}"

    async def body(t: SSHTransport) -> tuple[Any, Any, int]:
        with pytest.raises(TransportError, match="timed out"):
            await t.run(["bash", "-c", f"{marker}; echo never"], timeout=0.5)
        await asyncio.sleep(0.5)
        leftover = await t.run(["pgrep", "-u", slurm_rig.ssh_user, "-f", marker])
        return leftover, await t.run(["echo", "still here"]), t.stats.connects

    leftover, result, connects = arun(_with(slurm_rig, body))
    assert leftover.exit_status == 1, f"remote command still running: {leftover.stdout}"
    assert result.stdout == "still here\n"
    assert connects == 1


# -- host keys and auth ----------------------------------------------------------------------


def _other_host_key_file(rig: Any, tmp_path: Path) -> Path:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    path = tmp_path / "known_hosts"
    path.write_text(f"[{rig.ssh_host}]:{rig.ssh_port} {other}")
    return path


def test_changed_host_key_is_refused(slurm_rig: Any, tmp_path: Path) -> None:
    known_hosts = _other_host_key_file(slurm_rig, tmp_path)
    transport = make(slurm_rig, known_hosts=str(known_hosts))
    with pytest.raises(TransportError) as caught:
        arun(transport.run(["true"]))
    message = str(caught.value)
    assert f"[{slurm_rig.ssh_host}]:{slurm_rig.ssh_port}" in message
    assert str(known_hosts) in message


def test_unknown_host_is_refused(slurm_rig: Any, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.touch()
    transport = make(slurm_rig, known_hosts=str(empty))
    with pytest.raises(TransportError, match="could not be verified"):
        arun(transport.run(["true"]))


def test_verify_host_key_false_connects(
    slurm_rig: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    known_hosts = _other_host_key_file(slurm_rig, tmp_path)

    async def body(t: SSHTransport) -> list[Any]:
        return [await t.run(["echo", "ok"]) for _ in range(2)]

    results = arun(_with(slurm_rig, body, known_hosts=str(known_hosts), verify_host_key=False))
    assert [r.stdout for r in results] == ["ok\n", "ok\n"]
    warnings = [r for r in caplog.records if "verification is OFF" in r.getMessage()]
    assert len(warnings) == 1


def test_unauthorized_key_is_refused(slurm_rig: Any, tmp_path: Path) -> None:
    key = tmp_path / "stranger"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(key))
    transport = make(slurm_rig, key_path=str(key))
    with pytest.raises(TransportError, match="authentication failed"):
        arun(transport.run(["true"]))


def test_certificate_is_loaded_and_offered(slurm_rig: Any, tmp_path: Path) -> None:
    # The rig's sshd trusts no CA: it refuses the certificate and accepts the plain key.
    key = asyncssh.read_private_key(str(slurm_rig.ssh_key))
    ca = asyncssh.generate_private_key("ssh-ed25519")
    cert = tmp_path / "user-cert.pub"
    ca.generate_user_certificate(key, slurm_rig.ssh_user).write_certificate(str(cert))

    async def body(t: SSHTransport) -> Any:
        return await t.run(["echo", "ok"])

    assert arun(_with(slurm_rig, body, cert_path=str(cert))).stdout == "ok\n"


# -- losing the connection ---------------------------------------------------------------------


def test_killed_server_side_loses_in_flight_command_then_reconnects(slurm_rig: Any) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to find and kill the rig's per-connection sshd")

    async def body(t: SSHTransport) -> tuple[Any, Any]:
        client = await t.run(["printenv", "SSH_CLIENT"])
        client_port = int(client.stdout.split()[1])
        in_flight = asyncio.create_task(t.run(["sleep", "20"], timeout=30))
        await asyncio.sleep(0.5)
        killed = _kill_server_side(int(slurm_rig.ssh_port), client_port)
        assert killed, "no sshd process found for our connection"
        started = time.monotonic()
        with pytest.raises(TransportError, match="result is unknown"):
            await in_flight
        assert time.monotonic() - started < 10
        after = await t.run(["echo", "back"])
        return after, t.stats

    after, stats = arun(_with(slurm_rig, body))
    assert after.stdout == "back\n"
    assert (stats.connects, stats.connections_lost) == (2, 1)


def _kill_server_side(server_port: int, client_port: int) -> list[int]:
    """SIGKILL the sshd processes holding the server end of our connection, and their children."""
    inode = _server_socket_inode(server_port, client_port)
    holders = [pid for pid in _pids() if _holds_socket(pid, inode)]
    victims = set(holders)
    for pid in holders:
        victims |= _descendants(pid)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return sorted(victims)


def _server_socket_inode(server_port: int, client_port: int) -> str:
    local, remote = f":{server_port:04X}", f":{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(local) and fields[2].endswith(remote):
            return fields[9]
    raise AssertionError(f"no server socket for client port {client_port}")


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _holds_socket(pid: int, inode: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                return True
        except OSError:
            continue
    return False


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for pid in _pids():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        children = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= children
        frontier = children
    return found


# -- reading files --------------------------------------------------------------------------------


@pytest.fixture
def remote_file(slurm_rig: Any) -> Iterator[tuple[str, str, bytes]]:
    """A 1 KiB binary file in the rig user's home: (path relative to ~, absolute path, bytes)."""
    content = bytes(range(256)) * 4
    relative = f"{TEST_DIR}/log with 'quotes' and spaces.bin"

    async def body(t: SSHTransport) -> str:
        await t.run(["mkdir", "-p", TEST_DIR])
        written = await t.run(["bash", "-c", 'cat > "$1"', "bash", relative], stdin=content)
        assert written.exit_status == 0, written.stderr
        return (await t.run(["printenv", "HOME"])).stdout.strip()

    home = arun(_with(slurm_rig, body))
    yield relative, f"{home}/{relative}", content
    arun(_with(slurm_rig, lambda t: t.run(["rm", "-rf", TEST_DIR])))


@pytest.mark.parametrize(
    ("offset", "limit", "start", "length"),
    [
        (0, 1 << 20, 0, 1024),
        (100, 10, 100, 10),
        (1000, 100, 1000, 24),
        (5000, 10, 5000, 0),
        (-10, 1 << 20, 1014, 10),
        (-10, 4, 1014, 4),
        (-5000, 3, 0, 3),
        (0, 0, 0, 0),
    ],
)
def test_read_file_offsets(
    slurm_rig: Any,
    remote_file: tuple[str, str, bytes],
    offset: int,
    limit: int,
    start: int,
    length: int,
) -> None:
    _, absolute, content = remote_file

    async def body(t: SSHTransport) -> tuple[bytes, int]:
        return await t.read_file(absolute, offset=offset, limit=limit)

    assert arun(_with(slurm_rig, body)) == (content[start : start + length], 1024)


def test_read_file_home_missing_and_directory(
    slurm_rig: Any, remote_file: tuple[str, str, bytes]
) -> None:
    relative, _, content = remote_file

    async def body(t: SSHTransport) -> tuple[bytes, int]:
        with pytest.raises(FileNotFoundError):
            await t.read_file(f"~/{TEST_DIR}/missing")
        with pytest.raises(IsADirectoryError):
            await t.read_file(f"~/{TEST_DIR}")
        return await t.read_file(f"~/{relative}", offset=-3)

    assert arun(_with(slurm_rig, body)) == (content[-3:], 1024)
