"""The JobTable with 10,000 jobs: bytes on the wire per update, and first render in Chromium.

1. Kernel side: a real `JobTable` over a client that lists 10,000 jobs; 10 of them change
   (through task events, and again through a queue refresh that is compared in full).
   Measured from the comm messages the widget sends, in the same run: the patch's JSON
   size against a full-table update (the `_snapshot` a resync sends). Target: <= 5%.
2. Browser side: the JobTable component alone in a static page served from 127.0.0.1
   with 10,000 synthetic rows, timed by performance.now() inside the page from the
   snapshot's arrival to the first painted frame, in Debian's Chromium through Playwright.
   Target: <= 300 ms (median of fresh page loads).

Run: .venv/bin/python bench/bench_widgets.py   (needs the built bundle: npm run build in js/)
"""

from __future__ import annotations

import functools
import json
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import comm
from comm import DummyComm

from scripthut.client.base import Client, EventStream, WorkflowInput

ROWS = 10_000
CHANGED = 10
BYTES_TARGET = 0.05
RENDER_TARGET_MS = 300.0
PAGE_LOADS = 5
STATIC = Path(__file__).resolve().parents[1] / "src" / "scripthut" / "static"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
]


# -- kernel side ------------------------------------------------------------------------


class Recorder(DummyComm):
    """The kernel's comm, keeping each message's JSON as it would go on the wire."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sent: list[dict[str, Any]] = []
        super().__init__(*args, **kwargs)

    def publish_msg(self, msg_type: str, data: Any = None, *args: Any, **kwargs: Any) -> None:
        self.sent.append({"type": msg_type, "data": data, "json": json.dumps(data)})


class Stream:
    def __init__(self, events: queue.Queue[dict[str, Any] | None]) -> None:
        self.events = events
        self.last_id: int | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        item = self.events.get()
        if item is None:
            raise StopIteration
        return item

    def close(self) -> None:
        self.events.put(None)


def job(i: int) -> dict[str, Any]:
    external = i % 4 == 0
    return {
        "backend": "hpc" if i % 3 else "gpu",
        "job_id": str(1_000_000 + i),
        "state": "running" if i % 5 else "pending",
        "source": "external" if external else "scripthut",
        "run": None if external else f"run-{i % 20}",
        "task": None if external else f"sim.{i}",
        "name": f"sim {i}",
        "user": "bob" if external else "alice",
        "partition": "normal",
        "node": f"node{i % 64:03d}",
        "cpus": 4,
        "reason": None,
        "submitted_at": 1.7e9 + i,
        "started_at": 1.7e9 + i + 30,
    }


class QueueClient(Client):
    """A client whose queue holds 10,000 jobs and whose events the bench sends."""

    mode = "bench"

    def __init__(self) -> None:
        self.queue = [job(i) for i in range(ROWS)]
        self.events_in: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def health(self) -> dict[str, Any]:
        return {"stream": {"last_event_id": 0}}

    def runs(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        return []

    def jobs(
        self, backend: str | None = None, state: str | None = None, run: str | None = None
    ) -> list[dict[str, Any]]:
        return [dict(j) for j in self.queue]

    def events(
        self, after: int | None = None, run: str | None = None, timeout: float | None = None
    ) -> EventStream:
        return Stream(self.events_in)

    def close(self) -> None:
        self.events_in.put(None)

    def submit(
        self,
        workflow: WorkflowInput,
        backend: str | None = None,
        *,
        name: str | None = None,
        max_concurrent: int | None = None,
    ) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, run_id: str, *, tasks: bool = True) -> dict[str, Any]:
        raise NotImplementedError

    def task(self, run_id: str, task_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def env(self, run_id: str, task_id: str, *, attempt: int | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def script(self, run_id: str, task_id: str, *, attempt: int | None = None) -> str:
        raise NotImplementedError

    def cancel(self, run_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def rerun(self, run_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def logs(
        self,
        run_id: str,
        task_id: str,
        *,
        error: bool = False,
        tail: int | None = None,
        offset: int = 0,
        attempt: int | None = None,
    ) -> dict[str, Any]:
        raise NotImplementedError


def wait_for_patch(recorder: Recorder, after: int, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in recorder.sent[after:]:
            content = (message["data"] or {}).get("content") or {}
            if content.get("type") == "patch":
                return message
        time.sleep(0.01)
    raise RuntimeError("no patch was sent")


def kernel_side() -> dict[str, Any]:
    comm.create_comm = lambda *a, **k: Recorder(*a, **k)
    from scripthut.widgets import JobTable

    client = QueueClient()
    table = JobTable(client=client, refresh=3600)
    recorder = table.comm
    assert isinstance(recorder, Recorder)
    try:
        assert len(table.source.rows["jobs"]) == ROWS
        table._handle_msg(
            {
                "content": {"data": {"method": "custom", "content": {"type": "resync"}}},
                "buffers": [],
            }
        )
        full = next(
            m for m in reversed(recorder.sent) if "_snapshot" in (m["data"] or {}).get("state", {})
        )
        table._handle_msg(
            {
                "content": {
                    "data": {
                        "method": "custom",
                        "content": {"type": "ready", "seq": table._snapshot["seq"]},
                    }
                },
                "buffers": [],
            }
        )
        # 10 of ScriptHut's jobs end: the engine's task events.
        mark = len(recorder.sent)
        changed = [i for i in range(ROWS) if i % 4][:CHANGED]
        for n, i in enumerate(changed):
            client.events_in.put(
                {
                    "id": n + 1,
                    "kind": "task",
                    "run": f"run-{i % 20}",
                    "task": f"sim.{i}",
                    "state": "completed",
                    "exit_code": 0,
                    "ended_at": 1.7e9 + i + 90,
                }
            )
        by_events = wait_for_patch(recorder, mark)
        rows = by_events["data"]["content"]["tables"]["jobs"]["set"]
        assert len(rows) == CHANGED, rows
        # 10 other users' jobs change in the queue: a refresh, compared row by row.
        externals = [i for i in range(ROWS) if i % 4 == 0][:CHANGED]
        for i in externals:
            client.queue[i] = {**client.queue[i], "state": "running", "node": "node999"}
        mark = len(recorder.sent)
        feed = table._feed
        started = time.perf_counter()
        with feed.lock:
            feed.source.merge(client.jobs())
        feed.flush()
        refresh_ms = (time.perf_counter() - started) * 1000
        by_refresh = wait_for_patch(recorder, mark)
        assert len(by_refresh["data"]["content"]["tables"]["jobs"]["set"]) == CHANGED
        return {
            "full": len(full["json"]),
            "events": len(by_events["json"]),
            "refresh": len(by_refresh["json"]),
            "refresh_ms": refresh_ms,
        }
    finally:
        table.close()
        client.close()


# -- browser side -----------------------------------------------------------------------

PAGE = """<!doctype html>
<html>
<head><meta charset="utf-8"><link rel="stylesheet" href="widgets.css"></head>
<body>
<div class="sh-root" id="app" style="width: 1300px"></div>
<script type="module">
import { DataStore, createJobTable } from "./widgets.js";
const STATES = ["running", "pending", "completed", "failed", "cancelled"];
const now = Date.now() / 1000;
const rows = [];
for (let i = 0; i < ROWS; i++) {
  const external = i % 4 === 0;
  rows.push({
    key: `hpc/${1000000 + i}`, backend: i % 3 ? "hpc" : "gpu", job_id: String(1000000 + i),
    state: STATES[i % 5], source: external ? "external" : "scripthut",
    run: external ? null : `run-${i % 20}`, task: external ? null : `sim.${i}`,
    name: `sim ${i}`, user: external ? "bob" : "alice", partition: "normal",
    node: `node${i % 64}`, cpus: 4, reason: null,
    submitted_at: now - 3600 + i / 10, started_at: now - 3000 + i / 10,
    ended_at: STATES[i % 5] === "running" || STATES[i % 5] === "pending" ? null : now - 60,
  });
}
const message = { type: "snapshot", seq: 1, meta: {}, tables: { jobs: { key: "key", rows } } };
await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 50)));
const app = document.getElementById("app");
const t0 = performance.now();
const store = new DataStore();
store.loadSnapshot(message);
const view = createJobTable(app, store, { api: { cancelJob: async () => ({}) } });
void app.offsetHeight;  // layout now
const t1 = performance.now();
await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
const t2 = performance.now();
const set = [];
for (let i = 1; i < 100; i += 10) {
  set.push({ key: `hpc/${1000000 + i}`, state: "completed", ended_at: now });
}
const t3 = performance.now();
store.applyPatch({ type: "patch", seq: 2, tables: { jobs: { set } } });
await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
const t4 = performance.now();
window.benchResult = {
  render_ms: t1 - t0,
  paint_ms: t2 - t0,
  patch_ms: t4 - t3,
  rows: Number(app.querySelector(".sh-jobtable").dataset.jobs),
  dom_rows: app.querySelectorAll(".sh-vt-row").length,
};
</script>
</body>
</html>
"""


def serve(directory: Path) -> ThreadingHTTPServer:
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def browser_side() -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    if not (STATIC / "widgets.js").exists():
        raise SystemExit("the bundle is missing: run `npm run build` in js/ first")
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        for name in ("widgets.js", "widgets.css"):
            shutil.copy(STATIC / name, site / name)
        (site / "index.html").write_text(PAGE.replace("ROWS", str(ROWS)))
        server = serve(site)
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
        results = []
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for _ in range(PAGE_LOADS):
                    page = browser.new_page(viewport={"width": 1400, "height": 900})
                    page.goto(url)
                    page.wait_for_function("() => window.benchResult", timeout=30_000)
                    results.append(page.evaluate("() => window.benchResult"))
                    page.close()
                browser.close()
        finally:
            server.shutdown()
    return results


def main() -> int:
    sizes = kernel_side()
    renders = browser_side()
    paint = statistics.median(r["paint_ms"] for r in renders)
    render = statistics.median(r["render_ms"] for r in renders)
    patch = statistics.median(r["patch_ms"] for r in renders)
    ratio_events = sizes["events"] / sizes["full"]
    ratio_refresh = sizes["refresh"] / sizes["full"]
    ok_bytes = max(ratio_events, ratio_refresh) <= BYTES_TARGET
    ok_render = paint <= RENDER_TARGET_MS
    rows = [
        ("full-table update (10,000 jobs)", f"{sizes['full']:,} B", "baseline", ""),
        (
            f"patch: {CHANGED} jobs end (task events)",
            f"{sizes['events']:,} B",
            f"{ratio_events:.3%} of full",
            f"<= {BYTES_TARGET:.0%}",
        ),
        (
            f"patch: {CHANGED} jobs change (queue refresh)",
            f"{sizes['refresh']:,} B",
            f"{ratio_refresh:.3%} of full",
            f"<= {BYTES_TARGET:.0%}",
        ),
        ("  diff of 10,000 rows, kernel side", f"{sizes['refresh_ms']:.1f} ms", "", ""),
        (
            "first render, 10,000 rows, to first paint",
            f"{paint:.1f} ms",
            f"median of {len(renders)}; max {max(r['paint_ms'] for r in renders):.1f} ms",
            f"<= {RENDER_TARGET_MS:.0f} ms",
        ),
        ("  of which snapshot + build + layout", f"{render:.1f} ms", "median", ""),
        (f"  apply a {CHANGED}-row patch and repaint", f"{patch:.1f} ms", "median", ""),
        ("  rows in the DOM", str(renders[0]["dom_rows"]), f"of {renders[0]['rows']:,}", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>12}  {'relative':<34}  target")
    print("-" * (width + 62))
    for name, value, relative, target in rows:
        print(f"{name:<{width}}  {value:>12}  {relative:<34}  {target}")
    print()
    print(f"bytes per update: {'PASS' if ok_bytes else 'FAIL'}")
    print(f"first render:     {'PASS' if ok_render else 'FAIL'}")
    return 0 if ok_bytes and ok_render else 1


if __name__ == "__main__":
    sys.exit(main())
