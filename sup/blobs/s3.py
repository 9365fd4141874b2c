"""Blobs as objects in an S3 (or S3-compatible) bucket.

    <prefix>blobs/<sha256>           blobs
    <prefix>parts/<upload>/<index>   parts of resumable uploads
    <prefix>tmp/<random>             large streams, until their hash (and so their key) is known

A stream that fits in one part is hashed while buffered and PUT straight to its key. A
larger one goes up as a multipart upload to a temporary key (memory bounded by the part
size), is copied to its content key (unless that already exists) and the temporary
object is deleted. A failure aborts the multipart upload, so no invisible parts are
billed. Even so, give the bucket a lifecycle rule that aborts incomplete multipart uploads
after a day and expires `<prefix>tmp/` after a day: a killed process cleans nothing up.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from sup.blobs.store import (
    READ_CHUNK,
    BlobError,
    BlobNotFound,
    BlobTooLarge,
    MiB,
    MissingParts,
    StoredBlob,
    check_id,
    check_index,
    check_range,
    content_disposition,
    one_chunk,
    part_name,
    part_sizes,
)

log = logging.getLogger(__name__)

# Hashing runs at roughly 0.2-1 GB/s: network-sized chunks are hashed in place, a chunk this
# big (put_bytes of an image, parts read back for assembly) would hold the event loop too long.
OFF_LOOP_HASH = 1 * MiB
# S3's smallest multipart part (all but the last): smaller resumable chunks are streamed through.
MIN_COPY_PART = 5 * MiB
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
# CopyObject copies at most 5 GiB; beyond that the copy itself is a multipart upload.
COPY_LIMIT = 5 * 1024 * MiB
COPY_PART_SIZE = 512 * MiB
# What SigV4 presigning allows.
MAX_URL_SECONDS = 7 * 86400


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@dataclass
class _Multipart:
    key: str
    upload_id: str
    parts: list[dict[str, Any]] = field(default_factory=list)
    completed: bool = False


class S3BlobStore:
    def __init__(self, client: Any, stack: AsyncExitStack, bucket: str, prefix: str, part_size: int) -> None:
        self._client = client
        self._stack = stack
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        # Instance attributes so a test can reach the multipart-copy path without 5 GiB.
        self.copy_limit = COPY_LIMIT
        self.copy_part_size = COPY_PART_SIZE

    @classmethod
    async def open(
        cls,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        addressing_style: str = "auto",
        create_bucket: bool = False,
        part_size: int = 8 * MiB,
    ) -> S3BlobStore:
        config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": addressing_style},
            retries={"max_attempts": 5, "mode": "standard"},
            # Newer botocore adds CRC checksums to every upload; several S3-compatible
            # servers reject them. Send them only where the API demands one.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = get_session()
        await asyncio.to_thread(_load_models, session)
        stack = AsyncExitStack()
        client = await stack.enter_async_context(
            session.create_client(
                "s3",
                region_name=region,
                endpoint_url=endpoint_url,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                config=config,
            )
        )
        try:
            if create_bucket:
                await _create_bucket(client, bucket, region)
            else:
                # Fail at startup, not at the first upload, when the bucket or credentials are wrong.
                await client.head_bucket(Bucket=bucket)
        except (ClientError, BotoCoreError) as exc:
            await stack.aclose()
            raise BlobError(f"S3 bucket {bucket!r} is not usable: {exc}") from exc
        except BaseException:
            await stack.aclose()
            raise
        return cls(client, stack, bucket, prefix, part_size)

    # -- keys

    def _blob_key(self, key: str) -> str:
        return f"{self.prefix}blobs/{check_id(key)}"

    def _parts_prefix(self, upload_id: str) -> str:
        return f"{self.prefix}parts/{check_id(upload_id, 'upload id')}/"

    # -- writing

    async def _upload(
        self, chunks: AsyncIterable[bytes], max_size: int | None, dest: str | None
    ) -> tuple[str, int, str]:
        """Stream to `dest`, or to the content key when dest is None; return (object key, size, sha256)."""
        hasher = hashlib.sha256()
        size = 0
        buffer = bytearray()
        multipart: _Multipart | None = None
        try:
            async for chunk in chunks:
                size += len(chunk)
                if max_size is not None and size > max_size:
                    raise BlobTooLarge(max_size)
                if len(chunk) >= OFF_LOOP_HASH:
                    await asyncio.to_thread(hasher.update, chunk)
                else:
                    hasher.update(chunk)
                buffer += chunk
                # Strictly more than a part: a stream of exactly one part (a resumable chunk is
                # one) goes up in a single PUT instead of a three-call multipart upload.
                while len(buffer) > self.part_size:
                    if multipart is None:
                        target = dest or f"{self.prefix}tmp/{uuid.uuid4().hex}"
                        created = await self._client.create_multipart_upload(Bucket=self.bucket, Key=target)
                        multipart = _Multipart(target, created["UploadId"])
                    await self._upload_part(multipart, bytes(memoryview(buffer)[: self.part_size]))
                    del buffer[: self.part_size]
            sha256 = hasher.hexdigest()
            if multipart is None:
                # Fits in one request: the hash is known before anything is sent, so no temporary key.
                target = dest or self._blob_key(sha256)
                if dest is None and await self._head(target) is not None:
                    return target, size, sha256
                await self._client.put_object(Bucket=self.bucket, Key=target, Body=bytes(buffer))
                return target, size, sha256
            if buffer:
                await self._upload_part(multipart, bytes(buffer))
            buffer = bytearray()
            await self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=multipart.key,
                UploadId=multipart.upload_id,
                MultipartUpload={"Parts": multipart.parts},
            )
            multipart.completed = True
            if dest is not None:
                return dest, size, sha256
            key = self._blob_key(sha256)
            await self._claim(multipart.key, key, size)
        except BaseException:
            if multipart is not None:
                await asyncio.shield(self._discard(multipart))
            raise
        await asyncio.shield(self._delete_quietly(multipart.key))
        return key, size, sha256

    async def _upload_part(self, multipart: _Multipart, data: bytes) -> None:
        number = len(multipart.parts) + 1
        reply = await self._client.upload_part(
            Bucket=self.bucket, Key=multipart.key, UploadId=multipart.upload_id, PartNumber=number, Body=data
        )
        multipart.parts.append({"ETag": reply["ETag"], "PartNumber": number})

    async def _discard(self, multipart: _Multipart) -> None:
        if multipart.completed:
            await self._delete_quietly(multipart.key)
            return
        try:
            await self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=multipart.key, UploadId=multipart.upload_id
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not abort multipart upload of %s (a lifecycle rule will): %s", multipart.key, exc)

    async def _delete_quietly(self, key: str) -> None:
        try:
            await self._client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not delete %s (a lifecycle rule will): %s", key, exc)

    async def _claim(self, temp: str, key: str, size: int) -> None:
        """Copy the finished temporary object to its content key, unless an identical blob is there."""
        if await self._head(key) is not None:
            return
        source = {"Bucket": self.bucket, "Key": temp}
        if size <= self.copy_limit:
            await self._client.copy_object(Bucket=self.bucket, Key=key, CopySource=source)
            return
        created = await self._client.create_multipart_upload(Bucket=self.bucket, Key=key)
        copy = _Multipart(key, created["UploadId"])
        try:
            for offset in range(0, size, self.copy_part_size):
                number = len(copy.parts) + 1
                last = min(offset + self.copy_part_size, size) - 1
                reply = await self._client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=copy.upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={offset}-{last}",
                )
                copy.parts.append({"ETag": reply["CopyPartResult"]["ETag"], "PartNumber": number})
            await self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=copy.upload_id, MultipartUpload={"Parts": copy.parts}
            )
        except BaseException:
            await asyncio.shield(self._discard(copy))
            raise

    async def put_stream(self, chunks: AsyncIterable[bytes], *, max_size: int | None = None) -> StoredBlob:
        _, size, sha256 = await self._upload(chunks, max_size, None)
        return StoredBlob(key=sha256, size=size, sha256=sha256)

    async def put_bytes(self, data: bytes) -> StoredBlob:
        return await self.put_stream(one_chunk(data))

    # -- reading

    async def _head(self, object_key: str) -> dict[str, Any] | None:
        try:
            return await self._client.head_object(Bucket=self.bucket, Key=object_key)
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                return None
            raise

    async def size(self, key: str) -> int:
        head = await self._head(self._blob_key(key))
        if head is None:
            raise BlobNotFound(key)
        return int(head["ContentLength"])

    async def exists(self, key: str) -> bool:
        return await self._head(self._blob_key(key)) is not None

    async def read_range(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        check_range(start, end)
        object_key = self._blob_key(key)
        if end == start:
            if await self._head(object_key) is None:
                raise BlobNotFound(key)
            return
        extra = {} if start == 0 and end is None else {"Range": f"bytes={start}-{'' if end is None else end - 1}"}
        try:
            reply = await self._client.get_object(Bucket=self.bucket, Key=object_key, **extra)
        except ClientError as exc:
            code = _error_code(exc)
            if code in _NOT_FOUND:
                raise BlobNotFound(key) from None
            if code == "InvalidRange":  # start at or past the end: nothing to send
                return
            raise
        async with reply["Body"] as body:
            async for chunk in body.iter_chunks(READ_CHUNK):
                yield chunk

    async def read_all(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.read_range(key)])

    async def delete(self, key: str) -> None:
        await self._client.delete_object(Bucket=self.bucket, Key=self._blob_key(key))

    # -- resumable uploads

    async def put_part(self, upload_id: str, index: int, chunks: AsyncIterable[bytes], *, max_size: int) -> int:
        dest = self._parts_prefix(upload_id) + part_name(check_index(index))
        # An object appears only when its PUT or multipart upload completes: a replaced part is never half new.
        _, size, _ = await self._upload(chunks, max_size, dest)
        return size

    async def _list(self, prefix: str) -> AsyncIterator[dict[str, Any]]:
        paginator = self._client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item

    async def list_parts(self, upload_id: str) -> dict[int, int]:
        prefix = self._parts_prefix(upload_id)
        parts = {}
        async for item in self._list(prefix):
            name = item["Key"][len(prefix) :]
            if name.isdigit():
                parts[int(name)] = int(item["Size"])
        return parts

    async def complete_parts(self, upload_id: str, count: int, *, max_size: int | None = None) -> StoredBlob:
        prefix = self._parts_prefix(upload_id)
        sizes = await part_sizes(self, upload_id, count)
        if max_size is not None and sum(sizes) > max_size:
            raise BlobTooLarge(max_size)
        blob = None
        if count > 1 and min(sizes[:-1]) >= MIN_COPY_PART:
            blob = await self._assemble_in_place(upload_id, prefix, count, sum(sizes))
        if blob is None:  # parts too small to copy as multipart parts, or not provably unchanged
            blob = await self.put_stream(self._read_parts(upload_id, prefix, count), max_size=max_size)
        await self.abort_parts(upload_id)
        return blob

    async def _assemble_in_place(self, upload_id: str, prefix: str, count: int, size: int) -> StoredBlob | None:
        """Hash the parts by reading them once, then join them inside S3 (UploadPartCopy).

        The bytes cross the network once instead of three times. A blob's content must match
        the hash it is stored under (others' identical uploads are deduplicated onto it), so a
        part replaced between hashing and copying must not get in: each copy names the ETag
        that was hashed (atomic where S3 honours it), and each copied part's MD5 ETag must equal
        it. None when that cannot be shown (a part changed, or ETags that are not MD5s, as with
        SSE-KMS): the caller streams the parts through instead.
        """
        hasher = hashlib.sha256()
        etags: list[str] = []
        async for chunk in self._read_parts(upload_id, prefix, count, etags):
            if len(chunk) >= OFF_LOOP_HASH:
                await asyncio.to_thread(hasher.update, chunk)
            else:
                hasher.update(chunk)
        sha256 = hasher.hexdigest()
        key = self._blob_key(sha256)
        if await self._head(key) is not None:
            return StoredBlob(key=sha256, size=size, sha256=sha256)
        if any("-" in etag for etag in etags):  # a multipart object's ETag is no MD5 of its bytes
            return None
        created = await self._client.create_multipart_upload(Bucket=self.bucket, Key=key)
        joined = _Multipart(key, created["UploadId"])
        try:
            for index, etag in enumerate(etags):
                source = {"Bucket": self.bucket, "Key": prefix + part_name(index)}
                try:
                    reply = await self._client.upload_part_copy(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=joined.upload_id,
                        PartNumber=index + 1,
                        CopySource=source,
                        CopySourceIfMatch=etag,
                    )
                except ClientError as exc:
                    if _error_code(exc) in _NOT_FOUND | {"PreconditionFailed", "412"}:
                        raise MissingParts(upload_id, [index]) from None
                    raise
                copied = reply["CopyPartResult"]["ETag"]
                if copied.strip('"') != etag.strip('"'):
                    await asyncio.shield(self._discard(joined))
                    return None
                joined.parts.append({"ETag": copied, "PartNumber": index + 1})
            await self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=joined.upload_id, MultipartUpload={"Parts": joined.parts}
            )
        except BaseException:
            await asyncio.shield(self._discard(joined))
            raise
        return StoredBlob(key=sha256, size=size, sha256=sha256)

    async def _read_parts(
        self, upload_id: str, prefix: str, count: int, etags: list[str] | None = None
    ) -> AsyncIterator[bytes]:
        for index in range(count):
            try:
                reply = await self._client.get_object(Bucket=self.bucket, Key=prefix + part_name(index))
            except ClientError as exc:
                if _error_code(exc) in _NOT_FOUND:  # aborted while assembling
                    raise MissingParts(upload_id, [index]) from None
                raise
            if etags is not None:
                etags.append(reply["ETag"])
            async with reply["Body"] as body:
                async for chunk in body.iter_chunks(READ_CHUNK):
                    yield chunk

    async def abort_parts(self, upload_id: str) -> None:
        prefix = self._parts_prefix(upload_id)
        keys = [item["Key"] async for item in self._list(prefix)]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            await self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        # A part whose upload was cut off when a process died.
        paginator = self._client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                await self._discard(_Multipart(upload["Key"], upload["UploadId"]))

    async def stored_sizes(self) -> dict[str, int]:
        """Every blob's key and size, from a listing (the move from disk to S3 resumes with it)."""
        root = f"{self.prefix}blobs/"
        return {item["Key"][len(root) :]: int(item["Size"]) async for item in self._list(root)}

    async def stale_parts(self, older_than_epoch_seconds: float) -> list[str]:
        root = f"{self.prefix}parts/"
        newest: dict[str, float] = {}
        async for item in self._list(root):
            upload_id = item["Key"][len(root) :].split("/", 1)[0]
            written = item["LastModified"].timestamp()
            newest[upload_id] = max(newest.get(upload_id, written), written)
        return sorted(upload_id for upload_id, written in newest.items() if written < older_than_epoch_seconds)

    async def signed_url(self, key: str, *, expires_in: int, filename: str, content_type: str) -> str | None:
        if not 1 <= expires_in <= MAX_URL_SECONDS:
            raise ValueError(f"expires_in must be 1 to {MAX_URL_SECONDS} seconds")
        return await self._client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._blob_key(key),
                "ResponseContentType": content_type,
                "ResponseContentDisposition": content_disposition(filename),
            },
            ExpiresIn=expires_in,
        )

    async def close(self) -> None:
        await self._stack.aclose()


def _load_models(session: Any) -> None:
    """Parse botocore's S3 models into the session's cache, in a thread.

    create_client would otherwise parse ~1 MB of JSON on the event loop: 0.1-0.6 s on a busy machine.
    """
    loader = session.get_component("data_loader")
    loader.load_service_model("s3", "service-2")
    loader.load_service_model("s3", "endpoint-rule-set-1")
    for name in ("endpoints", "partitions", "_retry", "sdk-default-configuration"):
        loader.load_data(name)


async def _create_bucket(client: Any, bucket: str, region: str) -> None:
    options: dict[str, Any] = {}
    if region != "us-east-1":  # the one region that refuses an explicit LocationConstraint
        options["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        await client.create_bucket(Bucket=bucket, **options)
    except ClientError as exc:
        if _error_code(exc) != "BucketAlreadyOwnedByYou":
            raise
