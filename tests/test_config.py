"""scripthut.yaml: models, defaults, lookup order and error reports."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from scripthut.config import (
    BatchBackendConfig,
    Config,
    EC2BackendConfig,
    GitSourceConfig,
    LocalBackendConfig,
    PathSourceConfig,
    PBSBackendConfig,
    SlurmBackendConfig,
    find_config_path,
    load_config,
    parse_config,
)
from scripthut.errors import InvalidInput, Issue, NotFound

REPO = Path(__file__).resolve().parents[1]

FULL = """\
backends:
  - name: hpc
    type: slurm
    ssh:
      host: login.example.org
      port: 2222
      user: jdoe
      key_path: ~/.ssh/id_ed25519
      cert_path: ~/.ssh/id_ed25519-cert.pub
      known_hosts: ~/.ssh/cluster_hosts
      max_channels: 32
      keepalive_interval: 30
      connect_timeout: 5.5
    account: lab
    login_shell: true
    max_concurrent: 250
    clone_dir: /scratch/repos
    dataset_dir: /scratch/data
    partition_map: {standard: cpu, gpu: gpu-a100}
    default_partition: cpu
    log_dir: /scratch/logs
    env:
      - set: {SCRATCH: /scratch/jdoe}
    env_groups:
      mods:
        - init: module load gcc
  - name: onsite
    type: slurm
    transport: local
  - name: torque
    type: pbs
    queue: batch
    account: "1234"
    ssh: {host: pbs.example.org, user: jdoe, verify_host_key: false}
  - name: aws-batch
    type: batch
    aws: {profile: research, region: eu-west-1, job_queue: spot}
    job_definition: sim:3
    job_definition_mode: revisions
    job_role_arn: arn:aws:iam::1:role/job
    execution_role_arn: arn:aws:iam::1:role/exec
    retry_attempts: 3
    log_group: /aws/batch/custom
  - name: aws-ec2
    type: ec2
    aws: {region: us-east-2}
    ami: ami-123
    subnet_id: subnet-1
    security_group_ids: [sg-1, sg-2]
    instance_types: {default: c5.xlarge, gpu: g5.xlarge}
    instance_profile_arn: arn:aws:iam::1:instance-profile/p
    default_image: python:3.12
    ssh_user: ubuntu
    max_instances: 5
    idle_terminate_seconds: 600
    startup_timeout_seconds: 300
    tag_prefix: sh
    extra_tags: {project: x}
  - name: laptop
    type: local
    cpus: 3
    max_concurrent: 2
sources:
  - name: repo
    type: git
    url: git@example.org:lab/sims.git
    branch: dev
    deploy_key: ~/.ssh/deploy
    postclone: make
    max_concurrent: 7
  - name: shared
    type: path
    path: /projects/shared
    backend: hpc
    workflows_glob: "**/*.hut.json"
workflows:
  - name: sims
    backend: hpc
    command: python make_tasks.py
    max_concurrent: 20
    description: simulations
    git: {repo: git@example.org:lab/sims.git, branch: main}
    env:
      - if: {SCRIPTHUT_BACKEND: [hpc, torque]}
        include: [mods]
env:
  - set: {OMP_NUM_THREADS: "1"}
env_groups:
  py:
    - append: {PATH: /opt/py/bin}
pricing:
  region: us-west-2
  price_type: spot_avg
  partitions: {cpu: c5.xlarge}
  prices: {c5.xlarge: 0.17, gpu-a100: 3.5}
settings:
  data_dir: /var/scripthut
  poll_interval: 10
  server_host: 0.0.0.0
  server_port: 9000
  sources_cache_dir: /var/cache/sources
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list[Issue]:
    with pytest.raises(InvalidInput) as caught:
        load_config(write(tmp_path / "scripthut.yaml", text))
    return caught.value.issues


def only(issues: list[Issue]) -> Issue:
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SCRIPTHUT_CONFIG", "SCRIPTHUT_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)


# --- Parsing ---------------------------------------------------------------------------


