"""The whole configuration: one section per TOML table, and the environment variable names of its keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_type_hints

import msgspec

from sup.config.features import (
    BackupConfig,
    BlobsConfig,
    CallsConfig,
    EmailConfig,
    JobsConfig,
    MediaConfig,
    PluginsConfig,
    PushConfig,
    StickersConfig,
    StoriesConfig,
)
from sup.config.service import (
    AuthConfig,
    BusConfig,
    CryptoConfig,
    DatabaseConfig,
    LoggingConfig,
    MetricsConfig,
    RateLimitConfig,
    SecurityConfig,
    ServerConfig,
    WebSocketConfig,
)


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    auth: AuthConfig = AuthConfig()
    ratelimit: RateLimitConfig = RateLimitConfig()
    bus: BusConfig = BusConfig()
    websocket: WebSocketConfig = WebSocketConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()
    security: SecurityConfig = SecurityConfig()
    crypto: CryptoConfig = CryptoConfig()
    jobs: JobsConfig = JobsConfig()
    blobs: BlobsConfig = BlobsConfig()
    media: MediaConfig = MediaConfig()
    stories: StoriesConfig = StoriesConfig()
    stickers: StickersConfig = StickersConfig()
    backup: BackupConfig = BackupConfig()
    plugins: PluginsConfig = PluginsConfig()
    calls: CallsConfig = CallsConfig()
    email: EmailConfig = EmailConfig()
    push: PushConfig = PushConfig()

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
