"""Reading workflow documents: shapes, defaults, every validation error, generated tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripthut.env_rules import EnvRule
from scripthut.errors import InvalidInput, Issue, NotFound
from scripthut.workflow.dag import IdIndex
from scripthut.workflow.model import TaskSpec
from scripthut.workflow.parse import (
    MAX_COMMAND,
    MAX_ENV_VALUE,
    MAX_NAME,
    MAX_TEXT,
    TASK_KEYS,
    load_workflow,
    parse_document,
    parse_generated,
    parse_memory_mb,
    parse_time_limit_s,
)


def task(task_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": task_id, "command": f"echo {task_id}", **fields}


def issues_of(data: object) -> list[Issue]:
    with pytest.raises(InvalidInput) as caught:
        parse_document(data)
    return caught.value.issues


def only_issue(data: object) -> Issue:
    issues = issues_of(data)
    assert len(issues) == 1, issues
    return issues[0]


# --- shapes and defaults -----------------------------------------------------------------


def test_bare_array_form() -> None:
    workflow = parse_document([task("a"), task("b", deps=["a"])])
    assert [t.id for t in workflow.tasks] == ["a", "b"]
    assert workflow.deps == {"a": [], "b": ["a"]}
    assert workflow.env == []
    assert workflow.env_groups == {}


def test_object_form_with_env_and_groups() -> None:
    doc = {
        "tasks": [task("a", env=[{"include": ["gpu"]}])],
        "env": [{"set": {"A": "1"}}],
        "env_groups": {"gpu": [{"append": {"PATH": ":/opt/cuda/bin"}}]},
    }
    workflow = parse_document(doc)
    assert workflow.env == [EnvRule(set={"A": "1"})]
    assert workflow.env_groups == {"gpu": [EnvRule(append={"PATH": ":/opt/cuda/bin"})]}
    assert workflow.tasks[0].env == (EnvRule(include=["gpu"]),)


def test_includes_of_groups_defined_elsewhere_are_accepted() -> None:
    workflow = parse_document([task("a", env=[{"include": ["from_config"]}])])
    assert workflow.tasks[0].env[0].include == ["from_config"]


def test_defaults() -> None:
    spec = parse_document([task("a")]).tasks[0]
    assert spec == TaskSpec(id="a", command="echo a", name="a")
    assert (spec.working_dir, spec.partition, spec.cpus) == ("~", "normal", 1)
    assert (spec.memory, spec.memory_mb, spec.time_limit, spec.time_limit_s) == (
        "4G",
        4096,
        "1:00:00",
        3600,
    )
    assert spec.output_file is spec.error_file is spec.gres is spec.image is None
    assert spec.generates_source is None
    assert spec.deps == ()
    assert spec.env == ()


def test_every_field_is_read() -> None:
    raw = task(
        "fit.1",
        name="Fit one",
        deps=["prep"],
        working_dir="/scratch/fit",
        partition="gpu",
        cpus=8,
        memory="16GB",
        time_limit="2-00:00:00",
        output_file="out.log",
        error_file="err.log",
        env=[{"set": {"OMP_NUM_THREADS": "8"}}],
        generates_source="more.json",
        gres="gpu:1",
        image="python:3.11",
    )
    spec = parse_document([task("prep"), raw]).tasks[1]
    assert spec.to_dict() == {**raw, "env": [{"set": {"OMP_NUM_THREADS": "8"}}]}
    assert spec.memory_mb == 16384
    assert spec.time_limit_s == 2 * 86400


def test_null_leaves_an_optional_path_unset() -> None:
    spec = parse_document([task("a", output_file=None, gres=None, image=None)]).tasks[0]
    assert spec.output_file is None
    assert spec.gres is None


def test_dependencies_is_an_alias_of_deps() -> None:
    workflow = parse_document([task("a"), task("b", dependencies=["a"])])
    assert workflow.deps["b"] == ["a"]
    assert workflow.tasks[1].deps == ("a",)


def test_multiline_command_is_fine() -> None:
    spec = parse_document([task("a", command="set -e\nmake\n\tmake install\n")]).tasks[0]
    assert spec.command.count("\n") == 3


def test_workflow_round_trips_through_its_document() -> None:
    workflow = parse_document(
        {"tasks": [task("a", cpus=2), task("b", deps=["a*"])], "env": [{"init": "module load x"}]}
    )
    again = parse_document(workflow.to_document())
    assert again.tasks == workflow.tasks
    assert again.deps == workflow.deps
    assert again.env == workflow.env


def test_task_lookup_by_id() -> None:
    workflow = parse_document([task("a"), task("b")])
    assert workflow.task("b").id == "b"
    workflow.tasks.reverse()
    assert workflow.task("b").id == "b"
    with pytest.raises(KeyError):
        workflow.task("c")


# --- the document ------------------------------------------------------------------------


@pytest.mark.parametrize("data", ["tasks", 3, None, True])
def test_document_must_be_array_or_object(data: object) -> None:
    issue = only_issue(data)
    assert issue.where == "document"
    assert "array of tasks" in issue.message


def test_object_without_tasks() -> None:
    issue = only_issue({"env": []})
    assert (issue.where, issue.field) == ("document", "tasks")
    assert "missing" in issue.message


def test_tasks_must_be_an_array() -> None:
    issue = only_issue({"tasks": {"a": {}}})
    assert issue.field == "tasks"
    assert "not an object" in issue.message


def test_unknown_top_level_key_with_suggestion() -> None:
    issue = only_issue({"tasks": [task("a")], "env_group": {}})
    assert issue.where == "document"
    assert issue.message == "unknown key 'env_group' (did you mean 'env_groups'?)"


def test_empty_workflow() -> None:
    issue = only_issue([])
    assert issue.field == "tasks"
    assert "at least one task" in issue.message


def test_document_env_rule_errors_name_the_rule() -> None:
    issues = issues_of({"tasks": [task("a")], "env": [{"set": {"1BAD": "x"}}], "env_groups": []})
    assert [(i.where, i.field) for i in issues] == [
        ("document", "env[0].set"),
        ("document", "env_groups"),
    ]
    assert "'1BAD' is not a valid environment variable name" in issues[0].message


def test_env_group_rule_errors_name_the_group() -> None:
    issue = only_issue({"tasks": [task("a")], "env_groups": {"gpu": [{"sett": {}}]}})
    assert issue.field == "env_groups.gpu[0].sett"
    assert issue.message == "unknown key 'sett'"


# --- one task ----------------------------------------------------------------------------


def test_task_that_is_not_an_object() -> None:
    issue = only_issue([task("a"), "b"])
    assert issue.where == "tasks[1]"
    assert issue.message == "a task must be an object, not a string"


def test_unknown_key_with_suggestion() -> None:
    issue = only_issue([task("a"), task("b", dep=["a"])])
    assert issue.where == "task 'b'"
    assert issue.message == "unknown key 'dep' (did you mean 'deps'?)"


def test_unknown_key_without_close_match() -> None:
    assert only_issue([task("a", zzzz=1)]).message == "unknown key 'zzzz'"


def test_missing_id() -> None:
    issue = only_issue([{"command": "x"}])
    assert (issue.where, issue.field) == ("tasks[0]", "id")
    assert "missing" in issue.message


def test_id_must_be_a_string() -> None:
    issue = only_issue([{"id": 7, "command": "x"}])
    assert (issue.where, issue.field) == ("tasks[0]", "id")
    assert issue.message == "must be a string, not an integer"


@pytest.mark.parametrize(
    "bad_id", ["", "a b", "a/b", "sim.*", "a?", "x[1]", ".hidden", "-x", "a\nb", "é", "a" * 201]
)
def test_unsafe_ids(bad_id: str) -> None:
    issue = only_issue([{"id": bad_id, "command": "x"}])
    assert (issue.where, issue.field) == ("tasks[0]", "id")
    assert "is not a valid id" in issue.message


@pytest.mark.parametrize("good_id", ["a", "_x", "9", "sim.1.a", "A-b_c.d", "a" * 200])
def test_safe_ids(good_id: str) -> None:
    assert parse_document([task(good_id)]).tasks[0].id == good_id


def test_duplicate_ids() -> None:
    issue = only_issue([task("a"), task("b"), task("a")])
    assert (issue.where, issue.field) == ("task 'a'", "id")
    assert issue.message == "duplicate id: tasks[0] and tasks[2] both use it"


def test_missing_command() -> None:
    issue = only_issue([{"id": "a"}])
    assert (issue.where, issue.field) == ("task 'a'", "command")
    assert "missing" in issue.message


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("", "must not be empty"),
        ("  \n", "must not be empty"),
        (["echo"], "must be a string, not an array"),
        ("echo \0", "holds a NUL character"),
    ],
)
def test_bad_command(command: object, message: str) -> None:
    issue = only_issue([{"id": "a", "command": command}])
    assert (issue.where, issue.field, issue.message) == ("task 'a'", "command", message)


TEXT_FIELDS = [
    "name",
    "working_dir",
    "partition",
    "memory",
    "time_limit",
    "output_file",
    "error_file",
    "generates_source",
    "gres",
    "image",
]


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize("char", ["\n", "\r", "\0", "\t", "\x1b", "\x7f", "\u2028"])
def test_control_characters_are_rejected(field: str, char: str) -> None:
    issue = only_issue([task("a", **{field: f"x{char}y"})])
    assert (issue.where, issue.field) == ("task 'a'", field)
    assert "control character" in issue.message


@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_text_fields_must_be_non_empty_strings(field: str) -> None:
    empty = only_issue([task("a", **{field: ""})])
    assert (empty.field, empty.message) == (field, "must not be empty")
    number = only_issue([task("a", **{field: 5})])
    assert (number.field, number.message) == (field, "must be a string, not an integer")


@pytest.mark.parametrize("field", ["name", "working_dir", "partition", "memory", "time_limit"])
def test_null_is_not_a_value_for_fields_with_a_default(field: str) -> None:
    assert only_issue([task("a", **{field: None})]).message == "must be a string, not null"


@pytest.mark.parametrize(
    ("cpus", "message"),
    [
        (True, "must be an integer, not a boolean"),
        (2.0, "must be an integer, not a number"),
        ("2", "must be an integer, not a string"),
        (0, "0 is out of range: 1 to 4096"),
        (4097, "4097 is out of range: 1 to 4096"),
    ],
)
def test_bad_cpus(cpus: object, message: str) -> None:
    issue = only_issue([task("a", cpus=cpus)])
    assert (issue.where, issue.field, issue.message) == ("task 'a'", "cpus", message)


def test_cpus_bounds_are_inclusive() -> None:
    assert parse_document([task("a", cpus=4096)]).tasks[0].cpus == 4096


@pytest.mark.parametrize(
    ("text", "megabytes"),
    [
        ("512", 512),
        ("4G", 4096),
        ("4g", 4096),
        ("4GB", 4096),
        ("4GiB", 4096),
        ("4 G", 4096),
        ("1.5G", 1536),
        ("2048M", 2048),
        ("100K", 1),
        ("2048K", 2),
        ("1T", 1024 * 1024),
        ("0.5", 1),
    ],
)
def test_memory_sizes(text: str, megabytes: int) -> None:
    assert parse_memory_mb(text) == megabytes
    assert parse_document([task("a", memory=text)]).tasks[0].memory_mb == megabytes


@pytest.mark.parametrize("text", ["4X", "G", "4GBB", "-1G", "4 GB ", "1e3", "4..0G", "0", "0G"])
def test_bad_memory_sizes(text: str) -> None:
    issue = only_issue([task("a", memory=text)])
    assert (issue.where, issue.field) == ("task 'a'", "memory")
    assert f"'{text}'" in issue.message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30 * 60),
        ("90", 90 * 60),
        ("5:30", 5 * 60 + 30),
        ("1:00:00", 3600),
        ("48:00:00", 48 * 3600),
        ("0:00:01", 1),
        ("2-12", 2 * 86400 + 12 * 3600),
        ("1-01:30", 86400 + 3600 + 30 * 60),
        ("7-00:00:00", 7 * 86400),
    ],
)
def test_time_limits(text: str, seconds: int) -> None:
    assert parse_time_limit_s(text) == seconds
    assert parse_document([task("a", time_limit=text)]).tasks[0].time_limit_s == seconds


@pytest.mark.parametrize(
    "text", ["1h", "1:00:00:00", "-1", "UNLIMITED", "1:60:00", "5:75", "1-24", "0", "0:00:00", " 1"]
)
def test_bad_time_limits(text: str) -> None:
    issue = only_issue([task("a", time_limit=text)])
    assert (issue.where, issue.field) == ("task 'a'", "time_limit")
    assert f"'{text}'" in issue.message


def test_bad_time_limit_message_lists_the_accepted_forms() -> None:
    message = only_issue([task("a", time_limit="2h")]).message
    assert "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS" in message


def test_task_env_rule_errors_become_issues() -> None:
    issues = issues_of([task("a", env=[{"set": {"OK": "1"}}, {"set": {"SCRIPTHUT_X": "1"}}, 3])])
    assert [(i.where, i.field) for i in issues] == [
        ("task 'a'", "env[1].set"),
        ("task 'a'", "env[2]"),
    ]
    assert "protected" in issues[0].message


def test_env_must_be_an_array() -> None:
    issue = only_issue([task("a", env={"set": {}})])
    assert (issue.field, issue.message) == ("env", "must be an array of env rules, not an object")


# --- dependencies ------------------------------------------------------------------------


def test_deps_and_dependencies_together() -> None:
    issue = only_issue([task("a"), task("b", deps=["a"], dependencies=["a"])])
    assert (issue.where, issue.field) == ("task 'b'", "dependencies")
    assert "not both" in issue.message


@pytest.mark.parametrize(
    ("deps", "message"),
    [
        ("a", "must be an array of task ids or patterns, not a string"),
        ([1], "each entry must be a task id or pattern, not an integer"),
        ([""], "each entry must be a task id or pattern, not an empty string"),
    ],
)
def test_deps_must_be_a_list_of_strings(deps: object, message: str) -> None:
    issue = only_issue([task("a"), task("b", deps=deps)])
    assert (issue.where, issue.field, issue.message) == ("task 'b'", "deps", message)


def test_unknown_plain_dependency_with_suggestion() -> None:
    issue = only_issue([task("prep"), task("b", deps=["prepp"])])
    assert (issue.where, issue.field) == ("task 'b'", "deps")
    assert issue.message == "unknown dependency 'prepp' (did you mean 'prep'?)"


def test_unknown_dependency_is_reported_under_the_alias_used() -> None:
    issue = only_issue([task("b", dependencies=["nope"])])
    assert (issue.field, issue.message) == ("dependencies", "unknown dependency 'nope'")


def test_pattern_matching_nothing() -> None:
    issue = only_issue([task("a"), task("b", deps=["sim.*"])])
    assert (issue.where, issue.field) == ("task 'b'", "deps")
    assert issue.message == "pattern 'sim.*' matches no task"


def test_plain_self_dependency() -> None:
    issue = only_issue([task("a", deps=["a"])])
    assert (issue.where, issue.field) == ("task 'a'", "deps")
    assert "cannot depend on itself" in issue.message


def test_wildcard_matching_only_itself() -> None:
    issue = only_issue([task("sim.1", deps=["sim.*"])])
    assert (issue.where, issue.field) == ("task 'sim.1'", "deps")
    assert issue.message == "pattern 'sim.*' matches only the task itself"


def test_wildcard_matching_itself_among_others_leaves_itself_out() -> None:
    workflow = parse_document([task("sim.1"), task("sim.2", deps=["sim.*"])])
    assert workflow.deps["sim.2"] == ["sim.1"]


def test_cycle_reports_its_path() -> None:
    data = [
        task("a", deps=["c"]),
        task("b", deps=["a"]),
        task("c", deps=["b"]),
        task("d", deps=["c"]),
    ]
    issue = only_issue(data)
    assert (issue.where, issue.field) == ("task 'a'", "deps")
    assert issue.message == "dependency cycle: a -> c -> b -> a"


def test_wildcard_semantics() -> None:
    ids = ["sim.1", "sim.2", "sim.10", "sim.1.a", "sim.1.b", "Sim.3"]
    tasks = [task(i) for i in ids]
    tasks += [
        task("star", deps=["sim.*"]),
        task("one_char", deps=["sim.?"]),
        task("bracket", deps=["sim.1.[ab]"]),
        task("negated", deps=["sim.[!1]"]),
        task("case", deps=["S*"]),
    ]
    deps = parse_document(tasks).deps
    assert deps["star"] == ["sim.1", "sim.2", "sim.10", "sim.1.a", "sim.1.b"]
    assert deps["one_char"] == ["sim.1", "sim.2"]
    assert deps["bracket"] == ["sim.1.a", "sim.1.b"]
    assert deps["negated"] == ["sim.2"]
    assert deps["case"] == ["Sim.3"]


def test_deps_are_deduplicated_in_first_seen_order() -> None:
    tasks = [task("a"), task("b1"), task("b2"), task("c", deps=["b2", "b*", "a", "b2", "a"])]
    workflow = parse_document(tasks)
    assert workflow.deps["c"] == ["b2", "b1", "a"]
    assert workflow.tasks[3].deps == ("b2", "b*", "a", "b2", "a")


def test_dependency_on_a_task_with_other_errors_is_not_reported_again() -> None:
    issue = only_issue([task("a", cpus=0), task("b", deps=["a"])])
    assert (issue.where, issue.field) == ("task 'a'", "cpus")


def test_several_errors_are_reported_at_once() -> None:
    data = [
        task("a", memory="lots"),
        {"id": "b c", "command": ""},
        task("d", deps=["missing"], cpus=0, partition="x\ny"),
        task("a"),
        7,
        task("e", deps=["e"]),
        task("f", deps=["g"]),
        task("g", deps=["f"]),
    ]
    with pytest.raises(InvalidInput) as caught:
        parse_document(data, source="runs/study.json")
    found = {(i.where, i.field) for i in caught.value.issues}
    assert found == {
        ("task 'a'", "memory"),
        ("tasks[1]", "id"),
        ("tasks[1]", "command"),
        ("task 'd'", "cpus"),
        ("task 'd'", "partition"),
        ("task 'd'", "deps"),
        ("task 'a'", "id"),
        ("tasks[4]", None),
        ("task 'e'", "deps"),
        ("task 'f'", "deps"),
    }
    text = str(caught.value)
    assert text.startswith("invalid workflow (runs/study.json) (10 problems):")
    assert "task 'd', field 'cpus': 0 is out of range" in text


def test_a_long_chain_validates_without_recursion() -> None:
    n = 100_000
    data = [task("t0")] + [task(f"t{i}", deps=[f"t{i - 1}"]) for i in range(1, n)]
    workflow = parse_document(data)
    assert len(workflow.tasks) == n
    assert workflow.deps[f"t{n - 1}"] == [f"t{n - 2}"]


def test_a_long_ring_is_reported_as_one_cycle() -> None:
    n = 20_000
    data = [task(f"t{i}", deps=[f"t{(i - 1) % n}"]) for i in range(n)]
    message = only_issue(data).message
    assert message.startswith("dependency cycle: t0 -> t19999 -> t19998")
    assert message.endswith("t1 -> t0")


# --- generated tasks ---------------------------------------------------------------------


def test_generated_tasks_depend_on_existing_and_new_ids() -> None:
    existing = ["prep", "sim.1", "sim.2", "gen"]
    data = [task("sim.3", deps=["prep"]), task("report", deps=["sim.*", "gen"])]
    workflow = parse_generated(data, existing_ids=existing, source="gen: more.json")
    assert [t.id for t in workflow.tasks] == ["sim.3", "report"]
    assert workflow.deps == {"sim.3": ["prep"], "report": ["sim.1", "sim.2", "sim.3", "gen"]}


def test_generated_tasks_accept_an_id_index_as_existing_ids() -> None:
    existing = IdIndex(["a1", "a2"])
    workflow = parse_generated([task("b", deps=["a*"])], existing_ids=existing, source="s")
    assert workflow.deps == {"b": ["a1", "a2"]}
    assert list(existing) == ["a1", "a2"]


def test_generated_object_form_and_empty_list() -> None:
    doc = {"tasks": [task("x")], "env": [{"set": {"A": "1"}}]}
    assert parse_generated(doc, existing_ids=["a"], source="s").env == [EnvRule(set={"A": "1"})]
    assert parse_generated([], existing_ids=["a"], source="s").tasks == []


def test_generated_id_colliding_with_an_existing_one() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_generated([task("prep"), task("new")], existing_ids={"prep"}, source="gen: out.json")
    assert [(i.where, i.field) for i in caught.value.issues] == [("task 'prep'", "id")]
    assert "already used" in caught.value.issues[0].message
    assert caught.value.title == "invalid workflow (gen: out.json)"


def test_cycle_among_generated_tasks() -> None:
    data = [task("x", deps=["y", "base"]), task("y", deps=["x"])]
    with pytest.raises(InvalidInput) as caught:
        parse_generated(data, existing_ids=["base"], source="s")
    assert caught.value.issues[0].message == "dependency cycle: x -> y -> x"


def test_generated_tasks_are_validated_like_any_other() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_generated([task("n", deps=["nothing*"], cpus=-1)], existing_ids=["a"], source="s")
    assert {i.field for i in caught.value.issues} == {"cpus", "deps"}


# --- files -------------------------------------------------------------------------------


def test_load_workflow(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"tasks": [task("a"), task("b", deps=["a"])]}))
    assert load_workflow(path).deps == {"a": [], "b": ["a"]}
    assert load_workflow(str(path)).tasks[0].id == "a"


def test_load_workflow_reports_json_syntax_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text('[\n  {"id": "a", "command": "x"},\n  {"id": "b",, "command": "y"}\n]\n')
    with pytest.raises(InvalidInput) as caught:
        load_workflow(path)
    issue = caught.value.issues[0]
    assert issue.where == str(path)
    assert "line 3, column 14" in issue.message


def test_load_workflow_reports_keys_given_twice(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text('[{"id": "a", "command": "x", "deps": [], "deps": []}]')
    with pytest.raises(InvalidInput) as caught:
        load_workflow(path)
    assert [(i.where, i.field) for i in caught.value.issues] == [("task 'a'", "deps")]


def test_load_workflow_validates_the_content(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps([task("a", cpus=0)]))
    with pytest.raises(InvalidInput) as caught:
        load_workflow(path)
    assert caught.value.title == f"invalid workflow ({path})"


def test_load_workflow_missing_file_and_bad_encoding(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load_workflow(tmp_path / "absent.json")
    path = tmp_path / "latin1.json"
    path.write_bytes(b'[{"id": "a", "command": "caf\xe9"}]')
    with pytest.raises(InvalidInput, match="not UTF-8"):
        load_workflow(path)


def test_task_keys_cover_every_task_spec_field() -> None:
    computed = {"memory_mb", "time_limit_s", "working_dir_given"}
    assert set(TaskSpec.__dataclass_fields__) - computed <= set(TASK_KEYS)


# --- the original's files: title, 0.3 keys, keys of newer versions ----------------------

FIXTURES = Path(__file__).parent / "fixtures"


def test_document_title_is_kept_and_written_back() -> None:
    workflow = parse_document({"title": "Parameter sweep", "tasks": [task("a")]})
    assert workflow.title == "Parameter sweep"
    assert workflow.to_document()["title"] == "Parameter sweep"
    assert parse_document([task("a")]).title is None
    assert "title" not in parse_document([task("a")]).to_document()


@pytest.mark.parametrize("bad", ["", 3, "two\nlines"])
def test_document_title_must_be_one_line_of_text(bad: object) -> None:
    issue = only_issue({"title": bad, "tasks": [task("a")]})
    assert (issue.where, issue.field) == ("document", "title")


def test_v03_task_keys_become_env_rules_before_the_task_env(
    caplog: pytest.LogCaptureFixture,
) -> None:
    doc = [
        task("a", environment="gcc", env_vars={"MODEL": "x"}, env=[{"set": {"B": "2"}}]),
        task("b", environment="gcc"),
        task("c", env_vars={"N": 1}),
    ]
    with caplog.at_level("WARNING", logger="scripthut.workflow"):
        workflow = parse_document(doc, source="sflow.json")
    a, b, c = workflow.tasks
    assert a.env == (
        EnvRule(include=["gcc"]),
        EnvRule(set={"MODEL": "x"}),
        EnvRule(set={"B": "2"}),
    )
    assert b.env == (EnvRule(include=["gcc"]),)
    assert c.env == (EnvRule(set={"N": "1"}),)
    assert workflow.to_document()["tasks"][0]["env"] == [
        {"include": ["gcc"]},
        {"set": {"MODEL": "x"}},
        {"set": {"B": "2"}},
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # one per key, not one per task
    assert "'environment' is deprecated; write env: [{include: [NAME]}]" in messages[0]
    assert "'env_vars' is deprecated; write env: [{set: {VAR: value}}]" in messages[1]
    assert all(m.startswith("sflow.json: ") for m in messages)


def test_v03_task_keys_are_validated() -> None:
    issues = issues_of([task("a", environment=3, env_vars={"1BAD": "x"})])
    assert {(i.where, i.field) for i in issues} == {
        ("task 'a'", "environment"),
        ("task 'a'", "env_vars"),
    }
    assert any("not a valid environment variable name" in i.message for i in issues)


def test_v03_sflow_fixture_reads() -> None:
    workflow = load_workflow(FIXTURES / "v03" / "sims" / "sweep" / "sflow.json")
    assert workflow.title == "Parameter sweep"
    assert [t.id for t in workflow.tasks] == ["prep", "fit", "report"]


@pytest.mark.parametrize("key", ["inputs", "outputs"])
def test_result_cache_keys_of_newer_versions_are_read(key: str) -> None:
    (spec,) = parse_document([task("a", **{key: ["x/*.csv"]})]).tasks
    assert getattr(spec, key) == ("x/*.csv",)
    issue = only_issue([task("a", **{key: ["../x"]})])
    assert issue.field == key and "inside the task's working_dir" in issue.message


def test_no_suggestion_without_a_real_near_miss() -> None:
    assert only_issue([task("a", cpu_model=1)]).message == "unknown key 'cpu_model'"
    assert "did you mean 'inputs'" in only_issue([task("a", input=1)]).message
    assert "did you mean 'command'" in only_issue([task("a", comand="x")]).message
    assert "did you mean 'partition'" in only_issue([task("a", partiton="x")]).message


def test_working_dir_given_is_known() -> None:
    a, b, c = parse_document(
        [task("a"), task("b", working_dir="~"), task("c", working_dir="x")]
    ).tasks
    assert (a.working_dir, a.working_dir_given) == ("~", False)
    assert (b.working_dir, b.working_dir_given) == ("~", True)
    assert c.working_dir_given


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ('[{"id": "a", "command": "echo \\ud800"}]', "[0].command", "lone surrogate"),
        ('[{"id": "a", "command": "x", "cpus": 1e400}]', "[0].cpus", "out of range"),
        ('[{"id": "a", "command": "x", "cpus": 99999999999999999999999}]', "[0].cpus", "64 bits"),
        ('[{"id": "a", "command": "x", "cpus": NaN}]', "[0].cpus", "NaN"),
        ("[" * 50_000 + "]" * 50_000, None, "nested too deeply"),
    ],
)
def test_json_a_store_cannot_keep_is_refused_with_its_path(
    tmp_path: Path, text: str, field: str | None, words: str
) -> None:
    path = tmp_path / "wf.json"
    path.write_text(text)
    with pytest.raises(InvalidInput) as caught:
        load_workflow(path)
    (issue,) = caught.value.issues
    assert (issue.where, issue.field) == (str(path), field)
    assert words in issue.message


def test_an_escaped_pair_and_big_but_valid_numbers_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text('[{"id": "a", "command": "echo \\ud83d\\ude00 1234567890123456789"}]')
    assert load_workflow(path).tasks[0].command == "echo \U0001f600 1234567890123456789"


@pytest.mark.parametrize(
    ("fields", "field", "limit"),
    [
        ({"name": "n" * (MAX_NAME + 1)}, "name", MAX_NAME),
        ({"command": "c" * (MAX_COMMAND + 1)}, "command", MAX_COMMAND),
        ({"working_dir": "w" * (MAX_TEXT + 1)}, "working_dir", MAX_TEXT),
        ({"deps": ["d" * (MAX_TEXT + 1)]}, "deps", MAX_TEXT),
        ({"env": [{"set": {"V": "v" * (MAX_ENV_VALUE + 1)}}]}, "env[0].set.V", MAX_ENV_VALUE),
        ({"env": [{"init": "i" * (MAX_ENV_VALUE + 1)}]}, "env[0].init", MAX_ENV_VALUE),
    ],
)
def test_texts_longer_than_their_limit_are_named(
    fields: dict[str, Any], field: str, limit: int
) -> None:
    (issue,) = issues_of([task("a", **fields)])
    assert (issue.where, issue.field) == ("task 'a'", field)
    assert f"at most {limit:,}" in issue.message
    assert parse_document([task("a", name="n" * MAX_NAME)]).tasks[0].name == "n" * MAX_NAME
