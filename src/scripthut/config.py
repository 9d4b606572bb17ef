"""The models of scripthut.yaml, and a loader that reports every problem at once."""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, NamedTuple, Self, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from scripthut.env_rules import EnvRule
from scripthut.errors import InvalidInput, Issue, NotFound

CONFIG_FILE_NAME = "scripthut.yaml"
DEFAULT_DATA_DIR = "~/.cache/scripthut"
REMOTE_LOG_DIR = "~/.scripthut/logs"
BACKEND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CHECKED = "scripthut.config.cross_checked"


def _cpu_count() -> int:
    return os.cpu_count() or 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


# --- SSH and AWS blocks ---------------------------------------------------------------


class SSHConfig(_Model):
    """How to reach a login node over SSH. Host keys are verified unless turned off."""

    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(min_length=1)
    key_path: Path = Path("~/.ssh/id_rsa")
    cert_path: Path | None = None
    known_hosts: Path = Path("~/.ssh/known_hosts")
    verify_host_key: bool = True
    max_channels: int = Field(default=10, ge=1, le=64)
    keepalive_interval: int = Field(default=15, ge=0)
    connect_timeout: float = Field(default=15.0, gt=0)

    @field_validator("known_hosts", mode="before")
    @classmethod
    def _known_hosts_not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError(
                "null does not turn host key checking off; set verify_host_key: false for that"
            )
        return value

    @property
    def key_path_resolved(self) -> Path:
        return self.key_path.expanduser()

    @property
    def cert_path_resolved(self) -> Path | None:
        return self.cert_path.expanduser() if self.cert_path else None

    @property
    def known_hosts_resolved(self) -> Path:
        return self.known_hosts.expanduser()


class AWSBatchConfig(_Model):
    """Credentials come from the standard AWS chain; `profile` picks one of its profiles."""

    profile: str | None = None
    region: str
    job_queue: str


class AWSEC2Config(_Model):
    profile: str | None = None
    region: str


# --- Backends -------------------------------------------------------------------------


class _BackendBase(_Model):
    name: str
    max_concurrent: int = Field(default=100, ge=1)
    log_dir: str | None = None
    env: list[EnvRule] = Field(default_factory=list)
    env_groups: dict[str, list[EnvRule]] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name_is_plain(cls, value: str) -> str:
        if not BACKEND_NAME.fullmatch(value):
            raise ValueError(
                f"'{value}' is not a valid backend name: start with a letter or digit, "
                "then use only letters, digits, '_', '.' and '-'"
            )
        return value


class _ShellBackend(_BackendBase):
    login_shell: bool = False
    clone_dir: str = "~/scripthut-repos"
    dataset_dir: str = "~/scripthut-data"


class _SchedulerBackend(_ShellBackend):
    transport: Literal["ssh", "local"] = "ssh"
    ssh: SSHConfig | None = Field(default=None, validate_default=True)
    account: str | None = None

    @field_validator("ssh")
    @classmethod
    def _ssh_when_needed(cls, value: SSHConfig | None, info: ValidationInfo) -> SSHConfig | None:
        if value is None and info.data.get("transport") == "ssh":
            raise ValueError(
                "an ssh block is required when transport is 'ssh' (the default); "
                "set transport: local to use the local shell instead"
            )
        return value


class SlurmBackendConfig(_SchedulerBackend):
    """A Slurm cluster, reached over SSH or through the local shell."""

    type: Literal["slurm"] = "slurm"
    partition_map: dict[str, str] = Field(default_factory=dict)
    default_partition: str | None = None


class PBSBackendConfig(_SchedulerBackend):
    """A PBS / Torque cluster, reached over SSH or through the local shell."""

    type: Literal["pbs"] = "pbs"
    queue: str | None = None


