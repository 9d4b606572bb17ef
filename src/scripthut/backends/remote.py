"""What every scheduler reached through a transport shares (`scheduler.py` builds on it).

- `RemoteHost`: who we are on the scheduler's host and where home is (asked once, cached),
  paths as that host sees them, logs read with offsets, and generated scripts whose output
  comes back as marked sections.
- `submit_script`: one bash script that submits many jobs in one round trip. Each job's
  script is written beside its logs and fed to the submit command on stdin (never through a
  heredoc). After an accepted submission the job id is written to an index file named by the
  job's tag, before anything is printed: if the connection dies mid-batch, `find` still learns
  of every job that was accepted, and a tag that is already indexed is never submitted again.
- `in_chunks`/`chunk_slices`: a large batch as equal chunks, a few round trips at a time.
- `exit_files_script`, `index_script`: the parts of poll and find that are the same for
  every scheduler (exit-code files of ended jobs; the tag index); `MissingClock`: how long
  a job has been unaccounted for.
- `make_transport`: the SSH or local transport a scheduler backend's config asks for.

Section markers carry a random word per script, so no job name or log line can forge one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shlex
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from scripthut.backends.base import JobPaths, LogChunk
from scripthut.config import PBSBackendConfig, SGEBackendConfig, SlurmBackendConfig
from scripthut.errors import ScriptHutError
from scripthut.outputs import LIST_SCRIPT, OutputListing, list_argv, parse_listing
from scripthut.transport import LocalTransport, SSHTransport, Transport, TransportError
from scripthut.transport.base import DEFAULT_TIMEOUT, script_input
from scripthut.workflow.script import shell_path

log = logging.getLogger(__name__)

END = "end"
MIN_PARALLEL_CHUNK = 20
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
T = TypeVar("T")
R = TypeVar("R")


def is_safe_name(value: str) -> bool:
    """A file name and scheduler word without quoting: [A-Za-z0-9_.-], not `.` or `..`."""
    return bool(_SAFE_NAME.fullmatch(value)) and value not in (".", "..")


def check_name(kind: str, value: str) -> None:
    if not is_safe_name(value):
        raise ScriptHutError(f"{kind} {value!r} is not a safe file name ([A-Za-z0-9_.-])")


def parent_dir(path: str) -> str | None:
    """The directory a file path names, unless it is home or the current directory."""
    head = path.rsplit("/", 1)[0] if "/" in path else ""
    return head if head not in ("", "~") else None


def job_dirs(paths: JobPaths) -> set[str]:
    """The folders a job's files (logs, exit code, script) go in."""
    files = (paths.stdout, paths.stderr, paths.exit_code, paths.script)
    return {d for d in map(parent_dir, files) if d is not None}


def make_transport(entry: SlurmBackendConfig | PBSBackendConfig | SGEBackendConfig) -> Transport:
    """The transport of a scheduler backend: the local shell, or SSH with verified host keys."""
    if entry.transport == "local":
        return LocalTransport()
    ssh = entry.ssh
    if ssh is None:  # the config model refuses this; kept for callers that build configs
        raise ScriptHutError(f"backend '{entry.name}': transport 'ssh' needs an ssh block")
    return SSHTransport(
        host=ssh.host,
        port=ssh.port,
        user=ssh.user,
        key_path=str(ssh.key_path),
        cert_path=str(ssh.cert_path) if ssh.cert_path is not None else None,
        known_hosts=str(ssh.known_hosts),
        verify_host_key=ssh.verify_host_key,
        max_channels=ssh.max_channels,
        keepalive_interval=ssh.keepalive_interval,
        connect_timeout=ssh.connect_timeout,
    )


# --- sections of a script's output ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    """A marker line's words (after the marker) and the text up to the next marker."""

    words: tuple[str, ...]
    body: str

    @property
    def name(self) -> str:
        return self.words[0] if self.words else ""

    def rc(self, position: int = 1) -> int | None:
        """The exit status among the words, if it is one."""
        if len(self.words) <= position:
            return None
        word = self.words[position]
        return int(word) if word.lstrip("-").isdigit() else None