def test_full_example_with_every_backend_type(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "full.yaml", FULL))
    kinds = {b.name: type(b) for b in config.backends}
    assert kinds == {
        "hpc": SlurmBackendConfig,
        "onsite": SlurmBackendConfig,
        "torque": PBSBackendConfig,
        "aws-batch": BatchBackendConfig,
        "aws-ec2": EC2BackendConfig,
        "laptop": LocalBackendConfig,
    }
    hpc = config.backend("hpc")
    assert isinstance(hpc, SlurmBackendConfig)
    assert hpc.ssh is not None
    assert (hpc.ssh.port, hpc.ssh.max_channels, hpc.ssh.connect_timeout) == (2222, 32, 5.5)
    assert hpc.ssh.known_hosts_resolved == Path("~/.ssh/cluster_hosts").expanduser()
    assert hpc.partition_map == {"standard": "cpu", "gpu": "gpu-a100"}
    assert hpc.env[0].set == {"SCRATCH": "/scratch/jdoe"}
    assert hpc.env_groups["mods"][0].init == "module load gcc"
    torque = config.backend("torque")
    assert isinstance(torque, PBSBackendConfig)
    assert torque.ssh is not None
    assert (torque.queue, torque.account, torque.ssh.verify_host_key) == ("batch", "1234", False)
    batch = config.backend("aws-batch")
    assert isinstance(batch, BatchBackendConfig)
    assert (batch.aws.job_queue, batch.retry_attempts, batch.job_definition_mode) == (
        "spot",
        3,
        "revisions",
    )
    ec2 = config.backend("aws-ec2")
    assert isinstance(ec2, EC2BackendConfig)
    assert ec2.instance_types["gpu"] == "g5.xlarge"
    assert ec2.extra_tags == {"project": "x"}
    laptop = config.backend("laptop")
    assert isinstance(laptop, LocalBackendConfig)
    assert laptop.cpu_capacity == 3
    assert isinstance(config.sources[0], GitSourceConfig)
    assert config.sources[0].branch == "dev"
    assert isinstance(config.sources[1], PathSourceConfig)
    flow = config.workflow("sims")
    assert flow.git is not None
    assert flow.git.clone_dir == "~/scripthut-repos"
    assert flow.env[0].if_ == {"SCRIPTHUT_BACKEND": ["hpc", "torque"]}
    assert config.pricing is not None
    assert config.pricing.prices["gpu-a100"] == 3.5
    assert config.settings.server_port == 9000
    assert config.data_dir == Path("/var/scripthut")
    assert config.sources_cache_dir == Path("/var/cache/sources")
    assert config.source_path == (tmp_path / "full.yaml").absolute()


def test_example_file_in_the_repository_is_valid() -> None:
    config = load_config(REPO / "examples" / "scripthut.example.yaml")
    assert [b.type for b in config.backends] == ["local", "slurm"]
    assert config.workflow("simulations").backend == "hpc"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "scripthut.yaml", ""))
    assert [(b.name, b.type) for b in config.backends] == [("local", "local")]
    local = config.backend()
    assert isinstance(local, LocalBackendConfig)
    assert local.max_concurrent == (os.cpu_count() or 1)
    assert local.cpus is None
    assert config.settings.poll_interval == 30
    assert config.settings.server_host == "127.0.0.1"
    assert config.data_dir == Path("~/.cache/scripthut").expanduser()
    assert config.pricing is None
    assert config.workflows == []
    assert config.sources == []


def test_ssh_defaults_verify_host_keys(tmp_path: Path) -> None:
    config = parse_config(
        {"backends": [{"name": "h", "type": "slurm", "ssh": {"host": "x", "user": "u"}}]}
    )
    entry = config.backend("h")
    assert isinstance(entry, SlurmBackendConfig)
    assert entry.ssh is not None
    ssh = entry.ssh
    assert ssh.verify_host_key is True
    assert ssh.known_hosts_resolved == Path("~/.ssh/known_hosts").expanduser()
    assert (ssh.port, ssh.max_channels, ssh.keepalive_interval, ssh.connect_timeout) == (
        22,
        10,
        15,
        15.0,
    )
    assert entry.transport == "ssh"
    assert entry.max_concurrent == 100


