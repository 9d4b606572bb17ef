"""The anywidget base of ScriptHut's widgets: a live feed, requests, static fallbacks.

State travels two ways. The whole state is a synced trait, `_snapshot`, set when the
widget is made and again on a resync, so a front end always starts from a baseline.
Changes after that are custom messages, `{"type": "patch", "seq": n, ...}`, holding
only what changed. The front end answers `{"type": "ready", "seq": n}` once it holds a
snapshot and asks `{"type": "resync"}` when it sees a gap. Actions and reads (cancel,
task detail, logs) are `{"type": "request", "id", "op", "args"}` messages answered by
`{"type": "reply", "id", "ok", "data" | "error"}` from a worker thread.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import anywidget
import traitlets

from scripthut.client.base import Client
from scripthut.errors import ScriptHutError
from scripthut.outputs import media_type
from scripthut.widgets import api
from scripthut.widgets.feed import LiveFeed, Message
from scripthut.widgets.sources import Source

STATIC = Path(__file__).parent.parent / "static"
BUNDLE = STATIC / "widgets.js"
STYLES = STATIC / "widgets.css"
UNBUILT_ESM = """
export default {
  render({ model, el }) {
    const note = document.createElement("pre");
    note.textContent = "ScriptHut's widget front end is not built (run `npm run build` in js/).";
    el.append(note);
  },
};
"""
REQUEST_WORKERS = 2

Handler = Callable[[dict[str, Any]], Any]


def default_client() -> Client:
    """The client the Python API and the magics share (`connect()` on first use)."""
    from scripthut.api.session import default_client as shared

    return shared()


def _asset(path: Path, fallback: str) -> Path | str:
    return path if path.is_file() else fallback


class LiveWidget(anywidget.AnyWidget):
    """A widget whose front end is kept current by a `LiveFeed` over a `Source`."""

    _esm = _asset(BUNDLE, UNBUILT_ESM)
    _css = _asset(STYLES, "")

    _kind = traitlets.Unicode("").tag(sync=True)
    _snapshot = traitlets.Dict().tag(sync=True)
    api_base = traitlets.Unicode(
        "", help="Path of the ScriptHut REST API the browser may call itself ('' when none)."
    ).tag(sync=True)

    kind: ClassVar[str] = ""

    def __init__(self, client: Client | None, source: Source, **kwargs: Any) -> None:
        self.client = client or default_client()
        self._feed = LiveFeed(
            self.client, source, send=self._send_patch, publish_snapshot=self._publish
        )
        first = self._feed.load()
        kwargs.update(self._loaded_traits())
        try:
            super().__init__(
                _kind=self.kind, _snapshot=first, api_base=api.api_base(self.client), **kwargs
            )
        except BaseException:
            self._feed.stop()
            raise
        self._workers = ThreadPoolExecutor(REQUEST_WORKERS, thread_name_prefix="scripthut-widget")
        self._handlers: dict[str, Handler] = {
            "task": self._op_task,
            "script": self._op_script,
            "env": self._op_env,
            "log": self._op_log,
            "outputs": self._op_outputs,
            "output": self._op_output,
            "summary": self._op_summary,
            "cancel_job": self._op_cancel_job,
            "cancel_run": self._op_cancel_run,
            "rerun_run": self._op_rerun_run,
        }
        self.on_msg(self._on_message)
        self._feed.run()

    @property
    def source(self) -> Source:
        return self._feed.source

    def _loaded_traits(self) -> dict[str, Any]:
        """Trait values known once the source is loaded."""
        return {}

    # -- messages -------------------------------------------------------------------------

    def _publish(self, message: Message) -> None:
        self._snapshot = message

    def _send_patch(self, message: Message) -> None:
        self.send(message)

    def _on_message(self, _widget: object, content: Any, _buffers: object) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "ready":
            self._feed.ready(int(content.get("seq") or 0))
        elif kind == "resync":
            self._feed.resync()
        elif kind == "request":
            self._workers.submit(self._answer, content)

    def _answer(self, request: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"type": "reply", "id": request.get("id")}
        handler = self._handlers.get(str(request.get("op")))
        given = request.get("args")
        args: dict[str, Any] = given if isinstance(given, dict) else {}
        try:
            if handler is None:
                raise ValueError(f"unknown request {request.get('op')!r}")
            reply.update(ok=True, data=handler(args))
        except (ScriptHutError, ValueError, NotImplementedError, OSError) as exc:
            reply.update(ok=False, error=str(exc) or type(exc).__name__)
        except Exception as exc:  # the front end shows it; the kernel must not die of it
            reply.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        self.send(reply)

    # -- requests -------------------------------------------------------------------------

    def _op_task(self, args: dict[str, Any]) -> Any:
        return self.client.task(str(args["run"]), str(args["task"]))

    def _op_script(self, args: dict[str, Any]) -> Any:
        return self.client.script(str(args["run"]), str(args["task"]))

    def _op_env(self, args: dict[str, Any]) -> Any:
        return self.client.env(str(args["run"]), str(args["task"]))

    def _op_log(self, args: dict[str, Any]) -> Any:
        tail = args.get("tail")
        return self.client.logs(
            str(args["run"]),
            str(args["task"]),
            error=bool(args.get("error")),
            tail=int(tail) if tail is not None else None,
            offset=int(args.get("offset") or 0),
        )

    def _op_outputs(self, args: dict[str, Any]) -> Any:
        return self.client.outputs(str(args["run"]), str(args["task"]))

    def _op_summary(self, args: dict[str, Any]) -> Any:
        return self.client.summary(str(args["run"]))

    def _op_output(self, args: dict[str, Any]) -> Any:
        attempt = args.get("attempt")
        path = str(args["path"])
        data = self.client.output(
            str(args["run"]),
            str(args["task"]),
            path,
            attempt=int(attempt) if attempt is not None else None,
        )
        return {"base64": base64.b64encode(data).decode(), "type": media_type(path)}

    def _op_cancel_job(self, args: dict[str, Any]) -> Any:
        return api.cancel_job(self.client, str(args["backend"]), str(args["job_id"]))

    def _op_cancel_run(self, args: dict[str, Any]) -> Any:
        return self.client.cancel(str(args["run"]))

    def _op_rerun_run(self, args: dict[str, Any]) -> Any:
        return self.client.rerun(str(args["run"]))

    # -- static views ---------------------------------------------------------------------

    def summary_text(self) -> str:
        raise NotImplementedError

    def summary_html(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.summary_text()}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The widget view, plus plain text and an HTML table for where it cannot run."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        with self._feed.lock:
            text, html = self.summary_text(), self.summary_html()
        return {**data, "text/plain": text, "text/html": html}, metadata

    def close(self) -> None:
        """Stop following events and close the front end's model."""
        self._feed.stop()
        workers = getattr(self, "_workers", None)
        if workers is not None:
            workers.shutdown(wait=False, cancel_futures=True)
        super().close()
