"""What every client input is built from, over REST and over the WebSocket alike.

`Input` is the base of request bodies, query strings and socket frames: unknown fields are
refused, and every field typed `Id` comes out canonical (lower case), whatever case the
client wrote. A msgspec pattern can check an id but not rewrite it, so the rewrite happens
in `__post_init__`, which msgspec runs after decoding (JSON, msgpack, `convert`): nothing
that decodes into an `Input` can forget it. Accepting any case and answering in one is
kinder to clients than refusing upper case, and the database and rate limits see one
spelling per id.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from sup.integers import INT64_MAX


def whole(pattern: str) -> str:
    """`pattern`, anchored to match the whole text in Python (msgspec) and in JSON Schema (ECMA-262).

    Python's `$` also matches before a final newline, so `^[a-z]+$` takes "bobby\\n"; the
    lookahead refuses it and means the same in both dialects.
    """
    return f"^(?:{pattern})$(?!\\n)"


ID_REGEX = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
Id = Annotated[
    str,
    Meta(
        pattern=whole(ID_REGEX),
        description="A UUID in its 36-character form; any case is accepted, and answered in lower case.",
    ),
]
# Integers the database keeps in a BIGINT: never negative here, never past 2^63 - 1.
Count = Annotated[int, Meta(ge=0, le=INT64_MAX)]


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of what a client sends: unknown fields are refused, `Id` fields come out canonical."""

    def __post_init__(self) -> None:
        for name, many in _id_fields(type(self)):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, value.lower())
            elif many and isinstance(value, list):
                setattr(self, name, [item.lower() for item in value])


@functools.cache
def _id_fields(cls: type) -> tuple[tuple[str, bool], ...]:
    """(name, is a list) of each field of `cls` typed `Id`, `Id | None`... or `list[Id]`."""
    found = []
    for field in msgspec.structs.fields(cls):
        if _is_id(field.type):
            found.append((field.name, False))
        elif typing.get_origin(field.type) is list and _is_id(typing.get_args(field.type)[0]):
            found.append((field.name, True))
    return tuple(found)


def _is_id(annotation: Any) -> bool:
    if annotation is Id:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(arg is Id for arg in typing.get_args(annotation))
    return False