def test_known_hosts_null_does_not_turn_checking_off() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_config(
            {
                "backends": [
                    {
                        "name": "h",
                        "type": "slurm",
                        "ssh": {"host": "x", "user": "u", "known_hosts": None},
                    }
                ]
            }
        )
    issue = only(caught.value.issues)
    assert issue.field == "known_hosts"
    assert "verify_host_key: false" in issue.message


def test_transport_local_needs_no_ssh_block() -> None:
    config = parse_config({"backends": [{"name": "h", "type": "pbs", "transport": "local"}]})
    entry = config.backend("h")
    assert isinstance(entry, PBSBackendConfig)
    assert entry.ssh is None


def test_transport_ssh_without_ssh_block_is_an_error(tmp_path: Path) -> None:
    text = """\
    backends:
      - name: hpc
        type: slurm
    """
    issue = only(problems(tmp_path, text))
    assert issue.where == "backends[0] (hpc) (line 2)"
    assert issue.field == "ssh"
    assert "transport: local" in issue.message


def test_log_dir_defaults(tmp_path: Path) -> None:
    text = """\
    backends:
      - {name: hpc, type: slurm, transport: local}
      - {name: hpc2, type: slurm, transport: local, log_dir: /scratch/logs}
    settings: {data_dir: data}
    """
    config = load_config(write(tmp_path / "scripthut.yaml", text))
    assert config.data_dir == tmp_path / "data"
    assert config.log_dir_for(config.backend("local")) == str(tmp_path / "data" / "logs")
    assert config.log_dir_for(config.backend("hpc")) == "~/.scripthut/logs"
    assert config.log_dir_for(config.backend("hpc2")) == "/scratch/logs"


def test_source_path_is_not_dumped_and_not_settable_from_yaml(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "scripthut.yaml", "{}"))
    assert config.source_path is not None
    assert "source_path" not in config.model_dump()
    issue = only(problems(tmp_path, "source_path: /etc\n"))
    assert issue.message.startswith("unknown key 'source_path'")


# --- Implicit local backend and lookups ------------------------------------------------


def test_local_backend_is_added_beside_remote_ones() -> None:
    config = parse_config(
        {
            "backends": [{"name": "hpc", "type": "slurm", "transport": "local"}],
            "workflows": [{"name": "w", "backend": "local", "command": "true"}],
        }
    )
    assert [b.name for b in config.backends] == ["hpc", "local"]
    assert config.backend().name == "hpc"


@pytest.mark.parametrize(
    "entry",
    [{"name": "local", "type": "slurm", "transport": "local"}, {"name": "laptop", "type": "local"}],
)
def test_no_implicit_local_when_one_is_configured(entry: dict[str, str]) -> None:
    config = parse_config({"backends": [entry]})
    assert [b.name for b in config.backends] == [entry["name"]]


def test_lookup_of_unknown_names_lists_the_configured_ones() -> None:
    config = parse_config({"workflows": [{"name": "sims", "backend": "local", "command": "x"}]})
    with pytest.raises(NotFound, match=r"'lcoal'.*did you mean 'local'.*configured: local"):
        config.backend("lcoal")
    with pytest.raises(NotFound, match=r"configured: sims"):
        config.workflow("other")


def test_direct_construction_checks_names() -> None:
    with pytest.raises(ValidationError, match="duplicate backend name 'a'"):
        Config.model_validate({"backends": [{"name": "a", "type": "local"}] * 2})


# --- Errors ----------------------------------------------------------------------------


def test_unknown_key_names_place_line_and_suggestion(tmp_path: Path) -> None:
    text = """\
    backends:
      - name: local
        type: local
      - name: hpc
        type: slurm
        ssh:
          host: login
          user: me
          hots: login2
    """
    issue = only(problems(tmp_path, text))
    assert issue.where == "backends[1] (hpc).ssh (line 9)"
    assert issue.message == "unknown key 'hots' (did you mean 'host'?)"


def test_unknown_key_without_close_match_has_no_suggestion(tmp_path: Path) -> None:
    issue = only(problems(tmp_path, "settings:\n  zzzzzz: 1\n"))
    assert issue.message == "unknown key 'zzzzzz'"
    assert issue.where == "settings (line 2)"


