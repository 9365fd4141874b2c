"""The whole configuration: one section per TOML table, and the environment variable names of its keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_type_hints

import msgspec

from sup.config import features, service


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    server: service.ServerConfig = service.ServerConfig()
    database: service.DatabaseConfig = service.DatabaseConfig()
    auth: service.AuthConfig = service.AuthConfig()
    ratelimit: service.RateLimitConfig = service.RateLimitConfig()
    bus: service.BusConfig = service.BusConfig()
    websocket: service.WebSocketConfig = service.WebSocketConfig()
    logging: service.LoggingConfig = service.LoggingConfig()
    metrics: service.MetricsConfig = service.MetricsConfig()
    security: service.SecurityConfig = service.SecurityConfig()
    crypto: service.CryptoConfig = service.CryptoConfig()
    jobs: features.JobsConfig = features.JobsConfig()
    blobs: features.BlobsConfig = features.BlobsConfig()
    media: features.MediaConfig = features.MediaConfig()
    stories: features.StoriesConfig = features.StoriesConfig()
    stickers: features.StickersConfig = features.StickersConfig()
    backup: features.BackupConfig = features.BackupConfig()
    plugins: features.PluginsConfig = features.PluginsConfig()
    calls: features.CallsConfig = features.CallsConfig()
    email: features.EmailConfig = features.EmailConfig()
    push: features.PushConfig = features.PushConfig()

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
