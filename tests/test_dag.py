"""The dependency graph: pattern matching over ids, expansion, cycles and ordering."""

from __future__ import annotations

import random
from fnmatch import fnmatchcase

import pytest

from scripthut.workflow.dag import (
    CycleError,
    DepProblem,
    IdIndex,
    expand_deps,
    find_cycle,
    literal_prefix,
    literal_suffix,
    topological_order,
)

IDS = ["prep", "sim.1", "sim.2", "sim.10", "sim.1.a", "sim.1.b", "Sim.3", "collect", "x_y-z"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("prep", ["prep"]),
        ("nope", []),
        ("sim.*", ["sim.1", "sim.2", "sim.10", "sim.1.a", "sim.1.b"]),
        ("sim.?", ["sim.1", "sim.2"]),
        ("sim.1*", ["sim.1", "sim.10", "sim.1.a", "sim.1.b"]),
        ("sim.1.*", ["sim.1.a", "sim.1.b"]),
        ("sim.[12]", ["sim.1", "sim.2"]),
        ("sim.[!1]", ["sim.2"]),
        ("sim.1.[a-z]", ["sim.1.a", "sim.1.b"]),
        ("*.a", ["sim.1.a"]),
        ("s*0", ["sim.10"]),
        ("[Ss]im.3", ["Sim.3"]),
        ("SIM.*", []),
        ("*", IDS),
        ("*_*", ["x_y-z"]),
        ("?ollect", ["collect"]),
    ],
)
def test_match_follows_fnmatchcase_in_insertion_order(pattern: str, expected: list[str]) -> None:
    assert IdIndex(IDS).match(pattern) == expected


def test_match_agrees_with_naive_fnmatch_on_random_ids_and_patterns() -> None:
    rng = random.Random(7)
    alphabet = "ab.1_-"
    ids = list(
        dict.fromkeys("".join(rng.choices(alphabet, k=rng.randint(1, 6))) for _ in range(400))
    )
    index = IdIndex(ids)
    pieces = ["a", "b", ".", "1", "*", "?", "[ab]", "[!.]", "[", "]", "_"]
    for _ in range(600):
        pattern = "".join(rng.choices(pieces, k=rng.randint(1, 5)))
        assert index.match(pattern) == [i for i in ids if fnmatchcase(i, pattern)], pattern


def test_unclosed_bracket_is_a_literal_character() -> None:
    index = IdIndex(["a[b", "ab"])
    assert index.match("a[b*") == ["a[b"]


def test_literal_prefix_and_suffix() -> None:
    assert literal_prefix("sim.*.out") == "sim."
    assert literal_suffix("sim.*.out") == ".out"
    assert literal_prefix("[ab]x") == ""
    assert literal_suffix("x[ab]") == ""
    assert literal_suffix("a[b]c?d") == "d"


def test_add_makes_new_ids_visible_to_cached_patterns() -> None:
    index = IdIndex(["sim.1"])
    assert index.match("sim.*") == ["sim.1"]
    index.add(["sim.2", "other"])
    assert index.match("sim.*") == ["sim.1", "sim.2"]
    assert "other" in index
    assert len(index) == 3
    assert list(index) == ["sim.1", "sim.2", "other"]


def test_add_refuses_known_or_repeated_ids_and_adds_none() -> None:
    index = IdIndex(["a"])
    with pytest.raises(ValueError, match="'a'"):
        index.add(["b", "a"])
    with pytest.raises(ValueError, match="repeated"):
        index.add(["c", "c"])
    assert list(index) == ["a"]


def test_match_returns_a_fresh_list() -> None:
    index = IdIndex(["a1", "a2"])
    index.match("a*").clear()
    assert index.match("a*") == ["a1", "a2"]


@pytest.mark.parametrize(
    ("pattern", "kind"),
    [("t", "self"), ("zzz", "unknown"), ("q*", "no_match"), ("t*", "only_self")],
)
def test_expand_reports_each_kind_of_problem(pattern: str, kind: str) -> None:
    found, problem = IdIndex(["t", "u"]).expand(pattern, "t")
    assert list(found) == []
    assert problem == kind


def test_expand_leaves_out_the_task_itself_from_a_wider_wildcard() -> None:
    found, problem = IdIndex(["sim.1", "sim.2", "sim.3"]).expand("sim.*", "sim.2")
    assert list(found) == ["sim.1", "sim.3"]
    assert problem is None


def test_expand_deps_dedups_in_first_seen_order() -> None:
    index = IdIndex(["a", "b1", "b2", "c"])
    deps, problems = expand_deps({"c": ["b2", "b*", "a", "b2"], "a": [], "b1": ["a"]}, index)
    assert deps == {"c": ["b2", "b1", "a"], "a": [], "b1": ["a"]}
    assert problems == []


def test_expand_deps_reports_problems_and_keeps_the_rest() -> None:
    index = IdIndex(["a", "b"])
    deps, problems = expand_deps({"a": ["b", "missing", "a"], "b": []}, index)
    assert deps["a"] == ["b"]
    assert problems == [DepProblem("a", "missing", "unknown"), DepProblem("a", "a", "self")]
    assert "missing" in problems[0].message


def test_no_cycle_in_a_dag_listed_out_of_order() -> None:
    deps = {"c": ["b"], "b": ["a"], "a": []}
    assert find_cycle(deps) is None
    assert topological_order(deps) == ["a", "b", "c"]


def test_topological_order_keeps_a_valid_given_order() -> None:
    deps = {"a": [], "b": ["a"], "c": ["a"], "d": ["c", "b"]}
    assert topological_order(deps) == ["a", "b", "c", "d"]


def test_cycle_path_starts_at_its_first_listed_member_and_skips_bystanders() -> None:
    deps = {"down": ["b"], "a": ["c"], "b": ["a"], "c": ["b"], "free": []}
    assert find_cycle(deps) == ["a", "c", "b", "a"]


def test_self_loop_is_a_cycle() -> None:
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


def test_dependencies_outside_the_mapping_are_already_satisfied() -> None:
    deps = {"new.2": ["old", "new.1"], "new.1": ["old"]}
    assert find_cycle(deps) is None
    assert topological_order(deps) == ["new.1", "new.2"]


def test_topological_order_raises_with_the_cycle() -> None:
    with pytest.raises(CycleError) as caught:
        topological_order({"a": ["b"], "b": ["a"]})
    assert caught.value.path == ["a", "b", "a"]
    assert "a -> b -> a" in str(caught.value)


def test_long_chain_and_long_ring_need_no_recursion() -> None:
    n = 100_000
    chain = {f"t{i}": [f"t{i - 1}"] if i else [] for i in range(n)}
    assert find_cycle(chain) is None
    backwards = dict(reversed(chain.items()))
    assert topological_order(backwards)[:2] == ["t0", "t1"]
    ring = {f"t{i}": [f"t{(i - 1) % n}"] for i in range(n)}
    cycle = find_cycle(ring)
    assert cycle is not None
    assert len(cycle) == n + 1
    assert cycle[0] == cycle[-1] == "t0"
