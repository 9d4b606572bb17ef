"""The `scripthut` Jupyter server extension: config, startup and shutdown.

Settings are read from `c.ScriptHut.*` (jupyter_server_config.py / .json, or
`--ScriptHut.data_dir=...` on the command line). Precedence, highest first: these
traitlets, then `$SCRIPTHUT_CONFIG` / `$SCRIPTHUT_DATA_DIR`, then scripthut.yaml, then
the built-in defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.serverapp import ServerApp
from traitlets import Enum, Float, Int, TraitError, Unicode, validate
from traitlets.config import Configurable

from scripthut.client.discovery import ENV_URL, ServerInfo, write_runtime_file
from scripthut.server.commands import DEFAULT_MAX_COMMANDS
from scripthut.server.handlers import BATCH_DELAY, HEARTBEAT_INTERVAL, routes
from scripthut.server.requests import DEFAULT_MAX_BODY
from scripthut.server.service import ENGINE_MODES, ScriptHutService, ServiceOptions
from scripthut.server.stream import DEFAULT_BUFFER

_LOOPBACK = {"", "localhost", "0.0.0.0", "127.0.0.1"}  # noqa: S104 - names, not a bind


class ScriptHut(Configurable):
    """Settings of the ScriptHut server extension (`c.ScriptHut.<name>`)."""

    config_file = Unicode(
        None,
        allow_none=True,
        help="""Path of the global scripthut.yaml. When unset: $SCRIPTHUT_CONFIG, then
        $XDG_CONFIG_HOME/scripthut/scripthut.yaml. A project scripthut.yaml found in the
        server's root folder or a parent is layered over it; with neither, the built-in
        defaults (one local backend).""",
    ).tag(config=True)

    data_dir = Unicode(
        None,
        allow_none=True,
        help="""Directory of ScriptHut's database and local logs. Wins over
        $SCRIPTHUT_DATA_DIR and settings.data_dir in scripthut.yaml.""",
    ).tag(config=True)

    poll_interval = Int(
        None,
        allow_none=True,
        help="""Longest time in seconds between two scheduler polls of a quiet backend.
        Wins over settings.poll_interval in scripthut.yaml.""",
    ).tag(config=True)

    stop_timeout = Float(
        5.0, help="Seconds the engine may take to stop when the server shuts down."
    ).tag(config=True)

    heartbeat_interval = Float(
        HEARTBEAT_INTERVAL, help="Seconds between keep-alive comments on the event stream."
    ).tag(config=True)

    stream_buffer = Int(
        DEFAULT_BUFFER,
        help="""Events buffered per event-stream client; a client further behind is
        disconnected and resumes from its last event id.""",
    ).tag(config=True)

    command_timeout = Float(
        120.0, help="Seconds a configured workflow's command may take to print its tasks."
    ).tag(config=True)

    max_body_mb = Float(
        DEFAULT_MAX_BODY / 2**20,
        help="""Largest request body the API accepts, in MiB (a larger one gets 413 before
        it is parsed). The default fits a workflow of 100,000 tasks with room to spare.""",
    ).tag(config=True)

    max_workflow_commands = Int(
        DEFAULT_MAX_COMMANDS,
        help="""Configured workflow commands (dry-run, run) this server runs at once; a
        request beyond that gets 429 with Retry-After rather than waiting.""",
    ).tag(config=True)

    config_check_interval = Float(
        1.0,
        help="""Seconds between looks at the config files (the global scripthut.yaml and the
        project one found from the server's root); a change is applied without a restart.
        0 turns watching off (POST scripthut/api/config/reload still reloads).""",
    ).tag(config=True)

    engine = Enum(
        list(ENGINE_MODES),
        default_value="auto",
        help="""Where the engine runs. "auto": a running engine is used (the standalone one,
        `scripthut engine start`, or another server's), else this server hosts one and hands it
        over to a standalone engine that asks. "server": this server hosts the engine and
        never hands it over. "daemon": this server never hosts it and starts the standalone
        engine when none runs, so closing or culling the server never stops a run.""",
    ).tag(config=True)

    @validate("max_body_mb", "max_workflow_commands")
    def _positive(self, proposal: dict[str, Any]) -> float:
        value: float = proposal["value"]
        if value <= 0:
            raise TraitError(f"ScriptHut.{proposal['trait'].name} must be positive")
        return value

    @validate("poll_interval")
    def _poll_at_least_one(self, proposal: dict[str, Any]) -> int | None:
        value: int | None = proposal["value"]
        if value is not None and value < 1:
            raise TraitError("ScriptHut.poll_interval must be at least 1 second")
        return value


class ScriptHutApp(ExtensionApp):
    """Hosts the ScriptHut engine in the Jupyter server and serves its API."""

    name = "scripthut"
    load_other_extensions = True
    classes = [*ExtensionApp.classes, ScriptHut]

    settings_object: ScriptHut
    service: ScriptHutService
    _runtime_file: Path | None = None
    _env_set = False
    _previous_url: str | None = None

    def initialize_settings(self) -> None:
        self.settings_object = ScriptHut(parent=self)
        root = Path(self.serverapp.root_dir).expanduser().resolve() if self.serverapp else None
        s = self.settings_object
        options = ServiceOptions(
            config_file=s.config_file,
            data_dir=s.data_dir,
            poll_interval=s.poll_interval,
            root_dir=root,
            command_timeout=s.command_timeout,
            max_commands=s.max_workflow_commands,
            max_body=int(s.max_body_mb * 2**20),
            stream_buffer=s.stream_buffer,
            config_check=max(0.0, s.config_check_interval),
            engine=s.engine,
        )
        self.service = ScriptHutService(options)
        if self.service.problem is not None:
            self.log.error("ScriptHut: %s (the API reports it)", self.service.problem)

    def initialize_handlers(self) -> None:
        self.handlers.extend(
            routes(
                self.service,
                heartbeat=self.settings_object.heartbeat_interval,
                batch_delay=BATCH_DELAY,
            )
        )

    async def _start_jupyter_server_extension(self, serverapp: ServerApp) -> None:
        await self.service.start()
        self.log.info("ScriptHut started (%s mode)", self.service.mode.value)
        url = server_url(serverapp)
        if url is None:
            return
        self._previous_url = os.environ.get(ENV_URL)
        os.environ[ENV_URL] = url  # kernels started from now on inherit it
        self._env_set = True
        token = getattr(serverapp.identity_provider, "token", "") or None
        data_dir = str(self.service.config.data_dir) if self.service.config else None
        with contextlib.suppress(OSError):
            info = ServerInfo(url, token, os.getpid(), data_dir)
            self._runtime_file = write_runtime_file(info, Path(serverapp.runtime_dir))

    async def stop_extension(self) -> None:
        """Stop the engine within `ScriptHut.stop_timeout` seconds (jobs keep running)."""
        timeout = self.settings_object.stop_timeout
        try:
            await asyncio.wait_for(self.service.stop(timeout), timeout + 1.0)
        except TimeoutError:
            self.log.warning("ScriptHut did not stop within %.0f s", timeout)
        if self._runtime_file is not None:
            with contextlib.suppress(OSError):
                self._runtime_file.unlink()
            self._runtime_file = None
        if self._env_set:
            self._env_set = False
            if self._previous_url is None:
                os.environ.pop(ENV_URL, None)
            else:
                os.environ[ENV_URL] = self._previous_url


def server_url(serverapp: ServerApp) -> str | None:
    """The URL a kernel on this machine reaches the server at, base_url included."""
    if serverapp.sock:
        return None  # a Unix socket: kernels fall back to their own engine
    ip = serverapp.ip
    if ip in _LOOPBACK:
        host = "127.0.0.1"
    elif ip in ("::", "::1"):
        host = "[::1]"
    else:
        host = f"[{ip}]" if ":" in ip else ip
    scheme = "https" if serverapp.certfile else "http"
    base = serverapp.base_url if serverapp.base_url.endswith("/") else serverapp.base_url + "/"
    return f"{scheme}://{host}:{serverapp.port}{base}"
