"""The settings of the running service: listening, database, sign-in, limits, bus, sockets, logs, metrics, keys."""

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
            " 0: one on SQLite (it has one writer), 4 on Postgres.",
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
        int, doc("Password hashes computed at once, off the event loop (0: one per CPU core).", ge=0)
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
