"""Integers from clients: one strict parser for every integer that arrives as text.

Path segments, query parameters and cursors are text. Python's `int()` and `str.isdigit()`
accept far more than a client should send (`"²"`, `"١٢"`, `" 1"`, `"1_000"`), and nothing
stops a number the database cannot hold, so a value once parsed here is always one a
BIGINT column takes. JSON bodies are bounded by their schemas instead (`Meta(le=...)`).
"""

from __future__ import annotations

import re

from sup.errors import Code, DomainError

INT64_MAX = 2**63 - 1  # the largest BIGINT (Postgres) / INTEGER (SQLite)
_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: \d and isdigit() take every script's digits


def parse_int(text: str, field: str, *, low: int = 0, high: int = INT64_MAX) -> int:
    """`text` as an integer from `low` to `high`, written in ASCII digits; else 422 naming `field`."""
    if _DIGITS.fullmatch(text) is not None:
        value = int(text)
        if low <= value <= high:
            return value
    raise DomainError(Code.VALIDATION_FAILED, f"{field}: expected a whole number from {low} to {high}.", field=field)
