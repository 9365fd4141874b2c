"""Files under /api/v1/media: streamed uploads (whole or resumable), downloads with ranges, thumbnails."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from sup.domain.media import Download, Media, MediaPage, UploadSession
from sup.errors import Code, DomainError
from sup.http import schemas as s
from sup.http.api import Call, bearer_token, request_origin

READ_CHUNK = 256 * 1024
# Multipart framing around the file: boundaries, part headers. A declared length beyond
# the largest file plus this is refused before a byte is read.
MULTIPART_SLACK = 64 * 1024
# ASCII digits only (\d would take any script's), and no more than any file size needs.
_RANGE = re.compile(r"^bytes=([0-9]{0,19})-([0-9]{0,19})$")


async def _body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    while chunk := await request.content.read(READ_CHUNK):
        yield chunk


async def _part_chunks(reader: MultipartReader, part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(READ_CHUNK):
        yield chunk
    try:  # a body cut off inside the file has no boundary after it: that is not a whole file
        await reader.next()
    except ValueError:
        raise DomainError(Code.INVALID_REQUEST, "The multipart body ends inside the file: it was cut off.") from None
    except HttpProcessingError as exc:
        raise DomainError(Code.INVALID_REQUEST, f"Malformed multipart body: {exc.message}") from None


async def _file_part(request: web.Request) -> tuple[MultipartReader, BodyPartReader]:
    """The multipart part named `file`; other fields before it are skipped."""
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name == "file":
                return reader, part
            await part.release()
    except (ValueError, AssertionError, RuntimeError) as exc:
        raise DomainError(Code.INVALID_REQUEST, f"Malformed multipart body: {exc}") from None
    except HttpProcessingError as exc:  # a part's headers: folded, too long, invalid
        raise DomainError(Code.INVALID_REQUEST, f"Malformed multipart body: {exc.message}") from None
    raise DomainError(Code.VALIDATION_FAILED, "Send the file as a multipart part named `file`.", field="file")


async def upload(call: Call) -> Media:
    """POST /api/v1/media/upload: upload a file, as multipart (part `file`) or as the raw body."""
    query: s.MediaUploadQuery = call.query
    request = call.request
    media = call.services.media
    declared = request.content_length
    multipart = request.content_type == "multipart/form-data"
    await media.check_declared_size(
        call.who.user_id, max(0, declared - MULTIPART_SLACK) if declared is not None and multipart else declared
    )
    if multipart:
        reader, part = await _file_part(request)
        chunks, filename = _part_chunks(reader, part), part.filename
    elif request.content_type == "application/octet-stream":
        chunks, filename = _body_chunks(request), query.filename
    else:
        raise DomainError(
            Code.UNSUPPORTED_MEDIA_TYPE, "Upload as multipart/form-data (part `file`) or application/octet-stream."
        )
    return await media.upload(
        call.who.user_id, chunks, filename=filename, purpose=query.purpose, encrypted=query.encrypted
    )


async def start_upload(call: Call, body: s.UploadStart) -> UploadSession:
    """POST /api/v1/media/uploads: start a resumable upload; put its chunks in any order, then complete it."""
    return await call.services.media.start_upload(
        call.who.user_id, filename=body.filename, size=body.size, purpose=body.purpose, encrypted=body.encrypted
    )


async def upload_status(call: Call) -> UploadSession:
    """GET /api/v1/media/uploads/{upload_id}: which chunks have arrived (to resume after a dropped connection)."""
    return await call.services.media.upload_status(call.who.user_id, call.param("upload_id"))


async def put_chunk(call: Call) -> UploadSession:
    """PUT /api/v1/media/uploads/{upload_id}/chunks/{index}: one chunk, as the raw body; again replaces it."""
    return await call.services.media.put_chunk(
        call.who.user_id,
        call.param("upload_id"),
        call.int_param("index", high=s.CHUNK_INDEX_MAX),
        _body_chunks(call.request),
        call.request.content_length,
    )


async def complete_upload(call: Call) -> Media:
    """POST /api/v1/media/uploads/{upload_id}/complete: join the chunks into one file."""
    return await call.services.media.complete_upload(call.who.user_id, call.param("upload_id"))


async def abort_upload(call: Call) -> None:
    """DELETE /api/v1/media/uploads/{upload_id}: give up a resumable upload and drop its chunks."""
    await call.services.media.abort_upload(call.who.user_id, call.param("upload_id"))


async def list_media(call: Call) -> MediaPage:
    """GET /api/v1/media: my files, oldest first, and how much of my quota they use."""
    query: s.PageQuery = call.query
    return await call.services.media.list_mine(call.who.user_id, query.after, query.limit)


async def get_media(call: Call) -> Media:
    """GET /api/v1/media/{media_id}: a file's details and processing status."""
    return await call.services.media.get(call.who.user_id, call.param("media_id"))