def new_marker() -> str:
    return f"@@hut-{secrets.token_hex(8)}"


def parse_sections(text: str, marker: str) -> list[Section]:
    """Split a script's output at its marker lines; text before the first one is dropped."""
    sections: list[Section] = []
    words: tuple[str, ...] | None = None
    body: list[str] = []
    prefix = marker + " "
    for line in text.split("\n"):
        if line.startswith(prefix):
            if words is not None:
                sections.append(Section(words, "\n".join(body)))
            words, body = tuple(line[len(prefix) :].split(" ")), []
        elif words is not None:
            body.append(line)
    if words is not None:
        sections.append(Section(words, "\n".join(body).removesuffix("\n")))
    return sections


def capture(name: str, command: str) -> str:
    """Bash that runs `command` (trusted text) and prints a section `name <rc>` with its output."""
    return (
        f"__hut_out=$({command} 2>&1)\n"
        f"__hut_rc=$?\n"
        f'printf \'%s {name} %s\\n%s\\n\' "$__hut_m" "$__hut_rc" "$__hut_out"\n'
    )


def script_start(marker: str) -> str:
    """The first lines of every generated script: the marker, and home as the directory."""
    return f'__hut_m={marker}\ncd -- "$HOME" || exit 1\n'


def script_end() -> str:
    return f"printf '%s {END}\\n' \"$__hut_m\"\n"


# --- the host ------------------------------------------------------------------------------------


class RemoteHost:
    """A scheduler's host through a transport: identity, paths, files and scripts."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.home: str | None = None
        self.user: str | None = None
        self._lock = asyncio.Lock()

    async def identify(self) -> tuple[str, str]:
        """(home, user) on the host: asked once, then cached. Raises TransportError."""
        async with self._lock:
            if self.home is None or self.user is None:
                result = await self.transport.run(
                    ["bash", "-c", 'printf "%s\\n" "$HOME" "$(id -un)"']
                )
                lines = result.stdout.split("\n")
                if not result.ok or len(lines) < 2 or not lines[0].startswith("/") or not lines[1]:
                    detail = result.stderr.strip() or result.stdout.strip()
                    raise TransportError(
                        f"{self.transport.description}: cannot learn the home directory and "
                        f"user name: {detail or f'exit {result.exit_status}'}"
                    )
                self.home, self.user = lines[0].rstrip("/") or "/", lines[1]
        return self.home, self.user

    def absolute(self, path: str) -> str:
        """`path` as the host sees it: `~/x` and relative paths start at home (once known)."""
        if self.home is None or path.startswith("/"):
            return path
        if path == "~":
            return self.home
        rest = path[2:] if path.startswith("~/") else path
        return f"{self.home}/{rest}" if rest else self.home

    def relative_to_home(self, path: str) -> str:
        """`~/x` as `x` (commands run in home), when home is not known yet."""
        if path.startswith("~/"):
            return path[2:] or "."
        return "." if path == "~" else path

    async def script(
        self, text: str, marker: str, timeout: float = DEFAULT_TIMEOUT
    ) -> list[Section]:
        """Run a generated script; its sections. TransportError if it did not run to its end."""
        result = await self.transport.run_script(text, timeout=timeout)
        sections = parse_sections(result.stdout, marker)
        if not sections or sections[-1].name != END:
            detail = result.stderr.strip()[-500:] or f"exit {result.exit_status}"
            raise TransportError(
                f"{self.transport.description}: a generated script stopped early ({detail})"
            )
        return sections

    async def read_log(self, path: str, offset: int = 0, limit: int = 1 << 20) -> LogChunk:
        """Up to `limit` bytes from `offset` (negative: from the end); missing -> `missing`."""
        try:
            data, size = await self.transport.read_file(
                self._readable(path), offset=offset, limit=max(0, limit)
            )
        except FileNotFoundError:
            return LogChunk(b"", max(offset, 0), 0, missing=True)
        if offset >= 0:
            start = offset
        elif limit < -offset:
            start = max(0, size + offset)
        else:
            start = max(0, size - len(data))
        return LogChunk(data, start, size)

    async def read_text(self, path: str, limit: int = 16 << 20) -> str:
        """A whole file as text; FileNotFoundError if absent, ScriptHutError if too large."""
        data, _size = await self.transport.read_file(
            self._readable(path), offset=0, limit=limit + 1
        )
        if len(data) > limit:
            raise ScriptHutError(f"{path}: larger than {limit} bytes")
        return data.decode("utf-8", errors="replace")

    async def list_outputs(
        self, pairs: Sequence[tuple[str, str]], chunk: int = 200
    ) -> dict[str, OutputListing]:
        """Listings of (output folder, summary file) pairs, `chunk` pairs per round trip.
        Raises TransportError when a listing cannot be had."""
        out: dict[str, OutputListing] = {}
        for start in range(0, len(pairs), chunk):
            part = [(self._readable(d), self._readable(s)) for d, s in pairs[start : start + chunk]]
            raw = await self.transport.run_raw(list_argv(part), stdin=script_input(LIST_SCRIPT))
            if raw.exit_status != 0:
                detail = raw.stderr.decode(errors="replace").strip()[-300:]
                raise TransportError(f"{self.transport.description}: listing outputs: {detail}")
            found = parse_listing(raw.stdout)
            for (directory, _), (asked, _) in zip(pairs[start : start + chunk], part, strict=True):
                if asked in found:
                    out[directory] = replace(found[asked], directory=directory)
        return out

    async def run_store_script(self, script: bytes) -> bytes:
        """A cache-store script's output; TransportError when it did not run to its end."""
        raw = await self.transport.run_raw(["bash", "-s"], stdin=script, timeout=600)
        if raw.exit_status != 0:
            detail = raw.stderr.decode(errors="replace").strip()[-300:]
            raise TransportError(f"{self.transport.description}: cache store: {detail}")
        return raw.stdout

    def _readable(self, path: str) -> str:
        if path.startswith(("/", "~/")):
            return self.absolute(path) if self.home is not None else path
        return self.absolute(path) if self.home is not None else f"~/{path}"

    async def close(self) -> None:
        await self.transport.close()