class LocalBackendConfig(_ShellBackend):
    """Tasks run as processes of this machine."""

    type: Literal["local"] = "local"
    max_concurrent: int = Field(default_factory=_cpu_count, ge=1)
    cpus: int | None = Field(default=None, ge=1)

    @property
    def cpu_capacity(self) -> int:
        return self.cpus or _cpu_count()


class BatchBackendConfig(_BackendBase):
    """AWS Batch: one container job per task."""

    type: Literal["batch"] = "batch"
    aws: AWSBatchConfig
    job_definition: str | None = None
    job_definition_mode: Literal["locked", "revisions"] = "locked"
    default_image: str | None = None
    job_role_arn: str | None = None
    execution_role_arn: str | None = None
    retry_attempts: int = Field(default=1, ge=1, le=10)
    log_group: str = "/aws/batch/job"
    clone_dir: str = ""

    @model_validator(mode="after")
    def _has_an_image_source(self) -> Self:
        if self.job_definition is None and self.default_image is None:
            raise ValueError(
                "set job_definition (a registered definition) or default_image (to register one)"
            )
        return self


class EC2BackendConfig(_BackendBase):
    """AWS EC2: one instance per task."""

    type: Literal["ec2"] = "ec2"
    aws: AWSEC2Config
    ami: str
    subnet_id: str
    security_group_ids: list[str] = Field(default_factory=list)
    instance_types: dict[str, str] = Field(default_factory=lambda: {"default": "c5.xlarge"})
    instance_profile_arn: str | None = None
    default_image: str | None = None
    ssh_user: str = "ec2-user"
    max_instances: int = Field(default=20, ge=1)
    idle_terminate_seconds: int = Field(default=1800, ge=60)
    startup_timeout_seconds: int = Field(default=600, ge=60)
    tag_prefix: str = "scripthut"
    extra_tags: dict[str, str] = Field(default_factory=dict)
    clone_dir: str = ""


BackendConfig = (
    SlurmBackendConfig
    | PBSBackendConfig
    | BatchBackendConfig
    | EC2BackendConfig
    | LocalBackendConfig
)
_AnyBackend = Annotated[BackendConfig, Field(discriminator="type")]


# --- Sources, workflows, pricing, settings --------------------------------------------


class GitSourceConfig(_Model):
    """A git repository whose workflow files are cloned onto a backend."""

    name: str = Field(min_length=1)
    type: Literal["git"] = "git"
    url: str
    branch: str = "main"
    deploy_key: Path | None = None
    backend: str | None = Field(default=None, exclude=True)  # accepted, no longer used
    workflows_glob: str = ".hut/workflows/*.json"
    clone_dir: str = "~/scripthut-repos"
    postclone: str | None = None
    max_concurrent: int | None = Field(default=None, ge=1)
    description: str = ""


class PathSourceConfig(_Model):
    """A directory on a backend that holds workflow files."""

    name: str = Field(min_length=1)
    type: Literal["path"] = "path"
    path: str
    backend: str
    workflows_glob: str = ".hut/workflows/*.json"
    max_concurrent: int | None = Field(default=None, ge=1)
    description: str = ""


SourceConfig = GitSourceConfig | PathSourceConfig
_AnySource = Annotated[SourceConfig, Field(discriminator="type")]


class WorkflowGitConfig(_Model):
    """A repository cloned on the backend before the workflow command runs."""

    repo: str
    branch: str = "main"
    deploy_key: Path | None = None
    clone_dir: str = "~/scripthut-repos"


class WorkflowConfig(_Model):
    """A named command, run on a backend, that prints the workflow's task JSON."""

    name: str = Field(min_length=1)
    backend: str
    command: str = Field(min_length=1)
    max_concurrent: int = Field(default=5, ge=1)
    description: str = ""
    git: WorkflowGitConfig | None = None
    env: list[EnvRule] = Field(default_factory=list)
    env_groups: dict[str, list[EnvRule]] = Field(default_factory=dict)


