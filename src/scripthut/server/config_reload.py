"""The configuration's state as views see it, and the watcher that reloads it.

The files are looked at every `interval` seconds (one stat per file in use, off the loop);
a change reloads. A broken edit leaves the running configuration in place: its located
errors are kept here and shown by `health`, `GET config`, the panel and the CLI until an
edit fixes them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from scripthut.config import Config, ConfigSource
from scripthut.config.provenance import entries
from scripthut.engine.reload import ReloadPlan
from scripthut.errors import InvalidInput, Issue

log = logging.getLogger("scripthut.server")

ERROR_LOG_INTERVAL = 60.0


class ConfigReloads:
    """The last reload's outcome (errors, changes, notices) and the file watcher."""

    def __init__(self, source: ConfigSource) -> None:
        self.source = source
        self.error: InvalidInput | None = None
        self.loaded_at: float | None = None
        self.changes: ReloadPlan | None = None
        self.notices: list[str] = []
        self.reloads = 0
        self.task: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()

    def failed(self, exc: InvalidInput) -> None:
        if self.error is None or str(self.error) != str(exc):
            log.warning("ScriptHut keeps its running configuration: %s", exc)
        self.error = exc

    def succeeded(self, plan: ReloadPlan | None, notices: list[str]) -> None:
        if self.error is not None:
            log.info("ScriptHut's configuration is valid again")
        self.error, self.changes, self.notices = None, plan, notices
        self.loaded_at = time.time()
        self.reloads += 1

    def issues(self) -> list[Issue]:
        """The located problems of every file in use (and of project files runs use)."""
        found = list(self.error.issues) if self.error is not None else []
        for problem in self.source.problems():
            found.extend(i for i in problem.issues if i not in found)
        return found

    def status(self) -> dict[str, Any]:
        issues = self.issues()
        return {
            "status": "error" if issues else "ok",
            "message": self.error.title if self.error is not None else None,
            "files": [f.to_json() for f in self.source.files()],
            "errors": [issue.to_json() for issue in issues],
            "loaded_at": self.loaded_at,
            "reloads": self.reloads,
            "changes": self.changes.to_json() if self.changes is not None else None,
            "notices": self.notices,
        }

    def describe(self, config: Config | None) -> dict[str, Any]:
        """The status, and the merged configuration key by key with its file and line."""
        return {**self.status(), "entries": entries(config) if config is not None else []}

    async def watch(self, reload: Callable[[], Awaitable[object]], interval: float) -> None:
        """Reload whenever a file in use changes, appears or goes; never dies of an error."""
        seen = self.source.loaded or await asyncio.to_thread(self.source.signature)
        last_error = -ERROR_LOG_INTERVAL
        while True:
            await asyncio.sleep(interval)
            try:
                now = await asyncio.to_thread(self.source.signature)
                if now != seen:
                    seen = now  # a change made while reloading is seen at the next look
                    await reload()
            except asyncio.CancelledError:
                raise
            except Exception:
                if time.monotonic() - last_error >= ERROR_LOG_INTERVAL:
                    last_error = time.monotonic()
                    log.exception("reloading ScriptHut's configuration failed")


def keep_running_settings(running: Config, new: Config) -> list[str]:
    """Settings that only take effect at the next start keep their running values."""
    notices = []
    if new.data_dir != running.data_dir:
        notices.append(
            f"settings.data_dir changed to {new.data_dir}: it takes effect when the server "
            f"starts again (the running one keeps {running.data_dir})"
        )
        new.settings.data_dir = running.data_dir
    return notices