async def delete_media(call: Call) -> None:
    """DELETE /api/v1/media/{media_id}: delete my upload."""
    await call.services.media.delete(call.who.user_id, call.param("media_id"))


async def signed_url(call: Call) -> s.SignedUrl:
    """GET /api/v1/media/{media_id}/url: a download URL that needs no token, until it expires."""
    query: s.VariantQuery = call.query
    request = call.request
    base = call.services.public_url or request_origin(request, call.services.trusted_proxies)
    url, expires = await call.services.media.signed_url(call.who.user_id, call.param("media_id"), query.variant, base)
    return s.SignedUrl(url=url, expires_at=expires)


async def download(call: Call) -> web.StreamResponse:
    """GET /api/v1/media/download/{media_id}: the file (Range, ETag); a token or a signed URL."""
    query: s.DownloadQuery = call.query
    return await _serve(call, query.variant, query)


async def thumbnail(call: Call) -> web.StreamResponse:
    """GET /api/v1/media/thumbnail/{media_id}: a thumbnail (or a video's poster), small or large."""
    query: s.ThumbnailQuery = call.query
    return await _serve(call, query.size, query)


async def _serve(call: Call, variant: str, query: s.SignedQuery) -> web.StreamResponse:
    media_id = call.param("media_id")
    media = call.services.media
    if query.signature is not None:
        if query.expires is None or not media.signature_valid(media_id, variant, query.expires, query.signature):
            raise DomainError(Code.FORBIDDEN, "This link is invalid or has expired.")
        user_id = None
    else:
        user_id = (await call.services.accounts.authenticate(bearer_token(call.request))).user_id
    return await stream_file(call.request, await media.download(user_id, media_id, variant))  # type: ignore[arg-type]


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) from a single `bytes=` range; None for the whole file (or a form we ignore)."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None  # several ranges, other units: RFC 9110 lets us answer with the whole file
    if not match[1]:  # the last N bytes
        suffix = int(match[2])
        if suffix == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size
    start = int(match[1])
    end = min(int(match[2]) + 1, size) if match[2] else size
    if start >= size or (match[2] and int(match[2]) < start):
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> DomainError:
    return DomainError(Code.RANGE_NOT_SATISFIABLE, f"The file has {size} bytes.", content_range=f"bytes */{size}")


async def stream_file(request: web.Request, file: Download) -> web.StreamResponse:
    """Serve a stored file: ranges, ETag, and headers that keep a browser from running it."""
    etag = f'"{file.etag}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=3600",
        "Content-Type": file.mime,
        "Content-Disposition": file.disposition,
        # Whatever the bytes are, a browser must not run them as a page of ours.
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "X-Content-Type-Options": "nosniff",
        # The request carried a token or a signature: a web client on another origin may embed it.
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if etag in {t.strip() for t in request.headers.get("If-None-Match", "").split(",")}:
        return web.Response(status=304, headers={k: v for k, v in headers.items() if k != "Content-Type"})
    span = None
    if_range = request.headers.get("If-Range")
    if if_range is None or if_range.strip() == etag:
        span = _byte_range(request.headers.get("Range"), file.size)
    start, end = span or (0, file.size)
    response = web.StreamResponse(status=206 if span else 200, headers=headers)
    if span:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{file.size}"
    response.content_length = end - start
    await response.prepare(request)
    if request.method != "HEAD" and end > start:
        async for chunk in file.read(start, end):
            await response.write(chunk)
    await response.write_eof()
    return response
