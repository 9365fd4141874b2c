"""Time-ordered identifiers (UUIDv7, RFC 9562)."""

import os
import re
import time


def uuid7(now_ms: int | None = None) -> str:
    """A UUIDv7 string: 48-bit millisecond timestamp, then 74 random bits."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b, 62 bits
    h = f"{value:032x}"  # what str(uuid.UUID(int=value)) gives, without the object (one per message)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_uuid(value: object) -> bool:
    """A UUID in its 36-character text form (checked on every send: a regex, not uuid.UUID)."""
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


def canonical_id(value: str) -> str | None:
    """`value` in the one form ids are stored, compared and counted in: lower case, hyphens,
    36 characters. None if it is no UUID.

    Postgres compares UUIDs regardless of case and SQLite compares text exactly, so an id is
    made canonical once, where it enters, before it reaches a rate limit, a cache or SQL.
    """
    return value.lower() if _UUID.fullmatch(value) is not None else None