class PricingConfig(_Model):
    """Cost estimates: partitions map to instance types, `prices` are hourly prices."""

    region: str = "us-east-1"
    price_type: Literal["ondemand", "spot_avg", "spot_min", "spot_max"] = "ondemand"
    partitions: dict[str, str] = Field(default_factory=dict)
    prices: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)


class Settings(_Model):
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    poll_interval: int = Field(default=30, ge=1)
    server_host: str = "127.0.0.1"
    server_port: int = Field(default=8000, ge=1, le=65535)
    sources_cache_dir: Path | None = None


class Config(_Model):
    """The whole of scripthut.yaml. There is always at least one backend."""

    backends: list[_AnyBackend] = Field(default_factory=list)
    sources: list[_AnySource] = Field(default_factory=list)
    workflows: list[WorkflowConfig] = Field(default_factory=list)
    env: list[EnvRule] = Field(default_factory=list)
    env_groups: dict[str, list[EnvRule]] = Field(default_factory=dict)
    pricing: PricingConfig | None = None
    settings: Settings = Field(default_factory=Settings)
    _source_path: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> Self:
        if _needs_implicit_local((b.name, b.type) for b in self.backends):
            self.backends.append(LocalBackendConfig(name="local"))
        if not (info.context or {}).get(_CHECKED):
            outline = self._outline()
            problems = _cross_problems(outline)
            if problems:
                raise ValueError("; ".join(str(p.issue(outline, None)[1]) for p in problems))
        return self

    def _outline(self) -> dict[str, list[dict[str, Any]]]:
        """The names and references the cross checks read, in the shape of the YAML."""
        return {
            "backends": [{"name": b.name, "type": b.type} for b in self.backends],
            "sources": [
                {"name": s.name, "type": s.type, "backend": s.backend} for s in self.sources
            ],
            "workflows": [{"name": w.name, "backend": w.backend} for w in self.workflows],
        }

    @property
    def source_path(self) -> Path | None:
        """The file this config was read from (None for defaults or parsed data)."""
        return self._source_path

    @source_path.setter
    def source_path(self, value: Path | None) -> None:
        self._source_path = value

    @property
    def data_dir(self) -> Path:
        return self._anchored(self.settings.data_dir)

    @property
    def sources_cache_dir(self) -> Path:
        configured = self.settings.sources_cache_dir
        return self._anchored(configured) if configured else self.data_dir / "sources"

    def _anchored(self, path: Path) -> Path:
        """Expanded and absolute; relative paths start at the config file's directory."""
        path = path.expanduser()
        if not path.is_absolute() and self._source_path is not None:
            path = self._source_path.parent / path
        return path.absolute()

    def log_dir_for(self, backend: BackendConfig) -> str:
        """Where this backend keeps task logs, scripts and exit-code files."""
        if not isinstance(backend, LocalBackendConfig):
            return backend.log_dir or REMOTE_LOG_DIR
        if backend.log_dir:
            return str(Path(backend.log_dir).expanduser())
        return str(self.data_dir / "logs")

    def backend(self, name: str | None = None) -> BackendConfig:
        """The named backend, or the first one when `name` is None."""
        if name is None:
            return self.backends[0]
        for entry in self.backends:
            if entry.name == name:
                return entry
        raise NotFound(_not_found("backend", name, [b.name for b in self.backends]))

    def workflow(self, name: str) -> WorkflowConfig:
        for entry in self.workflows:
            if entry.name == name:
                return entry
        raise NotFound(_not_found("workflow", name, [w.name for w in self.workflows]))


def _not_found(noun: str, name: str, names: list[str]) -> str:
    known = ", ".join(names) if names else f"no {noun}s are configured"
    return f"no {noun} named '{name}'{_suggestion(name, names)} (configured: {known})"