def test_wrong_type_names_the_field(tmp_path: Path) -> None:
    text = """\
    settings:
      poll_interval: soon
    """
    issue = only(problems(tmp_path, text))
    assert (issue.where, issue.field) == ("settings (line 2)", "poll_interval")
    assert "integer" in issue.message
    assert "'soon'" in issue.message


def test_missing_required_field(tmp_path: Path) -> None:
    text = """\
    backends:
      - name: hpc
        type: slurm
        ssh:
          host: login
    """
    issue = only(problems(tmp_path, text))
    assert issue.where == "backends[0] (hpc).ssh (line 4)"
    assert issue.message == "missing required key 'user'"


def test_unknown_and_missing_backend_type(tmp_path: Path) -> None:
    text = """\
    backends:
      - name: a
        type: slrum
      - name: b
    """
    first, second = problems(tmp_path, text)
    assert first.field == "type"
    assert "did you mean 'slurm'" in first.message
    assert second.where == "backends[1] (b) (line 4)"
    assert second.message.startswith("missing required key 'type' (one of: slurm, pbs")


def test_duplicate_backend_names(tmp_path: Path) -> None:
    text = """\
    backends:
      - {name: hpc, type: slurm, transport: local}
      - {name: hpc, type: pbs, transport: local}
    """
    issue = only(problems(tmp_path, text))
    assert (issue.where, issue.field) == ("backends[1] (hpc) (line 3)", "name")
    assert "duplicate backend name 'hpc'" in issue.message


def test_invalid_backend_name(tmp_path: Path) -> None:
    issue = only(problems(tmp_path, "backends:\n  - {name: 'my cluster', type: local}\n"))
    assert issue.field == "name"
    assert "not a valid backend name" in issue.message


def test_workflow_backend_must_exist(tmp_path: Path) -> None:
    text = """\
    backends:
      - {name: hpc, type: slurm, transport: local}
    workflows:
      - name: sims
        command: run
        backend: hcp
    """
    issue = only(problems(tmp_path, text))
    assert (issue.where, issue.field) == ("workflows[0] (sims) (line 6)", "backend")
    assert "'hcp'" in issue.message
    assert "did you mean 'hpc'" in issue.message


def test_duplicate_workflow_names(tmp_path: Path) -> None:
    text = """\
    workflows:
      - {name: w, backend: local, command: a}
      - {name: w, backend: local, command: b}
    """
    assert "duplicate workflow name 'w'" in only(problems(tmp_path, text)).message


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    text = "settings:\n  poll_interval: 3\n backends: [\n"
    issue = only(problems(tmp_path, text))
    assert issue.where.startswith("line 3")
    assert "YAML syntax error" in issue.message


def test_duplicate_yaml_keys_are_reported(tmp_path: Path) -> None:
    issue = only(problems(tmp_path, "settings:\n  poll_interval: 3\n  poll_interval: 4\n"))
    assert issue.where == "settings (line 3)"
    assert "more than once" in issue.message


def test_unsupported_key_is_called_so(tmp_path: Path) -> None:
    issue = only(problems(tmp_path, "stacks: []\n"))
    assert issue.message == "'stacks' is not supported by this version of ScriptHut"


def test_batch_needs_a_job_definition_or_an_image(tmp_path: Path) -> None:
    text = """\
    backends:
      - name: b
        type: batch
        aws: {region: us-east-1, job_queue: q}
    """
    assert "default_image" in only(problems(tmp_path, text)).message


def test_every_problem_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    text = """\
    backends:
      - name: hpc
        type: slurm
        ssh: {host: h, user: u, prot: 22}
      - {name: hpc, type: local}
    workflows:
      - {name: w, backend: nowhere, command: x}
    settings:
      poll_interval: -1
    """
    with pytest.raises(InvalidInput) as caught:
        load_config(write(tmp_path / "scripthut.yaml", text))
    error = caught.value
    assert error.title == f"invalid config file {tmp_path / 'scripthut.yaml'}"
    lines = [issue.where for issue in error.issues]
    assert lines == [
        "backends[0] (hpc).ssh (line 4)",
        "backends[1] (hpc) (line 5)",
        "workflows[0] (w) (line 7)",
        "settings (line 9)",
    ]
    assert "4 problems" in str(error)


