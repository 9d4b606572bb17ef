"""The event stream's cost: 50 listening clients vs 1, on the same 2,000-task run.

A real `jupyter server` with the extension runs as a subprocess on 127.0.0.1 (a fresh data
directory per measurement, local backend with 8 CPUs and max_concurrent 8). Event-stream
clients connect first; then a run of 2,000 trivial tasks is submitted through the API and
followed until every client has seen the run end. The server process's CPU time (user +
system, from /proc/<pid>/stat) is measured from just before the submission to the moment
the last client saw the end. Baseline, in the same script: the same run with one client.

Target: CPU(50 clients) / CPU(1 client) <= 1.2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TARGET_RATIO = 1.2
CONFIG = """\
backends:
  - name: local
    type: local
    max_concurrent: {max_concurrent}
    cpus: {max_concurrent}
settings:
  poll_interval: 2
"""
FINAL = b'"kind":"run","run":"%s","task":null,"state":"completed"'


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    token: str
    folder: Path

    def request(self, method: str, path: str, body: Any = None, timeout: float = 120) -> Any:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Authorization": f"token {self.token}", "Content-Type": "application/json"}
            conn.request(
                method, f"/scripthut/api/{path}", json.dumps(body) if body else None, headers
            )
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return json.loads(data)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(folder: Path, max_concurrent: int) -> Server:
    for name in ("root", "data", "runtime", "jconfig", "jdata"):
        (folder / name).mkdir(parents=True)
    (folder / "scripthut.yaml").write_text(CONFIG.format(max_concurrent=max_concurrent))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRIPTHUT_", "JUPYTER"))}
    env.update(
        JUPYTER_RUNTIME_DIR=str(folder / "runtime"),
        JUPYTER_CONFIG_DIR=str(folder / "jconfig"),
        JUPYTER_DATA_DIR=str(folder / "jdata"),
        JUPYTER_PLATFORM_DIRS="1",
    )
    port, token = free_port(), uuid.uuid4().hex
    argv = [
        str(Path(sys.executable).with_name("jupyter")), "server", "--no-browser",
        "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder / 'root'}",
        f"--ScriptHut.config_file={folder / 'scripthut.yaml'}",
        f"--ScriptHut.data_dir={folder / 'data'}", "--ServerApp.log_level=WARN",
    ]  # fmt: skip
    if os.geteuid() == 0:
        argv.append("--allow-root")
    log = (folder / "server.log").open("wb")
    proc = subprocess.Popen(argv, env=env, cwd=folder / "root", stdout=log, stderr=log)
    server = Server(proc, port, token, folder)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((folder / "server.log").read_text())
        try:
            if server.request("GET", "health", timeout=5)["mode"] == "engine":
                return server
        except (OSError, RuntimeError):
            pass
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError("the server did not start within 90 s")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)


@dataclass
class Listener:
    """One SSE client on a raw socket (HTTP/1.0, so the body is not chunked)."""

    server: Server
    run_id: bytes = b""
    last_id: int = 0
    events: int = 0
    reconnects: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    connected: threading.Event = field(default_factory=threading.Event)
    error: str | None = None

    def follow(self, deadline: float) -> None:
        try:
            while not self.done.is_set() and time.monotonic() < deadline:
                self._read_once(deadline)
                if not self.done.is_set():
                    self.reconnects += 1
        except Exception as exc:  # reported, not raised, from a thread
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()

    def _read_once(self, deadline: float) -> None:
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=60) as sock:
            resume = f"Last-Event-ID: {self.last_id}\r\n" if self.last_id else ""
            request = (
                f"GET /scripthut/api/events HTTP/1.0\r\nHost: 127.0.0.1:{self.server.port}\r\n"
                f"Authorization: token {self.server.token}\r\n{resume}\r\n"
            )
            sock.sendall(request.encode())
            buffer = b""
            headers_done = False
            while time.monotonic() < deadline:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    return
                buffer += chunk
                if not headers_done:
                    if b"\r\n\r\n" not in buffer:
                        continue
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    if b" 200 " not in head.split(b"\r\n", 1)[0]:
                        raise RuntimeError(head.decode(errors="replace"))
                    headers_done = True
                    self.connected.set()
                *frames, buffer = buffer.split(b"\n\n")
                for frame in frames:
                    if frame.startswith(b"id: "):
                        self.last_id = int(frame[4 : frame.index(b"\n")])
                        self.events += 1
                        if self.run_id and FINAL % self.run_id in frame:
                            self.done.set()
                            return


def measure(
    folder: Path, clients: int, tasks: int, max_concurrent: int, timeout: float
) -> dict[str, Any]:
    server = start_server(folder, max_concurrent)
    try:
        deadline = time.monotonic() + timeout
        listeners = [Listener(server) for _ in range(clients)]
        threads = [
            threading.Thread(target=listener.follow, args=(deadline,), daemon=True)
            for listener in listeners
        ]
        for thread in threads:
            thread.start()
        for listener in listeners:
            if not listener.connected.wait(60):
                raise RuntimeError("an event-stream client could not connect")
        while server.request("GET", "health")["stream"]["clients"] < clients:
            time.sleep(0.05)
        time.sleep(0.5)
        document = [{"id": f"t{i:05d}", "command": "true"} for i in range(tasks)]
        cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
        run = server.request(
            "POST", "runs", {"workflow": document, "max_concurrent": max_concurrent}
        )
        for listener in listeners:
            listener.run_id = run["id"].encode()
        for listener in listeners:
            listener.done.wait(max(1.0, deadline - time.monotonic()))
        cpu, wall = server.cpu_seconds() - cpu_before, time.monotonic() - wall_before
        for thread in threads:
            thread.join(timeout=10)
        state = server.request("GET", f"runs/{run['id']}?tasks=0")
        errors = [x.error for x in listeners if x.error]
        missing = [x for x in listeners if not x.done.is_set() or x.error]
        if state["state"] != "completed" or missing:
            raise RuntimeError(
                f"run {state['state']}; {len(missing)} clients unfinished; {errors[:3]}"
            )
        return {
            "clients": clients,
            "cpu_s": cpu,
            "wall_s": wall,
            "events_per_client": statistics.median(x.events for x in listeners),
            "reconnects": sum(x.reconnects for x in listeners),
            "dropped": server.request("GET", "health")["stream"]["dropped"],
        }
    finally:
        stop_server(server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--max-concurrent", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="measurements per case (best kept)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-events-"))
    results: dict[int, list[dict[str, Any]]] = {1: [], args.clients: []}
    try:
        for round_ in range(args.repeat):
            for clients in (1, args.clients):  # alternate, so machine noise hits both cases
                folder = workdir / f"c{clients}-r{round_}"
                result = measure(folder, clients, args.tasks, args.max_concurrent, args.timeout)
                results[clients].append(result)
                print(
                    f"{clients:3d} client(s): server CPU {result['cpu_s']:6.2f} s, "
                    f"wall {result['wall_s']:6.1f} s, {result['events_per_client']:.0f} events "
                    f"per client, {result['reconnects']} reconnects, {result['dropped']} dropped",
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    one = min(r["cpu_s"] for r in results[1])
    many = min(r["cpu_s"] for r in results[args.clients])
    ratio = many / one
    pairs = [
        m["cpu_s"] / o["cpu_s"] for o, m in zip(results[1], results[args.clients], strict=True)
    ]
    verdict = "OK" if ratio <= TARGET_RATIO else "ABOVE TARGET"
    print(
        f"\n{args.tasks} tasks: server CPU with {args.clients} clients {many:.2f} s, with 1 client "
        f"{one:.2f} s (best of {args.repeat} each) -> ratio {ratio:.2f}x "
        f"(target <= {TARGET_RATIO}x): {verdict}"
    )
    print(f"ratio within each round: {', '.join(f'{p:.2f}x' for p in pairs)}")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
