"""The pydantic models of scripthut.yaml."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from scripthut.config.checks import CHECKED, cross_problems, needs_implicit_local, not_found
from scripthut.config.notifications import NotificationsConfig
from scripthut.env_rules import EnvRule
from scripthut.errors import NotFound

CONFIG_FILE_NAME = "scripthut.yaml"
DEFAULT_DATA_DIR = "~/.cache/scripthut"
REMOTE_LOG_DIR = "~/.scripthut/logs"
BACKEND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
    # Job arrays: many tasks of one run with the same resources go as one array job.
    arrays: bool = True
    max_array_size: int | None = Field(default=None, ge=1)

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
    flavor: Literal["torque", "pbspro", "auto"] = "auto"
    bin_dir: str | None = None

    @field_validator("queue", "account")
    @classmethod
    def _plain_word(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.@+-]+", value):
            raise ValueError(
                f"{value!r} cannot be passed to qsub: use letters, digits and _ . @ + -"
            )
        return value

    @field_validator("bin_dir")
    @classmethod
    def _absolute_dir(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or "\n" in value or "\0" in value):
            raise ValueError(f"bin_dir {value!r} must be an absolute path on one line")
        return value.rstrip("/") or "/" if value is not None else None


class SGEBackendConfig(_SchedulerBackend):
    """A Grid Engine cluster (Son of Grid Engine, Univa, Altair GE), over SSH or the local shell.

    `queue` overrides the task's partition (else `partition_map`, else the partition as the
    queue name); `parallel_env` is the site's parallel environment for tasks asking for more
    than one cpu (`-pe <parallel_env> N`); memory is requested as `memory_resource` per slot.
    """

    type: Literal["sge"] = "sge"
    queue: str | None = None
    partition_map: dict[str, str] = Field(default_factory=dict)
    parallel_env: str | None = None
    memory_resource: str | None = "h_vmem"


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
    # Job arrays (arrayProperties): Batch takes 2 to 10,000 children per array.
    arrays: bool = True
    max_array_size: int | None = Field(default=None, ge=2, le=10_000)

    @model_validator(mode="after")
    def _has_an_image_source(self) -> Self:
        if self.job_definition is None and self.default_image is None:
            raise ValueError(
                "set job_definition (a registered definition) or default_image (to register one)"
            )
        if self.job_definition is None and self.job_definition_mode == "revisions":
            raise ValueError(
                "job_definition_mode 'revisions' needs a job_definition (the template)"
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
    | SGEBackendConfig
    | BatchBackendConfig
    | EC2BackendConfig
    | LocalBackendConfig
)
_AnyBackend = Annotated[BackendConfig, Field(discriminator="type")]


def shares_filesystem(entry: BackendConfig) -> bool:
    """True for `local` and for schedulers reached with `transport: local`."""
    return entry.type == "local" or getattr(entry, "transport", None) == "local"


# --- Sources, workflows, pricing, settings --------------------------------------------


def _git_url(value: str) -> str:
    """A repository URL git cannot read as an option, on one line."""
    if not value or value.startswith("-") or not value.isprintable():
        raise ValueError("must be a repository URL on one line, not starting with '-'")
    return value


class GitSourceConfig(_Model):
    """A git repository whose workflow files are cloned onto a backend."""

    name: str = Field(min_length=1)
    type: Literal["git"] = "git"
    url: str
    branch: str = "main"
    deploy_key: Path | None = None
    accept_new_host_key: bool = False
    backend: str | None = None  # where it is cloned (default: the first backend)
    workflows_glob: str = ".hut/workflows/*.json"
    clone_dir: str = "~/scripthut-repos"
    postclone: str | None = None
    max_concurrent: int | None = Field(default=None, ge=1)
    description: str = ""

    @field_validator("url")
    @classmethod
    def _url_is_plain(cls, value: str) -> str:
        return _git_url(value)


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
    accept_new_host_key: bool = False
    clone_dir: str = "~/scripthut-repos"
    postclone: str | None = None

    @field_validator("repo")
    @classmethod
    def _repo_is_plain(cls, value: str) -> str:
        return _git_url(value)


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
    """Cost estimates: partitions map to instance types, priced from `url` (instances.vantage.sh
    data, cached 24 h) for `region` and `price_type`; `prices` (hourly) override them."""

    url: str = Field(default="https://instances.vantage.sh/instances.json", pattern="^https?://")
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
    filter_user: str | None = Field(default=None, min_length=1)


# --- ScriptHut 0.3 sections, read into their modern form -------------------------------

LEGACY_WORKFLOW_FILE = "sflow.json"


class LegacyEnvironment(_Model):
    """0.3 `environments[]`: a named set of variables and init text; now an env group."""

    name: str = Field(min_length=1)
    variables: dict[str, str] = Field(default_factory=dict)
    extra_init: str = ""
    description: str = ""

    def rules(self) -> list[EnvRule]:
        """The env_groups entry that replaces it: one rule with `set` and `init`."""
        return [EnvRule.model_validate({"set": self.variables, "init": self.extra_init})]


class LegacyProject(_Model):
    """0.3 `projects[]`: a folder with sflow.json files; now a `path` source."""

    name: str = Field(min_length=1)
    backend: str
    path: str
    description: str = ""

    def source(self) -> PathSourceConfig:
        return PathSourceConfig(
            name=self.name,
            path=self.path,
            backend=self.backend,
            workflows_glob=f"**/{LEGACY_WORKFLOW_FILE}",
            description=self.description,
        )


class CacheConfig(_Model):
    """The result cache (docs/caching.md): a folder on each backend's file system."""

    enabled: bool = True
    # None: <data_dir>/cache for backends sharing this file system, else REMOTE_CACHE_DIR
    directory: str | None = None


