"""Backups: `sup backup create | verify | restore`, and what the scheduled backup runs.

A backup is one directory (or a .tar of it):

    manifest.json          versions, what is inside, and the size and SHA-256 of every other file
    database/sup.db        SQLite: an online snapshot (the backup API, one step: one read transaction)
    database/sup.pgdump    Postgres: pg_dump --format=custom, taken in an exported snapshot
    blobs.json             every blob the snapshot names: key, size, SHA-256 (the key is the hash)
    blobs/ab/cd/<key>      the blobs themselves (disk storage; S3 with --include-s3-objects)
    secrets/secrets.json   the master secret, unless it is set in the configuration
    config/sup.toml        the configuration file in use, for reference (restore never writes it)

Consistency while SUP serves: the database snapshot is taken first and the blobs it names are
copied after. Blobs are content-addressed and never change, so a copy made later is the same
blob. A blob written after the snapshot is not needed by it. A blob deleted after the snapshot
could be missed, but SUP deletes a blob only `RELEASE_DELAY_MS` (10 minutes) after the last row
naming it went (sup/domain/files.py), so a blob copy that ends within 10 minutes of the
snapshot finds every blob; a missing one is listed in the manifest and makes `create` fail.

The modules: `archive` (the format, and reading a backup back), `database` (snapshot, scratch check,
restore, and what a restore changes after), `blobs`, `masterkey` (the master secret), and
`commands` (create, verify and restore, step by step).
"""

from sup.ops.backup.archive import MANIFEST, Outcome, check_files, fingerprint, opened, read_manifest
from sup.ops.backup.blobs import blobs_url
from sup.ops.backup.commands import create_backup, restore_backup, verify_backup
from sup.ops.backup.database import SEQUENCE_GAP, after_restore

__all__ = [
    "MANIFEST",
    "SEQUENCE_GAP",
    "Outcome",
    "after_restore",
    "blobs_url",
    "check_files",
    "create_backup",
    "fingerprint",
    "opened",
    "read_manifest",
    "restore_backup",
    "verify_backup",
]
