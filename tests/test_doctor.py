"""`sup doctor` on real installs: what it finds, and its exit code."""

from __future__ import annotations

import os
from pathlib import Path

from tests.processes import sup, sup_env


async def test_a_healthy_install_has_no_problems(tmp_path: Path):
    env = sup_env(tmp_path / "data", SUP_BACKUP_DIR=str(tmp_path / "backups"))
    code, _, err = await sup("migrate", "up", env=env)
    assert code == 0, err
    (tmp_path / "data").chmod(0o700)
    code, out, err = await sup("doctor", env=env)
    assert code == 0, out + err
    for check in ("data_dir", "database", "schema", "clock", "blobs", "disk", "image child", "ffmpeg child"):
        assert any(line.startswith("ok") and f" {check}: " in line for line in out.splitlines()), (check, out)
    assert "wrote, read and deleted a probe blob" in out
    assert out.rstrip().endswith("0 problem(s), 2 warning(s)")  # no secrets.json yet, no backup yet


async def test_problems_are_named_with_their_fix_and_fail(tmp_path: Path):
    env = sup_env(tmp_path / "data", SUP_DATABASE_AUTO_MIGRATE="false")
    code, _, err = await sup("migrate", "up", env=env)
    assert code == 0, err
    secrets = tmp_path / "data" / "secrets.json"
    secrets.write_text('{"master": "x"}')
    secrets.chmod(0o644)
    code, _, err = await sup("migrate", "down", env=env)
    assert code == 0, err
    code, out, _ = await sup("doctor", "--quiet", env=env)
    assert code == 1
    lines = out.splitlines()
    assert f"PROBLEM secrets: {secrets} is readable by others (644) -> chmod 600 {secrets}" in lines[0]
    assert any(line.startswith("PROBLEM schema: 1 migration(s) pending and auto_migrate is off") for line in lines)
    assert not any(line.startswith("ok") for line in lines)


async def test_a_bad_setting_is_one_problem(tmp_path: Path):
    env = sup_env(tmp_path / "data", SUP_BLOBS_URL="ftp://nowhere")
    code, out, _ = await sup("doctor", env=env)
    assert code == 1
    assert out.startswith("PROBLEM config: blobs.url")
    assert os.listdir(tmp_path) == []  # nothing created
