"""Push notifications: a device with no open socket hears that something new waits, and nothing more.

How it flows (docs/operations.md#push-notifications):

1. A device registers its push subscription (Web Push or UnifiedPush: an endpoint and the keys
   RFC 8291 encrypts to). One per device; registering again replaces it.
2. After a transaction that stored `message.new` events commits, the announcer hands them here
   (`observe`, no I/O). A background task marks the subscriptions of the recipients' devices that
   have no socket open on any process (the presence tracker, per device) and did not send the
   message: the first event of a burst sets the push due `coalesce_seconds` later; the following
   ones only move the newest seq. Then a `push.send` job is queued for when it is due.
3. The job claims due rows (a lease: two processes never push the same one), checks again that
   the device is still offline and has not acknowledged those events meanwhile, and asks the
   `send_push` hook (built in: Web Push, sup/transport/webpush.py) to deliver
   {"type": "new", "chat_id": ...} encrypted to the device. 429/5xx are retried with backoff;
   404/410 remove the subscription.

Pushes are hints, like the bus: a crash between the commit and step 2 loses one, never a message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec

from sup.bus.presence import PresenceTracker
from sup.bus.process import stop_task
from sup.clock import Clock
from sup.config import PushConfig
from sup.db.database import Database, Queryable, Row, from_row
from sup.db.push import PushStore
from sup.delivery import Delivery
from sup.domain.events import Announcer
from sup.domain.pushtargets import EndpointPolicy
from sup.errors import Code, DomainError
from sup.jobs.scheduler import Scheduler
from sup.plugins.hookspecs import PushDevice, PushPayload, PushResult
from sup.plugins.host import Hooks

log = logging.getLogger("sup.push")

JOB = "push.send"
BUCKET_MS = 250  # one job per quarter second at most, however many devices are due in it
CLAIM_BATCH = 256
DRAIN_SECONDS = 30.0  # one job sends this long at most, then leaves the rest to the next
LEASE_SECONDS = 120.0  # longer than a drain plus a push service's timeout
MAX_OBSERVED = 100_000  # events waiting to be marked; past that they are dropped (pushes are hints)
RETRY_CAP_SECONDS = 600.0
_NEW_MESSAGE = b'{"type":"message.new",'


class Subscription(msgspec.Struct, kw_only=True):
    device_id: str
    endpoint: str
    created_at: int
    updated_at: int
    last_pushed_at: int | None = None

    @classmethod
    def from_row(cls, row: Row) -> Subscription:
        return from_row(cls, row, device_id=str(row["device_id"]))


class _Sent(msgspec.Struct):
    chat_id: str
    sender_id: str | None = None


class _NewMessage(msgspec.Struct):
    message: _Sent


_decode_new = msgspec.json.Decoder(_NewMessage).decode


def _b64url(text: str, field: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise DomainError(Code.VALIDATION_FAILED, f"{field} is not base64url.", field=field) from None


def check_keys(p256dh: str, auth: str) -> None:
    """The device's keys as RFC 8291 needs them: a P-256 point (65 bytes) and a 16-byte secret."""
    point = _b64url(p256dh, "p256dh")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise DomainError(
            Code.VALIDATION_FAILED, "p256dh is not an uncompressed P-256 public key.", field="p256dh"
        ) from None
    if len(point) != 65:
        raise DomainError(Code.VALIDATION_FAILED, "p256dh is not an uncompressed P-256 public key.", field="p256dh")
    if len(_b64url(auth, "auth")) != 16:
        raise DomainError(Code.VALIDATION_FAILED, "auth is a 16-byte secret (base64url).", field="auth")


def device_key(device_id: str) -> str:
    """The presence tracker counts sockets per user; per device under this key (no user id looks like it)."""
    return f"device:{device_id}"


class PushingAnnouncer:
    """The event writer's announcer: the bus as before, then new messages handed to push."""

    def __init__(self, inner: Announcer, push: PushService) -> None:
        self._inner = inner
        self._push = push

    async def announce(self, deliveries: Sequence[Delivery]) -> None:
        await self._inner.announce(deliveries)
        self._push.observe(deliveries)

    async def announce_ephemeral(self, user_ids: Iterable[str], payload: bytes) -> None:
        await self._inner.announce_ephemeral(user_ids, payload)

    async def announce_revoked(self, device_ids: Sequence[str]) -> None:
        await self._inner.announce_revoked(device_ids)


