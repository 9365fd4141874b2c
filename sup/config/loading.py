"""Loading the configuration: the TOML file, then `SUP_*` variables, validated and checked for consistency."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from typing import Annotated, Any, get_args, get_origin

import msgspec

from sup.config.settings import ENV_ALIASES, ENV_NOT_SETTINGS, Config, env_name, field_types, sections
from sup.config.tables import PluginsConfig


class ConfigError(Exception):
    """A setting is unknown or invalid. The message names the key."""


def _from_env_string(raw: str, field_type: Any, name: str) -> Any:
    base = get_args(field_type)[0] if get_origin(field_type) is Annotated else field_type
    if get_origin(base) is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    if base is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name}: expected true or false, got {raw!r}")
    if base is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if base is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    return raw


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    known: dict[str, tuple[str, str]] = dict(ENV_ALIASES)
    for section, struct in sections().items():
        for key in struct.__struct_fields__:
            known[env_name(section, key)] = (section, key)
    given: dict[tuple[str, str], str] = {}
    for name, value in sorted(environ.items()):
        if not name.startswith("SUP_") or name in ENV_NOT_SETTINGS:
            continue
        if name not in known and _plugin_setting(raw, environ, name):
            continue
        if name not in known:
            raise ConfigError(f"{name}: unknown setting (see sup.toml.example for the valid ones)")
        section, key = known[name]
        other = given.setdefault((section, key), name)
        if other != name and environ[other] != value:
            raise ConfigError(f"{name}: conflicts with {other}, which sets {section}.{key} too")
        field_type = field_types(sections()[section])[key]
        raw.setdefault(section, {})[key] = _from_env_string(value, field_type, name)


def _plugin_setting(raw: dict[str, Any], environ: Mapping[str, str], name: str) -> bool:
    """SUP_PLUGINS_<NAME>_<KEY> of an enabled plugin: put it in its table, as a string; False if it is not one."""
    prefix = env_name("plugins", "")
    if not name.startswith(prefix):
        return False
    enabled = raw.get("plugins", {}).get("enabled", [])
    if "SUP_PLUGINS_ENABLED" in environ:
        enabled = _from_env_string(environ["SUP_PLUGINS_ENABLED"], list[str], "SUP_PLUGINS_ENABLED")
    rest = name.removeprefix(prefix).lower()
    # The longest name wins: a plugin "my_push" takes SUP_PLUGINS_MY_PUSH_URL before a plugin "my" would.
    for plugin in sorted((p for p in enabled if isinstance(p, str)), key=len, reverse=True):
        if rest.startswith(plugin.lower() + "_") and len(rest) > len(plugin) + 1:
            tables = raw.setdefault("plugins", {}).setdefault("settings", {})
            tables.setdefault(plugin, {})[rest[len(plugin) + 1 :]] = environ[name]
            return True
    return False


def _gather_plugin_tables(raw: dict[str, Any]) -> None:
    """[plugins.<name>] tables go into plugins.settings, where the Config keeps them."""
    plugins = raw.get("plugins")
    if not isinstance(plugins, dict):
        return
    tables = {k: v for k, v in plugins.items() if isinstance(v, dict) and k not in PluginsConfig.__struct_fields__}
    if tables:
        settings = plugins.setdefault("settings", {})
        for name, table in tables.items():
            del plugins[name]
            if isinstance(settings, dict):
                settings[name] = {**table, **settings.get(name, {})}


_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


def _explain(error: msgspec.ValidationError) -> str:
    message = str(error)
    match = _AT_PATH.search(message)
    key = match.group(1) if match else ""
    message = _AT_PATH.sub("", message)
    unknown = re.match(r"Object contains unknown field `([^`]+)`", message)
    if unknown:
        full = f"{key}.{unknown.group(1)}" if key else unknown.group(1)
        return f"{full}: unknown setting"
    return f"{key or 'config'}: {message}"


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the Config from an optional TOML file and the environment; raise ConfigError."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for section, value in raw.items():
        if section in sections() and not isinstance(value, dict):
            raise ConfigError(f"{section}: expected a [{section}] table")
    _gather_plugin_tables(raw)
    _apply_env(raw, environ)
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc)) from None
    _check_consistency(config)
    return config


def _check_consistency(config: Config) -> None:
    url = config.database_url
    if not config.bus.url.startswith(("memory://", "redis://", "rediss://")):
        raise ConfigError("bus.url: use memory:// or redis://host:port/db")
    if not url.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ConfigError(
            f"database.url: unsupported scheme in {url.split(':', 1)[0]!r}; use sqlite:// or postgresql://"
        )
    if config.blobs.url and not config.blobs.url.startswith(("file:", "s3:")):
        raise ConfigError(
            f"blobs.url: unsupported scheme in {config.blobs.url.split(':', 1)[0]!r}; use file:// or s3://"
        )
    if config.database.pool_min > config.database.pool_max:
        raise ConfigError("database.pool_min: must not exceed database.pool_max")
    if config.security.secret_key and len(config.security.secret_key) < 32:
        raise ConfigError("security.secret_key: must be at least 32 characters")
    if config.email.smtp_host and not config.email.from_address:
        raise ConfigError("email.from_address: required with email.smtp_host (the sender of SUP's mail)")
    for proxy in config.server.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"server.trusted_proxies: {proxy!r} is not an IP address or network") from None
    for network in config.metrics.allow:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"metrics.allow: {network!r} is not an IP address or network") from None
    for entry in config.push.allow_hosts:
        if not entry.strip() or ("/" in entry and not _is_network(entry)):
            raise ConfigError(f"push.allow_hosts: {entry!r} is neither a host name nor an IP address or network")
    if config.push.contact and not config.push.contact.startswith(("mailto:", "https://")):
        raise ConfigError("push.contact: use mailto:you@example.org or an https:// URL (RFC 8292)")
    if config.metrics.token and len(config.metrics.token) < 16:
        raise ConfigError("metrics.token: must be at least 16 characters")


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True
