"""A Batch job's output, read from its CloudWatch log stream as a byte stream with offsets.

Batch sends the container's stdout and stderr to one stream. Its events are joined as
lines (`message + "\\n"`) into one byte string; a reader asks for bytes from an offset as
for a file. Each stream's bytes and `nextForwardToken` are kept, so following a running
job fetches only new events (GetLogEvents, paged, oldest first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from scripthut.backends.base import LogChunk

MAX_STREAMS = 64
MAX_PAGES = 200  # per read: a huge backlog arrives over several reads


@dataclass(slots=True)
class _Stream:
    data: bytearray = field(default_factory=bytearray)
    token: str | None = None
    complete: bool = False


class LogStreams:
    """Recently read streams (an LRU of MAX_STREAMS), each read forward from where it stopped."""

    def __init__(self) -> None:
        self._streams: OrderedDict[tuple[str, str], _Stream] = OrderedDict()

    def read(
        self,
        client: Any,
        group: str,
        stream: str,
        offset: int,
        limit: int,
        *,
        final: bool,
    ) -> LogChunk:
        """Bytes `[offset, offset+limit)` of the stream (negative offset: from the end).

        Blocking (boto3): run in a worker thread. `final` marks a job that ended, whose
        stream is complete once read to its end.
        """
        cached = self._get(group, stream)
        if not cached.complete:
            self._fetch(client, group, stream, cached, final=final)
        size = len(cached.data)
        start = max(0, size + offset) if offset < 0 else min(offset, size)
        return LogChunk(bytes(cached.data[start : start + max(0, limit)]), start, size)

    def _get(self, group: str, stream: str) -> _Stream:
        key = (group, stream)
        found = self._streams.get(key)
        if found is None:
            found = self._streams[key] = _Stream()
            while len(self._streams) > MAX_STREAMS:
                self._streams.popitem(last=False)
        self._streams.move_to_end(key)
        return found

    @staticmethod
    def _fetch(client: Any, group: str, stream: str, cached: _Stream, *, final: bool) -> None:
        for _ in range(MAX_PAGES):
            args: dict[str, Any] = {
                "logGroupName": group,
                "logStreamName": stream,
                "startFromHead": True,
            }
            if cached.token:
                args["nextToken"] = cached.token
            reply = client.get_log_events(**args)
            for event in reply.get("events") or []:
                cached.data += str(event.get("message", "")).encode() + b"\n"
            token = reply.get("nextForwardToken")
            if not token or token == cached.token:
                cached.complete = final
                return
            cached.token = token