class PushService:
    def __init__(
        self,
        db: Database,
        store: PushStore,
        policy: EndpointPolicy,
        tracker: PresenceTracker,
        scheduler: Scheduler,
        hooks: Hooks,
        clock: Clock,
        config: PushConfig,
        vapid_public_key: bytes,
    ) -> None:
        self._db = db
        self._store = store
        self._policy = policy
        self._tracker = tracker
        self._scheduler = scheduler
        self._hooks = hooks
        self._clock = clock
        self._config = config
        self.vapid_public_key = base64.urlsafe_b64encode(vapid_public_key).rstrip(b"=").decode()
        self._observed: list[Delivery] = []
        self._wake = asyncio.Event()
        self._marker: asyncio.Task[None] | None = None
        self._marking = False
        self._dropped = 0
        self._sending = asyncio.Semaphore(config.concurrency)
        if config.enabled:
            scheduler.register(JOB, self._run_job, timeout=DRAIN_SECONDS + 30)
            # A job lost to a crash (between a mark and its enqueue) or to clock skew between processes:
            # what is overdue goes out within a minute anyway.
            scheduler.every("push-sweep", 60, self.drain)

    # -- subscriptions (the API) --------------------------------------------------------------

    def _require_enabled(self) -> None:
        if not self._config.enabled:
            raise DomainError(Code.NOT_CONFIGURED, "Push notifications are off on this server (push.enabled).")

    async def subscribe(self, user_id: str, device_id: str, endpoint: str, p256dh: str, auth: str) -> Subscription:
        """Register (or replace) this device's subscription, once its endpoint and keys pass the checks."""
        self._require_enabled()
        check_keys(p256dh, auth)
        await self._policy.check(endpoint)
        now = self._clock.now_ms()

        async def work(tx: Queryable) -> Row:
            return await self._store.subscribe(
                tx, device_id=device_id, user_id=user_id, endpoint=endpoint, p256dh=p256dh, auth=auth, now=now
            )

        return Subscription.from_row(await self._db.run_in_transaction(work))

    async def subscription(self, device_id: str) -> Subscription:
        row = await self._store.get(self._db, device_id)
        if row is None:
            raise DomainError(Code.NOT_FOUND, "This device has no push subscription.")
        return Subscription.from_row(row)

    async def unsubscribe(self, device_id: str) -> None:
        """Forget this device's subscription; having none is not an error (the call is idempotent)."""

        async def work(tx: Queryable) -> bool:
            return await self._store.unsubscribe(tx, device_id)

        await self._db.run_in_transaction(work)

    def vapid(self) -> str:
        self._require_enabled()
        return self.vapid_public_key

    # -- sockets -----------------------------------------------------------------------------

    async def socket_opened(self, device_id: str) -> None:
        await self._tracker.connected(device_key(device_id))

    async def socket_closed(self, device_id: str) -> None:
        await self._tracker.disconnected(device_key(device_id))

    async def _online(self, device_id: str) -> bool:
        return await self._tracker.is_online(device_key(device_id))

    # -- after a commit: marking what waits --------------------------------------------------

    def announcer(self, inner: Announcer) -> Announcer:
        return PushingAnnouncer(inner, self) if self._config.enabled else inner

    def observe(self, deliveries: Sequence[Delivery]) -> None:
        """Committed events (on the event loop, no I/O): new messages wait for the marker task."""
        found = [d for d in deliveries if d.payload.startswith(_NEW_MESSAGE)]
        if not found:
            return
        if len(self._observed) + len(found) > MAX_OBSERVED:
            self._dropped += len(found)
            if self._dropped == len(found):
                log.warning("push: the database is far behind; pushes for new events are skipped")
            return
        self._observed.extend(found)
        self._wake.set()

    async def start(self) -> None:
        if self._config.enabled and self._marker is None:
            self._marker = asyncio.create_task(self._mark_forever(), name="push-marker")

    async def close(self) -> None:
        await stop_task(self._marker)
        self._marker = None

    async def _mark_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._observed = self._observed, []
            self._dropped = 0
            self._marking = True
            try:
                await self.mark(batch)
            except Exception:  # the database is away: these pushes are lost, the messages are not
                log.warning("push: marking %d event(s) failed", len(batch), exc_info=True)
            finally:
                self._marking = False

    async def mark(self, deliveries: Sequence[Delivery]) -> None:
        """Set pushes due for the offline, subscribed recipients of these new messages."""
        by_device: dict[str, list[Delivery]] = {}
        for delivery in deliveries:
            by_device.setdefault(delivery.device_id, []).append(delivery)
        # Only the frames of subscribed devices are read: a channel post reaches thousands of devices,
        # most of them with no push subscription.
        owners = await self._store.subscribed(self._db, list(by_device))
        due: list[tuple[str, int, str]] = []
        for device_id, user_id in owners.items():
            newest: tuple[int, _Sent] | None = None
            several = False  # its new messages in this batch are in more than one chat
            for delivery in by_device[device_id]:
                try:
                    sent = _decode_new(delivery.payload).message
                except msgspec.DecodeError:
                    continue
                if newest is not None and newest[1].chat_id != sent.chat_id:
                    several = True
                if newest is None or delivery.seq > newest[0]:
                    newest = (delivery.seq, sent)
            if newest is None:
                continue
            seq, sent = newest
            if sent.sender_id is not None and str(sent.sender_id) == str(user_id):
                continue  # my own message, from another of my devices
            if await self._online(device_id):
                continue  # its socket brings the event
            due.append((device_id, seq, "" if several else sent.chat_id))
        if not due:
            return
        due_at = self._clock.now_ms() + int(self._config.coalesce_seconds * 1000)

        async def work(tx: Queryable) -> list[int]:
            return await self._store.mark_many(tx, due, due_at)

        dues = await self._db.run_in_transaction(work)
        if dues:
            await self._schedule(min(dues))

    async def _schedule(self, at: int, after_bucket: int = 0) -> None:
        bucket = max(math.ceil(at / BUCKET_MS), after_bucket + 1)
        # The key is the bucket's: every device due in it shares one job, and a job never
        # dedupes onto itself (it schedules the next one for a later bucket).
        run_at = bucket * BUCKET_MS
        await self._scheduler.enqueue(JOB, str(bucket).encode(), run_at=run_at, dedupe_key=f"{JOB}:{bucket}")

    # -- the job: sending what is due --------------------------------------------------------

    async def _run_job(self, payload: bytes) -> None:
        await self.drain(after_bucket=int(payload or b"0"))

    async def drain(self, after_bucket: int = 0) -> None:
        """Push to every device whose push is due (for DRAIN_SECONDS at most), then schedule the next job."""
        started = time.monotonic()
        lease_ms = int(LEASE_SECONDS * 1000)
        while time.monotonic() - started < DRAIN_SECONDS:
            now = self._clock.now_ms()

            async def claim(tx: Queryable, now: int = now) -> list[Any]:
                return await self._store.claim(tx, now, now + lease_ms, CLAIM_BATCH)

            rows = await self._db.run_in_transaction(claim)
            if not rows:
                break
            outcomes = await asyncio.gather(*(self._push_one(row) for row in rows))
            await self._settle(rows, outcomes)
        next_due = await self._store.next_due(self._db)
        if next_due is not None:
            await self._schedule(next_due, after_bucket)

    async def _push_one(self, row: dict[str, Any]) -> PushResult:
        device_id = str(row["device_id"])
        if row["revoked"]:
            return PushResult("gone", detail="the device was revoked")
        if row["acked_seq"] >= row["pending_seq"] or await self._online(device_id):
            return PushResult("skipped")  # it came back online meanwhile and has (or will have) the events
        device = PushDevice(
            user_id=str(row["user_id"]),
            device_id=device_id,
            provider="webpush",
            endpoint=row["endpoint"],
            keys={"p256dh": row["p256dh"], "auth": row["auth"]},
        )
        chat_id = row["pending_chat"] or None  # '' when the burst spanned several chats
        payload = PushPayload(kind="message", chat_id=chat_id, ttl_seconds=self._config.ttl_seconds)
        async with self._sending:
            try:
                answer = await self._hooks.first("send_push", device=device, payload=payload)
            except Exception as exc:
                log.warning("push to device %s failed in its provider", device_id, exc_info=True)
                return PushResult("retry", detail=f"{type(exc).__name__}: {exc}")
        if answer is True:
            return PushResult("delivered")
        if isinstance(answer, PushResult):
            return answer
        return PushResult("rejected", detail="no push provider answered for this device")

    async def _settle(self, rows: Sequence[dict[str, Any]], outcomes: Sequence[PushResult]) -> None:
        now = self._clock.now_ms()
        rearm_at = now + int(self._config.coalesce_seconds * 1000)
        retries: list[tuple[str, int, int]] = []
        for row, result in zip(rows, outcomes, strict=True):
            if result.outcome == "retry":
                attempts = row["attempts"] + 1
                if attempts < self._config.max_attempts:
                    retries.append((str(row["device_id"]), now + self._backoff_ms(attempts, result), attempts))
                    continue
                log.warning("push to device %s given up after %d attempts: %s", row["device_id"], attempts, result)
            elif result.outcome == "rejected":
                log.warning("push to device %s refused: %s %s", row["device_id"], result.status, result.detail)

        retrying = {device_id for device_id, _, _ in retries}
        gone: list[tuple[str, str]] = []
        done: list[tuple[str, int, int]] = []
        for row, result in zip(rows, outcomes, strict=True):
            device_id = str(row["device_id"])
            if result.outcome == "gone":
                gone.append((device_id, row["endpoint"]))
            elif device_id not in retrying:
                done.append((device_id, row["pending_seq"], 1 if result.outcome == "delivered" else 0))

        async def work(tx: Queryable) -> None:
            await self._store.settle_many(tx, done, now, rearm_at)
            for device_id, endpoint in gone:
                await self._store.forget_gone(tx, device_id, endpoint)
            for device_id, due_at, attempts in retries:
                await self._store.retry_at(tx, device_id, due_at, attempts)

        await self._db.run_in_transaction(work)

    def _backoff_ms(self, attempts: int, result: PushResult) -> int:
        # Exponential with jitter, so that devices of one push service that failed together do not
        # all come back in the same instant; a Retry-After asks for at least that long.
        ceiling = min(RETRY_CAP_SECONDS, self._config.retry_base_seconds * 2 ** (attempts - 1))
        delay = ceiling * random.uniform(0.5, 1.0)
        if result.retry_after is not None:
            delay = max(delay, min(result.retry_after, RETRY_CAP_SECONDS))
        return int(delay * 1000)

    # -- for tests and operations ------------------------------------------------------------

    async def waiting(self) -> int:
        """Pushes waiting to be sent, plus events not yet looked at."""
        pending = len(self._observed) + (1 if self._marking else 0)
        return pending + await self._store.waiting(self._db)
