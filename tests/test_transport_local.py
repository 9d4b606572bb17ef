"""The local transport against a real bash, and SSH transport failures that need no server."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest

from scripthut.transport import (
    LocalTransport,
    SSHTransport,
    TransportError,
    quote_argv,
)

T = TypeVar("T")

HOSTILE = [
    "plain",
    "two words",
    "",
    "it's",
    '"double"',
    "$(touch /tmp/scripthut-pwned)",
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
    "--",
    "back\\slash",
    "'\"'\"'",
    "!event",
    "#comment",
    "{a,b}",
    "a|b>c<d&",
    " leading and trailing ",
]


def arun(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def _run(*argv: str, **kwargs: Any) -> Any:
    transport = LocalTransport()
    try:
        return await transport.run(list(argv), **kwargs)
    finally:
        await transport.close()


# -- quoting -------------------------------------------------------------------------------


def test_hostile_arguments_arrive_byte_exact() -> None:
    result = arun(_run("printf", "%s\\0", *HOSTILE))
    assert result.exit_status == 0, result.stderr
    assert result.stdout.split("\0")[:-1] == HOSTILE
    assert not Path("/tmp/scripthut-pwned").exists()


def test_program_name_is_never_a_keyword_or_assignment() -> None:
    for word in ("A=b", "if", "!", "{"):
        result = arun(_run(word))
        assert result.exit_status == 127, (word, result)


def test_quote_argv_rejects_nul_and_empty() -> None:
    with pytest.raises(ValueError, match="NUL"):
        quote_argv(["echo", "a\0b"])
    with pytest.raises(ValueError, match="empty"):
        quote_argv([])


# -- running commands -----------------------------------------------------------------------


def test_stdin_text_and_bytes() -> None:
    text = "line 1\nsecond 'line' $(x)\nünïcode\n"
    assert arun(_run("cat", stdin=text)).stdout == text
    blob = bytes(range(256)) * 1000
    result = arun(_run("sha256sum", stdin=blob))
    assert result.stdout.split()[0] == hashlib.sha256(blob).hexdigest()


def test_no_stdin_means_immediate_eof() -> None:
    result = arun(_run("cat", timeout=5))
    assert result.exit_status == 0
    assert result.stdout == ""


def test_non_zero_exit_is_a_result() -> None:
    result = arun(_run("bash", "-c", "echo out; echo err >&2; exit 3"))
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.ok


def test_killed_by_signal_reports_128_plus_signal() -> None:
    result = arun(_run("bash", "-c", "kill -9 $$"))
    assert result.exit_status == 128 + 9


def test_runs_in_home_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert arun(_run("pwd")).stdout.strip() == str(tmp_path)


def test_timeout_raises_and_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(TransportError, match="timed out"):
        arun(_run("bash", "-c", f"sleep 30 & echo $! > {pidfile}; wait", timeout=0.5))
    assert time.monotonic() - started < 5
    pid = int(pidfile.read_text())
    time.sleep(0.1)
    assert not _alive(pid)


def test_closed_transport_refuses() -> None:
    async def scenario() -> None:
        transport = LocalTransport()
        await transport.close()
        with pytest.raises(TransportError, match="closed"):
            await transport.run(["true"])

    arun(scenario())


def test_stats_count_round_trips() -> None:
    async def scenario() -> int:
        transport = LocalTransport()
        await asyncio.gather(*(transport.run(["true"]) for _ in range(5)))
        await transport.run_script("true")
        return transport.stats.commands

    assert arun(scenario()) == 6


# -- scripts ---------------------------------------------------------------------------------


def test_run_script_with_many_lines() -> None:
    lines = [f"echo 'line {i}: it'\"'\"'s $((i * 2))'" for i in range(2000)]
    script = "set -e\n" + "\n".join(lines) + "\n"
    result = arun(LocalTransport().run_script(script))
    assert result.exit_status == 0, result.stderr
    expected = [f"line {i}: it's $((i * 2))" for i in range(2000)]
    assert result.stdout.splitlines() == expected


def test_run_script_heredoc_status_and_stdin_reader() -> None:
    script = """
