"""What the CLI refuses or reports before it can do harm: `sup config check` reaches what the
configuration names, `sup run` says in one line which extra is missing, `sup migrate status`
creates nothing, `sup admin invite` refuses codes that make no sense, `sup init` writes a
private file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL, require_postgres
from tests.processes import sup, sup_env


def _without(tmp_path: Path, *packages: str) -> dict[str, str]:
    """PYTHONPATH for a `sup` that cannot import these packages, as if their extra were not installed."""
    stubs = tmp_path / "stubs"
    for package in packages:
        (stubs / package).mkdir(parents=True, exist_ok=True)
        (stubs / package / "__init__.py").write_text(f'raise ImportError("No module named {package!r}")\n')
    return {"PYTHONPATH": str(stubs)}


@pytest.mark.parametrize(
    "setting, package, extra",
    [
        ({"SUP_BUS_URL": "redis://127.0.0.1:6379/0"}, "redis", "redis"),
        ({"SUP_BLOBS_URL": "s3://sup-media"}, "aiobotocore", "s3"),
    ],
)
async def test_a_missing_extra_is_one_line_at_check_and_at_run(tmp_path: Path, setting, package, extra):
    env = sup_env(tmp_path, **setting, **_without(tmp_path, package))
    code, out, err = await sup("config", "check", env=env)
    assert code == 2, err
    assert "valid" not in out
    assert err.count("\n") == 1 and f"sup-messenger[{extra}]" in err
    code, _, err = await sup("run", "--port", "0", env=env)
    assert code == 2
    assert err.count("\n") == 1 and f"sup-messenger[{extra}]" in err, err
    assert "Traceback" not in err


async def test_config_check_reaches_the_database_and_redis(tmp_path: Path):
    env = sup_env(
        tmp_path,
        SUP_DATABASE_URL="postgresql://sup:hunter2-secret@127.0.0.1:1/sup",
        SUP_BUS_URL="redis://127.0.0.1:1/0",
    )
    code, out, err = await sup("config", "check", env=env)
    assert code == 1
    assert "valid" not in out
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert any(line.startswith("sup: database: postgresql://sup:***@127.0.0.1:1/sup: ") for line in lines), err
    assert any(line.startswith("sup: bus: redis://127.0.0.1:1/0: ") for line in lines), err
    assert "hunter2" not in err


async def test_config_check_gives_up_on_a_silent_service_after_the_timeout(tmp_path: Path):
    """A host that accepts connections and never answers (a firewall, a wrong port) costs --timeout, not minutes."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        env = sup_env(
            tmp_path,
            SUP_DATABASE_URL=f"postgresql://sup@127.0.0.1:{port}/sup",
            SUP_BUS_URL=f"redis://127.0.0.1:{port}/0",
        )
        started = time.monotonic()
        code, _, err = await sup("config", "check", "--timeout", "1", env=env)
        assert time.monotonic() - started < 20
    finally:
        for writer in held:
            writer.close()
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
    assert code == 1
    assert len(err.splitlines()) == 2, err
    assert "sup: database: no answer within 1 s" in err


async def test_config_check_says_what_it_reached(database_url: str, tmp_path: Path):
    if database_url.startswith("postgres"):
        await require_postgres()
    code, out, err = await sup("config", "check", env=sup_env(tmp_path, database_url))
    assert code == 0, err
    assert out.startswith("configuration is valid")
    assert "database: " in out and "bus: memory://" in out


async def test_config_check_pings_redis(tmp_path: Path):
    from tests.conftest import require_redis

    await require_redis()
    code, out, err = await sup("config", "check", env=sup_env(tmp_path, SUP_BUS_URL=REDIS_URL))
    assert code == 0, err
    assert f"bus: redis at {REDIS_URL} answers" in out


async def test_config_check_heads_the_bucket_and_never_creates_it(tmp_path: Path, moto_s3):
    s3 = {
        "SUP_BLOBS_URL": "s3://not-there-yet/sup",
        "SUP_BLOBS_S3_ENDPOINT_URL": moto_s3.endpoint_url,
        "SUP_BLOBS_S3_ACCESS_KEY_ID": "testing",
        "SUP_BLOBS_S3_SECRET_ACCESS_KEY": "testing",
        "SUP_BLOBS_S3_ADDRESSING_STYLE": "path",
    }
    code, _, err = await sup("config", "check", env=sup_env(tmp_path, **s3))
    assert code == 1 and err.startswith("sup: blobs: ") and len(err.splitlines()) == 1, err
    # With s3_create_bucket, `sup run` would create it: fine, and still not created by the check.
    code, out, err = await sup("config", "check", env=sup_env(tmp_path, **s3, SUP_BLOBS_S3_CREATE_BUCKET="true"))
    assert code == 0 and "no such bucket yet" in out, err
    code, _, _ = await sup("config", "check", env=sup_env(tmp_path, **s3))
    assert code == 1


async def test_migrate_status_creates_no_database(tmp_path: Path):
    data_dir = tmp_path / "data"
    code, out, err = await sup("migrate", "status", env=sup_env(data_dir), cwd=tmp_path)
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"no database yet at {data_dir / 'sup.db'}: ")
    assert "pending  0001_accounts" in out
    assert not data_dir.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "option",
    [
        ["--uses", "0"],
        ["--uses", "-1"],
        ["--count", "-1"],
        ["--count", "0"],
        ["--count", "1000000"],
        ["--expires-days", "-5"],
        ["--expires-days", "0.00001"],
        ["--expires-days", "0"],
        ["--expires-days", "nan"],
        ["--expires-days", "100000"],
    ],
)
async def test_invite_options_that_make_no_sense_are_refused(tmp_path: Path, option: list[str]):
    data_dir = tmp_path / "data"
    code, out, err = await sup("admin", "invite", *option, env=sup_env(data_dir))
    assert code == 2
    assert out == "" and err.count("\n") == 1 and option[0] in err, err
    assert not data_dir.exists()  # refused before anything was opened


async def test_invites_with_a_lifetime_or_none(tmp_path: Path):
    env = sup_env(tmp_path)
    code, out, err = await sup("admin", "invite", "--expires-days", "0.001", "--count", "2", env=env)
    assert code == 0 and len(out.split()) == 2, err
    code, out, err = await sup("admin", "invite", "--never-expires", env=env)
    assert code == 0 and out.startswith("supi_"), err


async def test_files_sup_creates_are_private(tmp_path: Path):
    umask = os.umask(0o022)  # the usual one, which would leave a plain write world-readable
    try:
        config = tmp_path / "sup.toml"
        assert (await sup("init", str(config), env=sup_env(tmp_path)))[0] == 0
        assert stat.S_IMODE(config.stat().st_mode) == 0o640
        config.chmod(0o666)
        assert (await sup("init", str(config), "--force", env=sup_env(tmp_path)))[0] == 0
        assert stat.S_IMODE(config.stat().st_mode) == 0o640
        data_dir = tmp_path / "srv" / "sup"
        code, _, err = await sup("admin", "invite", env=sup_env(data_dir))
        assert code == 0, err
    finally:
        os.umask(umask)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "sup.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((data_dir / "secrets.json").stat().st_mode) == 0o600
