"""The standalone engine process (`scripthut engine start --foreground`).

It takes the data directory's lease, asking a server-hosted engine to hand it over if
one holds it, writes its pid file, drives every run until SIGTERM or SIGINT, then stops
the engine (jobs keep running on their backends) and releases the lease. An engine
hosted by a Jupyter server in `auto` mode takes the lease again within seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time

from scripthut.config import Config
from scripthut.daemon.files import DAEMON, SERVER, EngineFiles, role_of
from scripthut.engine.engine import Engine
from scripthut.errors import LeaseHeld
from scripthut.store import Store

log = logging.getLogger("scripthut.daemon")

HANDOVER_TIMEOUT = 30.0
LEASE_RETRY = 0.2


async def serve(config: Config, *, handover_timeout: float = HANDOVER_TIMEOUT) -> int:
    """Drive the data directory until a signal; 0 on a requested stop, 1 otherwise."""
    store = Store.in_data_dir(config.data_dir)
    files = EngineFiles(config.data_dir)
    engine = Engine(config, store)
    engine.owner = f"{DAEMON}/{engine.owner}"
    try:
        await take_lease(engine, store, handover_timeout)
    except LeaseHeld as exc:
        log.error("%s", exc)
        store.close()
        return 1
    files.write_pid(engine.owner)
    log.info("engine started: pid %d, data directory %s", os.getpid(), config.data_dir)
    requested = await _until_stopped(engine)
    await engine.stop()
    files.remove_pid(engine.owner)
    store.close()
    log.info("engine stopped" if requested else "engine stopped: it lost the lease")
    return 0 if requested else 1


async def take_lease(engine: Engine, store: Store, timeout: float) -> None:
    """Start `engine`; a server-hosted engine holding the lease is asked to hand it over."""
    asked = False
    deadline = time.monotonic() + timeout
    while True:
        try:
            await engine.start()
            return
        except LeaseHeld:
            holder = store.lease_holder() or {}
        role = role_of(holder.get("owner"))
        where = f"pid {holder.get('pid')} on {holder.get('host')}"
        if role == DAEMON:
            raise LeaseHeld(f"a standalone engine already drives {store.path} ({where})")
        if role == SERVER and not asked:
            data = {"owner": engine.owner, "pid": os.getpid(), "host": socket.gethostname()}
            store.enqueue_command("handover", None, data)
            log.info("asked the engine of a Jupyter server (%s) to hand over", where)
            asked = True
        if time.monotonic() >= deadline:
            raise LeaseHeld(
                f"another engine drives {store.path} ({where}) and did not hand over within "
                f"{timeout:.0f} s; stop it, or set c.ScriptHut.engine = 'auto' on its server"
            )
        await asyncio.sleep(LEASE_RETRY)


async def _until_stopped(engine: Engine) -> bool:
    """Wait for SIGTERM/SIGINT (True) or for the engine to stop driving on its own (False)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(engine.released.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return stop.is_set()
