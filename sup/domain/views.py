"""What clients see of a stored row: most fields pass through as stored, a few are worked out."""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import msgspec

V = TypeVar("V", bound=msgspec.Struct)


def view_of(cls: type[V], stored: msgspec.Struct, **worked_out: Any) -> V:
    """`cls` with each field that `stored` also has copied from it, but those in `worked_out` (a stored
    value clients do not see as it is, or a field the row does not have); others keep their defaults."""
    copied = {name: getattr(stored, name) for name in _shared(cls, type(stored)) if name not in worked_out}
    return cls(**copied, **worked_out)


@functools.cache  # message pages build many views of one kind
def _shared(cls: type[msgspec.Struct], stored_type: type[msgspec.Struct]) -> tuple[str, ...]:
    return tuple(name for name in cls.__struct_fields__ if name in stored_type.__struct_fields__)
