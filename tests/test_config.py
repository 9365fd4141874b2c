"""Configuration: defaults, file, environment, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sup.config import Config, ConfigError, example_toml, load_config, sections

ROOT = Path(__file__).resolve().parent.parent


def test_example_file_documents_every_setting_and_is_current():
    assert (ROOT / "sup.toml.example").read_text() == example_toml(), (
        "regenerate with `sup init sup.toml.example --force`"
    )
    text = example_toml()
    for section, struct in sections().items():
        assert f"[{section}]" in text
        for key in struct.__struct_fields__:
            assert f"# {key} = " in text, f"{section}.{key} is not documented"


def test_example_uncommented_is_a_valid_config_equal_to_the_defaults(tmp_path: Path):
    lines = [line[2:] if line.startswith("# ") and " = " in line else line for line in example_toml().splitlines()]
    path = tmp_path / "sup.toml"
    path.write_text("\n".join(lines))
    assert load_config(path, {}) == Config()


def test_defaults_need_no_file():
    config = load_config(None, {})
    assert config.server.host == "127.0.0.1" and config.server.port == 8080
    assert config.database_url.startswith("sqlite:///")


def test_environment_overrides_the_file(tmp_path: Path):
    path = tmp_path / "sup.toml"
    path.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[auth]\nregistration = "invite"\n')
    config = load_config(
        path, {"SUP_PORT": "9100", "SUP_AUTH_REGISTRATION": "closed", "SUP_SERVER_CORS_ORIGINS": "a,b"}
    )
    assert config.server.port == 9100
    assert config.server.host == "0.0.0.0"
    assert config.auth.registration == "closed"
    assert config.server.cors_origins == ["a", "b"]


@pytest.mark.parametrize(
    "toml, env, key",
    [
        ("[server]\nprot = 1\n", {}, "server.prot"),
        ("[serverr]\nport = 1\n", {}, "serverr"),
        ('[server]\nport = "x"\n', {}, "server.port"),
        ("[server]\nport = 70000\n", {}, "server.port"),
        ('[auth]\nregistration = "maybe"\n', {}, "auth.registration"),
        ("[auth]\naccess_token_ttl = 3600\n", {}, "auth.access_token_ttl"),
        ("[auth]\nargon2_memory_kib = 1024\n", {}, "auth.argon2_memory_kib"),
        ('[database]\nurl = "mysql://x"\n', {}, "database.url"),
        ('[blobs]\nurl = "ftp://files.example/sup"\n', {}, "blobs.url"),
        ('[bus]\nurl = "amqp://x"\n', {}, "bus.url"),
        ('[security]\nsecret_key = "short"\n', {}, "security.secret_key"),
        ('[server]\ntrusted_proxies = ["not-an-ip"]\n', {}, "server.trusted_proxies"),
        ('[metrics]\nallow = ["localhost"]\n', {}, "metrics.allow"),
        ('[metrics]\ntoken = "short"\n', {}, "metrics.token"),
        ('[logging]\nformat = "xml"\n', {}, "logging.format"),
        ("server = 5\n", {}, "server"),
        ("", {"SUP_PORT": "eighty"}, "SUP_PORT"),
        ("", {"SUP_SERVER_PROT": "1"}, "SUP_SERVER_PROT"),
        ("", {"SUP_RATELIMIT_ENABLED": "perhaps"}, "SUP_RATELIMIT_ENABLED"),
        ("", {"SUP_PORT": "1", "SUP_SERVER_PORT": "2"}, "SUP_SERVER_PORT"),
        ("not = [toml", {}, "not valid TOML"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, toml: str, env: dict, key: str):
    path = tmp_path / "sup.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, env)
    assert key in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.toml", {})


def test_configuration_doc_lists_every_setting():
    text = (ROOT / "docs" / "configuration.md").read_text()
    for section, struct in sections().items():
        assert f"### `[{section}]`" in text, section
        for key in struct.__struct_fields__:
            assert f"| `{key}` |" in text, f"{section}.{key} is missing from docs/configuration.md"
