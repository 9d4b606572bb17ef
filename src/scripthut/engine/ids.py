"""Run ids and attempt tags."""

from __future__ import annotations

import secrets
import time


def new_run_id(now: float | None = None) -> str:
    """Sortable and short enough to type: `YYYYMMDD-HHMMSS-xxxx`."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(2)}"


def attempt_tag(run_id: str, seq: int, attempt: int) -> str:
    """Unique per attempt, safe as a scheduler job name or comment, findable after a crash."""
    return f"hut.{run_id}.{seq}.{attempt}"
