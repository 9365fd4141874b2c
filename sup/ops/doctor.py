"""`sup doctor`: what stands between this install and a healthy `sup run`, one line per finding.

It goes further than `sup config check` (whose probes it reuses): it writes and deletes a probe
blob, compares the clocks, starts the image and FFmpeg children as media processing does, and
looks at permissions, free space and backups. It changes nothing but its own probe blob.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import tempfile
import time
import wave
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sup.blobs.store import BlobSettings, open_blob_store
from sup.config import Config
from sup.db import migrations
from sup.db.database import open_database
from sup.db.sqlite import path_from_url
from sup.keys import SECRETS_FILE
from sup.ops.schedule import PREFIX
from sup.preflight import check_services, missing_drivers, one_line, sqlite_missing

Level = Literal["ok", "warning", "problem"]
GiB = 1024**3
LOW_SPACE = 1 * GiB
VERY_LOW_SPACE = 100 * 1024**2
CLOCK_WARN_SECONDS = 2.0  # access tokens and signed URLs carry expiry times
CLOCK_PROBLEM_SECONDS = 30.0  # TOTP codes are 30 s steps: beyond this, 2FA logins fail


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str
    text: str
    fix: str = ""

    def line(self) -> str:
        tag = {"ok": "ok", "warning": "WARNING", "problem": "PROBLEM"}[self.level]
        return f"{tag:<8}{self.check}: {self.text}" + (f" -> {self.fix}" if self.fix else "")


class _Findings(list[Finding]):
    def ok(self, check: str, text: str) -> None:
        self.append(Finding("ok", check, text))

    def warn(self, check: str, text: str, fix: str = "") -> None:
        self.append(Finding("warning", check, text, fix))

    def problem(self, check: str, text: str, fix: str = "") -> None:
        self.append(Finding("problem", check, text, fix))


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _config_file(findings: _Findings, config: Config, path: str | None) -> None:
    if path is None:
        findings.ok("config", "no sup.toml: defaults and SUP_* variables")
        return
    file = Path(path)
    holds_secrets = bool(
        config.security.secret_key
        or "@" in config.database.url
        or config.blobs.s3_secret_access_key
        or "@" in config.bus.url
    )
    mode = _mode(file)
    if holds_secrets and mode & 0o007:
        findings.problem("config", f"{file} holds secrets and is readable by everyone ({mode:o})", f"chmod 640 {file}")
    elif mode & 0o022:
        findings.warn("config", f"{file} is writable by others ({mode:o})", f"chmod 640 {file}")
    else:
        findings.ok("config", f"{file} is valid ({mode:o})")


def _data_dir(findings: _Findings, config: Config) -> None:
    path = config.data_dir
    if not path.exists():
        findings.warn("data_dir", f"{path} does not exist yet", "sup run creates it; or: install -d -m 0700 DIR")
        return
    info = path.stat()
    if info.st_uid != os.geteuid():
        findings.warn(
            "data_dir", f"{path} is owned by uid {info.st_uid}, this is uid {os.geteuid()}", "run as SUP's user"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        findings.problem("data_dir", f"{path} is not writable by this user", f"chown to SUP's user: {path}")
    elif info.st_mode & 0o077:
        findings.warn("data_dir", f"{path} can be read by others ({info.st_mode & 0o777:o})", f"chmod 700 {path}")
    else:
        findings.ok("data_dir", f"{path} (0{info.st_mode & 0o777:o})")


def _secrets(findings: _Findings, config: Config) -> None:
    if config.security.secret_key:
        findings.ok("secrets", "master secret set in the configuration (security.secret_key)")
        return
    path = config.data_dir / SECRETS_FILE
    if not path.exists():
        findings.warn("secrets", f"no {path} yet", "sup run creates it at the first start")
        return
    try:
        json.loads(path.read_text())["master"]
    except (OSError, ValueError, KeyError) as exc:
        findings.problem("secrets", f"{path} cannot be read: {one_line(exc)}", "restore it from a backup")
        return
    mode = _mode(path)
    if mode & 0o077:
        findings.problem(
            "secrets", f"{path} is readable by others ({mode:o})", f"chmod 600 {path} (SUP also does at start)"
        )
    else:
        findings.ok("secrets", f"{path} (0{mode:o})")


def _sqlite_file(findings: _Findings, config: Config) -> None:
    if not config.database_url.startswith("sqlite:") or sqlite_missing(config) is not None:
        return
    path = path_from_url(config.database_url)
    mode = _mode(path)
    if mode & 0o077:
        findings.problem("database", f"{path} (password hashes) is readable by others ({mode:o})", f"chmod 600 {path}")


async def _schema_and_clock(findings: _Findings, config: Config) -> None:
    if sqlite_missing(config) is not None:
        return  # check_services said so already
    db = await open_database(config.database_url, readers=1, pool_min=1, pool_max=1)
    try:
        state = await migrations.status(db)
        if state.unknown:
            findings.problem(
                "schema", f"migrations {state.unknown} are from a newer SUP", "run that version, or restore a backup"
            )
        elif state.pending and not config.database.auto_migrate:
            findings.problem(
                "schema", f"{len(state.pending)} migration(s) pending and auto_migrate is off", "sup migrate up"
            )
        elif state.pending:
            findings.warn("schema", f"{len(state.pending)} migration(s) pending", "applied at the next start")
        else:
            findings.ok("schema", f"version {state.applied[-1] if state.applied else 0}, up to date")
        if db.dialect == "sqlite":
            findings.ok("clock", "SQLite is on this machine: one clock")
            return
        before = time.time()
        theirs = float(await db.fetchval("SELECT extract(epoch FROM clock_timestamp())"))
        after = time.time()
        skew = theirs - (before + after) / 2
        text = f"the database's clock is {skew:+.2f} s from this machine's"
        fix = "run NTP (e.g. systemd-timesyncd or chrony) on both machines"
        if abs(skew) > CLOCK_PROBLEM_SECONDS:
            findings.problem("clock", text, fix)
        elif abs(skew) > CLOCK_WARN_SECONDS:
            findings.warn("clock", text, fix)
        else:
            findings.ok("clock", text)
    finally:
        await db.close()


async def _blob_probe(findings: _Findings, config: Config) -> None:
    import msgspec

    settings = BlobSettings(**{**msgspec.structs.asdict(config.blobs), "s3_create_bucket": False})
    store = await open_blob_store(settings, data_dir=config.data_dir)
    try:
        data = b"sup doctor probe " + os.urandom(32)  # random: never the same bytes as a real blob
        stored = await store.put_bytes(data)
        try:
            if await store.read_all(stored.key) != data:
                findings.problem("blobs", "a probe blob read back differs from what was written", "check the storage")
                return
        finally:
            await store.delete(stored.key)
        if await store.exists(stored.key):
            findings.problem("blobs", "a deleted probe blob is still there", "check the store's delete permission")
            return
    finally:
        await store.close()
    findings.ok("blobs", f"{config.blobs.url or 'file://<data_dir>/blobs'}: wrote, read and deleted a probe blob")


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    return path


def _disk_space(findings: _Findings, config: Config) -> None:
    places = {"data_dir": config.data_dir}
    if config.backup.dir:
        places["backup.dir"] = Path(config.backup.dir)
    for name, place in places.items():
        usage = shutil.disk_usage(_nearest_existing(place))
        free = usage.free
        text = f"{free / GiB:.1f} GiB free of {usage.total / GiB:.1f} GiB at {place}"
        if free < VERY_LOW_SPACE:
            findings.problem("disk", text, "free space: SQLite and uploads fail when the disk is full")
        elif free < LOW_SPACE or free < usage.total * 0.05:
            findings.warn("disk", text, "free space soon")
        else:
            findings.ok("disk", f"{name}: {text}")


def _tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + b"\xff\x00\x00" * 2 + b"\x00" + b"\x00\x00\xff" * 2)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


async def _image_child(findings: _Findings, config: Config) -> None:
    from sup.media.image_child import process_image_isolated

    started = time.monotonic()
    result = await process_image_isolated(
        _tiny_png(), max_pixels=config.media.max_image_pixels, timeout=config.media.probe_timeout_seconds
    )
    took = (time.monotonic() - started) * 1000
    findings.ok("image child", f"Pillow child decoded a probe image ({result.width}x{result.height}) in {took:.0f} ms")


async def _ffmpeg_child(findings: _Findings, config: Config) -> None:
    from sup.media.av_probe import probe_media

    with tempfile.TemporaryDirectory(prefix="sup-doctor-") as scratch:
        path = Path(scratch) / "probe.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(8000)
            out.writeframes(b"\x00\x00" * 1600)
        started = time.monotonic()
        result = await probe_media(
            path,
            kind="audio",
            timeout=config.media.probe_timeout_seconds,
            memory_limit=config.media.probe_memory_bytes,
        )
        took = (time.monotonic() - started) * 1000
    if not result.ok:
        findings.problem("ffmpeg child", f"the FFmpeg child failed on a probe file: {result.reason}", "pip install av")
    else:
        findings.ok("ffmpeg child", f"FFmpeg child read a probe file ({result.audio_codec}) in {took:.0f} ms")


def _backups(findings: _Findings, config: Config) -> None:
    if config.database_url.startswith(("postgresql:", "postgres:")) and shutil.which("pg_dump") is None:
        level = findings.problem if config.backup.dir else findings.warn
        level("backup", "pg_dump is not on PATH: Postgres cannot be backed up", "apt-get install postgresql-client")
    if not config.backup.dir:
        findings.warn("backup", "no scheduled backups", "set [backup] dir, or run `sup backup create` from cron")
        return
    directory = Path(config.backup.dir)
    if not directory.exists():
        findings.warn("backup", f"{directory} does not exist yet", "the first scheduled backup creates it")
        return
    if not os.access(directory, os.W_OK | os.X_OK):
        findings.problem("backup", f"{directory} is not writable by this user", f"chown to SUP's user: {directory}")
        return
    done = sorted(p for p in directory.glob(f"{PREFIX}*") if (p / "manifest.json").is_file())
    if not done:
        findings.warn("backup", f"no backup in {directory} yet", "sup run takes one at start")
        return
    age = (time.time() - done[-1].stat().st_mtime) / 3600
    if age > 2 * config.backup.every_hours:
        findings.warn("backup", f"the newest backup is {age:.1f} h old", "look for 'scheduled backup' in the log")
    else:
        findings.ok("backup", f"{len(done)} kept, the newest {age:.1f} h old")


async def _guarded(findings: _Findings, name: str, probe: Callable[[], Awaitable[None]], timeout: float) -> None:  # noqa: ASYNC109
    try:
        await asyncio.wait_for(probe(), timeout)
    except TimeoutError:
        findings.problem(name, f"no answer within {timeout:g} s")
    except Exception as exc:
        findings.problem(name, one_line(exc))


async def diagnose(config: Config, config_path: str | None, timeout: float = 10.0) -> list[Finding]:  # noqa: ASYNC109
    findings = _Findings()
    _config_file(findings, config, config_path)
    missing = missing_drivers(config)
    for line in missing.values():
        findings.problem("drivers", line, "install the extra it names")
    _data_dir(findings, config)
    _secrets(findings, config)
    _sqlite_file(findings, config)
    skip = frozenset({"data_dir", "blobs"} | {setting.split(".", 1)[0] for setting in missing})
    for check in await check_services(config, timeout, skip):
        if not check.ok:
            findings.problem(check.name, check.detail)
        else:
            findings.ok(check.name, check.detail)
    if "database" not in skip and not any(f.check == "database" and f.level == "problem" for f in findings):
        await _guarded(findings, "schema", lambda: _schema_and_clock(findings, config), timeout)
    if "blobs" not in {s.split(".", 1)[0] for s in missing}:
        await _guarded(findings, "blobs", lambda: _blob_probe(findings, config), timeout)
    _disk_space(findings, config)
    child_timeout = config.media.probe_timeout_seconds + 5
    await _guarded(findings, "image child", lambda: _image_child(findings, config), child_timeout)
    await _guarded(findings, "ffmpeg child", lambda: _ffmpeg_child(findings, config), child_timeout)
    _backups(findings, config)
    return list(findings)
