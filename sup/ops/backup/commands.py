"""`sup backup create | verify | restore`: the steps of each, in order."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sup import __version__
from sup.config import Config
from sup.db.database import open_database
from sup.db.sqlite import path_from_url
from sup.keys import SECRETS_FILE
from sup.ops.backup.archive import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    POSTGRES_FILE,
    SQLITE_FILE,
    Outcome,
    check_blob_names,
    check_files,
    describe,
    hash_file,
    now_iso,
    opened,
    read_manifest,
    target_free,
    write_json,
    write_tar,
)
from sup.ops.backup.blobs import check_objects_in_store, copy_blobs, restore_blobs
from sup.ops.backup.database import (
    SEQUENCE_GAP,
    after_restore,
    postgres_snapshot,
    restore_postgres,
    restore_sqlite_file,
    sqlite_snapshot,
    unknown_migrations,
    verify_postgres,
    verify_sqlite,
)
from sup.ops.backup.masterkey import check_secrets, copy_secrets, secrets_plan, write_secrets
from sup.ops.progress import Progress
from sup.ops.tables import (
    OpsError,
)


async def create_backup(
    config: Config,
    target: Path,
    *,
    archive: bool = False,
    include_s3_objects: bool = False,
    config_file: Path | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Take a consistent backup of the running (or stopped) install into `target`."""
    progress = progress or Progress.silent()
    target = Path(target)
    if archive and target.suffix != ".tar":
        target = target.with_name(target.name + ".tar")
    target_free(target)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    work = target.parent / f".{target.name}.work"
    if work.exists():  # left by a backup that was killed
        await asyncio.to_thread(shutil.rmtree, work)
    work.mkdir(mode=0o700)
    started = time.monotonic()
    created_at = now_iso()
    files: dict[str, Any] = {}
    try:
        with progress.task("database snapshot", unit="steps") as task:
            if config.database_url.startswith("sqlite:"):
                source = path_from_url(config.database_url)
                snapshot = await asyncio.to_thread(sqlite_snapshot, source, work / SQLITE_FILE)
            else:
                snapshot = await postgres_snapshot(config.database_url, work / POSTGRES_FILE)
            task.advance()
        size, digest = await asyncio.to_thread(hash_file, work / snapshot.info["file"])
        files[snapshot.info["file"]] = {"size": size, "sha256": digest}
        blobs = await copy_blobs(config, work, snapshot.keys, include_s3_objects, files, progress)
        secrets_info = await asyncio.to_thread(copy_secrets, config, work, files, config_file)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "sup_version": __version__,
            "created_at": created_at,
            "took_seconds": 0.0,
            "database": snapshot.info,
            "blobs": blobs,
            "secrets": secrets_info,
            "files": files,
        }
        await asyncio.to_thread(os.sync)  # every copied file on disk before the manifest says it is there
        manifest["took_seconds"] = round(time.monotonic() - started, 3)
        await asyncio.to_thread(write_json, work / MANIFEST, manifest)
        if archive:
            with progress.task("writing archive", unit="steps") as task:
                await asyncio.to_thread(write_tar, work, target)
                task.advance()
            await asyncio.to_thread(shutil.rmtree, work)
        else:
            # rename(2) replaces an empty directory: a backup appears complete or not at all.
            await asyncio.to_thread(os.replace, work, target)
    except BaseException:
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, work, True))
        raise
    outcome = Outcome(target, manifest)
    describe(outcome)
    if blobs["missing"]:
        outcome.problems.append(
            f"{len(blobs['missing'])} blob(s) named by the database were not found in the blob store "
            f"(listed in {MANIFEST} under blobs.missing): files that cannot be restored"
        )
    if blobs["corrupt"]:
        outcome.problems.append(
            f"{len(blobs['corrupt'])} blob(s) in the blob store do not match their hash (blobs.corrupt): "
            "damaged on disk, left out"
        )
    if secrets_info["source"] == "configuration":
        outcome.warnings.append(
            "the master secret is set in the configuration (security.secret_key), so it is not in the backup: "
            "keep it with the backup"
        )
    elif secrets_info["source"] is None:
        outcome.warnings.append(f"no {SECRETS_FILE} in {config.data_dir}: the backup holds no master secret")
    return outcome