class Config(_Model):
    """The whole of scripthut.yaml. There is always at least one backend."""

    backends: list[_AnyBackend] = Field(default_factory=list)
    sources: list[_AnySource] = Field(default_factory=list)
    workflows: list[WorkflowConfig] = Field(default_factory=list)
    env: list[EnvRule] = Field(default_factory=list)
    env_groups: dict[str, list[EnvRule]] = Field(default_factory=dict)
    pricing: PricingConfig | None = None
    cache: CacheConfig = Field(default_factory=CacheConfig)
    settings: Settings = Field(default_factory=Settings)
    notifications: NotificationsConfig | None = None
    environments: list[LegacyEnvironment] = Field(default_factory=list, exclude=True)
    projects: list[LegacyProject] = Field(default_factory=list, exclude=True)
    _source_path: Path | None = PrivateAttr(default=None)
    _origin: tuple[object, Any] | None = PrivateAttr(default=None)
    _layers: Any = PrivateAttr(default=None)  # a ConfigSource (config/source.py)

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> Self:
        if needs_implicit_local((b.name, b.type) for b in self.backends):
            self.backends.append(LocalBackendConfig(name="local"))
        self.sources.extend(project.source() for project in self.projects)
        for environment in self.environments:
            self.env_groups.setdefault(environment.name, environment.rules())
        self.projects, self.environments = [], []
        if not (info.context or {}).get(CHECKED):
            outline = self._outline()
            problems = cross_problems(outline)
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
    def origin(self) -> tuple[object, Any] | None:
        """The merged data and YAML node tree this config was validated from (provenance)."""
        return self._origin

    @origin.setter
    def origin(self, value: tuple[object, Any] | None) -> None:
        self._origin = value

    @property
    def layers(self) -> Any:
        """The ConfigSource that read this config and reads it again (None: built in code)."""
        return self._layers

    @layers.setter
    def layers(self, value: Any) -> None:
        self._layers = value

    def for_folder(self, folder: str | Path | None, *, strict: bool = False) -> Config:
        """The configuration for work started in `folder`: the global file plus the project
        file found walking up from it. Without layers (built in code) or a folder, this one.

        A broken project file gives its last good reading (or the global file alone), unless
        `strict`, which raises its located errors (a new run from there)."""
        if folder is None or self._layers is None:
            return self
        result: Config = self._layers.for_folder(self, Path(folder), strict=strict)
        return result

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

    def shares_filesystem(self, name: str | None = None) -> bool:
        """True when the backend's commands run through this machine's shell and files."""
        return shares_filesystem(self.backend(name))

    def backend(self, name: str | None = None) -> BackendConfig:
        """The named backend, or the first one when `name` is None."""
        if name is None:
            return self.backends[0]
        for entry in self.backends:
            if entry.name == name:
                return entry
        raise NotFound(not_found("backend", name, [b.name for b in self.backends]))

    def workflow(self, name: str) -> WorkflowConfig:
        for entry in self.workflows:
            if entry.name == name:
                return entry
        raise NotFound(not_found("workflow", name, [w.name for w in self.workflows]))
