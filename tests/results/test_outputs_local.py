"""Task outputs and the run summary on the real local backend: what a task writes in
$SCRIPTHUT_OUTPUT_DIR is listed when it ends, symbolic links are not, contents are read
only for recorded files, HTML is served sanitised."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from scripthut.config import Config
from scripthut.errors import InvalidInput, NotFound
from scripthut.server.results import outputs_json, read_output, summary_json
from scripthut.states import TaskState
from scripthut.store import Store
from tests.test_engine import run_doc

WRITER = r"""
printf 'a,b\n1,2\n' > "$SCRIPTHUT_OUTPUT_DIR/table.csv"
mkdir -p "$SCRIPTHUT_OUTPUT_DIR/plots" "$SCRIPTHUT_OUTPUT_DIR/.hidden"
printf '\x89PNG\r\n\x1a\n' > "$SCRIPTHUT_OUTPUT_DIR/plots/fig.png"
printf 'x' > "$SCRIPTHUT_OUTPUT_DIR/.hidden/skip.txt"
printf '<p onclick="x()">ok<script>alert(1)</script></p>' > "$SCRIPTHUT_OUTPUT_DIR/r.html"
ln -s /etc/passwd "$SCRIPTHUT_OUTPUT_DIR/link.txt"
printf '### fit\nloss = 0.1\n' >> "$SCRIPTHUT_RUN_SUMMARY"
"""


@pytest.fixture
def finished(config: Config) -> tuple[str, Store]:
    doc = {
        "tasks": [
            {"id": "fit", "command": WRITER},
            {"id": "quiet", "command": "true"},
            {"id": "bad", "command": 'echo half > "$SCRIPTHUT_OUTPUT_DIR/part.txt"; exit 3'},
        ]
    }
    return run_doc(config, doc)


def test_a_finished_task_lists_its_regular_files_only(finished: tuple[str, Store]) -> None:
    run_id, store = finished
    listing = outputs_json(store, run_id, "fit", None)
    paths = [f["path"] for f in listing["files"]]
    assert paths == ["plots/fig.png", "r.html", "table.csv"]
    kinds = {f["path"]: f["kind"] for f in listing["files"]}
    assert kinds == {"plots/fig.png": "image", "r.html": "html", "table.csv": "table"}
    assert listing["summary"] == "### fit\nloss = 0.1\n"
    assert Path(listing["directory"]).name == "fit.1.outputs"


def test_a_failed_task_keeps_what_it_wrote(finished: tuple[str, Store]) -> None:
    run_id, store = finished
    assert store.task(run_id, "bad").state == TaskState.FAILED
    assert [f["path"] for f in outputs_json(store, run_id, "bad", None)["files"]] == ["part.txt"]


def test_contents_only_of_recorded_files_and_html_sanitised(
    finished: tuple[str, Store], config: Config
) -> None:
    from scripthut.backends.registry import BackendRegistry

    run_id, store = finished
    registry = BackendRegistry(config)

    def read(path: str) -> bytes:
        return asyncio.run(read_output(store, registry, run_id, "fit", path, None)).data

    assert read("table.csv") == b"a,b\n1,2\n"
    assert read("r.html") == b"<p>ok</p>"
    with pytest.raises(NotFound):
        read("link.txt")  # a symbolic link is never recorded
    with pytest.raises(InvalidInput):
        read("../fit.1.out")
    with pytest.raises(NotFound):
        read(".hidden/skip.txt")


def test_the_run_summary_joins_summaries_and_indexes_outputs(
    finished: tuple[str, Store],
) -> None:
    run_id, store = finished
    summary = summary_json(store, run_id)
    assert [t["task"] for t in summary["tasks"]] == ["bad", "fit", "quiet"]
    text = summary["markdown"]
    assert "## fit\n\n### fit\nloss = 0.1\n" in text
    assert "- `table.csv` (8 B)" in text
    assert "## quiet" not in text  # wrote nothing
