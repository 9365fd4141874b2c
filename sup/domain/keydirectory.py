"""The E2E key directory: the server publishes public keys and relays sender keys, and reads nothing.

Per device: an Ed25519 identity key, a signed X25519 prekey (its signature is checked here,
so a forged one never reaches a peer) and one-time prekeys, each handed out at most once.
For encrypted groups, each sender device distributes its sender key pairwise-encrypted to
every member device; the server records who has the current key, refuses a group message
until every member device has it, and forgets every sender key when a member leaves, so
no one can go on sending to a group under a key the departed member holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sup.clock import Clock
from sup.db.chats import MemberStore
from sup.db.database import Database, Queryable, Row, Transaction
from sup.db.keydirectory import KeyDirectoryStore
from sup.domain.access import ChatAccess
from sup.domain.events import EventWriter, encode
from sup.domain.keychanges import KeyChanges
from sup.domain.limits import Budget
from sup.e2ekeys import (
    KEY_BYTES,
    SIGNATURE_BYTES,
    Bundle,
    OneTimePrekey,
    SignedPrekey,
    is_weak_public_key,
    signed_prekey_message,
)
from sup.errors import Code, DomainError, RateLimited
from sup.ids import is_uuid


@dataclass(frozen=True, slots=True)
class DeviceKeys:
    user_id: str
    device_id: str
    identity_key: bytes
    signed_prekey: SignedPrekey
    device_name: str  # as its owner named it: what a "new device" notice shows


@dataclass(frozen=True, slots=True)
class PrekeyStatus:
    one_time_prekeys: int
    signed_prekey_id: int | None
    signed_prekey_created_at: int | None


@dataclass(frozen=True, slots=True)
class SenderKeyDistribution:
    chat_id: str
    sender_user_id: str
    sender_device_id: str
    distribution_id: str
    ciphertext: bytes
    created_at: int


def invalid(detail: str, field: str) -> DomainError:
    return DomainError(Code.VALIDATION_FAILED, detail, field=field)


def verify_signed_prekey(identity_key: bytes, prekey: SignedPrekey) -> None:
    """Refuse a malformed key or a signature the identity key did not make."""
    if len(identity_key) != KEY_BYTES:
        raise invalid("identity_key is a 32-byte Ed25519 public key.", "identity_key")
    if len(prekey.public_key) != KEY_BYTES:
        raise invalid("signed_prekey.public_key is a 32-byte X25519 public key.", "signed_prekey")
    if len(prekey.signature) != SIGNATURE_BYTES:
        raise invalid("signed_prekey.signature is a 64-byte Ed25519 signature.", "signed_prekey")
    if is_weak_public_key("ed25519", identity_key):
        raise invalid("identity_key is not a usable Ed25519 public key (small order or not canonical).", "identity_key")
    if is_weak_public_key("x25519", prekey.public_key):
        raise invalid("signed_prekey.public_key is a small-order X25519 point.", "signed_prekey")
    try:
        Ed25519PublicKey.from_public_bytes(identity_key).verify(
            prekey.signature, signed_prekey_message(prekey.public_key)
        )
    except (InvalidSignature, ValueError):
        raise DomainError(
            Code.INVALID_SIGNATURE, "The signed prekey's signature does not verify with the identity key."
        ) from None


def _check_one_time(keys: Sequence[OneTimePrekey]) -> None:
    if len({k.key_id for k in keys}) != len(keys):
        raise invalid("one_time_prekeys name each key_id once.", "one_time_prekeys")
    if any(len(k.public_key) != KEY_BYTES for k in keys):
        raise invalid("Each one-time prekey is a 32-byte X25519 public key.", "one_time_prekeys")
    if any(is_weak_public_key("x25519", k.public_key) for k in keys):
        raise invalid("A one-time prekey is a small-order X25519 point.", "one_time_prekeys")


def _signed(row: Row) -> SignedPrekey:
    return SignedPrekey(row["key_id"], bytes(row["public_key"]), bytes(row["signature"]))


@dataclass(slots=True, eq=False)
class KeyDirectory:
    db: Database
    store: KeyDirectoryStore
    members: MemberStore
    access: ChatAccess
    events: EventWriter
    key_changes: KeyChanges
    clock: Clock
    _: KW_ONLY
    low_threshold: int
    max_one_time: int
    signed_prekey_grace_ms: int
    bundle_budget: Budget  # per requester and target user

    # -- my device's keys ------------------------------------------------------------------

    async def publish(
        self,
        user_id: str,
        device_id: str,
        identity_key: bytes,
        signed_prekey: SignedPrekey,
        one_time: Sequence[OneTimePrekey],
    ) -> int:
        """Publish (or replace) my device's keys; everyone who shares a chat hears of it.

        The first publish is when the device can first be encrypted to: peers get `keys.changed`
        (`added`) then, so they announce the device before anything is encrypted to it. A new
        identity key later is `keys.changed` (`identity`).
        """
        verify_signed_prekey(identity_key, signed_prekey)
        _check_one_time(one_time)
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            current = await self.store.identity_key(tx, device_id)
            if current != identity_key:
                await self.store.set_identity(tx, user_id, device_id, identity_key, now)
                await self.store.forget_device_sender_keys(tx, device_id)
                change = "added" if current is None else "identity"
                await self.key_changes.record(tx, user_id, [device_id], change, now)
            return await self._add_prekeys(tx, device_id, signed_prekey, one_time, now)

    async def upload_prekeys(
        self, device_id: str, signed_prekey: SignedPrekey | None, one_time: Sequence[OneTimePrekey]
    ) -> int:
        """Top up one-time prekeys and/or rotate the signed prekey of my device."""
        _check_one_time(one_time)
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            identity_key = await self.store.identity_key(tx, device_id)
            if identity_key is None:
                raise DomainError(Code.KEYS_MISSING, "Publish this device's keys first (POST /api/v1/crypto/keys).")
            if signed_prekey is not None:
                verify_signed_prekey(identity_key, signed_prekey)
            return await self._add_prekeys(tx, device_id, signed_prekey, one_time, now)

    async def _add_prekeys(
        self,
        tx: Transaction,
        device_id: str,
        signed_prekey: SignedPrekey | None,
        one_time: Sequence[OneTimePrekey],
        now: int,
    ) -> int:
        if signed_prekey is not None:
            current = await self.store.current_signed_prekey(tx, device_id)
            if current is None or current["key_id"] != signed_prekey.key_id:
                if signed_prekey.key_id in await self.store.signed_prekey_ids(tx, device_id):
                    raise DomainError(Code.CONFLICT, "That signed prekey id was used before; choose a new one.")
                await self.store.add_signed_prekey(
                    tx, device_id, signed_prekey.key_id, signed_prekey.public_key, signed_prekey.signature, now
                )
                await self.store.prune_superseded(tx, device_id, now - self.signed_prekey_grace_ms)
        count = await self.store.count_one_time(tx, device_id)
        if count + len(one_time) > self.max_one_time:
            raise DomainError(
                Code.CONFLICT,
                f"A device keeps at most {self.max_one_time} one-time prekeys; {count} are stored.",
                stored=count,
            )
        await self.store.add_one_time(tx, device_id, [(k.key_id, k.public_key) for k in one_time])
        return await self.store.count_one_time(tx, device_id)

    async def status(self, device_id: str) -> PrekeyStatus:
        signed = await self.store.current_signed_prekey(self.db, device_id)
        return PrekeyStatus(
            one_time_prekeys=await self.store.count_one_time(self.db, device_id),
            signed_prekey_id=signed["key_id"] if signed else None,
            signed_prekey_created_at=signed["created_at"] if signed else None,
        )

    # -- other devices' keys ---------------------------------------------------------------

    async def device_keys(self, user_id: str, device_id: str | None) -> list[DeviceKeys]:
        """Public keys only: nothing is consumed. device_id None: every active device of the user."""
        rows = await self._find(self.db, user_id, device_id)
        return [
            DeviceKeys(r["user_id"], r["device_id"], bytes(r["identity_key"]), _signed(r), r["device_name"])
            for r in rows
        ]

    async def bundles(self, requester_id: str, user_id: str, device_id: str | None) -> list[Bundle]:
        """Prekey bundles to start sessions; each takes one one-time prekey, never handed out again.

        Limited per requester and target user: anyone may fetch bundles, so without a limit
        anyone could drain a user's one-time prekeys and weaken their new sessions.
        """
        if wait := await self.bundle_budget.spend(f"prekeys:{requester_id}:{user_id}"):
            raise RateLimited(wait, "Too many prekey bundles fetched for this user; try again later.")
        now = self.clock.now_ms()
        bundles: list[Bundle] = []
        async with self.db.transaction() as tx:
            for row in await self._find(tx, user_id, device_id):
                taken = await self.store.take_one_time(tx, row["device_id"])
                one_time = OneTimePrekey(taken["key_id"], bytes(taken["public_key"])) if taken else None
                bundles.append(
                    Bundle(row["user_id"], row["device_id"], bytes(row["identity_key"]), _signed(row), one_time)
                )
                if taken is not None:
                    await self._warn_if_low(tx, row["device_id"], now)
        return bundles

    async def _find(self, db: Queryable, user_id: str, device_id: str | None) -> Sequence[Row]:
        if not is_uuid(user_id) or (device_id is not None and not is_uuid(device_id)):
            raise DomainError(Code.NOT_FOUND, "No keys for that device.")
        rows = await self.store.device_keys(db, user_id, device_id)
        if device_id is not None and not rows:
            raise DomainError(Code.NOT_FOUND, "No keys for that device.")
        return rows

    async def _warn_if_low(self, tx: Transaction, device_id: str, now: int) -> None:
        """Tell the device as its stock crosses the threshold, and again when it runs out."""
        left = await self.store.count_one_time(tx, device_id)
        if left not in (self.low_threshold - 1, 0):
            return
        await self.events.append(tx, "prekeys.low", [device_id], encode({"count": left}), now)

    # -- group sender keys -----------------------------------------------------------------

    async def distribute_sender_key(
        self,
        user_id: str,
        device_id: str,
        chat_id: str,
        distribution_id: str,
        recipients: Sequence[tuple[str, bytes]],
    ) -> None:
        """Relay my sender key (pairwise-encrypted per device) to member devices of an encrypted group."""
        if len({d for d, _ in recipients}) != len(recipients):
            raise invalid("recipients name each device once.", "recipients")
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            membership = await self.access.access_chat(tx, user_id, chat_id)
            if not (membership.chat.encrypted and membership.chat.type == "group"):
                raise DomainError(Code.NOT_ENCRYPTED, "Sender keys are for end-to-end encrypted groups.")
            members = {row["id"]: row["user_id"] for row in await self.members.devices(tx, chat_id)}
            members.pop(device_id, None)
            if extra := sorted(d for d, _ in recipients if d not in members):
                raise DomainError(
                    Code.DEVICE_MISMATCH,
                    "Some recipients are not devices of this chat's members.",
                    extra_devices=extra,
                    missing_devices=[],
                )
            if await self.store.sender_key(tx, chat_id, device_id) != distribution_id:
                await self.store.set_sender_key(tx, chat_id, device_id, distribution_id, now)
            await self.store.add_distributions(tx, chat_id, device_id, distribution_id, recipients, now)
            head = {
                "chat_id": chat_id,
                "sender_user_id": user_id,
                "sender_device_id": device_id,
                "distribution_id": distribution_id,
            }
            per_device = {d: encode({**head, "ciphertext": c}) for d, c in recipients}
            await self.events.append(
                tx, "sender_key", [d for d, _ in recipients], encode(head), now, per_device=per_device
            )

    async def my_distributions(self, user_id: str, device_id: str, chat_id: str) -> list[SenderKeyDistribution]:
        """The current sender keys other members sent to my device for this chat."""
        await self.access.access_chat(self.db, user_id, chat_id)
        rows = await self.store.distributions_for(self.db, chat_id, device_id)
        return [
            SenderKeyDistribution(
                r["chat_id"],
                r["sender_user_id"],
                r["sender_device_id"],
                r["distribution_id"],
                bytes(r["ciphertext"]),
                r["created_at"],
            )
            for r in rows
        ]

    async def check_group_send(self, tx: Queryable, chat_id: str, device_id: str, devices: Sequence[str]) -> None:
        """A group ciphertext is refused until every member device (with keys) holds the sender's current key."""
        others = [d for d in devices if d != device_id]
        if not others:
            return  # nobody else to hold it (a group of one, for now): a key sent to no one is no key at all
        if await self.store.sender_key(tx, chat_id, device_id) is None:
            raise DomainError(
                Code.SENDER_KEY_REQUIRED,
                "Choose a sender key and distribute it to the chat's devices first"
                " (POST /api/v1/crypto/sender-keys/{chat_id}); membership changed or none was sent.",
            )
        if missing := await self.store.undistributed(tx, chat_id, device_id, others):
            raise DomainError(
                Code.SENDER_KEY_MISSING,
                "Some member devices do not have your sender key yet; distribute it to them.",
                missing_devices=missing,
            )

    async def member_left(self, tx: Queryable, chat_id: str) -> None:
        """The departed member knows every current sender key: all senders must re-key."""
        await self.store.forget_sender_keys(tx, chat_id)