cat <<'EOF'
inside $HOME `id`
EOF
cat                 # must see EOF, not the rest of this script
echo after
exit 5
"""
    result = arun(LocalTransport().run_script(script))
    assert result.exit_status == 5
    assert result.stdout == "inside $HOME `id`\nafter\n"


# -- reading files ----------------------------------------------------------------------------


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "log with spaces.txt"
    path.write_bytes(bytes(range(256)) * 4)
    return path


@pytest.mark.parametrize(
    ("offset", "limit", "start", "length"),
    [
        (0, 1 << 20, 0, 1024),
        (100, 10, 100, 10),
        (1000, 100, 1000, 24),
        (1024, 10, 1024, 0),
        (5000, 10, 5000, 0),
        (-10, 1 << 20, 1014, 10),
        (-10, 4, 1014, 4),
        (-5000, 3, 0, 3),
        (0, 0, 0, 0),
    ],
)
def test_read_file_offsets(sample: Path, offset: int, limit: int, start: int, length: int) -> None:
    data, size = arun(LocalTransport().read_file(str(sample), offset=offset, limit=limit))
    assert size == 1024
    assert data == sample.read_bytes()[start : start + length]


def test_read_file_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        arun(LocalTransport().read_file(str(tmp_path / "nope")))
    with pytest.raises(IsADirectoryError):
        arun(LocalTransport().read_file(str(tmp_path)))


def test_read_file_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.txt").write_bytes(b"hello home")
    assert arun(LocalTransport().read_file("~/sub/f.txt", offset=-4)) == (b"home", 10)


def test_read_file_rejects_negative_limit(sample: Path) -> None:
    with pytest.raises(ValueError, match="limit"):
        arun(LocalTransport().read_file(str(sample), limit=-1))


# -- SSH failures that need no server ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ssh(tmp_path: Path, **kwargs: Any) -> SSHTransport:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.touch()
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": _free_port(),
        "user": "nobody",
        "key_path": None,
        "known_hosts": str(known_hosts),
        "connect_timeout": 5,
    }
    options.update(kwargs)
    return SSHTransport(**options)


def test_ssh_refused_connection_backs_off(tmp_path: Path) -> None:
    async def scenario() -> None:
        transport = _ssh(tmp_path)
        with pytest.raises(TransportError, match="cannot connect"):
            await transport.run(["true"])
        with pytest.raises(TransportError, match="not connecting again until"):
            await transport.run(["true"])
        assert transport.stats.connect_failures == 1
        transport._retry_at = 0.0  # pretend the backoff has passed
        with pytest.raises(TransportError, match="cannot connect"):
            await transport.run(["true"])
        assert transport.stats.connect_failures == 2
        assert transport.stats.commands == 0

    arun(scenario())


def test_ssh_backoff_grows_and_is_capped(tmp_path: Path) -> None:
    async def scenario() -> list[float]:
        transport = _ssh(tmp_path)
        transport.backoff_cap = 4.0
        waits = []
        for _ in range(6):
            transport._retry_at = 0.0
            with pytest.raises(TransportError):
                await transport.run(["true"])
            waits.append(transport._retry_at - time.monotonic())
        return waits

    waits = arun(scenario())
    assert 0.4 < waits[0] <= 1.0
    assert 0.9 < waits[1] <= 2.0
    assert all(wait <= 4.0 for wait in waits)
    assert waits[-1] > 1.9


def test_ssh_missing_known_hosts_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no_known_hosts"
    transport = _ssh(tmp_path, known_hosts=str(missing))
    with pytest.raises(TransportError, match=f"{missing}.*does not exist"):
        arun(transport.run(["true"]))


def test_ssh_unreadable_key_is_a_transport_error(tmp_path: Path) -> None:
    transport = _ssh(tmp_path, key_path=str(tmp_path / "no_such_key"))
    with pytest.raises(TransportError, match="cannot load key"):
        arun(transport.run(["true"]))


def test_ssh_unreadable_certificate_is_a_transport_error(tmp_path: Path) -> None:
    key = tmp_path / "key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(key))
    cert = tmp_path / "key-cert.pub"
    cert.write_text("not a certificate\n")
    transport = _ssh(tmp_path, key_path=str(key), cert_path=str(cert))
    with pytest.raises(TransportError, match="certificate"):
        arun(transport.run(["true"]))


def test_ssh_description() -> None:
    transport = SSHTransport(host="example.org", port=2222, user="hutuser", key_path=None)
    assert transport.description == "ssh hutuser@example.org:2222"


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie left for an init that does not reap counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