# --- submitting many jobs in one round trip -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bundle:
    """An array's element scripts, written one after the other as the one file `path` (0600)
    before its submit command runs; each element writes its own script from its bytes there
    when it starts (`arrays.wrapper_body`)."""

    path: str
    scripts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Submission:
    """One job for `submit_script`: tag, script text, where the script is kept, dirs it needs,
    and its logs (created 0600 before the submission, so the scheduler appends to them).

    An array job also carries its elements' `bundle`; the array's wrapper creates each
    element's logs (0600) when the element starts.
    """

    tag: str
    text: str
    script_path: str
    dirs: tuple[str, ...]
    logs: tuple[str, str] = ("", "")
    bundle: Bundle | None = None


@dataclass(frozen=True, slots=True)
class SubmitReply:
    """What the script said of one job: `rc` (the submit command ran), `known` (already
    indexed: `text` is its id), `error` (not submitted: `text` says why) or `skipped`."""

    kind: str
    text: str
    rc: int | None = None


# The submit command's output goes to a scratch file read back with builtins: a command
# substitution per job (`$(sbatch ...)`) costs a second process and a pipe, which doubled
# the time of a batch on a busy login node.
_SUBMIT_FUNCTION = r"""__hut_stop=
__hut_tmp=$(mktemp "${TMPDIR:-/tmp}/scripthut-submit.XXXXXX" 2>/dev/null) ||
    __hut_tmp=$__hut_idx/.submit.$$
trap 'rm -f -- "$__hut_tmp"' EXIT
__hut_submit() {
    local i=$1 tag=$2 file=$3 text=$4 lo=$5 le=$6 out rc d
    local -a lines made=()
    shift 6
    if [ -n "$__hut_stop" ]; then
        printf '%s job %s skipped\n' "$__hut_m" "$i"
        return 0
    fi
    if [ -s "$__hut_idx/$tag" ]; then
        read -r out < "$__hut_idx/$tag"
        printf '%s job %s known\n%s\n' "$__hut_m" "$i" "$out"
        return 0
    fi
    for d in "$@"; do
        if [ ! -d "$d" ]; then
            printf '%s job %s error\ncannot create the directory %s\n' "$__hut_m" "$i" "$d"
            return 0
        fi
    done
    if ! printf '%s' "$text" 2>/dev/null > "$file"; then
        printf '%s job %s error\ncannot write the job script %s\n' "$__hut_m" "$i" "$file"
        return 0
    fi
    if [ -n "$__hut_bundle" ] && ! printf '%s' "${__hut_el[@]}" 2>/dev/null > "$__hut_bundle"
    then
        printf '%s job %s error\ncannot write the job scripts %s\n' "$__hut_m" "$i" \
            "$__hut_bundle"
        return 0
    fi
    for d in "$lo" "$le"; do
        if [ -n "$d" ] && [ ! -e "$d" ] && [ ! -L "$d" ] && : 2>/dev/null >> "$d"; then
            made+=("$d")
        fi
    done
    umask "$__hut_umask"
    __SUBMIT__ < "$file" > "$__hut_tmp" 2>&1
    rc=$?
    umask 077
    lines=()
    mapfile -t lines < "$__hut_tmp"
    if [ "$rc" -eq 0 ]; then
        out=
        if [ "${#lines[@]}" -gt 0 ]; then out=${lines[${#lines[@]} - 1]}; fi
        printf '%s\n' "$out" > "$__hut_idx/$tag"
    else
        if [ "${#made[@]}" -gt 0 ]; then rm -f -- "${made[@]}"; fi
        out=${lines[*]-}
        case $out in
            __TRANSIENT__) __hut_stop=1 ;;
        esac
    fi
    # Nobody reads the reply any more (the caller died): stop, even where SIGPIPE is ignored.
    printf '%s job %s rc %s\n' "$__hut_m" "$i" "$rc" || exit 1
    printf '%s\n' "${lines[@]}" || exit 1
}
"""


