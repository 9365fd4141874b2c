"""Media, stories and sticker packs: uploads, signed downloads, and what is built on them."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from sup.domain.stickers import TITLE_MAX as STICKER_TITLE_MAX
from sup.domain.stories import CAPTION_MAX, LIST_NAME_MAX, AudienceList
from sup.http.schemas.common import Body, CursorQuery
from sup.integers import INT64_MAX
from sup.transport.inputs import Count, Id, Input, whole

Purpose = Literal["attachment", "avatar", "sticker"]


class MediaUploadQuery(Input):
    purpose: Purpose = "attachment"
    encrypted: Annotated[bool, Meta(description="Client-encrypted: stored and served as opaque bytes.")] = False
    filename: Annotated[str, Meta(max_length=1024, description="For raw-body uploads (multipart names its part).")] = ""


CHUNK_INDEX_MAX = 999_999_999
ChunkIndex = Annotated[int, Meta(ge=0, le=CHUNK_INDEX_MAX, description="From 0.")]


class UploadStart(Body, kw_only=True):
    size: Annotated[int, Meta(ge=1, le=INT64_MAX, description="The whole file's size in bytes.")]
    filename: Annotated[str, Meta(max_length=1024)] = ""
    purpose: Purpose = "attachment"
    encrypted: bool = False


class SignedQuery(Input):
    expires: Annotated[Count, Meta(description="Unix time, seconds: from a signed URL.")] | None = None
    signature: Annotated[str, Meta(pattern=whole("[0-9a-f]{64}"))] | None = None


class DownloadQuery(SignedQuery, kw_only=True):
    variant: Literal["original", "small", "large"] = "original"


class ThumbnailQuery(SignedQuery, kw_only=True):
    size: Literal["small", "large"] = "small"


class VariantQuery(Input):
    variant: Literal["original", "small", "large"] = "original"


class SignedUrl(msgspec.Struct, kw_only=True):
    url: str
    expires_at: Annotated[int, Meta(description="Unix time, seconds.")]


# Files travel as they are, not as JSON: these describe them in the OpenAPI document.
_BINARY = {"type": "string", "format": "binary"}
FILE_UPLOAD = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["file"],
            "properties": {"file": {**_BINARY, "description": "The file; the part's filename names it."}},
        }
    },
    "application/octet-stream": {"schema": {**_BINARY, "description": "The file as the body; ?filename= names it."}},
}
CHUNK_UPLOAD = {
    "application/octet-stream": {
        "schema": {
            **_BINARY,
            "description": "Chunk `index`: `chunk_size` bytes, the last chunk the rest. Send Content-Length.",
        }
    }
}
FILE_DOWNLOAD = {
    "200": {"description": "The file.", "content": {"*/*": {"schema": _BINARY}}},
    "206": {"description": "The byte range asked for with Range.", "content": {"*/*": {"schema": _BINARY}}},
    "304": {"description": "Not modified: If-None-Match named its ETag."},
}


# -- stories ----------------------------------------------------------------------------------


UserIdList = Annotated[list[Id], Meta(max_length=5000)]


class StoryPost(Body):
    media_id: Annotated[Id, Meta(description="My photo or video, uploaded unencrypted (purpose=attachment).")]
    audience: Literal["chats", "contacts", "close_friends", "contacts_except"]
    caption: Annotated[str, Meta(max_length=CAPTION_MAX)] = ""
    list_id: Annotated[Id, Meta(description="contacts_except: my list of people to leave out.")] | None = None


class StoryFeedQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    limit: Annotated[int, Meta(ge=1, le=100, description="Authors per page.")] = 50
    before: CursorQuery | None = None


class StoryViewsQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    before: CursorQuery | None = None


class AudienceListCreate(Body):
    name: Annotated[str, Meta(min_length=1, max_length=LIST_NAME_MAX)]
    user_ids: UserIdList = []


class AudienceListUpdate(Body):
    name: Annotated[str, Meta(min_length=1, max_length=LIST_NAME_MAX)] | None = None
    user_ids: Annotated[UserIdList, Meta(description="Replaces who is on the list.")] | None = None


class UserIds(Body):
    user_ids: Annotated[list[Id], Meta(min_length=1, max_length=5000)]


class AudienceLists(msgspec.Struct, kw_only=True):
    lists: list[AudienceList]


# -- sticker packs ----------------------------------------------------------------------------


class StickerPackCreate(Body):
    title: Annotated[str, Meta(min_length=1, max_length=STICKER_TITLE_MAX)]
    cover_media_id: Annotated[Id, Meta(description="My image uploaded with purpose=sticker.")] | None = None


class StickerPackUpdate(Body):
    title: Annotated[str, Meta(min_length=1, max_length=STICKER_TITLE_MAX)] | UnsetType = UNSET
    cover_media_id: Id | UnsetType | None = UNSET


class StickerAdd(Body):
    media_id: Annotated[Id, Meta(description="My PNG or WebP uploaded with purpose=sticker, processed.")]
    emoji: Annotated[str, Meta(min_length=1, max_length=32, description="The emoji the sticker stands for.")]


class PackRef(Body):
    pack_id: Id


class PackOrder(Body):
    pack_ids: Annotated[list[Id], Meta(max_length=1000, description="Every installed pack, once, in the new order.")]
