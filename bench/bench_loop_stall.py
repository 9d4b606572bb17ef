"""How long the Jupyter server's event loop stalls while ScriptHut serves heavy requests.

A real Jupyter server with the extension runs IN THIS PROCESS, on this process's asyncio
loop, next to a probe coroutine that sleeps 5 ms in a loop and records how late it wakes
up. Everything the server does (kernels, the engine, every user's requests) shares that
loop, so the probe's lateness is the stall any of them would see. The clients run in a
separate process (so their own Python work does not compete with the loop for the
interpreter) and talk to the server over loopback HTTP:

  (a) `--clients` event-stream clients replay `--events` stored events from `after=0` over
      the real SSE endpoint, concurrently, each checking it got every event in order;
  (b) a `--tasks`-task run is created (POST runs), fetched with its tasks (GET run) and
      cancelled (POST cancel) through the REST handlers, then rerun and cancelled again.
      Its tasks wait on one gate task (`sleep`), so nothing but the gate runs.

Also measured in the same run: the latency of `GET runs` with an empty store and with the
large run in history (median of `--repeat` calls each); the target is a ratio <= 2.

Targets: longest stall <= 100 ms, p99 <= 20 ms, in every phase.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROBE_INTERVAL = 0.005
TARGET_MAX_MS = 100.0
TARGET_P99_MS = 20.0
TARGET_RUNS_RATIO = 2.0
CONFIG = """\
backends:
  - name: local
    type: local
    max_concurrent: 4
    cpus: 4
settings:
  poll_interval: 2
"""


# -- the client process ---------------------------------------------------------------------


@dataclass
class Target:
    port: int
    token: str

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            headers = {"Authorization": f"token {self.token}", "Content-Type": "application/json"}
            conn.request(method, f"/scripthut/api/{path}", body, headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        status, data = self.request(method, path, payload)
        if status != expect:
            raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data)


@dataclass
class Replayer:
    """One SSE client on a raw socket (HTTP/1.0: the body is not chunked)."""

    target: Target
    until: int
    ids: list[int] = field(default_factory=list)
    error: str | None = None

    def run(self, deadline: float) -> None:
        try:
            self._read(deadline)
        except Exception as exc:  # reported by the parent, not raised in a thread
            self.error = f"{type(exc).__name__}: {exc}"

    def _read(self, deadline: float) -> None:
        with socket.create_connection(("127.0.0.1", self.target.port), timeout=120) as sock:
            sock.sendall(
                f"GET /scripthut/api/events?after=0 HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                f"Authorization: token {self.target.token}\r\n\r\n".encode()
            )
            buffer, headers_done = b"", False
            while time.monotonic() < deadline:
                data = sock.recv(1 << 16)
                if not data:
                    raise RuntimeError(f"stream ended after {len(self.ids)} events")
                buffer += data
                if not headers_done:
                    if b"\r\n\r\n" not in buffer:
                        continue
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    if b" 200 " not in head.split(b"\r\n", 1)[0]:
                        raise RuntimeError(head.decode(errors="replace"))
                    headers_done = True
                *frames, buffer = buffer.split(b"\n\n")
                for frame in frames:
                    if frame.startswith(b"id: "):
                        self.ids.append(int(frame[4 : frame.index(b"\n")]))
                if self.ids and self.ids[-1] >= self.until:
                    return
            raise RuntimeError(f"timed out after {len(self.ids)} events")


def client_replay(target: Target, clients: int, until: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    replayers = [Replayer(target, until) for _ in range(clients)]
    threads = [threading.Thread(target=r.run, args=(deadline,)) for r in replayers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = list(range(1, until + 1))
    wrong = [r.error or f"{len(r.ids)} events" for r in replayers if r.ids != expected]
    return {"clients": clients, "events": until, "wrong": wrong[:3]}


def client_runs_latency(target: Target, repeat: int) -> dict[str, Any]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        target.json("GET", "runs")
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times)}


def client_create(target: Target, tasks: int) -> dict[str, Any]:
    document = [{"id": "gate", "command": "sleep 600"}]
    document += [{"id": f"t{i:06d}", "command": "true", "deps": ["gate"]} for i in range(tasks - 1)]
    run = target.json("POST", "runs", {"workflow": document, "name": "big"}, expect=201)
    return {"run": run["id"], "total": run["total"]}


def client_fetch(target: Target, run_id: str) -> dict[str, Any]:
    run = target.json("GET", f"runs/{run_id}")
    return {"tasks": len(run["tasks"])}


def client_cancel(target: Target, run_id: str) -> dict[str, Any]:
    run = target.json("POST", f"runs/{run_id}/cancel")
    return {"state": run["state"], "counts": run["counts"]}


def client_rerun(target: Target, run_id: str) -> dict[str, Any]:
    run = target.json("POST", f"runs/{run_id}/rerun")
    return {"state": run["state"], "counts": run["counts"]}


def client_wait(target: Target, run_id: str, timeout: float) -> dict[str, Any]:
    """Until the run is final (its gate job cancelled and reaped)."""
    deadline = time.monotonic() + min(timeout, 60.0)
    while True:
        run = target.json("GET", f"runs/{run_id}?tasks=0")
        if run["state"] in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            return {"state": run["state"], "counts": run["counts"]}
        time.sleep(0.25)


def client_main(args: argparse.Namespace) -> int:
    target = Target(args.port, args.token)
    if args.client == "replay":
        result = client_replay(target, args.clients, args.until, args.timeout)
    elif args.client == "runs":
        result = client_runs_latency(target, args.repeat)
    elif args.client == "create":
        result = client_create(target, args.tasks)
    elif args.client == "fetch":
        result = client_fetch(target, args.run)
    elif args.client == "rerun":
        result = client_rerun(target, args.run)
    elif args.client == "wait":
        result = client_wait(target, args.run, args.timeout)
    else:
        result = client_cancel(target, args.run)
    print(json.dumps(result))
    return 0


# -- the server process: probe + in-process Jupyter server -------------------------------------


@dataclass
class Probe:
    """Sleeps PROBE_INTERVAL in a loop on the server's loop; records lateness per phase."""

    phase: str = "idle"
    samples: dict[str, list[float]] = field(default_factory=dict)
    running: bool = True

    async def run(self) -> None:
        while self.running:
            start = time.perf_counter()
            await asyncio.sleep(PROBE_INTERVAL)
            late = time.perf_counter() - start - PROBE_INTERVAL
            self.samples.setdefault(self.phase, []).append(max(0.0, late))

    def summary(self, phase: str) -> tuple[float, float, int]:
        values = sorted(self.samples.get(phase, [0.0]))
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        return values[-1] * 1000, p99 * 1000, len(values)


