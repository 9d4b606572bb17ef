"""Env rule resolution: rule kinds, guards, includes, expansion, provenance, secrets."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from scripthut.env_rules import EnvRule
from scripthut.errors import InvalidInput
from scripthut.workflow.env import (
    MASK,
    EnvOp,
    ResolvedEnv,
    build_seed,
    looks_secret,
    resolve_env,
)

SEED = {"SCRIPTHUT_BACKEND": "hpc", "SCRIPTHUT_RUN_ID": "r1"}


def rule(**fields: Any) -> EnvRule:
    """An EnvRule from the keys a user writes (`if_` stands for `if`)."""
    if "if_" in fields:
        fields["if"] = fields.pop("if_")
    return EnvRule.model_validate(fields)


def resolve(*rules: EnvRule, groups: dict[str, list[EnvRule]] | None = None) -> ResolvedEnv:
    return resolve_env([("task", rules)], groups or {}, SEED)


def values(env: ResolvedEnv) -> dict[str, str]:
    return {name: value for name, value in env.as_dict().items() if name not in SEED}


# -- seed ----------------------------------------------------------------------------


def test_build_seed_holds_the_run_facts() -> None:
    created = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    seed = build_seed(backend="hpc", workflow="train", run_id="r42", created_at=created)
    assert seed == {
        "SCRIPTHUT_BACKEND": "hpc",
        "SCRIPTHUT_WORKFLOW": "train",
        "SCRIPTHUT_RUN_ID": "r42",
        "SCRIPTHUT_CREATED_AT": "2024-05-06T07:08:09+00:00",
    }


def test_build_seed_adds_git_facts_when_known() -> None:
    created = datetime(2024, 1, 1, tzinfo=UTC)
    seed = build_seed(
        backend="b",
        workflow="w",
        run_id="r",
        created_at=created,
        git_repo="git@host:x.git",
        git_branch="main",
        git_sha="abc123",
    )
    assert seed["SCRIPTHUT_GIT_REPO"] == "git@host:x.git"
    assert seed["SCRIPTHUT_GIT_BRANCH"] == "main"
    assert seed["SCRIPTHUT_GIT_SHA"] == "abc123"


def test_no_rules_gives_the_seed_with_seed_provenance() -> None:
    env = resolve_env([("backend:hpc", []), ("task", [])], {}, SEED)
    assert env.as_dict() == SEED
    assert env.values["SCRIPTHUT_RUN_ID"].ops == [EnvOp("seed", None, -1, "seed", "r1")]
    assert env.init == []
    assert env.warnings == []


def test_no_rules_is_cheap() -> None:
    layers: list[tuple[str, list[EnvRule]]] = [("backend:hpc", []), ("server", []), ("task", [])]
    seed = build_seed(backend="hpc", workflow="w", run_id="r", created_at=datetime.now(UTC))
    rounds = 20_000
    start = time.perf_counter()
    for _ in range(rounds):
        resolve_env(layers, {}, seed)
    per_call = (time.perf_counter() - start) / rounds
    assert per_call < 50e-6  # a few µs on a laptop; generous for loaded CI machines


# -- set / append / init ---------------------------------------------------------------


def test_set_overwrites() -> None:
    env = resolve(rule(set={"A": "1", "B": "x"}), rule(set={"A": "2"}))
    assert values(env) == {"A": "2", "B": "x"}


def test_append_joins_with_colon() -> None:
    env = resolve(rule(set={"P": "/a"}), rule(append={"P": "/b"}), rule(append={"P": "/c"}))
    assert values(env) == {"P": "/a:/b:/c"}
    assert env.values["P"].from_runtime is False


def test_append_onto_an_empty_value_adds_no_colon() -> None:
    env = resolve(rule(set={"P": ""}), rule(append={"P": "/b"}))
    assert values(env) == {"P": "/b"}
    assert env.values["P"].from_runtime is False


def test_append_onto_an_undefined_variable_extends_its_runtime_value() -> None:
    env = resolve(rule(append={"PATH": "/opt/bin"}), rule(append={"PATH": "/opt/sbin"}))
    assert env.values["PATH"].value == "/opt/bin:/opt/sbin"
    assert env.values["PATH"].from_runtime is True
    assert env.as_dict(runtime={"PATH": "/usr/bin"})["PATH"] == "/usr/bin:/opt/bin:/opt/sbin"
    assert env.as_dict(runtime={})["PATH"] == "/opt/bin:/opt/sbin"


def test_set_clears_the_runtime_mark() -> None:
    env = resolve(rule(append={"PATH": "/opt/bin"}), rule(set={"PATH": "/only"}))
    assert env.values["PATH"].value == "/only"
    assert env.values["PATH"].from_runtime is False


def test_init_texts_are_collected_in_order_and_expanded() -> None:
    env = resolve(
        rule(init="module load gcc"),
        rule(set={"V": "3.11"}, init="module load python/${V}"),
        rule(if_={"V": "nope"}, init="never"),
    )
    assert env.init_lines() == ["module load gcc", "module load python/3.11"]
    assert [op.rule for _, op in env.init] == [0, 1]
    assert all(op.op == "init" for _, op in env.init)


def test_a_rule_applies_set_then_append_then_init() -> None:
    env = resolve(rule(set={"A": "x"}, append={"A": "y"}, init="echo ${A}"))
    assert values(env) == {"A": "x:y"}
    assert env.init_lines() == ["echo x:y"]


# -- if --------------------------------------------------------------------------------


def test_if_is_and_across_keys() -> None:
    env = resolve(
        rule(if_={"SCRIPTHUT_BACKEND": "hpc", "SCRIPTHUT_RUN_ID": "r1"}, set={"BOTH": "yes"}),
        rule(if_={"SCRIPTHUT_BACKEND": "hpc", "SCRIPTHUT_RUN_ID": "r2"}, set={"ONE": "yes"}),
    )
    assert values(env) == {"BOTH": "yes"}


def test_if_list_is_or() -> None:
    env = resolve(
        rule(if_={"SCRIPTHUT_BACKEND": ["aws", "hpc"]}, set={"IN": "yes"}),
        rule(if_={"SCRIPTHUT_BACKEND": ["aws", "ec2"]}, set={"OUT": "yes"}),
    )
    assert values(env) == {"IN": "yes"}


def test_if_on_an_undefined_variable_does_not_match() -> None:
    env = resolve(rule(if_={"MISSING": ""}, set={"A": "1"}))
    assert values(env) == {}


def test_if_sees_the_env_resolved_so_far() -> None:
    env = resolve(
        rule(if_={"GPU": "1"}, set={"EARLY": "yes"}),
        rule(set={"GPU": "1"}),
        rule(if_={"GPU": "1"}, set={"LATE": "yes"}),
    )
    assert values(env) == {"GPU": "1", "LATE": "yes"}


# -- include ---------------------------------------------------------------------------


def test_include_inlines_the_group_at_its_position() -> None:
    groups = {"cuda": [rule(set={"CUDA": "12"}), rule(append={"LD": "/cuda/lib"})]}
    env = resolve(
        rule(set={"CUDA": "11", "LD": "/base"}),
        rule(include=["cuda"]),
        rule(append={"LD": "/after"}),
        groups=groups,
    )
    assert values(env) == {"CUDA": "12", "LD": "/base:/cuda/lib:/after"}


def test_include_runs_before_the_including_rules_own_set() -> None:
    groups = {"g": [rule(set={"A": "from-group", "B": "from-group"})]}
    env = resolve(rule(include=["g"], set={"A": "own"}), groups=groups)
    assert values(env) == {"A": "own", "B": "from-group"}


def test_included_rules_inherit_the_including_guard() -> None:
    groups = {"g": [rule(set={"A": "1"}), rule(if_={"SCRIPTHUT_RUN_ID": "r1"}, set={"B": "1"})]}
    skipped = resolve(rule(if_={"SCRIPTHUT_BACKEND": "aws"}, include=["g"]), groups=groups)
    applied = resolve(rule(if_={"SCRIPTHUT_BACKEND": "hpc"}, include=["g"]), groups=groups)
    assert values(skipped) == {}
    assert values(applied) == {"A": "1", "B": "1"}


def test_inherited_and_own_guards_must_all_hold() -> None:
    groups = {"g": [rule(if_={"SCRIPTHUT_RUN_ID": "other"}, set={"B": "1"})]}
    env = resolve(rule(if_={"SCRIPTHUT_BACKEND": "hpc"}, include=["g"]), groups=groups)
    assert values(env) == {}


def test_guards_are_checked_for_each_included_rule_in_turn() -> None:
    groups = {"g": [rule(set={"MODE": "b"}), rule(set={"SEEN": "1"})]}
    env = resolve(rule(set={"MODE": "a"}), rule(if_={"MODE": "a"}, include=["g"]), groups=groups)
    assert values(env) == {"MODE": "b"}


def test_nested_include_and_its_provenance() -> None:
    groups = {
        "outer": [rule(set={"O": "1"}), rule(include=["inner"])],
        "inner": [rule(init="echo inner"), rule(set={"I": "2"})],
    }
    env = resolve_env([("workflow", [rule(set={"X": "0"}), rule(include=["outer"])])], groups, {})
    assert env.as_dict() == {"X": "0", "O": "1", "I": "2"}
    assert env.values["O"].ops == [EnvOp("workflow", "outer", 0, "set", "1")]
    assert env.values["I"].ops == [EnvOp("workflow", "inner", 1, "set", "2")]
    assert env.init == [("echo inner", EnvOp("workflow", "inner", 0, "init", "echo inner"))]


def test_a_group_included_twice_applies_twice() -> None:
    groups = {"g": [rule(append={"P": "/g"})]}
    env = resolve(rule(set={"P": "/a"}), rule(include=["g", "g"]), groups=groups)
    assert values(env) == {"P": "/a:/g:/g"}


def test_include_cycle_is_an_error_naming_layer_and_groups() -> None:
    groups = {"a": [rule(include=["b"])], "b": [rule(set={"X": "1"}), rule(include=["a"])]}
    with pytest.raises(InvalidInput) as caught:
        resolve_env([("server", [rule(include=["a"])])], groups, SEED)
    [issue] = caught.value.issues
    assert issue.where == "server env group 'b' rule 1"
    assert issue.field == "include"
    assert "cycle: a -> b -> a" in issue.message


def test_self_include_is_a_cycle() -> None:
    groups = {"a": [rule(include=["a"])]}
    with pytest.raises(InvalidInput, match="cycle: a -> a"):
        resolve(rule(include=["a"]), groups=groups)


def test_unknown_group_is_an_error_even_behind_a_false_guard() -> None:
    layers = [
        ("backend:hpc", [rule(if_={"SCRIPTHUT_BACKEND": "never"}, include=["nope"])]),
        ("task", [rule(set={"A": "1"}), rule(include=["ghost"])]),
    ]
    with pytest.raises(InvalidInput) as caught:
        resolve_env(layers, {}, SEED)
    problems = [(issue.where, issue.message) for issue in caught.value.issues]
    assert problems == [
        ("backend:hpc env rule 0", "unknown env group 'nope'"),
        ("task env rule 1", "unknown env group 'ghost'"),
    ]


# -- ${name} ---------------------------------------------------------------------------


def test_references_expand_against_the_env_so_far() -> None:
    env = resolve(
        rule(set={"ROOT": "/scratch/${SCRIPTHUT_RUN_ID}"}),
        rule(set={"OUT": "${ROOT}/out"}, append={"OUT": "${ROOT}/alt"}),
    )
    assert values(env) == {"ROOT": "/scratch/r1", "OUT": "/scratch/r1/out:/scratch/r1/alt"}
    assert env.warnings == []


def test_unknown_reference_expands_to_empty_with_a_warning() -> None:
    env = resolve(rule(set={"A": "x${NOPE}y"}), rule(set={"B": "${NOPE}"}))
    assert values(env) == {"A": "xy", "B": ""}
    assert len(env.warnings) == 2
    assert "task env rule 0: ${NOPE} is not defined" in env.warnings[0]


def test_reference_to_a_runtime_append_warns_that_only_part_is_known() -> None:
    env = resolve(rule(append={"PATH": "/opt"}), rule(set={"COPY": "${PATH}"}))
    assert values(env)["COPY"] == "/opt"
    assert any("only the configured part" in warning for warning in env.warnings)


def test_shell_syntax_in_a_value_is_kept_literally_with_a_warning() -> None:
    env = resolve(rule(set={"A": "$HOME/x", "B": "`id`", "C": "${SCRIPTHUT_RUN_ID}"}))
    assert values(env) == {"A": "$HOME/x", "B": "`id`", "C": "r1"}
    assert len(env.warnings) == 2
    assert all("kept literally" in warning for warning in env.warnings)


# -- layers and provenance ---------------------------------------------------------------


def test_layers_apply_in_the_order_given_with_full_provenance() -> None:
    layers = [
        ("backend:hpc", [rule(set={"X": "backend"}), rule(append={"P": "/b"})]),
        ("server", [rule(set={"X": "server"})]),
        ("workflow", [rule(if_={"X": "server"}, set={"X": "workflow"})]),
        ("task", [rule(init="true"), rule(append={"X": "task", "P": "/t"})]),
    ]
    env = resolve_env(layers, {}, SEED)
    assert env.values["X"].value == "workflow:task"
    assert env.values["X"].ops == [
        EnvOp("backend:hpc", None, 0, "set", "backend"),
        EnvOp("server", None, 0, "set", "server"),
        EnvOp("workflow", None, 0, "set", "workflow"),
        EnvOp("task", None, 1, "append", "task"),
    ]
    assert env.values["P"].ops == [
        EnvOp("backend:hpc", None, 1, "append", "/b"),
        EnvOp("task", None, 1, "append", "/t"),
    ]


def test_provenance_records_expanded_contributions() -> None:
    env = resolve(rule(set={"A": "run-${SCRIPTHUT_RUN_ID}"}))
    assert env.values["A"].ops == [EnvOp("task", None, 0, "set", "run-r1")]


def test_to_json_shape() -> None:
    groups = {"g": [rule(append={"PATH": "/g"})]}
    env = resolve(rule(include=["g"], init="echo hi"), groups=groups)
    doc = env.to_json()
    json.dumps(doc)
    assert doc["values"]["PATH"] == {
        "value": "/g",
        "from_runtime": True,
        "secret": False,
        "ops": [{"layer": "task", "group": "g", "rule": 0, "op": "append", "value": "/g"}],
    }
    assert doc["init"] == [
        {"layer": "task", "group": None, "rule": 0, "op": "init", "value": "echo hi"}
    ]
    assert doc["warnings"] == []


# -- secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "DB_PASSWORD",
        "PGPASSWORD",
        "SMTP_PASSWD",
        "OPENAI_API_KEY",
        "STRIPE_APIKEY",
        "SSH_PRIVATE_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "WANDB_KEY",
        "MYSQL_PWD",
        "DB_PASS",
        "session_token",
    ],
)
def test_secret_names(name: str) -> None:
    assert looks_secret(name)


@pytest.mark.parametrize(
    "name",
    [
        "PATH",
        "HOME",
        "PWD",
        "OLDPWD",
        "KEYBOARD",
        "MONKEY_COUNT",
        "PASSES",
        "TOKENIZERS_PARALLELISM",
    ],
)
def test_ordinary_names(name: str) -> None:
    assert not looks_secret(name)


def test_short_secret_values_are_not_hunted_inside_other_values() -> None:
    env = resolve(rule(set={"DB_PASS": "1", "N": "1", "M": "10"}))
    masked = env.to_json(mask_secrets=True)["values"]
    assert (masked["DB_PASS"]["value"], masked["N"]["value"], masked["M"]["value"]) == (
        MASK,
        "1",
        "10",
    )


def test_to_json_flags_secrets_and_derived_values() -> None:
    env = resolve(
        rule(set={"API_TOKEN": "old-tok"}),
        rule(set={"API_TOKEN": "s3cr3t-tok", "URL": "https://u:${API_TOKEN}@host", "N": "1"}),
        rule(init="login --token ${API_TOKEN}"),
    )
    plain = env.to_json()
    assert plain["values"]["API_TOKEN"]["value"] == "s3cr3t-tok"
    assert plain["values"]["API_TOKEN"]["secret"] is True
    assert plain["values"]["URL"]["secret"] is True
    assert plain["values"]["N"]["secret"] is False
    assert env.secret_names() == {"API_TOKEN", "URL"}

    masked = env.to_json(mask_secrets=True)
    assert masked["values"]["API_TOKEN"]["value"] == MASK
    assert [op["value"] for op in masked["values"]["API_TOKEN"]["ops"]] == [MASK, MASK]
    assert masked["values"]["URL"]["value"] == f"https://u:{MASK}@host"
    assert masked["init"][0]["value"] == f"login --token {MASK}"
    assert "s3cr3t" not in json.dumps(masked)
    assert "old-tok" not in json.dumps(masked)


def test_the_documented_provenance_example() -> None:
    groups = {
        "cuda": [
            rule(init="module load cuda/12.2"),
            rule(append={"LD_LIBRARY_PATH": "/usr/local/cuda/lib64"}),
        ],
        "gpu-job": [rule(include=["cuda"]), rule(set={"NCCL_DEBUG": "WARN"})],
    }
    layers = [
        ("server", [rule(if_={"SCRIPTHUT_BACKEND": "hpc"}, include=["gpu-job"])]),
        ("task", [rule(append={"LD_LIBRARY_PATH": "/opt/lib"})]),
    ]
    doc = resolve_env(layers, groups, SEED).to_json()
    assert doc["values"]["LD_LIBRARY_PATH"] == {
        "value": "/usr/local/cuda/lib64:/opt/lib",
        "from_runtime": True,
        "secret": False,
        "ops": [
            {
                "layer": "server",
                "group": "cuda",
                "rule": 1,
                "op": "append",
                "value": "/usr/local/cuda/lib64",
            },
            {"layer": "task", "group": None, "rule": 0, "op": "append", "value": "/opt/lib"},
        ],
    }
    assert doc["values"]["NCCL_DEBUG"]["ops"][0]["group"] == "gpu-job"
    assert doc["init"] == [
        {
            "layer": "server",
            "group": "cuda",
            "rule": 0,
            "op": "init",
            "value": "module load cuda/12.2",
        }
    ]
