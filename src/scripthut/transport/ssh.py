"""SSH as a transport: one persistent asyncssh connection shared by every caller.

The connection opens on first use and reopens on the call after it is lost. A
command in flight when the connection drops raises TransportError: whether it ran
is unknown. Failed connection attempts back off exponentially (with jitter, capped)
and calls made during a backoff fail fast. Host keys are always verified unless
`verify_host_key=False` is passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import signal
import time
from typing import Any

import asyncssh

from scripthut.errors import UnsafePath
from scripthut.transport.base import (
    DEFAULT_READ_LIMIT,
    DEFAULT_TIMEOUT,
    RawResult,
    Transport,
    TransportError,
    check_limit,
    observed_size,
    quote_argv,
    script_input,
)

log = logging.getLogger(__name__)

KEEPALIVE_COUNT_MAX = 3
CHANNEL_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)

# Reads a file for read_file: $1 path ("~/" = home), $2 offset, $3 limit.
# Prints "<size> <start>\n" then the bytes. Exit 44/45/46/48: missing/directory/unreadable/
# a symbolic link (refused; dd's nofollow also refuses one swapped in after the test).
_READ_SCRIPT = """\
f=$1 o=$2 n=$3
case $f in "~/"*) f=$HOME/${f#"~/"} ;; esac
[ -L "$f" ] && exit 48
[ -e "$f" ] || exit 44
[ -d "$f" ] && exit 45
[ -r "$f" ] || exit 46
s=$(wc -c < "$f") || exit 47
s=$((s))
if [ "$o" -lt 0 ]; then o=$((s + o)); [ "$o" -ge 0 ] || o=0; fi
printf '%s %s\\n' "$s" "$o"
[ "$n" -gt 0 ] || exit 0
exec dd if="$f" iflag=nofollow,skip_bytes,count_bytes skip="$o" count="$n" bs=65536 status=none
"""

_READ_SYMLINK = 48
_READ_ERRORS: dict[int, tuple[type[OSError], int]] = {
    44: (FileNotFoundError, errno.ENOENT),
    45: (IsADirectoryError, errno.EISDIR),
    46: (PermissionError, errno.EACCES),
}


class SSHTransport(Transport):
    """Commands and file reads over one SSH connection to `user@host:port`."""

    backoff_base = 1.0
    backoff_cap = 30.0

    def __init__(
        self,
        *,
        host: str,
        port: int = 22,
        user: str,
        key_path: str | None,
        cert_path: str | None = None,
        known_hosts: str | None = None,
        verify_host_key: bool = True,
        max_channels: int = 10,
        keepalive_interval: float = 15,
        connect_timeout: float = 15,
    ) -> None:
        super().__init__(f"ssh {user}@{host}:{port}")
        if max_channels < 1:
            raise ValueError("max_channels must be >= 1")
        self.host, self.port, self.user = host, port, user
        self.key_path = _expand(key_path)
        self.cert_path = _expand(cert_path)
        self.known_hosts = os.path.expanduser(known_hosts or "~/.ssh/known_hosts")
        self.verify_host_key = verify_host_key
        self.keepalive_interval = keepalive_interval
        self.connect_timeout = connect_timeout
        self._channels = asyncio.Semaphore(max_channels)
        self._lock = asyncio.Lock()
        self._conn: Any = None
        self._closed = False
        self._failures = 0
        self._retry_at = 0.0
        self._last_error = ""
        self._warned_unverified = False

    # -- commands -----------------------------------------------------------------------

    async def _exec(self, command_line: str, stdin: bytes | None, timeout: float) -> RawResult:
        try:
            async with asyncio.timeout(timeout):
                conn = await self._connection()
                async with self._channels:
                    self.stats.commands += 1
                    return await self._session(conn, command_line, stdin)
        except TimeoutError as exc:
            raise TransportError(
                f"{self.description}: timed out after {timeout:g} s (result unknown): "
                f"{command_line[:200]}"
            ) from exc

    async def _session(self, conn: Any, command_line: str, stdin: bytes | None) -> RawResult:
        # sshd frees a session slot a little after its channel closes, so a channel
        # refused under MaxSessions is retried: a refused channel never ran anything.
        for delay in (*CHANNEL_RETRY_DELAYS, None):
            try:
                process = await self._start(conn, command_line, stdin)
            except asyncssh.ChannelOpenError as exc:
                if delay is None or conn.is_closed():
                    raise TransportError(
                        f"{self.description}: could not open a channel, the command did not "
                        f"run ({exc}): {command_line[:200]}"
                    ) from exc
                self.stats.channel_retries += 1
                await asyncio.sleep(delay)
            else:
                return await self._finish(process, command_line)
        raise AssertionError("unreachable")

    async def _start(self, conn: Any, command_line: str, stdin: bytes | None) -> Any:
        try:
            return await conn.create_process(
                command_line,
                input=stdin or None,
                stdin=asyncssh.PIPE if stdin else asyncssh.DEVNULL,
                encoding=None,
            )
        except asyncssh.ChannelOpenError:
            raise
        except (asyncssh.Error, OSError) as exc:
            raise TransportError(self._lost(command_line, exc)) from exc

    async def _finish(self, process: Any, command_line: str) -> RawResult:
        try:
            out, err = await process.communicate()
        except (asyncssh.Error, OSError) as exc:
            raise TransportError(self._lost(command_line, exc)) from exc
        finally:
            _stop(process)
        status = _exit_status(process.exit_status, process.exit_signal)
        if status is None:
            raise TransportError(self._lost(command_line, None))
        return RawResult(status, bytes(out or b""), bytes(err or b""))

    def _lost(self, command_line: str, exc: BaseException | None) -> str:
        why = f"{type(exc).__name__}: {exc}" if exc else "no exit status received"
        return f"{self.description}: the command's result is unknown ({why}): {command_line[:200]}"

    # -- files --------------------------------------------------------------------------

    async def read_file(
        self, path: str, *, offset: int = 0, limit: int = DEFAULT_READ_LIMIT
    ) -> tuple[bytes, int]:
        check_limit(limit)
        argv = ["bash", "-s", "--", path, str(offset), str(limit)]
        raw = await self._exec(quote_argv(argv), script_input(_READ_SCRIPT), DEFAULT_TIMEOUT)
        if raw.exit_status == _READ_SYMLINK:
            raise UnsafePath(f"{path}: is a symbolic link; refusing to read it")
        if raw.exit_status in _READ_ERRORS:
            kind, code = _READ_ERRORS[raw.exit_status]
            raise kind(code, os.strerror(code), path)
        return self._parse_read(path, raw)

    def _parse_read(self, path: str, raw: RawResult) -> tuple[bytes, int]:
        header, _, data = raw.stdout.partition(b"\n")
        fields = header.split()
        if raw.exit_status != 0 or len(fields) != 2 or not all(f.isdigit() for f in fields):
            detail = raw.stderr.decode(errors="replace").strip() or f"exit {raw.exit_status}"
            raise TransportError(f"{self.description}: cannot read {path}: {detail}")
        size, start = int(fields[0]), int(fields[1])
        return data, observed_size(size, start, data)

    # -- the connection -----------------------------------------------------------------

    async def _connection(self) -> Any:
        conn = self._conn
        if conn is not None and not conn.is_closed():
            return conn
        async with self._lock:
            if self._closed:
                raise TransportError(f"{self.description}: transport is closed")
            if self._conn is not None:
                if not self._conn.is_closed():
                    return self._conn
                self._forget_lost_connection()
            self._check_backoff()
            return await self._connect_once()

    def _forget_lost_connection(self) -> None:
        self._conn = None
        self.stats.connections_lost += 1
        log.info("%s: connection lost; reconnecting", self.description)

    def _check_backoff(self) -> None:
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            when = time.strftime("%H:%M:%S", time.localtime(time.time() + wait))
            raise TransportError(
                f"{self.description}: not connecting again until {when} (in {wait:.1f} s) "
                f"after {self._failures} failed attempt(s); last error: {self._last_error}"
            )

    async def _connect_once(self) -> Any:
        try:
            conn = await self._open()
        except TransportError as exc:
            self._note_failure(str(exc))
            raise
        self._failures = 0
        self._conn = conn
        self.stats.connects += 1
        return conn

    def _note_failure(self, message: str) -> None:
        self._failures += 1
        self.stats.connect_failures += 1
        self._last_error = message
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay * random.uniform(0.5, 1.0)
        log.debug("%s", message)  # the engine logs a backend's reachability once per change

    async def _open(self) -> Any:
        options = self._options()
        try:
            return await asyncssh.connect(self.host, **options)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise TransportError(self._host_key_message(exc)) from exc
        except asyncssh.PermissionDenied as exc:
            raise TransportError(
                f"{self.description}: authentication failed (key {self.key_path or 'default'}): "
                f"{exc}"
            ) from exc
        except TimeoutError as exc:
            raise TransportError(
                f"{self.description}: no connection within {self.connect_timeout:g} s"
            ) from exc
        except (asyncssh.Error, OSError) as exc:
            raise TransportError(f"{self.description}: cannot connect: {exc}") from exc

    def _host_key_message(self, exc: Exception) -> str:
        return (
            f"{self.description}: host key of [{self.host}]:{self.port} could not be verified "
            f"against {self.known_hosts} (unknown host or changed key): {exc}. Add the "
            f"host's key to that file, or pass verify_host_key=False to skip the check."
        )

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "port": self.port,
            "username": self.user,
            "known_hosts": self._known_hosts_option(),
            "keepalive_interval": self.keepalive_interval,
            "keepalive_count_max": KEEPALIVE_COUNT_MAX,
            "connect_timeout": self.connect_timeout,
        }
        if self.key_path is not None:
            options["client_keys"] = [self._client_key()]
            options["agent_path"] = None
        return options

    def _known_hosts_option(self) -> str | None:
        if not self.verify_host_key:
            if not self._warned_unverified:
                self._warned_unverified = True
                log.warning("%s: host key verification is OFF", self.description)
            return None
        if not os.path.isfile(self.known_hosts):
            raise TransportError(
                f"{self.description}: known_hosts file {self.known_hosts} does not exist; "
                f"the host key of [{self.host}]:{self.port} cannot be verified"
            )
        return self.known_hosts

    def _client_key(self) -> Any:
        assert self.key_path is not None
        try:
            key = asyncssh.read_private_key(self.key_path)
            if self.cert_path is None:
                return key
            return (key, asyncssh.read_certificate(self.cert_path))
        except (asyncssh.KeyImportError, OSError, ValueError) as exc:
            raise TransportError(
                f"{self.description}: cannot load key {self.key_path}"
                f"{f' / certificate {self.cert_path}' if self.cert_path else ''}: {exc} "
                f"(passphrase-protected keys: load them into ssh-agent and pass key_path=None)"
            ) from exc

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            await conn.wait_closed()


def _stop(process: Any) -> None:
    """Close a session; a command still running (timeout, cancel) is sent SIGKILL first."""
    with contextlib.suppress(asyncssh.Error, OSError):
        if process.exit_status is None and process.exit_signal is None:
            process.kill()
    process.close()


def _expand(path: str | None) -> str | None:
    return os.path.expanduser(path) if path is not None else None


def _exit_status(status: int | None, exit_signal: Any) -> int | None:
    """A shell-style exit status, 128 + N for signal N; None when the server sent neither."""
    if exit_signal:
        name = str(exit_signal[0])
        number = getattr(signal, f"SIG{name}", None)
        return 128 + int(number) if number is not None else 255
    if status is None or status < 0:
        return None
    return status