def submit_script(
    items: Sequence[Submission],
    *,
    command: Sequence[str],
    index_dir: str,
    marker: str,
    transient: Sequence[str],
    script_arg: bool = False,
) -> str:
    """Bash that submits `items` in order with `command < script`, one section per job.

    With `script_arg`, the script's path is the command's last argument instead (for
    submit commands that cannot read a script on stdin), and stdin is /dev/null.

    Everything the script creates (folders, job scripts, logs, the tag index) is private:
    it runs under umask 077, except the submit command itself, which gets the user's
    umask back so the job writes its own files as the user would.
    After an error matching one of `transient` (the scheduler is unreachable) the rest are
    skipped: their fate is then learnt through `find`, never guessed.
    """
    patterns = "|".join(f"*{shlex.quote(text)}*" for text in transient) or "''"
    submit = shlex.join(command) + (' "$file" < /dev/null' if script_arg else ' < "$file"')
    function = _SUBMIT_FUNCTION.replace('__SUBMIT__ < "$file"', submit)
    function = function.replace("__TRANSIENT__", patterns)
    dirs = sorted({d for item in items for d in item.dirs} | {index_dir})
    bundles = [item.bundle for item in items if item.bundle is not None]
    pieces = SharedPieces([text for bundle in bundles for text in bundle.scripts])
    lines = [
        script_start(marker),
        f"__hut_idx={shell_path(index_dir)}\n",
        "__hut_umask=$(umask)\numask 077\n__hut_el=()\n__hut_bundle=\n",
        f"mkdir -p -- {' '.join(map(shell_path, dirs))} 2>/dev/null\n",
        function,
    ]
    shared_at = len(lines)
    for index, item in enumerate(items):
        if item.bundle is not None:
            parts = [pieces.word(text) for text in item.bundle.scripts]
            lines.append(f"__hut_bundle={shell_path(item.bundle.path)}\n")
            lines.append(f"__hut_el=({' '.join(parts)})\n")
        words = [str(index), shlex.quote(item.tag), shell_path(item.script_path)]
        words.append(shlex.quote(item.text))
        words.extend(shell_path(log) if log else "''" for log in item.logs)
        words.extend(shell_path(d) for d in item.dirs)
        lines.append(f"__hut_submit {' '.join(words)}\n")
        if item.bundle is not None:
            lines.append("__hut_el=()\n__hut_bundle=\n")
    lines.insert(shared_at, pieces.assignment())
    lines.append(script_end())
    return "".join(lines)


