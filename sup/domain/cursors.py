"""Page cursors as the server writes them: `<number><separator><key>`, opaque to clients.

Every list reads its cursor back the same way, and refuses one it did not write in the same words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sup.errors import Code, DomainError
from sup.integers import parse_int

K = TypeVar("K")


def bad_cursor(field: str = "before") -> DomainError:
    return DomainError(Code.VALIDATION_FAILED, f"{field}: not a cursor this server gave out.", field=field)


def parse_cursor(cursor: str, separator: str, key: Callable[[str], K | None]) -> tuple[int, K]:
    """A `before` cursor's number and key; `key` reads what follows the separator (None: not a key)."""
    number, _, rest = cursor.partition(separator)
    parsed = key(rest)
    if parsed is None:
        raise bad_cursor()
    return parse_int(number, "before"), parsed
