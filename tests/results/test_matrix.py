"""`"matrix"` sweeps: expanded at parse time into `<id>.<n>`, values as env vars, `<id>` and
`<id>.*` dependencies, errors naming the combination; and on the local backend for real."""

from __future__ import annotations

from typing import Any

import pytest

from scripthut.config import Config
from scripthut.errors import InvalidInput
from scripthut.states import TaskState
from scripthut.workflow.parse import parse_document
from tests.test_engine import run_doc

SWEEP: dict[str, Any] = {
    "id": "fit",
    "command": 'echo "$alpha $seed" > "$SCRIPTHUT_OUTPUT_DIR/r.txt"',
    "matrix": {"alpha": [0.1, 1], "seed": [1, 2, 3]},
}


def test_one_task_per_combination_in_written_order() -> None:
    wf = parse_document([SWEEP, {"id": "report", "command": "true", "deps": ["fit"]}])
    ids = [t.id for t in wf.tasks]
    assert ids == [f"fit.{n}" for n in range(6)] + ["report"]
    first, last = wf.task("fit.0"), wf.task("fit.5")
    assert first.env[0].set == {"alpha": "0.1", "seed": "1"}
    assert last.env[0].set == {"alpha": "1", "seed": "3"}
    assert last.name == "fit [alpha=1, seed=3]"
    assert wf.deps["report"] == ids[:6]


def test_wildcard_deps_and_the_tasks_own_env_come_after() -> None:
    sweep = {**SWEEP, "env": [{"set": {"OTHER": "x"}}], "matrix": {"flag": [True, "b"]}}
    wf = parse_document([sweep, {"id": "r", "command": "true", "deps": ["fit.*"]}])
    assert wf.deps["r"] == ["fit.0", "fit.1"]
    assert [rule.set for rule in wf.task("fit.0").env] == [{"flag": "true"}, {"OTHER": "x"}]


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ({}, "non-empty arrays"),
        ([1, 2], "non-empty arrays"),
        ({"a b": [1]}, "'a b' is not a valid environment variable name"),
        ({"SCRIPTHUT_X": [1]}, "protected"),
        ({"a": []}, "'a' must be a non-empty array"),
        ({"a": [{"x": 1}]}, "values must be strings, numbers or booleans"),
        ({"a": list(range(101)), "b": list(range(100))}, "10100 combinations"),
    ],
)
def test_a_bad_matrix_is_named_and_its_task_stays_known(matrix: object, message: str) -> None:
    doc = [
        {"id": "fit", "command": "true", "matrix": matrix},
        {"id": "r", "command": "true", "deps": ["fit"]},
    ]
    with pytest.raises(InvalidInput) as caught:
        parse_document(doc)
    issues = caught.value.issues
    assert len(issues) == 1, issues  # no second error about 'r' depending on it
    assert issues[0].where == "task 'fit'" and issues[0].field == "matrix"
    assert message in issues[0].message


def test_errors_in_a_copy_name_the_combination() -> None:
    doc = [
        {"id": "fit", "command": "true", "matrix": {"n": [1, 2]}, "env": [{"set": {"A": "x"}}, 5]}
    ]
    with pytest.raises(InvalidInput) as caught:
        parse_document(doc)
    wheres = sorted({i.where for i in caught.value.issues})
    assert wheres == ["task 'fit.0' (n=1)", "task 'fit.1' (n=2)"]


def test_a_copy_id_that_clashes_is_a_duplicate() -> None:
    doc = [
        {"id": "fit", "command": "true", "matrix": {"n": [1, 2]}},
        {"id": "fit.1", "command": "true"},
    ]
    with pytest.raises(InvalidInput, match="duplicate id"):
        parse_document(doc)


def test_a_sweep_runs_with_its_values_as_env(config: Config) -> None:
    from scripthut.server.results import read_output

    run_id, store = run_doc(config, [SWEEP, {"id": "report", "command": "true", "deps": ["fit.*"]}])
    states = {t.task_id: t.state for t in store.tasks(run_id)}
    assert set(states.values()) == {TaskState.COMPLETED} and len(states) == 7

    import asyncio

    from scripthut.backends.registry import BackendRegistry

    registry = BackendRegistry(config)
    got = {
        n: asyncio.run(read_output(store, registry, run_id, f"fit.{n}", "r.txt", None)).data
        for n in range(6)
    }
    assert got[0] == b"0.1 1\n" and got[4] == b"1 2\n"
