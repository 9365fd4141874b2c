"""The master secret in a backup: copied with its fingerprint, checked, and written back only with consent."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sup.config import Config
from sup.keys import SECRETS_FILE
from sup.ops.backup.archive import (
    CONFIG_IN_BACKUP,
    SECRETS_IN_BACKUP,
    Outcome,
    copy_hashing,
    fingerprint,
    private_file,
)
from sup.ops.tables import (
    OpsError,
)


def copy_secrets(config: Config, work: Path, files: dict[str, Any], config_file: Path | None) -> dict[str, Any]:
    info: dict[str, Any]
    if config.security.secret_key:
        info = {"source": "configuration", "fingerprint": fingerprint(config.security.secret_key.encode())}
    else:
        path = config.data_dir / SECRETS_FILE
        if path.exists():
            size, digest = copy_hashing(path, work / SECRETS_IN_BACKUP)
            files[SECRETS_IN_BACKUP] = {"size": size, "sha256": digest}
            master = json.loads(path.read_text())["master"].encode()
            info = {"source": SECRETS_FILE, "file": SECRETS_IN_BACKUP, "fingerprint": fingerprint(master)}
        else:
            info = {"source": None}
    if config_file is not None and config_file.is_file():
        size, digest = copy_hashing(config_file, work / CONFIG_IN_BACKUP)
        files[CONFIG_IN_BACKUP] = {"size": size, "sha256": digest}
        info["config_file"] = CONFIG_IN_BACKUP
    return info


def check_secrets(root: Path, manifest: dict[str, Any], problems: list[str]) -> None:
    info = manifest["secrets"]
    if "file" not in info:
        return
    try:
        master = json.loads((root / info["file"]).read_text())["master"].encode()
    except (OSError, ValueError, KeyError) as exc:
        problems.append(f"secrets: {info['file']} cannot be read: {exc}")
        return
    if fingerprint(master) != info["fingerprint"]:
        problems.append("secrets: the master secret is not the one the manifest names")


# -- restore ----------------------------------------------------------------------------------


def secrets_plan(root: Path, manifest: dict[str, Any], config: Config, force: bool, outcome: Outcome) -> bytes | None:
    """The secrets.json to write (None: nothing to write); refuses to replace a different one without --force."""
    info = manifest["secrets"]
    if config.security.secret_key:
        if info.get("fingerprint") and fingerprint(config.security.secret_key.encode()) != info["fingerprint"]:
            outcome.warnings.append(
                "the configured security.secret_key is not the secret this backup was taken with: access tokens end "
                "(clients log in again with their refresh tokens) and 2FA secrets cannot be read"
            )
        return None
    if "file" not in info:
        if info.get("source") == "configuration":
            outcome.warnings.append(
                "the backup was taken with security.secret_key set: set the same value in the configuration"
            )
        return None
    data = (root / info["file"]).read_bytes()
    existing = config.data_dir / SECRETS_FILE
    if existing.exists() and existing.read_bytes() != data and not force:
        raise OpsError(f"{existing} holds another master secret: add --force to replace it with the backup's")
    return data


def write_secrets(config: Config, data: bytes) -> None:
    path = config.data_dir / SECRETS_FILE
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = config.data_dir / f".{SECRETS_FILE}.restoring"
    partial.unlink(missing_ok=True)
    with os.fdopen(private_file(partial), "wb") as writer:
        writer.write(data)
        writer.flush()
        os.fsync(writer.fileno())
    os.replace(partial, path)
