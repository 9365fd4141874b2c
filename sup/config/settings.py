"""The whole configuration: one section per TOML table, and the environment variable names of its keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_type_hints

import msgspec

from sup.config import tables


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    server: tables.ServerConfig = tables.ServerConfig()
    database: tables.DatabaseConfig = tables.DatabaseConfig()
    auth: tables.AuthConfig = tables.AuthConfig()
    ratelimit: tables.RateLimitConfig = tables.RateLimitConfig()
    bus: tables.BusConfig = tables.BusConfig()
    websocket: tables.WebSocketConfig = tables.WebSocketConfig()
    logging: tables.LoggingConfig = tables.LoggingConfig()
    metrics: tables.MetricsConfig = tables.MetricsConfig()
    security: tables.SecurityConfig = tables.SecurityConfig()
    crypto: tables.CryptoConfig = tables.CryptoConfig()
    jobs: tables.JobsConfig = tables.JobsConfig()
    blobs: tables.BlobsConfig = tables.BlobsConfig()
    media: tables.MediaConfig = tables.MediaConfig()
    stories: tables.StoriesConfig = tables.StoriesConfig()
    stickers: tables.StickersConfig = tables.StickersConfig()
    backup: tables.BackupConfig = tables.BackupConfig()
    plugins: tables.PluginsConfig = tables.PluginsConfig()
    calls: tables.CallsConfig = tables.CallsConfig()
    email: tables.EmailConfig = tables.EmailConfig()
    push: tables.PushConfig = tables.PushConfig()

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'sup.db'}"


# Short names the issue tracker and the docs promise; everything else is SUP_<SECTION>_<KEY>.
ENV_ALIASES = {
    "SUP_HOST": ("server", "host"),
    "SUP_PORT": ("server", "port"),
    "SUP_DATA_DIR": ("server", "data_dir"),
    "SUP_SECRET_KEY": ("security", "secret_key"),
}
# SUP_* variables that are not settings.
ENV_NOT_SETTINGS = {"SUP_CONFIG"}


def sections() -> dict[str, type[msgspec.Struct]]:
    hints = get_type_hints(Config)
    return {name: hints[name] for name in Config.__struct_fields__}


def field_types(section: type[msgspec.Struct]) -> dict[str, Any]:
    return get_type_hints(section, include_extras=True)


def env_name(section: str, key: str) -> str:
    return f"SUP_{section}_{key}".upper()