async def verify_backup(
    source: Path, config: Config, *, scratch_database_url: str | None = None, progress: Progress | None = None
) -> Outcome:
    """Check a backup as far as can be without restoring it over anything: files, database, blobs, secrets."""
    progress = progress or Progress.silent()
    with opened(source) as root:
        manifest = read_manifest(root)
        outcome = Outcome(Path(source), manifest)
        problems = outcome.problems
        await check_files(root, manifest, problems, progress)
        database = manifest["database"]
        file = root / database["file"]
        with progress.task("restoring the database into a scratch copy", unit="steps") as task:
            if database["dialect"] == "sqlite":
                await asyncio.to_thread(verify_sqlite, file, manifest, problems)
            else:
                server = scratch_database_url or config.database_url
                if not server.startswith(("postgresql:", "postgres:")):
                    raise OpsError("a Postgres backup: name a server to restore it into with --scratch-database-url")
                await verify_postgres(file, server, manifest, problems)
            task.advance()
        unknown = unknown_migrations(database)
        if unknown:
            outcome.warnings.append(
                f"the backup has migrations this SUP does not know ({unknown}): restore it with that SUP"
            )
        entries = await asyncio.to_thread(check_blob_names, root, manifest, problems)
        blobs = manifest["blobs"]
        for key in blobs["missing"]:
            problems.append(f"blob {key}: named by the database but missing when the backup was taken")
        if not blobs["included"]:
            await check_objects_in_store(entries, blobs, config, outcome, progress)
        check_secrets(root, manifest, problems)
        describe(outcome)
        outcome.facts.append(f"files: {len(manifest['files'])} checked against their SHA-256")
    return outcome


async def restore_backup(
    source: Path,
    config: Config,
    *,
    force: bool = False,
    gap: int = SEQUENCE_GAP,
    progress: Progress | None = None,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> Outcome:
    """Put a backup in place of the configured database, blob store and secret. SUP must be stopped."""
    progress = progress or Progress.silent()
    with opened(source) as root:
        manifest = read_manifest(root)
        outcome = Outcome(Path(source), manifest)
        damaged: list[str] = []
        await check_files(root, manifest, damaged, progress)
        entries = await asyncio.to_thread(check_blob_names, root, manifest, damaged)
        if damaged:
            raise OpsError("the backup is damaged, nothing was restored: " + "; ".join(damaged[:5]))
        database = manifest["database"]
        unknown = unknown_migrations(database)
        if unknown:
            raise OpsError(f"the backup has migrations this SUP does not know ({unknown}): restore it with a newer SUP")
        configured = "sqlite" if config.database_url.startswith("sqlite:") else "postgres"
        if configured != database["dialect"]:
            raise OpsError(
                f"this is a {database['dialect']} backup and the configured database is {configured}: restore it into "
                f"a {database['dialect']} database, then move with `sup migrate-backend`"
            )
        secret = secrets_plan(root, manifest, config, force, outcome)
        file = root / database["file"]
        with progress.task("restoring the database", unit="steps") as task:
            if configured == "sqlite":
                await asyncio.to_thread(restore_sqlite_file, file, path_from_url(config.database_url), force)
            else:
                await restore_postgres(file, config.database_url, force)
            task.advance()
        db = await open_database(config.database_url, readers=1, pool_min=1, pool_max=1)
        try:
            told = await after_restore(db, gap, now_ms())
        finally:
            await db.close()
        describe(outcome)
        outcome.facts.append(
            f"after the restore: event and message numbers moved on by {gap}; one-time prekeys cleared, "
            f"{told} device(s) asked for new ones"
        )
        await restore_blobs(root, manifest, entries, config, outcome, progress)
        if secret is not None:
            await asyncio.to_thread(write_secrets, config, secret)
            outcome.facts.append(f"secrets: {SECRETS_FILE} restored")
    return outcome
