"""What request bodies and queries of every area share."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from sup.transport.inputs import Id, Input, whole

# Names and descriptions people read: no control characters but newline and tab (check_text).
TEXT = whole(r"[^\x00-\x08\x0b-\x1f]*")


class Body(Input):
    """Base of request bodies: unknown fields are refused, not ignored; ids come out canonical."""


class PageQuery(Input):
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    after: Id | None = None


CursorQuery = Annotated[str, Meta(max_length=80, description="The next_cursor of the previous page.")]


class HealthStatus(msgspec.Struct, kw_only=True):
    status: str
    version: str
