"""Reading a task's log through its backend: byte ranges, the last N lines, UTF-8 text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scripthut.backends.base import Backend, LogChunk

DEFAULT_LIMIT = 256 << 10
MAX_LIMIT = 4 << 20
TAIL_WINDOW = 64 << 10
MAX_TAIL_WINDOW = 16 << 20


@dataclass(frozen=True, slots=True)
class LogRead:
    chunk: LogChunk
    text: str
    next_offset: int

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "offset": self.chunk.offset,
            "next_offset": self.next_offset,
            "size": self.chunk.size,
            "missing": self.chunk.missing,
        }


async def read_log(
    backend: Backend, path: str, *, offset: int = 0, tail: int | None = None, limit: int
) -> LogRead:
    """Bytes from `offset` (negative: from the end), or the last `tail` lines."""
    if tail is not None:
        offset = await tail_offset(backend, path, tail)
    chunk = await backend.read_log(path, offset, limit)
    data = chunk.data
    if chunk.next_offset < chunk.size:
        data = data[: len(data) - _partial_utf8(data)]  # the rest comes with the next read
    return LogRead(chunk, data.decode("utf-8", errors="replace"), chunk.offset + len(data))


async def tail_offset(backend: Backend, path: str, lines: int) -> int:
    """Where the last `lines` lines of the file start (a final newline ends the last one)."""
    if lines <= 0:
        chunk = await backend.read_log(path, -1, 1)
        return chunk.size
    window = TAIL_WINDOW
    while True:
        chunk = await backend.read_log(path, -window, window)
        if chunk.missing:
            return 0
        body = chunk.data[:-1] if chunk.data.endswith(b"\n") else chunk.data
        newlines = _nth_newline_from_end(body, lines)
        if newlines is not None:
            return chunk.offset + newlines + 1
        if chunk.offset == 0 or window >= MAX_TAIL_WINDOW:
            return chunk.offset
        window *= 4


def _nth_newline_from_end(data: bytes, n: int) -> int | None:
    cut = len(data)
    for _ in range(n):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return None
    return cut


def _partial_utf8(data: bytes) -> int:
    """How many bytes at the end begin a UTF-8 character that `data` does not finish."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: look further back for the lead byte
        if byte < 0x80:
            needed = 1
        elif byte >= 0xF0:
            needed = 4
        elif byte >= 0xE0:
            needed = 3
        else:
            needed = 2
        return back if needed > back else 0
    return 0
