"""scripthut.yaml: its models (models), cross checks and error places (checks, issues), loading.

Every public name is re-exported here: `from scripthut.config import Config, load_config`.
"""

from scripthut.config.layers import find_config_path, find_project_path
from scripthut.config.load import load_file, parse_config
from scripthut.config.models import (
    BACKEND_NAME,
    CONFIG_FILE_NAME,
    DEFAULT_DATA_DIR,
    REMOTE_LOG_DIR,
    AWSBatchConfig,
    AWSEC2Config,
    BackendConfig,
    BatchBackendConfig,
    Config,
    EC2BackendConfig,
    GitSourceConfig,
    LocalBackendConfig,
    PathSourceConfig,
    PBSBackendConfig,
    PricingConfig,
    Settings,
    SGEBackendConfig,
    SlurmBackendConfig,
    SourceConfig,
    SSHConfig,
    WorkflowConfig,
    WorkflowGitConfig,
    shares_filesystem,
)
from scripthut.config.source import ConfigSource, LayerFile, load_config

__all__ = [
    "BACKEND_NAME",
    "CONFIG_FILE_NAME",
    "DEFAULT_DATA_DIR",
    "REMOTE_LOG_DIR",
    "AWSBatchConfig",
    "AWSEC2Config",
    "BackendConfig",
    "BatchBackendConfig",
    "Config",
    "ConfigSource",
    "EC2BackendConfig",
    "GitSourceConfig",
    "LayerFile",
    "LocalBackendConfig",
    "PBSBackendConfig",
    "PathSourceConfig",
    "PricingConfig",
    "SGEBackendConfig",
    "SSHConfig",
    "Settings",
    "SlurmBackendConfig",
    "SourceConfig",
    "WorkflowConfig",
    "WorkflowGitConfig",
    "find_config_path",
    "find_project_path",
    "load_config",
    "load_file",
    "parse_config",
    "shares_filesystem",
]