class SharedPieces:
    """The element scripts of one submission as bash words that share their common text.

    The scripts of an array's elements differ in a few lines (tag, task id, paths, command)
    and repeat the rest. Runs of lines found in more than one script are sent once, in the
    bash array `__hut_p`, and each script is one word concatenating `"${__hut_p[n]}"` with
    quoted literals for its own lines: bash then parses a fraction of the text and the
    scripts written are byte for byte the same.
    """

    MIN_SHARED = 24  # a shorter run of lines is cheaper inline than as a reference

    def __init__(self, texts: Sequence[str]) -> None:
        counts = Counter(line for text in texts for line in set(text.splitlines(True)))
        self._shared = {line for line, n in counts.items() if n > 1}
        self._index: dict[str, int] = {}

    def word(self, text: str) -> str:
        """`text` as one bash word (references to `__hut_p` and quoted literals)."""
        parts: list[str] = []
        own: list[str] = []
        run: list[str] = []
        for line in text.splitlines(True):
            if line in self._shared:
                run.append(line)
            else:
                self._flush(run, own, parts)
                own.append(line)
        self._flush(run, own, parts)
        if own:
            parts.append(shlex.quote("".join(own)))
        return "".join(parts) or "''"

    def _flush(self, run: list[str], own: list[str], parts: list[str]) -> None:
        """A run of shared lines becomes a reference, or stays a literal if it is short."""
        piece = "".join(run)
        run.clear()
        if len(piece) < self.MIN_SHARED:
            if piece:
                own.append(piece)
            return
        if own:
            parts.append(shlex.quote("".join(own)))
            own.clear()
        number = self._index.setdefault(piece, len(self._index))
        parts.append(f'"${{__hut_p[{number}]}}"')

    def assignment(self) -> str:
        """Bash assigning `__hut_p` (call after every `word`)."""
        return f"__hut_p=({' '.join(shlex.quote(piece) for piece in self._index)})\n"


def submit_replies(sections: Sequence[Section], count: int) -> list[SubmitReply | None]:
    """One reply per job of a submit script (None where the output says nothing)."""
    replies: list[SubmitReply | None] = [None] * count
    for section in sections:
        words = section.words
        if section.name != "job" or len(words) < 3 or not words[1].isdigit():
            continue
        index = int(words[1])
        if 0 <= index < count:
            replies[index] = SubmitReply(words[2], section.body, section.rc(3))
    return replies


# --- batches in chunks -------------------------------------------------------------------