@dataclass
class GcWatch:
    """Full (generation 2) collections of the cyclic GC: they hold every thread."""

    probe: Probe
    pauses: dict[str, list[float]] = field(default_factory=dict)
    _start: float = 0.0

    def __call__(self, what: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if what == "start":
            self._start = time.perf_counter()
        else:
            pause = time.perf_counter() - self._start
            self.pauses.setdefault(self.probe.phase, []).append(pause)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed_events(data_dir: Path, count: int) -> int:
    """`count` task events in the store, as a long-running engine leaves them."""
    from scripthut.store import Store

    store = Store.in_data_dir(data_dir)
    try:
        for first in range(0, count, 10_000):
            n = min(10_000, count - first)
            store.append_events(
                [
                    ("task", "r-old", f"t{first + i:06d}", {"state": "completed", "exit_code": 0})
                    for i in range(n)
                ]
            )
        return store.last_event_id()
    finally:
        store.close()


async def start_server(folder: Path, port: int, token: str) -> Any:
    from jupyter_server.serverapp import ServerApp
    from traitlets.config import Config

    config = Config(
        {
            "ServerApp": {
                "jpserver_extensions": {"scripthut": True, "jupyter_server_terminals": False},
                "allow_unauthenticated_access": False,
            },
            "IdentityProvider": {"token": token},
            "ScriptHut": {
                "config_file": str(folder / "scripthut.yaml"),
                "data_dir": str(folder / "data"),
            },
        }
    )
    app = ServerApp.instance(
        config=config,
        ip="127.0.0.1",
        port=port,
        port_retries=0,
        open_browser=False,
        allow_root=True,
        root_dir=str(folder / "root"),
        log_level="WARN",
    )
    app.init_signal = lambda: None
    app.initialize(argv=[], new_httpserver=True)
    app.start_app()
    await app._post_start()
    return app


async def run_client(
    args: argparse.Namespace, port: int, token: str, *client_args: str
) -> dict[str, Any]:
    """The client process; the loop stays free (and probed) while it works."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--port",
        str(port),
        "--token",
        token,
        "--timeout",
        str(args.timeout),
        "--client",
        *client_args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), args.timeout + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"client {client_args} did not finish in time") from None
    if proc.returncode != 0:
        raise RuntimeError(f"client {client_args} failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    for name in ("root", "data", "runtime", "jconfig", "jdata"):
        (folder / name).mkdir(parents=True)
    (folder / "scripthut.yaml").write_text(CONFIG)
    os.environ.update(
        JUPYTER_RUNTIME_DIR=str(folder / "runtime"),
        JUPYTER_CONFIG_DIR=str(folder / "jconfig"),
        JUPYTER_DATA_DIR=str(folder / "jdata"),
        JUPYTER_PLATFORM_DIRS="1",
    )
    last = seed_events(folder / "data", args.events)
    port, token = free_port(), uuid.uuid4().hex
    app = await start_server(folder, port, token)
    probe = Probe()
    watch = GcWatch(probe)
    gc.callbacks.append(watch)
    probing = asyncio.create_task(probe.run())
    out: dict[str, Any] = {}
    try:
        gc.collect()
        await asyncio.sleep(1.0)
        repeat = ("--repeat", str(args.repeat))
        out["runs_empty"] = await run_client(args, port, token, "runs", *repeat)
        probe.phase = "replay"
        replay = await run_client(
            args, port, token, "replay", "--clients", str(args.clients), "--until", str(last)
        )
        if replay["wrong"]:
            raise RuntimeError(f"replay clients missed events: {replay['wrong']}")
        probe.phase = "create"
        created = await run_client(args, port, token, "create", "--tasks", str(args.tasks))
        run_id = created["run"]
        probe.phase = "fetch"
        fetched = await run_client(args, port, token, "fetch", "--run", run_id)
        probe.phase = "cancel"
        cancelled = await run_client(args, port, token, "cancel", "--run", run_id)
        probe.phase = "end"
        await run_client(args, port, token, "wait", "--run", run_id)
        probe.phase = "rerun"
        await run_client(args, port, token, "rerun", "--run", run_id)
        probe.phase = "cancel-again"
        await run_client(args, port, token, "cancel", "--run", run_id)
        probe.phase = "settle"
        final = await run_client(args, port, token, "wait", "--run", run_id)
        probe.phase = "idle-after"
        out["runs_full"] = await run_client(args, port, token, "runs", *repeat)
        out.update(replay=replay, created=created, fetched=fetched, cancelled=cancelled)
        out["final"] = final
    finally:
        probe.running = False
        await probing
        gc.callbacks.remove(watch)
        await app._cleanup()
    out["probe"] = {phase: probe.summary(phase) for phase in probe.samples}
    out["gc"] = {phase: [len(p), max(p) * 1000] for phase, p in watch.pauses.items()}
    return out


def report(args: argparse.Namespace, out: dict[str, Any]) -> bool:
    ok = True
    print(f"{'phase':<34} {'max ms':>8} {'p99 ms':>8} {'samples':>8}  full GCs (max ms)")
    labels = {
        "replay": f"(a) {args.clients} clients replay {args.events:,} events",
        "create": f"(b) create a {args.tasks:,}-task run",
        "fetch": "(b) GET the run with its tasks",
        "cancel": "(b) cancel it",
        "end": "    until it ends (gate reaped)",
        "rerun": "    rerun it",
        "cancel-again": "    cancel it again",
        "settle": "    until it ends again",
    }
    for phase, label in labels.items():
        worst, p99, n = out["probe"].get(phase, (0.0, 0.0, 0))
        good = worst <= TARGET_MAX_MS and p99 <= TARGET_P99_MS
        ok = ok and good
        gcs, gc_max = out["gc"].get(phase, (0, 0.0))
        verdict = "OK" if good else "ABOVE TARGET"
        print(f"{label:<34} {worst:8.1f} {p99:8.1f} {n:8d}  {gcs} ({gc_max:.0f})  {verdict}")
    print(f"targets: max <= {TARGET_MAX_MS:.0f} ms, p99 <= {TARGET_P99_MS:.0f} ms")
    empty, full = out["runs_empty"]["median_s"], out["runs_full"]["median_s"]
    ratio = full / empty
    good = ratio <= TARGET_RUNS_RATIO
    ok = ok and good
    print(
        f"GET runs: empty store {empty * 1000:.1f} ms, with the {args.tasks:,}-task run "
        f"{full * 1000:.1f} ms (median of {args.repeat}) -> ratio {ratio:.2f}x "
        f"(target <= {TARGET_RUNS_RATIO:.0f}x): {'OK' if good else 'ABOVE TARGET'}"
    )
    final = out["final"]
    print(f"the run at the end: {final['state']}, counts {final['counts']}")
    return ok and final["state"] == "cancelled"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30, help="GET runs calls per measurement")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per client step")
    parser.add_argument(
        "--client", choices=["replay", "runs", "create", "fetch", "cancel", "rerun", "wait"]
    )
    parser.add_argument("--port", type=int)
    parser.add_argument("--token")
    parser.add_argument("--until", type=int)
    parser.add_argument("--run")
    args = parser.parse_args()
    if args.client:
        return client_main(args)
    folder = Path(tempfile.mkdtemp(prefix="bench-stall-"))
    try:
        out = asyncio.run(measure(args, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if report(args, out) else 1


if __name__ == "__main__":
    sys.exit(main())
