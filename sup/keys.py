"""The server's secrets: generated on first start, kept in <data_dir>/secrets.json (0600).

Everything is derived (HKDF) from one master secret, so operators who run several
processes only have to share that one value (`security.secret_key`).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRETS_FILE = "secrets.json"


@dataclass(frozen=True)
class ServerKeys:
    access_tokens: bytes
    refresh_rotation: bytes
    totp_encryption: bytes
    recovery_codes: bytes
    media_urls: bytes
    login_addresses: bytes
    call_rooms: bytes
    turn: bytes
    vapid: bytes  # the seed of the VAPID key pair (RFC 8292) that signs Web Push requests

    @classmethod
    def derive(cls, master: bytes) -> ServerKeys:
        def sub(label: str) -> bytes:
            return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()).derive(master)

        return cls(
            access_tokens=sub("sup access tokens v1"),
            refresh_rotation=sub("sup refresh rotation v1"),
            totp_encryption=sub("sup totp secrets v1"),
            recovery_codes=sub("sup recovery codes v1"),
            media_urls=sub("sup media urls v1"),
            login_addresses=sub("sup login addresses v1"),
            call_rooms=sub("sup call rooms v1"),
            turn=sub("sup turn secret v1"),
            vapid=sub("sup vapid key v1"),
        )

    def vapid_key(self) -> ec.EllipticCurvePrivateKey:
        """The server's VAPID key pair (P-256), derived like every other secret: every process that
        shares the master secret signs with the same key, and push services keep accepting it."""
        order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # of P-256's group
        return ec.derive_private_key(int.from_bytes(self.vapid, "big") % (order - 1) + 1, ec.SECP256R1())


def vapid_public_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The uncompressed point (65 bytes): what browsers take as PushManager's applicationServerKey."""
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def load_or_create_master(data_dir: Path, configured: str = "") -> bytes:
    """The configured secret, else the one in data_dir, else a new one written there."""
    if configured:
        return configured.encode()
    path = data_dir / SECRETS_FILE
    if not path.exists():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = data_dir / f".{SECRETS_FILE}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"master": secrets.token_urlsafe(48)}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            # link() fails if another process created the file first: theirs wins, ours goes.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, 0o600)
    return json.loads(path.read_text())["master"].encode()
