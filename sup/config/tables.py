"""The settings, one `*Config` section per TOML table, in the order `sup.toml.example` shows them.

Each setting is declared once, with its documentation (`doc`): `sup init` and docs/configuration.md
are rendered from these declarations (rendering.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta


def doc(text: str, **constraints: Any) -> Meta:
    return Meta(description=text, **constraints)


Port = Annotated[int, doc("TCP port to listen on.", ge=0, le=65535)]


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: Annotated[str, doc("Address to listen on. Use 0.0.0.0 to listen on every interface.")] = "127.0.0.1"
    port: Port = 8080
    data_dir: Annotated[
        str,
        doc("Directory for the SQLite database, stored files and generated secrets."),
    ] = "./sup-data"
    public_url: Annotated[
        str,
        doc(
            "URL clients use to reach this server, e.g. https://chat.example.org: the base of signed media URLs. "
            "Empty: the request's Host and scheme (X-Forwarded-Proto from a trusted proxy)."
        ),
    ] = ""
    max_body_bytes: Annotated[
        int, doc("Largest JSON request body accepted, in bytes (uploads have their own limits).", ge=1024)
    ] = 1_048_576
    shutdown_timeout: Annotated[
        float, doc("Seconds open requests get to finish on SIGTERM before they are cut.", ge=0)
    ] = 10.0
    header_timeout_seconds: Annotated[
        float,
        doc(
            "A connection must send a request's complete headers within this many seconds of connecting (or of "
            "starting the request); else it is closed, so that trickled headers cannot hold connections open.",
            gt=0,
        ),
    ] = 10.0
    keepalive_timeout_seconds: Annotated[
        float, doc("An idle keep-alive connection (no request under way) is closed after this many seconds.", gt=0)
    ] = 30.0
    listen_backlog: Annotated[
        int,
        doc(
            "Connections the kernel queues before `sup run` accepts them (capped by net.core.somaxconn), so that "
            "bursts of connects do not wait for SYN retries.",
            ge=1,
            le=65535,
        ),
    ] = 1024
    trusted_proxies: Annotated[
        list[str],
        doc("Reverse proxies (IPs or CIDRs) whose X-Forwarded-For and X-Forwarded-Proto are believed."),
    ] = []
    cors_origins: Annotated[
        list[str], doc('Origins allowed to call the API from a browser, e.g. ["https://chat.example.org"].')
    ] = []


class DatabaseConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: Annotated[
        str,
        doc("sqlite:///path/to/sup.db or postgresql://user:pass@host:5432/db. Empty: SQLite at <data_dir>/sup.db."),
    ] = ""
    sqlite_synchronous: Annotated[
        Literal["full", "normal"],
        doc("SQLite fsync policy: full survives power loss; normal only survives a crash of SUP."),
    ] = "full"
    sqlite_readers: Annotated[
        int, doc("SQLite read connections (reads never wait for the single writer).", ge=1, le=64)
    ] = 2
    pool_min: Annotated[int, doc("Postgres: connections kept open.", ge=1)] = 2
    pool_max: Annotated[int, doc("Postgres: most connections opened.", ge=1)] = 10
    batch_workers: Annotated[
        int,
        doc(
            "Group-commit workers, sends sharded over them by chat (each overlaps the others' round trips)."
            " 0: one on SQLite (it has one writer); on Postgres 4 for one process, one per process when"
            " several share a bus (the lanes of all processes add up).",
            ge=0,
            le=32,
        ),
    ] = 0
    auto_migrate: Annotated[bool, doc("Apply pending migrations when `sup run` starts.")] = True


class AuthConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    registration: Annotated[
        Literal["open", "invite", "closed"],
        doc("Who may register: anyone, holders of an invite code (`sup admin invite`), or nobody."),
    ] = "open"
    access_token_ttl: Annotated[
        int, doc("Lifetime of an access token in seconds (at most 15 minutes).", ge=10, le=900)
    ] = 900
    refresh_token_ttl: Annotated[int, doc("Lifetime of an unused refresh token in seconds.", ge=60)] = 30 * 86400
    argon2_memory_kib: Annotated[int, doc("argon2id memory cost in KiB (OWASP minimum: 19456).", ge=19456)] = 19456
    argon2_time_cost: Annotated[int, doc("argon2id iterations (OWASP minimum at 19 MiB: 2).", ge=2)] = 2
    argon2_parallelism: Annotated[int, doc("argon2id lanes.", ge=1, le=16)] = 1
    hash_workers: Annotated[
        int,
        doc(
            "Password hashes computed at once, off the event loop (0: one per CPU core but one, at least "
            "one: a burst of logins leaves a core to everything else).",
            ge=0,
        ),
    ] = 0
    totp_issuer: Annotated[str, doc("Issuer name shown in authenticator apps.")] = "SUP"


class RateLimitConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Rate limits; on a redis:// bus every process shares them ([operations.md](operations.md#rate-limits))."""

    enabled: Annotated[
        bool, doc("Limit requests: every API route has a budget, and logins, uploads and emails their own too.")
    ] = True
    auth_per_ip: Annotated[int, doc("Authentication requests per minute from one IP address.", ge=1)] = 30
    auth_per_account: Annotated[
        int,
        doc(
            "Failed logins per minute against one account, from all addresses together, before each further "
            "attempt from an unrecognised client is slowed down (never refused); also the failed password and "
            "2FA checks per minute of a logged-in user, beyond which they get 429.",
            ge=1,
        ),
    ] = 10
    auth_failures_per_account_ip: Annotated[
        int,
        doc(
            "Failed logins per minute against one account from one IP address; beyond that, that address gets "
            "429 for that account, unless the client is recognised (it logged in from there before, or shows a "
            "refresh token of the account).",
            ge=1,
        ),
    ] = 10
    auth_failures_per_ip: Annotated[
        int,
        doc(
            "Failed logins per minute from one IP address, whatever the accounts; beyond that, 429 (recognised "
            "clients aside).",
            ge=1,
        ),
    ] = 20
    auth_max_delay: Annotated[
        float,
        doc("The longest an attempt on an account past auth_per_account waits, in seconds.", ge=0, le=30),
    ] = 3.0
    prekey_bundles_per_user: Annotated[
        int,
        doc("Prekey bundles one user may fetch per minute of one other user (each uses up a one-time prekey).", ge=1),
    ] = 60
    uploads_per_user: Annotated[int, doc("File uploads (whole or resumable) one user may start per minute.", ge=1)] = 60
    call_invites_per_user: Annotated[
        int, doc("1:1 calls one user may place per minute (each rings every device of someone).", ge=1)
    ] = 20
    email_per_address: Annotated[
        int,
        doc(
            "Emails per hour to one address, or asked for one account (password resets, verification), "
            "whatever the asking addresses.",
            ge=1,
        ),
    ] = 5
    email_per_ip: Annotated[int, doc("Requests per hour from one IP address that would send an email.", ge=1)] = 20
    sends_per_user: Annotated[
        int,
        doc(
            "Messages (sends and forwards) one user may send per minute, from all devices together, over "
            "REST and the WebSocket (sends_per_device limits each device).",
            ge=1,
        ),
    ] = 300
    search_per_user: Annotated[int, doc("Searches (users, chats, messages) one user may run per minute.", ge=1)] = 60
    joins_per_user: Annotated[
        int,
        doc("Invite link previews and joins by one user per minute (each preview tries an invite code).", ge=1),
    ] = 20
    prekey_fetches_per_user: Annotated[
        int,
        doc(
            "Key and prekey bundle requests by one user per minute, of all other users together "
            "(prekey_bundles_per_user limits those of each one); a first message to a group of 1,000 "
            "fetches about 1,000.",
            ge=1,
        ),
    ] = 2000
    upload_requests_per_user: Annotated[
        int,
        doc(
            "Upload requests (starts, chunks, status, completions) by one user per minute "
            "(uploads_per_user limits how many start).",
            ge=1,
        ),
    ] = 1200
    requests_per_user: Annotated[
        int, doc("Every other API request by one logged-in user per minute, from all devices together.", ge=1)
    ] = 1200
    requests_per_ip: Annotated[
        int,
        doc(
            "API requests with no logged-in user from one IP address per minute: health checks, media by "
            "signed URL, WebSocket upgrades, logins, registrations.",
            ge=1,
        ),
    ] = 1200
    sends_per_device: Annotated[
        int,
        doc(
            "Messages one device may send per minute, over REST and the WebSocket together (one budget); "
            "beyond that, 429 (REST) or an `error` frame with code rate_limited (WebSocket).",
            ge=1,
        ),
    ] = 600


class BusConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: Annotated[
        str,
        doc(
            "memory:// for one process; redis://host:6379/0 when several processes serve one database "
            "(needs the redis extra)."
        ),
    ] = "memory://"
    namespace: Annotated[
        str,
        doc(
            "Part of every Redis key and pub/sub channel of this install (letters, digits, . _ -). Empty: made "
            "from the install id kept in the database and the database's file or name, so installs sharing one "
            "Redis stay apart by themselves. Set it for a copy of a database under the same name on another "
            "Postgres server that shares the original's Redis.",
            pattern="^[A-Za-z0-9._-]{0,64}$",
        ),
    ] = ""


class WebSocketConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    heartbeat_seconds: Annotated[
        float, doc("Ping interval; a connection that misses a pong is closed (detects dead peers).", gt=0)
    ] = 30.0
    queue_limit: Annotated[
        int,
        doc("Live events held in memory per connection; beyond that it reads them from the database.", ge=16),
    ] = 2000
    send_timeout_seconds: Annotated[
        float,
        doc(
            "The window over which a connection's progress is measured: while frames wait for it, a client whose "
            "socket takes in fewer than stall_min_bytes in this many seconds is closed with code 4008 and resumes "
            "from its cursor (a slow but steady reader is never cut).",
            gt=0,
        ),
    ] = 20.0
    stall_min_bytes: Annotated[
        int,
        doc("The fewest bytes a client with frames waiting must take in per send_timeout_seconds window.", ge=1),
    ] = 16384
    reply_queue_limit: Annotated[
        int,
        doc(
            "Replies (pong, message.sent, error) waiting for one connection; a client that makes more without "
            "reading them is closed with code 4008 as a slow consumer.",
            ge=16,
        ),
    ] = 256
    frames_per_second: Annotated[
        float,
        doc("Frames a connection may send per second, on average (after authenticating).", gt=0),
    ] = 100.0
    frame_burst: Annotated[
        int,
        doc(
            "Frames a connection may send at once above frames_per_second. Past it a frame is refused with an "
            "`error` frame (code rate_limited); a client that sends as many again regardless is closed with 4029.",
            ge=1,
        ),
    ] = 1000
    catch_up_seconds: Annotated[
        float, doc("How often connections are checked against the database for missed events.", gt=0)
    ] = 2.0
    event_retention_days: Annotated[
        int, doc("Acknowledged events are kept this long for devices that resume from old cursors.", ge=1)
    ] = 30


class LoggingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    level: Annotated[Literal["debug", "info", "warning", "error"], doc("Log level.")] = "info"
    access_log: Annotated[bool, doc("Log one line per HTTP request (never tokens or query strings).")] = True
    format: Annotated[
        Literal["text", "json"],
        doc("text: one line per record for people; json: one JSON object per line for log shippers."),
    ] = "text"


class MetricsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Prometheus metrics at `GET /metrics` ([operations.md](operations.md#monitoring))."""

    enabled: Annotated[bool, doc("Collect metrics and serve them at GET /metrics.")] = True
    allow: Annotated[
        list[str],
        doc(
            "Addresses or networks (CIDR) that may read /metrics; behind server.trusted_proxies, the client's "
            "own address counts."
        ),
    ] = msgspec.field(default_factory=lambda: ["127.0.0.1", "::1"])
    token: Annotated[
        str,
        doc("A bearer token (at least 16 characters) that may read /metrics from anywhere; empty: none."),
    ] = ""


class SecurityConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    secret_key: Annotated[
        str,
        doc(
            "Master secret (at least 32 characters). Empty: generated on first start and kept in "
            "<data_dir>/secrets.json. Set it when several processes share one database."
        ),
    ] = ""


class CryptoConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The end-to-end key directory ([e2e.md](e2e.md))."""

    prekey_low_threshold: Annotated[
        int, doc("A device gets a `prekeys.low` event when its one-time prekeys fall below this."), Meta(ge=1)
    ] = 20
    max_one_time_prekeys: Annotated[
        int, doc("One-time prekeys a device may keep stored on the server."), Meta(ge=1, le=100_000)
    ] = 500
    signed_prekey_grace_days: Annotated[
        int, doc("How long a superseded signed prekey is kept after rotation."), Meta(ge=0)
    ] = 30


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
