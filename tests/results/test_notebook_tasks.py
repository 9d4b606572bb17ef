"""Notebook tasks on the real local backend: parameters injected after the `parameters`
cell (papermill's semantics) by the runner the task's script carries, the executed notebook
kept as an output, a failing cell named, a missing nbclient/papermill reported clearly."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

from scripthut.config import Config
from scripthut.errors import InvalidInput
from scripthut.states import TaskState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from tests.test_engine import run_doc

VENV_BIN = str(Path(sys.executable).parent)


def write_notebook(folder: Path, name: str = "fit.ipynb", body: str = "") -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("alpha = 0.0\nseed = 0\nlabel = 'default'")
    params.metadata["tags"] = ["parameters"]
    work = nbformat.v4.new_code_cell(
        body
        or "import os\nresult = alpha * 10 + seed\nprint(f'{label}:{result}')\n"
        "open(os.path.join(os.environ['SCRIPTHUT_OUTPUT_DIR'], 'r.txt'), 'w').write(str(result))"
    )
    nb.cells = [nbformat.v4.new_markdown_cell("# fit"), params, work]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = folder / name
    nbformat.write(nb, path)
    return path


def with_python(path: str) -> list[dict[str, Any]]:
    """An env rule putting a Python with (or without) nbclient first on PATH."""
    return [{"set": {"PATH": f"{path}:{os.environ['PATH']}"}}]


def executed(store: Store, run_id: str, task: str, name: str = "fit.ipynb") -> Any:
    attempt = store.attempt(run_id, task)
    listing = store.outputs(run_id, task, attempt.attempt)
    assert listing.find(name) is not None, listing
    return nbformat.read(Path(listing.directory) / name, as_version=4)


def test_a_sweep_of_a_notebook_runs_with_each_combination(config: Config, tmp_path: Path) -> None:
    write_notebook(tmp_path)
    doc = {
        "env": with_python(VENV_BIN),
        "tasks": [
            {
                "id": "fit",
                "notebook": "fit.ipynb",
                "working_dir": str(tmp_path),
                "parameters": {"label": "run"},
                "matrix": {"alpha": [0.5, 1], "seed": [1, 2]},
            }
        ],
    }
    run_id, store = run_doc(config, doc, timeout=180)
    states = {t.task_id: t.state for t in store.tasks(run_id)}
    assert states == {f"fit.{n}": TaskState.COMPLETED for n in range(4)}, [
        t.reason for t in store.tasks(run_id)
    ]
    nb = executed(store, run_id, "fit.3")
    injected = nb.cells[2]
    assert injected.metadata["tags"] == ["injected-parameters"]
    assert "alpha = 1\n" in injected.source and "seed = 2\n" in injected.source
    assert "label = 'run'" in injected.source
    assert nb.cells[3].outputs[0]["text"] == "run:12\n"
    listing = store.outputs(run_id, "fit.0", 1)
    assert (Path(listing.directory) / "r.txt").read_text() == "6.0"


def test_a_failing_cell_is_named_and_the_executed_notebook_kept(
    config: Config, tmp_path: Path
) -> None:
    write_notebook(tmp_path, body="x = 1\nraise ValueError(f'bad alpha {alpha}')")
    task = {
        "id": "nb",
        "notebook": "fit.ipynb",
        "working_dir": str(tmp_path),
        "env": with_python(VENV_BIN),
    }
    run_id, store = run_doc(config, [task], timeout=120)
    assert store.task(run_id, "nb").state == TaskState.FAILED
    err = Path(store.attempt(run_id, "nb").stderr_path).read_text()
    assert "scripthut: notebook fit.ipynb failed in cell 3: ValueError: bad alpha 0.0" in err
    nb = executed(store, run_id, "nb")
    assert nb.cells[3].outputs[-1]["ename"] == "ValueError"


def test_a_task_env_without_nbclient_gets_a_clear_error(config: Config, tmp_path: Path) -> None:
    write_notebook(tmp_path)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "python3").symlink_to("/usr/bin/python3")
    task = {
        "id": "nb",
        "notebook": "fit.ipynb",
        "working_dir": str(tmp_path),
        "env": with_python(str(bare)),
    }
    run_id, store = run_doc(config, [task], timeout=60)
    record = store.task(run_id, "nb")
    assert record.state == TaskState.FAILED and record.exit_code == 127
    err = Path(store.attempt(run_id, "nb").stderr_path).read_text()
    assert "a notebook task needs papermill, or nbclient and nbformat" in err


@pytest.mark.parametrize(
    ("task", "field", "message"),
    [
        ({"notebook": "fit.py"}, "notebook", "must end in .ipynb"),
        ({"notebook": 3}, "notebook", "must be a path"),
        ({"notebook": "a.ipynb", "command": "x"}, "notebook", "not both"),
        ({"command": "x", "parameters": {"a": 1}}, "parameters", "only a 'notebook' task"),
        ({"notebook": "a.ipynb", "parameters": {"a-b": 1}}, "parameters", "'a-b' is not a Python"),
        ({"notebook": "a.ipynb", "parameters": [1]}, "parameters", "must be an object"),
        ({}, "command", "or a 'notebook'"),
    ],
)
def test_notebook_keys_are_validated(task: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_document([{"id": "t", **task}])
    found = [(i.field, i.message) for i in caught.value.issues]
    assert any(f == field and message in m for f, m in found), found


def test_a_notebook_task_round_trips_through_the_stored_document() -> None:
    wf = parse_document([{"id": "t", "notebook": "a.ipynb", "parameters": {"a": [1, 2]}}])
    doc = wf.to_document()
    assert doc["tasks"][0] == {
        "id": "t",
        "name": "t",
        "notebook": "a.ipynb",
        "parameters": {"a": [1, 2]},
    }
    again = parse_document(json.loads(json.dumps(doc)))
    assert again.tasks[0].parameters == {"a": [1, 2]} and again.tasks[0].command == ""