def _suggestion(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# --- Cross checks: names and references -----------------------------------------------

Step = str | int
Steps = tuple[Step, ...]


class _Problem(NamedTuple):
    """A problem at `steps`; its line is that of `anchor` (default `steps`) or `line`."""

    steps: Steps
    message: str
    field: str | None = None
    anchor: Steps | None = None
    line: int | None = None

    def issue(self, data: object, root: yaml.Node | None) -> tuple[int | None, Issue]:
        line = self.line or _line_of(root, self.steps if self.anchor is None else self.anchor)
        return line, Issue(_where(self.steps, data, line), self.message, self.field)


def _entries(data: Mapping[str, Any], key: str) -> list[tuple[int, dict[str, Any]]]:
    items = data.get(key)
    if not isinstance(items, list):
        return []
    return [(i, item) for i, item in enumerate(items) if isinstance(item, dict)]


def _needs_implicit_local(names_and_types: Iterable[tuple[object, object]]) -> bool:
    return not any(name == "local" or kind == "local" for name, kind in names_and_types)


def _backend_names(data: Mapping[str, Any]) -> list[str]:
    entries = [item for _, item in _entries(data, "backends")]
    names = [item["name"] for item in entries if isinstance(item.get("name"), str)]
    if _needs_implicit_local([(item.get("name"), item.get("type")) for item in entries]):
        names.append("local")
    return list(dict.fromkeys(names))


def _duplicate_names(data: Mapping[str, Any], key: str, noun: str) -> Iterator[_Problem]:
    first: dict[str, int] = {}
    for i, item in _entries(data, key):
        name = item.get("name")
        if not isinstance(name, str):
            continue
        if name in first:
            message = f"duplicate {noun} name '{name}' (first used by {key}[{first[name]}])"
            yield _Problem((key, i), message, "name", (key, i, "name"))
        else:
            first[name] = i


def _unknown_backends(data: Mapping[str, Any], key: str, names: list[str]) -> Iterator[_Problem]:
    for i, item in _entries(data, key):
        ref = item.get("backend")
        if key == "sources" and item.get("type") != "path":
            continue
        if isinstance(ref, str) and ref not in names:
            message = f"no backend named '{ref}'{_suggestion(ref, names)}"
            message += f" (configured: {', '.join(names)})"
            yield _Problem((key, i), message, "backend", (key, i, "backend"))


def _cross_problems(data: object) -> list[_Problem]:
    """Duplicate names and references to backends that do not exist."""
    if not isinstance(data, Mapping):
        return []
    names = _backend_names(data)
    return [
        *_duplicate_names(data, "backends", "backend"),
        *_duplicate_names(data, "sources", "source"),
        *_duplicate_names(data, "workflows", "workflow"),
        *_unknown_backends(data, "sources", names),
        *_unknown_backends(data, "workflows", names),
    ]


# --- Locations: pydantic loc -> readable path and YAML line ---------------------------


def _clean_loc(loc: Sequence[Step], data: object) -> Steps:
    """Drop pydantic's union labels (a backend's type, 'str', ...) that are not YAML keys."""
    steps: list[Step] = []
    current = data
    for position, elem in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(current, list) and isinstance(elem, int):
            current = current[elem] if 0 <= elem < len(current) else None
        elif isinstance(current, dict):
            if elem not in current and (elem == current.get("type") or not last):
                continue
            current = current.get(elem)
        elif steps:
            break
        steps.append(elem)
    return tuple(steps)


def _child_data(current: object, step: Step) -> object:
    if isinstance(current, list) and isinstance(step, int) and 0 <= step < len(current):
        return current[step]
    return current.get(step) if isinstance(current, dict) else None


def _where(steps: Steps, data: object, line: int | None) -> str:
    """A readable path such as `backends[1] (hpc).ssh (line 7)`."""
    parts: list[str] = []
    current = data
    for step in steps:
        current = _child_data(current, step)
        if isinstance(step, str):
            parts.append(f".{step}" if parts else step)
            continue
        parts.append(f"[{step}]")
        name = current.get("name") if isinstance(current, dict) else None
        if isinstance(name, str):
            parts.append(f" ({name})")
    text = "".join(parts) or "top level"
    return f"{text} (line {line})" if line else text


def _child_node(node: yaml.Node, step: Step) -> tuple[yaml.Node, int] | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in reversed(node.value):
            if isinstance(key, yaml.ScalarNode) and key.value == str(step):
                return value, key.start_mark.line + 1
    is_index = isinstance(step, int) and step >= 0
    if isinstance(node, yaml.SequenceNode) and is_index and int(step) < len(node.value):
        item = node.value[int(step)]
        return item, item.start_mark.line + 1
    return None


def _line_of(root: yaml.Node | None, steps: Steps) -> int | None:
    """The line of the deepest node of `steps` that exists in the YAML."""
    node, line = root, None
    for step in steps:
        found = _child_node(node, step) if node is not None else None
        if found is None:
            break
        node, line = found
    return line


# --- Pydantic errors -> issues --------------------------------------------------------

_NOT_SUPPORTED = frozenset(
    {"stacks", "agent", "cache", "datasets", "projects", "filter_user"}
    | {"cli_server", "cli_auth", "cli_autostart"}
)


def _strip(annotation: Any) -> Any:
    """Unwrap Annotated and `X | None`."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        members = [a for a in get_args(annotation) if a is not type(None)]
        if origin in (typing.Union, UnionType) and len(members) == 1:
            annotation = members[0]
            continue
        return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _descend(annotation: Any, elem: Step) -> Any:
    annotation = _strip(annotation)
    origin = get_origin(annotation)
    if origin in (typing.Union, UnionType):
        tagged = [m for m in get_args(annotation) if _is_model(m) and "type" in m.model_fields]
        return next((m for m in tagged if m.model_fields["type"].default == elem), None)
    if _is_model(annotation):
        for name, info in annotation.model_fields.items():
            if elem in (name, info.alias):
                return info.annotation
        return None
    if origin is list and isinstance(elem, int):
        return get_args(annotation)[0]
    if origin is dict:
        return get_args(annotation)[1]
    return None


def _annotation_at(loc: Sequence[Step]) -> Any:
    annotation: Any = Config
    for elem in loc:
        annotation = _descend(annotation, elem)
        if annotation is None:
            return None
    return _strip(annotation)


def _keys_at(loc: Sequence[Step]) -> list[str]:
    model = _annotation_at(loc)
    if not _is_model(model):
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _tags_at(loc: Sequence[Step]) -> list[str]:
    union = _annotation_at(loc)
    return [str(m.model_fields["type"].default) for m in get_args(union) if _is_model(m)]


def _describe(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _value_message(err: ErrorDetails) -> str:
    kind, value = err["type"], err["input"]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value), got {_describe(value)}"
    if kind == "list_type":
        return f"expected a list, got {_describe(value)}"
    message = err["msg"].removeprefix("Value error, ")
    scalar = isinstance(value, str | int | float) and len(repr(value)) <= 60
    return f"{message} (got {value!r})" if scalar and kind != "value_error" else message


def _unknown_key(key: str, loc: Sequence[Step]) -> str:
    if key in _NOT_SUPPORTED:
        return f"'{key}' is not supported by this version of ScriptHut"
    return f"unknown key '{key}'{_suggestion(key, _keys_at(loc))}"


def _error_problem(err: ErrorDetails, data: object) -> _Problem:
    loc, kind = tuple(err["loc"]), err["type"]
    steps = _clean_loc(loc, data)
    if kind == "extra_forbidden":
        return _Problem(steps[:-1], _unknown_key(str(steps[-1]), loc[:-1]), anchor=steps)
    if kind == "missing":
        return _Problem(steps[:-1], f"missing required key '{steps[-1]}'")
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        return _tag_problem(err, steps)
    if steps and isinstance(steps[-1], str):
        return _Problem(steps[:-1], _value_message(err), steps[-1], anchor=steps)
    return _Problem(steps, _value_message(err))


def _tag_problem(err: ErrorDetails, steps: Steps) -> _Problem:
    """A list entry whose `type` is missing or names no known kind."""
    tags = _tags_at(err["loc"])
    choices = ", ".join(tags)
    if err["type"] == "union_tag_not_found":
        return _Problem(steps, f"missing required key 'type' (one of: {choices})")
    tag = str(err.get("ctx", {}).get("tag", ""))
    message = f"unknown type '{tag}'{_suggestion(tag, tags)} (one of: {choices})"
    return _Problem(steps, message, "type", anchor=(*steps, "type"))


# --- Loading --------------------------------------------------------------------------


def _yaml_duplicates(node: yaml.Node | None, steps: Steps, seen: set[int]) -> Iterator[_Problem]:
    if node is None or id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _yaml_duplicates(item, (*steps, i), seen)
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag.endswith(":merge"):
                continue
            if key.value in keys:
                message = f"key '{key.value}' is given more than once"
                yield _Problem(steps, message, line=key.start_mark.line + 1)
            keys.add(key.value)
            yield from _yaml_duplicates(value, (*steps, key.value), seen)


def _validate(data: object, source: str, root: yaml.Node | None) -> Config:
    data = {} if data is None else data
    problems = [*_yaml_duplicates(root, (), set()), *_cross_problems(data)]
    config: Config | None = None
    try:
        config = Config.model_validate(data, context={_CHECKED: True})
    except ValidationError as exc:
        problems.extend(_error_problem(err, data) for err in exc.errors(include_url=False))
    if problems or config is None:
        located = [problem.issue(data, root) for problem in problems]
        located.sort(key=lambda pair: pair[0] if pair[0] is not None else float("inf"))
        raise InvalidInput([issue for _, issue in located], f"invalid config file {source}")
    return config


def parse_config(data: object, source: str = "<config>") -> Config:
    """Validate already-parsed data (a mapping, or None for defaults)."""
    return _validate(data, source, None)


def _read_yaml(text: str, title: str) -> tuple[object, yaml.Node | None]:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), root
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        detail = " ".join(part for part in (exc.context, exc.problem) if part)
        raise InvalidInput([Issue(where, f"YAML syntax error: {detail}")], title) from None
    except yaml.YAMLError as exc:
        raise InvalidInput([Issue("YAML", f"YAML error: {exc}")], title) from None
    finally:
        loader.dispose()


def _load_file(path: Path) -> Config:
    title = f"invalid config file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput([Issue(str(path), "no such file")], title) from None
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidInput([Issue(str(path), f"cannot read: {detail}")], title) from None
    data, root = _read_yaml(text, title)
    config = _validate(data, str(path), root)
    config.source_path = path.absolute()
    return config


def _config_home() -> Path:
    configured = os.environ.get("XDG_CONFIG_HOME")
    return Path(configured) if configured else Path("~/.config").expanduser()


def find_config_path(explicit: str | Path | None = None) -> Path | None:
    """explicit > $SCRIPTHUT_CONFIG > ./scripthut.yaml > $XDG_CONFIG_HOME/scripthut/."""
    if explicit is not None and str(explicit):
        return Path(explicit).expanduser()
    from_env = os.environ.get("SCRIPTHUT_CONFIG")
    if from_env:
        return Path(from_env).expanduser()
    candidates = (Path.cwd() / CONFIG_FILE_NAME, _config_home() / "scripthut" / CONFIG_FILE_NAME)
    return next((path for path in candidates if path.is_file()), None)


def load_config(path: str | Path | None = None) -> Config:
    """The config from the first file found (defaults if none); $SCRIPTHUT_DATA_DIR wins."""
    found = find_config_path(path)
    config = Config() if found is None else _load_file(found)
    data_dir = os.environ.get("SCRIPTHUT_DATA_DIR")
    if data_dir:
        config.settings.data_dir = Path(data_dir).expanduser().absolute()
    return config
