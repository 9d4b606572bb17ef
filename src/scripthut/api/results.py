"""What tasks wrote, as Python objects that show themselves in a notebook: images as
images, CSV/TSV as DataFrames (rows without pandas), JSON as data, Markdown as Markdown,
HTML sanitised by the server, executed notebooks as their JSON."""

from __future__ import annotations

import base64
import csv
import importlib
import io
import json
from collections.abc import Iterator
from typing import Any

from scripthut.client import Client

_TEXT_MIME = {"markdown": "text/markdown", "html": "text/html"}


class Output:
    """One file a task's attempt wrote; its bytes are fetched when first needed."""

    def __init__(self, client: Client, run_id: str, task: str, attempt: int, item: dict[str, Any]):
        self.client = client
        self.run_id, self.task, self.attempt = run_id, task, attempt
        self.path: str = item["path"]
        self.kind: str = item["kind"]
        self.size: int = item["size"]
        self._data: bytes | None = None

    def data(self) -> bytes:
        if self._data is None:
            self._data = self.client.output(self.run_id, self.task, self.path, attempt=self.attempt)
        return self._data

    def text(self) -> str:
        return self.data().decode("utf-8", errors="replace")

    def value(self) -> Any:
        """The content as Python: a DataFrame (or list of rows) for tables, parsed JSON and
        notebooks, text for the rest, bytes for images and unknown files."""
        if self.kind == "table":
            return _table(self.text(), "\t" if self.path.endswith(".tsv") else ",")
        if self.kind in ("json", "notebook"):
            return json.loads(self.data())
        if self.kind in ("markdown", "html", "text"):
            return self.text()
        return self.data()

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> Any:
        bundle: dict[str, Any] = {"text/plain": repr(self)}
        if self.kind == "image":
            mime = _image_mime(self.path)
            data = self.data()
            bundle[mime] = (
                data.decode() if mime == "image/svg+xml" else base64.b64encode(data).decode()
            )
        elif self.kind in _TEXT_MIME:
            bundle[_TEXT_MIME[self.kind]] = self.text()
        elif self.kind == "table":
            frame = self.value()
            html = getattr(frame, "_repr_html_", None)
            if html is not None:
                bundle["text/html"] = html()
        elif self.kind == "json":
            bundle["application/json"] = self.value()
        elif self.kind == "text":
            bundle["text/plain"] = self.text()
        return bundle

    def __repr__(self) -> str:
        return f"<Output {self.task}:{self.path} {self.kind}, {self.size} bytes>"


class Outputs:
    """The files of one task's attempt and its summary text, by index or by path."""

    def __init__(self, client: Client, run_id: str, task: str, listing: dict[str, Any]):
        self.task = task
        self.attempt: int = listing["attempt"]
        self.summary: str = listing["summary"]
        self.files = [Output(client, run_id, task, self.attempt, f) for f in listing["files"]]

    def __getitem__(self, key: int | str) -> Output:
        if isinstance(key, int):
            return self.files[key]
        for item in self.files:
            if item.path == key:
                return item
        raise KeyError(key)

    def __iter__(self) -> Iterator[Output]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def _repr_markdown_(self) -> str:
        lines = [f"**{self.task}** (attempt {self.attempt})", "", self.summary.rstrip(), ""]
        lines.extend(f"- `{f.path}` ({f.kind}, {f.size} bytes)" for f in self.files)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Outputs of {self.task}: {len(self.files)} files>"


class RunOutputs:
    """Every task's outputs of a run and the run's summary (Markdown)."""

    def __init__(self, client: Client, run_id: str, summary: dict[str, Any]):
        self.run_id = run_id
        self.markdown: str = summary["markdown"]
        self.tasks = {t["task"]: Outputs(client, run_id, t["task"], t) for t in summary["tasks"]}

    def __getitem__(self, task: str) -> Outputs:
        return self.tasks[task]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def _repr_markdown_(self) -> str:
        return self.markdown

    def __repr__(self) -> str:
        return f"<RunOutputs of {self.run_id}: {len(self.tasks)} tasks>"


class TaskHandle:
    """One task of a run: `outputs()` of its latest (or a given) attempt, `logs()`."""

    def __init__(self, client: Client, run_id: str, task_id: str):
        self.client, self.run_id, self.id = client, run_id, task_id

    def outputs(self, attempt: int | None = None) -> Outputs:
        listing = self.client.outputs(self.run_id, self.id, attempt=attempt)
        return Outputs(self.client, self.run_id, self.id, listing)

    def info(self) -> dict[str, Any]:
        return self.client.task(self.run_id, self.id)

    def manifest(self) -> dict[str, Any]:
        """The task's manifest (`manifest_version: 1`): inputs and outputs with their
        sha256, the cache key, scope and whether it hit, executor, run and commit, timing."""
        return self.client.manifest(self.run_id, self.id)

    def __repr__(self) -> str:
        return f"<Task {self.id} of run {self.run_id}>"


def _image_mime(path: str) -> str:
    lower = path.lower()
    if lower.endswith(".svg"):
        return "image/svg+xml"
    return "image/jpeg" if lower.endswith((".jpg", ".jpeg")) else "image/png"


def _table(text: str, delimiter: str) -> Any:
    rows = list(csv.DictReader(io.StringIO(text), delimiter=delimiter))
    try:
        pandas = importlib.import_module("pandas")
    except ImportError:
        return rows
    return pandas.read_csv(io.StringIO(text), sep=delimiter)