def test_parse_config_without_yaml_has_no_lines() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_config({"settings": {"poll_intervall": 1}}, source="inline")
    assert caught.value.title == "invalid config file inline"
    issue = only(caught.value.issues)
    assert issue.where == "settings"
    assert "did you mean 'poll_interval'" in issue.message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    issue = only(problems(tmp_path, "- a\n- b\n"))
    assert issue.where == "top level"
    assert "got list" in issue.message


# --- Finding the file ------------------------------------------------------------------


def test_missing_explicit_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InvalidInput) as caught:
        load_config(missing)
    assert str(missing) in str(caught.value)


def test_lookup_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    xdg = write_into(tmp_path / "xdg" / "scripthut" / "scripthut.yaml")
    assert find_config_path() == xdg
    write_into(tmp_path / "scripthut.yaml")  # a project file: a layer, never the global one
    assert find_config_path() == xdg
    from_env = write_into(tmp_path / "env.yaml")
    monkeypatch.setenv("SCRIPTHUT_CONFIG", str(from_env))
    assert find_config_path() == from_env
    assert find_config_path(tmp_path / "given.yaml") == tmp_path / "given.yaml"


def test_no_file_anywhere_gives_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert find_config_path() is None
    assert [b.name for b in load_config().backends] == ["local"]
    monkeypatch.setenv("SCRIPTHUT_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(InvalidInput, match=r"gone\.yaml"):
        load_config()


def test_xdg_default_is_dot_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    found = write_into(tmp_path / "home" / ".config" / "scripthut" / "scripthut.yaml")
    assert find_config_path() == found


def test_data_dir_from_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "xdg" / "scripthut").mkdir(parents=True)
    write(tmp_path / "xdg" / "scripthut" / "scripthut.yaml", "settings: {data_dir: /from/file}\n")
    assert load_config().data_dir == Path("/from/file")
    monkeypatch.setenv("SCRIPTHUT_DATA_DIR", str(tmp_path / "override"))
    assert load_config().data_dir == tmp_path / "override"


