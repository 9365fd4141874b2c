"""Configuration: typed, frozen, one section per TOML table.

Sources, later wins: built-in defaults, `sup.toml`, `SUP_<SECTION>_<KEY>` environment
variables (a few have short aliases, e.g. `SUP_PORT`). Every setting is declared once with
its documentation, in `tables.py` (one section per table); `settings.py` puts the sections
together as `Config`. `sup.toml.example` is generated from these declarations (`sup init`, by
`rendering.py`), so the example cannot drift from the code; `loading.py` reads the file and the
environment.
"""

from sup.config.loading import ConfigError, load_config
from sup.config.rendering import example_toml, settings_reference
from sup.config.settings import ENV_ALIASES, ENV_NOT_SETTINGS, Config, env_name, sections
from sup.config.tables import (
    AuthConfig,
    BackupConfig,
    BlobsConfig,
    BusConfig,
    CallsConfig,
    CryptoConfig,
    DatabaseConfig,
    EmailConfig,
    JobsConfig,
    LoggingConfig,
    MediaConfig,
    MetricsConfig,
    MiB,
    PluginsConfig,
    Port,
    PushConfig,
    RateLimitConfig,
    SecurityConfig,
    ServerConfig,
    StickersConfig,
    StoriesConfig,
    WebSocketConfig,
)

__all__ = [
    "ENV_ALIASES",
    "ENV_NOT_SETTINGS",
    "AuthConfig",
    "BackupConfig",
    "BlobsConfig",
    "BusConfig",
    "CallsConfig",
    "Config",
    "ConfigError",
    "CryptoConfig",
    "DatabaseConfig",
    "EmailConfig",
    "JobsConfig",
    "LoggingConfig",
    "MediaConfig",
    "MetricsConfig",
    "MiB",
    "PluginsConfig",
    "Port",
    "PushConfig",
    "RateLimitConfig",
    "SecurityConfig",
    "ServerConfig",
    "StickersConfig",
    "StoriesConfig",
    "WebSocketConfig",
    "env_name",
    "example_toml",
    "load_config",
    "sections",
    "settings_reference",
]
