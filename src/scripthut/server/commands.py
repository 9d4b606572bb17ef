"""Running a configured workflow's command to get its task JSON (dry-run and run).

The command is trusted config text (it comes from scripthut.yaml, never from a request).
On a backend sharing this machine's files, with no `git` block, it runs with the local
shell from the server's root directory, with no stdin, in its own process group, and is
killed when it takes too long. Otherwise it runs on the backend through its transport (SSH
or local), in the home folder, or with a `git` block in a clone of the repository at the
branch head (`sources.Sources.workflow_command`: resolve, clone, postclone, run). At most
`CommandSlots.limit` commands run at once per server; a request beyond that is refused at
once with 429 (it is not queued: a page or script that floods the server gets a clear
answer rather than a growing backlog of processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from scripthut.config import Config, WorkflowConfig, shares_filesystem
from scripthut.errors import BackendUnavailable, InvalidInput, Issue
from scripthut.server.errors import TooManyRequests
from scripthut.sources import Provenance, Sources
from scripthut.workflow.model import Workflow
from scripthut.workflow.parse import decode_json, parse_document

DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_COMMANDS = 2
STDERR_SHOWN = 2_000


class CommandSlots:
    """At most `limit` workflow commands at once (one event loop: no lock needed)."""

    def __init__(self, limit: int = DEFAULT_MAX_COMMANDS) -> None:
        self.limit = limit
        self.running = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot while a command runs; TooManyRequests (429) when none is free."""
        if self.running >= self.limit:
            raise TooManyRequests(
                f"{self.running} workflow commands are running already, the most this server "
                f"runs at once (ScriptHut.max_workflow_commands = {self.limit}); retry when one "
                "has finished"
            )
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1


async def workflow_tasks(
    config: Config,
    entry: WorkflowConfig,
    cwd: Path,
    timeout: float = DEFAULT_TIMEOUT,
    sources: Sources | None = None,
) -> tuple[Workflow, Provenance | None]:
    """The workflow the command prints, and the clone it ran in (if any); InvalidInput
    naming what went wrong."""
    backend = config.backend(entry.backend)
    where = f"workflow '{entry.name}'"
    provenance = None
    if entry.git is not None or not shares_filesystem(backend):
        if sources is None:
            message = f"{where} runs on backend '{backend.name}', which is not reachable here"
            raise BackendUnavailable(message)
        if entry.git is not None:
            text, provenance = await sources.workflow_command(entry, entry.git, timeout)
        else:
            text = await sources.plain_command(entry, timeout)
    else:
        code, out, err = await _run(entry.command, cwd, timeout)
        if code != 0:
            detail = err.decode("utf-8", "replace").strip()[-STDERR_SHOWN:]
            message = f"command exited with status {code}" + (f": {detail}" if detail else "")
            raise InvalidInput([Issue(where, message, "command")], f"{where} failed")
        text = out.decode("utf-8", "replace")
    source = f"output of {where}"
    workflow = parse_document(decode_json(text, source=source), source=source)
    return workflow, provenance


async def _run(command: str, cwd: Path, timeout: float) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        raise InvalidInput(
            [Issue("workflow command", f"did not finish within {timeout:g} s", "command")],
            "workflow command timed out",
        ) from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out, err
