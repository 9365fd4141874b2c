"""`DeviceCrypto`: one device's whole end-to-end state, and the only class the SDK needs."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import x3dh
import xeddsa

from sup.client.crypto import primitives, sessions, wire
from sup.client.crypto.bundle import Bundle, OneTimePrekey, SignedPrekey
from sup.client.crypto.errors import (
    BadBundle,
    CryptoError,
    DecryptError,
    DuplicateMessage,
    NoSession,
    UntrustedIdentity,
)
from sup.client.crypto.senderkeys import OwnSenderKey, PeerSenderKey
from sup.client.crypto.stored import b64, unb64
from sup.e2ekeys import KEY_BYTES, MAX_KEY_ID, SIGNATURE_BYTES, is_weak_public_key, signed_prekey_message

# 2: the device's own address is stored, sessions authenticate both addresses. A version 1 state loads
# without its pairwise sessions (they authenticate no address); keys, identities and sender keys are kept.
STATE_VERSION = 2
_OLDEST_STATE_VERSION = 1
# A replaced signed prekey keeps decrypting initial messages sent to it this long (Signal uses weeks too).
SIGNED_PREKEY_GRACE_SECONDS = 30 * 24 * 3600
_MAX_OLD_SIGNED_PREKEYS = 4
# Earlier sessions with a peer device are kept for messages still in flight (and simultaneous initiation).
_MAX_PREVIOUS_SESSIONS = 3
# X3DH base keys already accepted: a replayed initial message without a one-time prekey is refused.
_MAX_SEEN_BASE_KEYS = 2000
# Distributions kept per sender and chat, so messages sent just before a rotation still decrypt.
_MAX_SENDER_KEY_STATES = 5

Address = tuple[str, str]


@dataclass
class _OwnSignedPrekey:
    key_id: int
    private: bytes
    signature: bytes
    replaced_at: float | None = None

    @property
    def public(self) -> SignedPrekey:
        return SignedPrekey(self.key_id, primitives.x25519_public(self.private), self.signature)


class DeviceCrypto:
    """Identity, prekeys, pairwise sessions, recorded peer identities and sender keys of one device.

    `encrypt` and `decrypt` are coroutines (the x3dh and doubleratchet libraries are async); everything else
    is synchronous. Every mutation is in memory: persist with `to_bytes` after each call that changes state.
    """

    def __init__(self, identity_seed: bytes, address: Address | None = None) -> None:
        self._identity_seed = identity_seed
        self._address = address
        self._signed_prekeys: list[_OwnSignedPrekey] = []
        self._one_time_prekeys: dict[int, bytes] = {}
        self._next_one_time_id = 1
        self._next_signed_id = 1
        self._sessions: dict[Address, list[sessions.Session]] = {}
        self._identities: dict[Address, bytes] = {}
        self._seen_base_keys: list[bytes] = []
        self._own_sender_keys: dict[str, OwnSenderKey] = {}
        self._peer_sender_keys: dict[tuple[str, str, str], list[PeerSenderKey]] = {}
        self._lock = asyncio.Lock()

    # ---- identity and prekeys -------------------------------------------------------------------------

    @classmethod
    def create(cls, user_id: str | None = None, device_id: str | None = None) -> DeviceCrypto:
        """A new device: a fresh identity key and a first signed prekey (no one-time prekeys yet).

        Pass the device's own address here or later with `set_address`: sessions and group messages
        authenticate it, so `encrypt`, `decrypt`, `group_encrypt` and `group_decrypt` refuse to run without it.
        """
        device = cls(primitives.random_bytes(32))
        if user_id is not None or device_id is not None:
            if user_id is None or device_id is None:
                raise ValueError("give both user_id and device_id, or neither")
            device.set_address(user_id, device_id)
        device.rotate_signed_prekey()
        return device

    @property
    def address(self) -> Address | None:
        """This device's own (user_id, device_id), once set."""
        return self._address

    def set_address(self, user_id: str, device_id: str) -> None:
        """Record this device's own address (once; the same address again is a no-op)."""
        if not isinstance(user_id, str) or not isinstance(device_id, str) or not user_id or not device_id:
            raise ValueError("user_id and device_id must be non-empty strings")
        if self._address is not None and self._address != (user_id, device_id):
            raise CryptoError(f"this state belongs to {self._address[0]}/{self._address[1]}")
        self._address = (user_id, device_id)

    def _own_address(self) -> Address:
        if self._address is None:
            raise CryptoError("own address unknown: DeviceCrypto.create(user_id, device_id) or set_address()")
        return self._address

    @property
    def identity_key(self) -> bytes:
        """The 32-byte Ed25519 identity public key, as published."""
        return primitives.ed25519_public(self._identity_seed)

    def signed_prekey(self) -> SignedPrekey:
        """The current signed prekey (public part)."""
        return self._signed_prekeys[-1].public

    def rotate_signed_prekey(self) -> SignedPrekey:
        """Make a new signed prekey; the previous private key stays usable for SIGNED_PREKEY_GRACE_SECONDS."""
        now = time.time()
        if self._signed_prekeys:
            self._signed_prekeys[-1].replaced_at = now
        self._signed_prekeys = [
            k for k in self._signed_prekeys if now - (k.replaced_at or now) < SIGNED_PREKEY_GRACE_SECONDS
        ][-_MAX_OLD_SIGNED_PREKEYS:]
        private = primitives.random_bytes(32)
        signature = primitives.ed25519_sign(
            self._identity_seed, signed_prekey_message(primitives.x25519_public(private))
        )
        key = _OwnSignedPrekey(self._next_signed_id, private, signature)
        self._next_signed_id = self._next_signed_id % MAX_KEY_ID + 1
        self._signed_prekeys.append(key)
        return key.public

    def generate_one_time_prekeys(self, n: int) -> list[OneTimePrekey]:
        """Make `n` new one-time prekeys to upload."""
        if not 0 <= n <= 10_000:
            raise ValueError("n must be between 0 and 10000")
        created = []
        while len(created) < n:
            key_id = self._next_one_time_id
            self._next_one_time_id = self._next_one_time_id % MAX_KEY_ID + 1
            if key_id in self._one_time_prekeys:
                continue
            private = primitives.random_bytes(32)
            self._one_time_prekeys[key_id] = private
            created.append(OneTimePrekey(key_id, primitives.x25519_public(private)))
        return created

    def one_time_prekeys_left(self) -> int:
        """How many one-time prekey private keys are still unused here."""
        return len(self._one_time_prekeys)

    # ---- identities of peers --------------------------------------------------------------------------

    def peer_identity(self, user_id: str, device_id: str) -> bytes | None:
        """The identity key recorded for a peer device (first contact, or `accept_identity`)."""
        return self._identities.get((user_id, device_id))

    def accept_identity(self, user_id: str, device_id: str, key: bytes) -> None:
        """Trust `key` for this peer device from now on; sessions made with another key are dropped."""
        address = (user_id, device_id)
        self._identities[address] = key
        kept = [s for s in self._sessions.get(address, []) if s.peer_identity == key]
        if kept:
            self._sessions[address] = kept
        else:
            self._sessions.pop(address, None)

    def _check_identity(self, address: Address, key: bytes) -> None:
        recorded = self._identities.get(address)
        if recorded is not None and recorded != key:
            raise UntrustedIdentity(address[0], address[1], key)

    # ---- pairwise sessions ----------------------------------------------------------------------------

    def has_session(self, user_id: str, device_id: str) -> bool:
        """Whether a session with this peer device exists."""
        return bool(self._sessions.get((user_id, device_id)))

    def forget_session(self, user_id: str, device_id: str) -> None:
        """Drop every session with this peer device; its recorded identity key is kept."""
        self._sessions.pop((user_id, device_id), None)

    def _x3dh(self, spk: _OwnSignedPrekey, opk_private: bytes | None = None) -> sessions.X3DHState:
        return sessions.x3dh_state(self._identity_seed, spk.private, spk.signature, opk_private)

    async def encrypt(self, user_id: str, device_id: str, plaintext: bytes, bundle: Bundle | None = None) -> bytes:
        """Encrypt for one peer device. Without a session, `bundle` starts one (X3DH); it is ignored otherwise."""
        address = (user_id, device_id)
        async with self._lock:
            existing = self._sessions.get(address)
            if existing:
                return await existing[0].encrypt(plaintext)
            if bundle is None:
                raise NoSession(f"no session with {user_id}/{device_id} and no bundle")
            appendix = wire.session_ad_appendix(self._own_address(), address)
            peer = _verify_bundle(address, bundle)
            self._check_identity(address, bundle.identity_key)
            try:
                session, envelope = await sessions.initiate(
                    self._x3dh(self._signed_prekeys[-1]), peer, appendix, plaintext
                )
            except (x3dh.KeyAgreementException, xeddsa.XEdDSAException, ValueError) as exc:
                # ValueError: not a point; XEdDSAException: a point outside the prime-order subgroup
                raise BadBundle(str(exc)) from exc
            self._identities.setdefault(address, bundle.identity_key)
            self._sessions[address] = [session]
            return envelope

    async def decrypt(self, user_id: str, device_id: str, envelope: bytes) -> bytes:
        """Decrypt an envelope from a peer device; on any error the state is unchanged."""
        address = (user_id, device_id)
        self._own_address()
        parsed = wire.decode_envelope(envelope)
        async with self._lock:
            known = self._sessions.get(address, [])
            prekey = parsed.prekey
            if prekey is None:
                if not known:
                    raise NoSession(f"no session with {user_id}/{device_id}")
                return await self._decrypt_with(address, known, parsed.message)
            same_session = [s for s in known if s.base_key == prekey.base_key]
            if same_session:
                # The initiator repeats the X3DH header until we answer: this is that session.
                return await self._decrypt_with(address, same_session, parsed.message)
            return await self._accept_initial(address, parsed)

    async def _decrypt_with(
        self, address: Address, candidates: list[sessions.Session], message: wire.RatchetMessage
    ) -> bytes:
        duplicate = False
        for session in candidates:
            try:
                plaintext = await session.decrypt(message)
            except DuplicateMessage:
                duplicate = True
                continue
            except DecryptError:
                continue
            # The session that last decrypted becomes current, so both sides converge on one session.
            ordered = self._sessions[address]
            ordered.remove(session)
            ordered.insert(0, session)
            return plaintext
        if duplicate:
            raise DuplicateMessage("message already decrypted")
        raise DecryptError("no session could decrypt the message")

    async def _accept_initial(self, address: Address, envelope: wire.Envelope) -> bytes:
        prekey = envelope.prekey
        assert prekey is not None
        if prekey.base_key in self._seen_base_keys:
            raise DuplicateMessage("initial message already accepted")
        if is_weak_public_key("ed25519", prekey.identity_key) or is_weak_public_key("x25519", prekey.base_key):
            raise DecryptError("initial message with a small-order or non-canonical key")
        spk = next((k for k in self._signed_prekeys if k.key_id == prekey.signed_prekey_id), None)
        if spk is None:
            raise DecryptError(f"unknown or expired signed prekey {prekey.signed_prekey_id}")
        opk_private = None
        if prekey.one_time_prekey_id is not None:
            opk_private = self._one_time_prekeys.get(prekey.one_time_prekey_id)
            if opk_private is None:
                raise DecryptError(f"one-time prekey {prekey.one_time_prekey_id} already used or unknown")
        # The claimed sender's address and ours are authenticated: relabelled by the server, this fails.
        appendix = wire.session_ad_appendix(address, self._own_address())
        session, plaintext = await sessions.respond(
            self._x3dh(spk, opk_private), envelope, spk.private, opk_private, appendix
        )
        # Checked only now that the message authenticated, so a forgery cannot pose as an identity change.
        self._check_identity(address, prekey.identity_key)
        self._identities[address] = prekey.identity_key
        if prekey.one_time_prekey_id is not None:
            del self._one_time_prekeys[prekey.one_time_prekey_id]
        self._seen_base_keys.append(prekey.base_key)
        del self._seen_base_keys[:-_MAX_SEEN_BASE_KEYS]
        self._sessions[address] = [session, *self._sessions.get(address, [])][: 1 + _MAX_PREVIOUS_SESSIONS]
        return plaintext

    # ---- sender keys ----------------------------------------------------------------------------------

    def sender_key_distribution(self, chat_id: str) -> tuple[str, bytes]:
        """Our sender key for the chat as (distribution_id, distribution message); creates it if needed."""
        own = self._own_sender_keys.get(chat_id)
        if own is None:
            own = self._own_sender_keys[chat_id] = OwnSenderKey.generate()
        return own.distribution_id, own.distribution().encode()

    def rotate_sender_key(self, chat_id: str) -> tuple[str, bytes]:
        """Replace our sender key for the chat (after a member left): a new distribution id and chain."""
        own = self._own_sender_keys[chat_id] = OwnSenderKey.generate()
        return own.distribution_id, own.distribution().encode()

    def process_sender_key_distribution(self, chat_id: str, user_id: str, device_id: str, message: bytes) -> None:
        """Store a member device's sender key (the message arrived pairwise-encrypted from that device)."""
        dist = wire.SenderKeyDistribution.decode(message)
        key = (chat_id, user_id, device_id)
        states = self._peer_sender_keys.get(key, [])
        for state in states:
            if state.distribution_id == dist.distribution_id and state.signing_key == dist.signing_key:
                # Already known: re-processing must not rewind the chain, or old messages would decrypt again.
                return
        states = [s for s in states if s.distribution_id != dist.distribution_id]
        self._peer_sender_keys[key] = [PeerSenderKey.from_distribution(dist), *states][:_MAX_SENDER_KEY_STATES]

    def forget_sender_keys(self, user_id: str, device_id: str | None = None, *, chat_id: str | None = None) -> bool:
        """Drop a member's sender keys (one device's, or all of the user's; in one chat, or in all); whether any
        were held. Called when the member or device goes away, so a key it kept cannot be used to write as it."""
        gone = [
            key
            for key in self._peer_sender_keys
            if key[1] == user_id and device_id in (None, key[2]) and chat_id in (None, key[0])
        ]
        for key in gone:
            del self._peer_sender_keys[key]
        return bool(gone)

    def group_encrypt(self, chat_id: str, plaintext: bytes) -> bytes:
        """Encrypt and sign one group message with our sender key (distribute it first)."""
        own = self._own_sender_keys.get(chat_id)
        if own is None:
            raise NoSession(f"no sender key for chat {chat_id}: call sender_key_distribution first")
        return own.encrypt(plaintext, wire.GroupMessage.context(chat_id, *self._own_address()))

    def group_decrypt(self, chat_id: str, user_id: str, device_id: str, ciphertext: bytes) -> bytes:
        """Verify and decrypt a member device's group message (signed for this chat and sender device)."""
        message = wire.GroupMessage.decode(ciphertext)
        context = wire.GroupMessage.context(chat_id, user_id, device_id)
        for state in self._peer_sender_keys.get((chat_id, user_id, device_id), []):
            if state.distribution_id == message.distribution_id:
                return state.decrypt(message, context)
        raise NoSession(f"unknown sender key distribution {message.distribution_id}")

    # ---- persistence ----------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The complete state as versioned JSON (contains private keys: store it encrypted or protected)."""
        state = {
            "version": STATE_VERSION,
            "address": None if self._address is None else list(self._address),
            "identity_seed": b64(self._identity_seed),
            "signed_prekeys": [
                [k.key_id, b64(k.private), b64(k.signature), k.replaced_at] for k in self._signed_prekeys
            ],
            "one_time_prekeys": [[i, b64(p)] for i, p in self._one_time_prekeys.items()],
            "next_one_time_id": self._next_one_time_id,
            "next_signed_id": self._next_signed_id,
            "sessions": [[u, d, [s.to_json() for s in ss]] for (u, d), ss in self._sessions.items()],
            "identities": [[u, d, b64(k)] for (u, d), k in self._identities.items()],
            "seen_base_keys": [b64(k) for k in self._seen_base_keys],
            "own_sender_keys": {chat: k.to_json() for chat, k in self._own_sender_keys.items()},
            "peer_sender_keys": [
                [c, u, d, [s.to_json() for s in ss]] for (c, u, d), ss in self._peer_sender_keys.items()
            ],
        }
        return json.dumps(state, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceCrypto:
        """Restore a state written by `to_bytes`; an unknown version or any malformed input raises CryptoError."""
        try:
            state = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise CryptoError("not a DeviceCrypto state") from exc
        version = state.get("version") if isinstance(state, dict) else None
        if type(version) is not int or not _OLDEST_STATE_VERSION <= version <= STATE_VERSION:
            raise CryptoError(f"unsupported DeviceCrypto state version {version!r}")
        try:
            return cls._from_state(state, version)
        except CryptoError:
            raise
        except Exception as exc:  # KeyError, TypeError, base64 and the libraries' validation errors, ...
            raise CryptoError(f"malformed DeviceCrypto state: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def _from_state(cls, state: dict[str, Any], version: int) -> DeviceCrypto:
        address = state.get("address") if version >= 2 else None
        if address is not None:
            user_id, device_id = address
            if not isinstance(user_id, str) or not isinstance(device_id, str):
                raise ValueError("bad address")
            address = (user_id, device_id)
        device = cls(unb64(state["identity_seed"], 32), address)
        device._signed_prekeys = [
            _OwnSignedPrekey(_int(i), unb64(p, 32), unb64(s, 64), None if r is None else float(r))
            for i, p, s, r in state["signed_prekeys"]
        ]
        if not device._signed_prekeys:
            raise ValueError("no signed prekey")
        device._one_time_prekeys = {_int(i): unb64(p, 32) for i, p in state["one_time_prekeys"]}
        device._next_one_time_id = _int(state["next_one_time_id"])
        device._next_signed_id = _int(state["next_signed_id"])
        if version >= 2:
            device._sessions = {
                (_str(u), _str(d)): [sessions.Session.from_json(s) for s in ss] for u, d, ss in state["sessions"]
            }
        device._identities = {(_str(u), _str(d)): unb64(k, 32) for u, d, k in state["identities"]}
        device._seen_base_keys = [unb64(k, 32) for k in state["seen_base_keys"]]
        device._own_sender_keys = {_str(c): OwnSenderKey.from_json(k) for c, k in state["own_sender_keys"].items()}
        device._peer_sender_keys = {
            (_str(c), _str(u), _str(d)): [PeerSenderKey.from_json(s) for s in ss]
            for c, u, d, ss in state["peer_sender_keys"]
        }
        return device


def _int(value: object) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _verify_bundle(address: Address, bundle: Bundle) -> sessions.PeerPrekeys:
    if (bundle.user_id, bundle.device_id) != address:
        raise BadBundle("bundle is for another device")
    spk, opk = bundle.signed_prekey, bundle.one_time_prekey
    if (
        len(bundle.identity_key) != KEY_BYTES
        or len(spk.public_key) != KEY_BYTES
        or len(spk.signature) != SIGNATURE_BYTES
    ):
        raise BadBundle("bad key or signature length")
    if opk is not None and len(opk.public_key) != KEY_BYTES:
        raise BadBundle("bad one-time prekey length")
    if not all(0 <= i <= MAX_KEY_ID for i in (spk.key_id, 0 if opk is None else opk.key_id)):
        raise BadBundle("key id out of range")
    # OpenSSL's Ed25519 accepts a signature by a small-order key over any message; X3DH with a small-order
    # prekey would mix in a predictable (all-zero) DH output.
    if is_weak_public_key("ed25519", bundle.identity_key):
        raise BadBundle("small-order or non-canonical identity key")
    try:
        # A valid key plus a small-order point passes the check above, and plain Ed25519 accepts some of its
        # signatures; X3DH converts the key to X25519, which refuses any point outside the prime-order group.
        xeddsa.ed25519_pub_to_curve25519_pub(bundle.identity_key)
    except (xeddsa.XEdDSAException, ValueError) as exc:
        raise BadBundle("identity key with a small-order component (not in the prime-order subgroup)") from exc
    if any(is_weak_public_key("x25519", k.public_key) for k in (spk, opk) if k is not None):
        raise BadBundle("small-order prekey")
    if not primitives.ed25519_verify(bundle.identity_key, spk.signature, signed_prekey_message(spk.public_key)):
        raise BadBundle("signed prekey signature does not verify")
    return sessions.PeerPrekeys(
        identity_key=bundle.identity_key,
        signed_prekey_id=spk.key_id,
        signed_prekey=spk.public_key,
        signed_prekey_signature=spk.signature,
        one_time_prekey_id=None if opk is None else opk.key_id,
        one_time_prekey=None if opk is None else opk.public_key,
    )