def chunk_slices(count: int, largest: int, parallel: int) -> list[slice]:
    """Equal chunks of at most `largest` items, as many as `parallel` streams keep busy.

    A small batch stays one chunk (under MIN_PARALLEL_CHUNK items per stream, a second round
    trip costs more than it saves); a large one gets a multiple of `parallel` chunks.
    """
    if count <= 0:
        return []
    chunks = -(-count // largest)
    if chunks < parallel:
        chunks = max(chunks, min(parallel, count // MIN_PARALLEL_CHUNK))
    else:
        chunks = -(-chunks // parallel) * parallel
    size = -(-count // chunks)
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


async def in_chunks(
    items: Sequence[T],
    run: Callable[[Sequence[T]], Awaitable[list[R]]],
    *,
    largest: int,
    parallel: int,
) -> list[R]:
    """`run` over chunks of `items`, `parallel` at a time; results in order.

    If a chunk raises, the others still finish (nothing is left running behind the caller's
    back), then the first error is raised.
    """
    gate = asyncio.Semaphore(parallel)

    async def one(chunk: Sequence[T]) -> list[R]:
        async with gate:
            return await run(chunk)

    parts = [items[part] for part in chunk_slices(len(items), largest, parallel)]
    results = await asyncio.gather(*map(one, parts), return_exceptions=True)
    out: list[R] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        out.extend(result)
    return out


# --- parts of poll and find ---------------------------------------------------------------


def exit_files_script(ids: Sequence[str], exit_paths: Sequence[str]) -> str:
    """Bash: for each job not in the assoc array `__hut_live`, an `exit <id> <code>` section
    when its exit-code file exists, and its id in the array `__hut_done` (no process per job).
    """
    return "".join(
        [
            f"__hut_ids=({' '.join(map(shlex.quote, ids))})\n",
            f"__hut_exits=({' '.join(map(shell_path, exit_paths))})\n",
            "__hut_done=()\n",
            'for __hut_i in "${!__hut_ids[@]}"; do\n',
            "    __hut_id=${__hut_ids[__hut_i]}\n",
            '    if [ -n "${__hut_live[$__hut_id]-}" ]; then continue; fi\n',
            '    __hut_done+=("$__hut_id")\n',
            '    if [ -f "${__hut_exits[__hut_i]}" ]; then\n',
            '        __hut_code=; read -r __hut_code < "${__hut_exits[__hut_i]}"\n',
            '        printf \'%s exit %s %s\\n\' "$__hut_m" "$__hut_id" "$__hut_code"\n',
            "    fi\n",
            "done\n",
        ]
    )


def exit_codes(sections: Iterable[Section]) -> dict[str, int | None]:
    """The exit-code files a script read: job id -> code (None: still empty, not written)."""
    codes: dict[str, int | None] = {}
    for section in sections:
        if section.name == "exit" and len(section.words) >= 2:
            word = section.words[2].strip() if len(section.words) > 2 else ""
            codes[section.words[1]] = int(word) if word.isdigit() else None
    return codes


def index_script(tags: Sequence[str], index_dir: str) -> str:
    """Bash: an `index <tag> <job id>` section per indexed tag; `__hut_missing=1` if any is not."""
    return "".join(
        [
            f"__hut_idx={shell_path(index_dir)}\n",
            "__hut_missing=0\n",
            f"for __hut_t in {' '.join(map(shlex.quote, tags))}; do\n",
            '    if [ -s "$__hut_idx/$__hut_t" ]; then\n',
            '        __hut_j=; read -r __hut_j < "$__hut_idx/$__hut_t"\n',
            '        printf \'%s index %s %s\\n\' "$__hut_m" "$__hut_t" "$__hut_j"\n',
            "    else __hut_missing=1; fi\n",
            "done\n",
        ]
    )


def indexed(sections: Iterable[Section]) -> dict[str, str]:
    """tag -> the text the index holds for it (the submit command's last line)."""
    return {
        s.words[1]: s.words[2]
        for s in sections
        if s.name == "index" and len(s.words) >= 3 and s.words[2]
    }


class MissingClock:
    """Since when each job has been unaccounted for, and whether its grace is over."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._since: dict[str, float] = {}

    def waited(self, job_id: str) -> float:
        """Seconds since the job was first missed (starting now if it was not)."""
        now = time.monotonic()
        return now - self._since.setdefault(job_id, now)

    def over(self, job_id: str) -> tuple[bool, float]:
        waited = self.waited(job_id)
        if waited >= self.grace_s:
            self._since.pop(job_id, None)
            return True, waited
        return False, waited

    def seen(self, job_id: str) -> None:
        self._since.pop(job_id, None)

    def keep_only(self, job_ids: set[str]) -> None:
        self._since = {k: v for k, v in self._since.items() if k in job_ids}
