"""The settings of what the server offers: jobs, blobs, media, stories, stickers, backups, plugins, calls, push."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from sup.config.service import doc

MiB = 1024 * 1024


class JobsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The background job scheduler (media processing, cleanup). Jobs live in the database and survive restarts."""

    workers: Annotated[int, doc("Background jobs (media processing, cleanup) run at once by this process.", ge=1)] = 2
    poll_interval_seconds: Annotated[float, doc("How soon a job queued by another process is noticed.", gt=0)] = 5.0
    max_attempts: Annotated[int, doc("Attempts before a job is marked failed with its last error.", ge=1)] = 5
    backoff_base_seconds: Annotated[
        float, doc("The first retry waits about this long, doubling with each attempt.", gt=0)
    ] = 2.0
    backoff_cap_seconds: Annotated[float, doc("The longest wait between retries.", gt=0)] = 600.0
    retention_days: Annotated[int, doc("Finished jobs are kept this long; 0 keeps them.", ge=0)] = 7


class BlobsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where uploaded files are stored. See [operations.md](operations.md#files-blob-storage) for the layout and S3."""

    url: Annotated[
        str,
        doc(
            "Where uploaded files go: file:///absolute/path or s3://bucket/optional/prefix (needs the s3 extra). "
            "Empty: <data_dir>/blobs."
        ),
    ] = ""
    s3_endpoint_url: Annotated[str, doc("S3 endpoint; empty for AWS, set for MinIO, Ceph, R2...")] = ""
    s3_region: Annotated[str, doc("S3 region.")] = "us-east-1"
    s3_access_key_id: Annotated[
        str, doc("S3 access key; empty: the usual AWS chain (environment, profile, instance role).")
    ] = ""
    s3_secret_access_key: Annotated[str, doc("S3 secret key.")] = ""
    s3_addressing_style: Annotated[Literal["auto", "path", "virtual"], doc("S3 bucket addressing.")] = "auto"
    s3_create_bucket: Annotated[bool, doc("Create the bucket at start if it does not exist.")] = False
    s3_part_size: Annotated[int, doc("Multipart upload part size in bytes (S3 needs at least 5 MiB).", ge=5 * MiB)] = (
        8 * MiB
    )


class MediaConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Uploads, their limits and their processing."""

    max_image_bytes: Annotated[int, doc("Largest image upload, in bytes.", ge=1)] = 50 * MiB
    max_video_bytes: Annotated[int, doc("Largest video upload, in bytes.", ge=1)] = 2048 * MiB
    max_audio_bytes: Annotated[int, doc("Largest audio upload (voice notes, music), in bytes.", ge=1)] = 200 * MiB
    max_file_bytes: Annotated[
        int, doc("Largest upload of anything else, encrypted attachments included, in bytes.", ge=1)
    ] = 2048 * MiB
    quota_bytes: Annotated[int, doc("Storage each user may fill with uploads; 0: no quota.", ge=0)] = 10240 * MiB
    chunk_bytes: Annotated[
        int, doc("Chunk size of resumable uploads (the last chunk may be smaller).", ge=64 * 1024, le=64 * MiB)
    ] = 8 * MiB
    upload_expiry_hours: Annotated[
        int, doc("An unfinished resumable upload is removed after this many hours.", ge=1)
    ] = 24
    orphan_hours: Annotated[
        int, doc("An upload never attached to a message or avatar is removed after this many hours.", ge=1)
    ] = 24
    max_image_pixels: Annotated[
        int, doc("Images with more pixels are refused before decoding (decompression bombs).", ge=1)
    ] = 50_000_000
    max_duration_seconds: Annotated[float, doc("Audio or video claiming to be longer is refused.", gt=0)] = 6 * 3600.0
    probe_timeout_seconds: Annotated[
        float, doc("Wall-clock limit per file of the child process that reads it (Pillow or FFmpeg).", gt=0)
    ] = 30.0
    probe_memory_bytes: Annotated[int, doc("Address-space limit of the FFmpeg probe process.", ge=256 * MiB)] = (
        768 * MiB
    )
    signed_url_seconds: Annotated[
        int, doc("Lifetime of signed download URLs (for <img> and <video> tags).", ge=10, le=7 * 86400)
    ] = 3600
    max_animation_frames: Annotated[
        int, doc("Animated images (GIF, WebP, PNG, AVIF) with more frames are refused before decoding.", ge=1)
    ] = 2000
    max_animation_pixels: Annotated[
        int,
        doc("Animated images whose frames hold more pixels in all (frames x width x height) are refused.", ge=1),
    ] = 1_000_000_000
    max_sticker_bytes: Annotated[int, doc("Largest sticker image (purpose=sticker), in bytes.", ge=1)] = MiB
    max_sticker_pixels: Annotated[
        int, doc("Sticker images with more pixels (width x height) are refused before decoding.", ge=1)
    ] = 1024 * 1024
    max_sticker_frames: Annotated[int, doc("Animated stickers with more frames are refused.", ge=1)] = 300


class StoriesConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Stories: photos and videos shown to an audience for a while ([api.md](api.md#stories))."""

    lifetime_hours: Annotated[
        float, doc("A story disappears this many hours after it was posted.", gt=0, le=7 * 24)
    ] = 24.0
    max_live: Annotated[int, doc("Stories one user may have up at once.", ge=1)] = 100
    max_list_members: Annotated[
        int, doc("People on one audience list (close friends, or a list of contacts to leave out).", ge=1)
    ] = 5000
    max_lists: Annotated[int, doc("Lists of contacts to leave out that one user may keep.", ge=1)] = 50
    expire_interval_seconds: Annotated[
        float, doc("How often expired stories, their views and their files are removed.", gt=0)
    ] = 60.0


class StickersConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Sticker packs ([api.md](api.md#sticker-packs)); the images' own limits are under `[media]`."""

    max_pack_stickers: Annotated[int, doc("Stickers in one pack.", ge=1)] = 120
    max_packs: Annotated[int, doc("Packs one user may create.", ge=1)] = 100
    max_installed: Annotated[int, doc("Packs one user may install.", ge=1)] = 200


class BackupConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Scheduled backups, taken by `sup run` like `sup backup create` ([operations.md](operations.md#backups))."""

    dir: Annotated[
        str,
        doc(
            "Directory the scheduled backups go into, one sup-backup-<UTC time> directory each. "
            "Empty: no scheduled backups."
        ),
    ] = ""
    every_hours: Annotated[float, doc("Hours between two scheduled backups (the first is taken at start).", gt=0)] = (
        24.0
    )
    keep: Annotated[int, doc("Scheduled backups kept; older ones are deleted after each new one.", ge=1)] = 7
    include_s3_objects: Annotated[
        bool, doc("With S3 blob storage: copy the objects into the backup too, not only a list of them.")
    ] = False


class PluginsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Plugins: packages found through the entry point group `sup.plugins` ([plugins.md](plugins.md))."""

    enabled: Annotated[
        list[str],
        doc(
            'Plugins to load, by name, e.g. ["livekit"]; each reads its settings from a [plugins.<name>] table. '
            "One that cannot be loaded stops `sup run` with a line naming it."
        ),
    ] = []
    settings: Annotated[
        dict[str, dict[str, Any]],
        doc(
            "Each plugin's settings, by name: write them as [plugins.<name>] tables (e.g. [plugins.livekit] and "
            "its url below it), or as SUP_PLUGINS_<NAME>_<KEY> variables; they are gathered here."
        ),
    ] = {}


class CallsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """TURN credentials for calls ([operations.md](operations.md#calls-turn-and-livekit)); group calls: a plugin."""

    turn_uris: Annotated[
        list[str],
        doc(
            "TURN URIs handed to clients with their credentials, e.g. "
            '["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349?transport=tcp"]. '
            "Empty: no TURN (GET /api/v1/calls/turn answers 404 not_configured)."
        ),
    ] = []
    turn_secret: Annotated[
        str,
        doc(
            "coturn's static-auth-secret (use-auth-secret). Empty: derived from the master secret; "
            "`sup calls turn-secret` prints it for turnserver.conf."
        ),
    ] = ""
    turn_ttl_seconds: Annotated[
        int,
        doc(
            "How long TURN credentials stay valid; a call that outlives them loses its relay, so keep it long.",
            ge=60,
            le=7 * 86400,
        ),
    ] = 86400
    ring_timeout_seconds: Annotated[
        float,
        doc("How long a 1:1 call rings before it ends as missed (call signalling over the WebSocket).", gt=0, le=600),
    ] = 45.0


class EmailConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Email: verified addresses, password reset, invites ([api.md](api.md#email-and-password-reset))."""

    smtp_host: Annotated[str, doc("SMTP server to send through. Empty: SUP sends no email.")] = ""
    smtp_port: Annotated[int, doc("SMTP port: 587 for starttls, 465 for tls, 25 for none.", ge=1, le=65535)] = 587
    smtp_security: Annotated[
        Literal["starttls", "tls", "none"],
        doc("starttls (upgrade a plain connection), tls (TLS from the start), or none (a local relay only)."),
    ] = "starttls"
    smtp_username: Annotated[str, doc("SMTP login; empty: no authentication.")] = ""
    smtp_password: Annotated[str, doc("SMTP password.")] = ""
    from_address: Annotated[str, doc('The sender, e.g. "SUP <sup@example.org>"; required with smtp_host.')] = ""
    timeout_seconds: Annotated[float, doc("How long one delivery may take.", gt=0, le=600)] = 30.0
    verify_token_hours: Annotated[
        float, doc("An address verification link or code works this long.", gt=0, le=24 * 30)
    ] = 24.0
    reset_token_minutes: Annotated[
        float, doc("A password reset link or code works this long, and once.", gt=0, le=24 * 60)
    ] = 60.0


class PushConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Push to closed apps and tabs: Web Push and UnifiedPush ([operations.md](operations.md#push-notifications))."""

    enabled: Annotated[
        bool, doc("Let devices register push subscriptions, and push to those without an open socket.")
    ] = True
    contact: Annotated[
        str,
        doc(
            "Who push services may contact about this server (the VAPID `sub`): mailto:you@example.org or an "
            "https:// URL. Empty: server.public_url when it is https://, else mailto:postmaster@localhost."
        ),
    ] = ""
    allow_http: Annotated[
        bool, doc("Accept push endpoints over plain http:// (a push service on your own network). Off: https only.")
    ] = False
    allow_hosts: Annotated[
        list[str],
        doc(
            "Push endpoints that may be on loopback, private or link-local addresses: host names, IP addresses "
            'or networks, e.g. ["ntfy.lan", "10.0.0.0/8"]. Any other endpoint must resolve to public addresses '
            "only, so that SUP cannot be made to send requests into its own network."
        ),
    ] = []
    coalesce_seconds: Annotated[
        float,
        doc("A burst of events for one device within this long is one push (the first event starts the wait).", ge=0),
    ] = 0.5
    max_attempts: Annotated[int, doc("Tries of one push while its push service answers 429 or 5xx.", ge=1)] = 5
    retry_base_seconds: Annotated[
        float, doc("The first retry waits about this long, doubling with each further one (up to 10 minutes).", gt=0)
    ] = 5.0
    timeout_seconds: Annotated[float, doc("How long one request to a push service may take.", gt=0, le=120)] = 10.0
    concurrency: Annotated[int, doc("Requests to push services in flight at once, per process.", ge=1)] = 64
    ttl_seconds: Annotated[
        int, doc("How long a push service keeps a push for a device that is offline (RFC 8030 TTL).", ge=0)
    ] = 86400