def write_into(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("settings: {poll_interval: 7}\n")
    return path


# --- the original's files -------------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures"


def test_original_example_config_is_accepted() -> None:
    config = load_config(FIXTURES / "original" / "scripthut.yaml")
    assert config.settings.filter_user == "jdoe"
    assert [b.type for b in config.backends] == ["slurm", "pbs", "batch", "ec2", "local"]
    workflow = config.workflow("simulations")
    assert workflow.git is not None and workflow.git.postclone == "make setup"
    source = config.sources[0]
    assert isinstance(source, GitSourceConfig) and source.postclone


def test_filter_user_must_not_be_empty(tmp_path: Path) -> None:
    issue = only(problems(tmp_path, "settings:\n  filter_user: ''\n"))
    assert issue.field == "filter_user"


def test_v03_config_reads_as_modern_with_one_warning_per_section(
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = FIXTURES / "v03" / "scripthut.yaml"
    with caplog.at_level("WARNING", logger="scripthut.config"):
        config = load_config(path)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings
    environments, projects = warnings
    assert "'environments' is deprecated" in environments
    assert (
        "{env_groups: {gcc: [{set: {CC: gcc, OMP_NUM_THREADS: '4'}, init: module load gcc/12}]"
        in environments
    )
    assert "env: [{include: [NAME]}]" in environments
    assert "'projects' is deprecated" in projects
    assert "type: path" in projects and "workflows_glob: '**/sflow.json'" in projects

    gcc = config.env_groups["gcc"]
    assert [(r.set, r.init) for r in gcc] == [
        ({"CC": "gcc", "OMP_NUM_THREADS": "4"}, "module load gcc/12")
    ]
    assert config.env_groups["julia"][0].init == "module load julia/1.10"
    sims, cluster = config.sources
    assert isinstance(sims, PathSourceConfig) and isinstance(cluster, PathSourceConfig)
    assert (sims.name, sims.backend, sims.path, sims.workflows_glob) == (
        "sims",
        "local",
        "sims",
        "**/sflow.json",
    )
    assert sims.description == "Monte Carlo simulations"
    assert cluster.backend == "hpc"

    caplog.clear()
    with caplog.at_level("WARNING", logger="scripthut.config"):
        load_config(path)
    assert len(caplog.records) == 2  # once per load, not once per process


def test_v03_project_backend_is_checked(tmp_path: Path) -> None:
    text = "projects:\n  - name: p\n    backend: hcp\n    path: x\n"
    issue = only(problems(tmp_path, text))
    assert (issue.where, issue.field) == ("projects[0] (p) (line 3)", "backend")
    assert issue.message.startswith("no backend named 'hcp'")


def test_migrated_v03_config_is_the_same_config_without_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import yaml

    from scripthut.config.legacy import migrate_data

    path = FIXTURES / "v03" / "scripthut.yaml"
    old = load_config(path)
    modern = migrate_data(yaml.safe_load(path.read_text()))
    assert "environments" not in modern and "projects" not in modern
    caplog.clear()
    with caplog.at_level("WARNING", logger="scripthut.config"):
        new = load_config(write(tmp_path / "scripthut.yaml", yaml.safe_dump(modern)))
    assert caplog.records == []
    assert new.sources == old.sources
    assert new.env_groups == old.env_groups
    assert new.backends == old.backends


def test_ecs_says_it_is_not_supported(tmp_path: Path) -> None:
    issue = only(problems(tmp_path, "backends:\n  - name: a\n    type: ecs\n"))
    assert issue.field == "type"
    assert issue.message == "ECS is not supported (use type: batch for AWS Batch)"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("agent: {}\n", "top level"),
        ("settings:\n  cli_server: http://x\n", "settings"),
        ("settings:\n  cli_anything_new: 1\n", "settings"),
    ],
)
def test_keys_of_newer_versions_are_not_supported(tmp_path: Path, text: str, where: str) -> None:
    issue = only(problems(tmp_path, text))
    assert issue.where.startswith(where)
    assert issue.message.endswith("is not supported by this version of ScriptHut")
    assert "did you mean" not in issue.message


def test_suggestions_need_a_real_near_miss(tmp_path: Path) -> None:
    far = only(problems(tmp_path, "backends:\n  - name: a\n    type: local\n    inputs: 1\n"))
    assert far.message == "unknown key 'inputs'"  # not "did you mean 'cpus'" (ratio 0.6)
    swap = only(problems(tmp_path, "backends:\n  - name: a\n    type: lcoal\n"))
    assert "did you mean 'local'" in swap.message


@pytest.mark.parametrize("word", ["on", "OFF", "yes", "No"])
def test_yaml_boolean_keys_get_a_quote_it_hint(tmp_path: Path, word: str) -> None:
    text = f"settings:\n  poll_interval: 3\n  {word}: 1\n"
    issue = only(problems(tmp_path, text))
    assert issue.where == "settings (line 3)"
    assert f"key '{word}' is read by YAML as a boolean" in issue.message
    assert f"('{word}':)" in issue.message


def test_boolean_keys_in_parsed_data_are_named_too() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_config({"env": [{"set": {True: "1"}}]})
    issue = only(caught.value.issues)
    assert issue.where == "env[0].set"
    assert "boolean" in issue.message


def test_a_git_source_backend_is_checked_like_a_path_source(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        backends:
          - {name: hpc, type: local}
        sources:
          - name: code
            type: git
            url: https://git.example.org/code.git
            backend: hcp
          - {name: fine, type: git, url: https://git.example.org/fine.git}
          - {name: here, type: path, path: x, backend: hpcc}
        """
    )
    code, here = problems(tmp_path, text)
    assert (code.where, code.field) == ("sources[0] (code) (line 7)", "backend")
    assert code.message == "no backend named 'hcp' (did you mean 'hpc'?) (configured: hpc)"
    assert (here.where, here.field) == ("sources[2] (here) (line 9)", "backend")
