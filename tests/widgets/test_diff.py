"""The differ: a patch holds only what changed, relative to what was last sent."""

from __future__ import annotations

import json

from scripthut.widgets.diff import TableDiffer, ViewState


def rows(n: int) -> dict[str, dict[str, object]]:
    return {
        f"j{i}": {"key": f"j{i}", "state": "running", "node": f"n{i % 7}", "deps": ["x"]}
        for i in range(n)
    }


def test_a_patch_holds_only_changed_fields_added_and_removed_rows() -> None:
    table = rows(100)
    differ = TableDiffer("key")
    differ.snapshot(table)
    table["j3"]["state"] = "completed"
    table["j4"]["node"] = None
    del table["j5"]
    table["new"] = {"key": "new", "state": "pending", "node": None, "deps": []}
    patch = differ.patch(table)
    assert patch is not None
    assert sorted(patch["set"], key=lambda r: str(r["key"])) == [
        {"key": "j3", "state": "completed"},
        {"key": "j4", "node": None},
        {"key": "new", "state": "pending", "node": None, "deps": []},
    ]
    assert patch["del"] == ["j5"]
    assert differ.patch(table) is None  # nothing changed since


def test_the_differ_keeps_a_copy_of_what_it_sent() -> None:
    table = rows(3)
    differ = TableDiffer("key")
    differ.snapshot(table)
    table["j1"]["state"] = "failed"  # the owner mutates its rows in place
    patch = differ.patch(table)
    assert patch == {"set": [{"key": "j1", "state": "failed"}]}


def test_touched_keys_limit_the_comparison() -> None:
    table = rows(10)
    differ = TableDiffer("key")
    differ.snapshot(table)
    table["j1"]["state"] = "completed"
    table["j2"]["state"] = "completed"
    assert differ.patch(table, touched=["j1"]) == {"set": [{"key": "j1", "state": "completed"}]}
    assert differ.patch(table) == {"set": [{"key": "j2", "state": "completed"}]}


def test_a_removed_field_is_sent_as_null() -> None:
    differ = TableDiffer("id")
    differ.snapshot({"a": {"id": "a", "reason": "x"}})
    assert differ.patch({"a": {"id": "a"}}) == {"set": [{"id": "a", "reason": None}]}


def test_view_state_numbers_messages_and_diffs_meta() -> None:
    state = ViewState({"tasks": "id"})
    tasks = {"a": {"id": "a", "state": "pending"}}
    assert state.patch({}, {"tasks": tasks}) is None  # no baseline yet: nothing to patch
    first = state.snapshot({"state": "pending", "total": 1}, {"tasks": tasks})
    assert first["type"] == "snapshot"
    assert first["seq"] == 1
    assert first["tables"]["tasks"] == {"key": "id", "rows": [{"id": "a", "state": "pending"}]}
    tasks["a"]["state"] = "running"
    patch = state.patch({"state": "running", "total": 1}, {"tasks": tasks})
    assert patch == {
        "type": "patch",
        "seq": 2,
        "meta": {"state": "running"},
        "tables": {"tasks": {"set": [{"id": "a", "state": "running"}]}},
    }
    assert state.patch({"state": "running", "total": 1}, {"tasks": tasks}) is None
    assert state.seq == 2
    again = state.snapshot({"state": "running", "total": 1}, {"tasks": tasks})
    assert again["seq"] == 3


def test_ten_changes_in_ten_thousand_rows_cost_a_fraction_of_the_table() -> None:
    table = rows(10_000)
    state = ViewState({"jobs": "key"})
    full = len(json.dumps(state.snapshot({}, {"jobs": table})))
    for i in range(0, 10_000, 1_000):
        table[f"j{i}"]["state"] = "completed"
    patch = state.patch({}, {"jobs": table}, {"jobs": {f"j{i}" for i in range(0, 10_000, 1_000)}})
    assert patch is not None
    assert len(patch["tables"]["jobs"]["set"]) == 10
    assert len(json.dumps(patch)) < 0.01 * full
