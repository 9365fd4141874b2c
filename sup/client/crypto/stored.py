"""Key state as this device's store keeps it: JSON, with bytes as base64 text."""

from __future__ import annotations

import base64


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str, size: int | None = None) -> bytes:
    """The bytes back; with `size`, a value of another length is refused (ValueError), not used."""
    raw = base64.b64decode(text, validate=True)
    if size is not None and len(raw) != size:
        raise ValueError(f"expected {size} bytes, got {len(raw)}")
    return raw
