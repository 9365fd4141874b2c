"""`DeviceCrypto`: one device's whole end-to-end state, and the only class the SDK needs."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass

import x3dh

from sup.client.crypto import primitives, sessions, wire
from sup.client.crypto.bundle import Bundle, OneTimePrekey, SignedPrekey, signed_prekey_message
from sup.client.crypto.errors import (
    BadBundle,
    CryptoError,
    DecryptError,
    DuplicateMessage,
    NoSession,
    UntrustedIdentity,
)
from sup.client.crypto.senderkeys import OwnSenderKey, PeerSenderKey

STATE_VERSION = 1
# A replaced signed prekey keeps decrypting initial messages sent to it this long (Signal uses weeks too).
SIGNED_PREKEY_GRACE_SECONDS = 30 * 24 * 3600
_MAX_OLD_SIGNED_PREKEYS = 4
# Earlier sessions with a peer device are kept for messages still in flight (and simultaneous initiation).
_MAX_PREVIOUS_SESSIONS = 3
# X3DH base keys already accepted: a replayed initial message without a one-time prekey is refused.
_MAX_SEEN_BASE_KEYS = 2000
# Distributions kept per sender and chat, so messages sent just before a rotation still decrypt.
_MAX_SENDER_KEY_STATES = 5
_UINT32_MAX = 0xFFFFFFFF

Address = tuple[str, str]


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s)


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

    def __init__(self, identity_seed: bytes) -> None:
        self._identity_seed = identity_seed
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
    def create(cls) -> DeviceCrypto:
        """A new device: a fresh identity key and a first signed prekey (no one-time prekeys yet)."""
        device = cls(primitives.random_bytes(32))
        device.rotate_signed_prekey()
        return device

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
        self._next_signed_id = self._next_signed_id % _UINT32_MAX + 1
        self._signed_prekeys.append(key)
        return key.public

    def generate_one_time_prekeys(self, n: int) -> list[OneTimePrekey]:
        """Make `n` new one-time prekeys to upload."""
        if not 0 <= n <= 10_000:
            raise ValueError("n must be between 0 and 10000")
        created = []
        while len(created) < n:
            key_id = self._next_one_time_id
            self._next_one_time_id = self._next_one_time_id % _UINT32_MAX + 1
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
            peer = _verify_bundle(address, bundle)
            self._check_identity(address, bundle.identity_key)
            try:
                session, envelope = await sessions.initiate(self._x3dh(self._signed_prekeys[-1]), peer, plaintext)
            except x3dh.KeyAgreementException as exc:
                raise BadBundle(str(exc)) from exc
            except ValueError as exc:  # xeddsa rejects identity keys that are not valid points
                raise BadBundle(str(exc)) from exc
            self._identities.setdefault(address, bundle.identity_key)
            self._sessions[address] = [session]
            return envelope

    async def decrypt(self, user_id: str, device_id: str, envelope: bytes) -> bytes:
        """Decrypt an envelope from a peer device; on any error the state is unchanged."""
        address = (user_id, device_id)
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
        spk = next((k for k in self._signed_prekeys if k.key_id == prekey.signed_prekey_id), None)
        if spk is None:
            raise DecryptError(f"unknown or expired signed prekey {prekey.signed_prekey_id}")
        opk_private = None
        if prekey.one_time_prekey_id is not None:
            opk_private = self._one_time_prekeys.get(prekey.one_time_prekey_id)
            if opk_private is None:
                raise DecryptError(f"one-time prekey {prekey.one_time_prekey_id} already used or unknown")
        session, plaintext = await sessions.respond(self._x3dh(spk, opk_private), envelope, spk.private, opk_private)
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

    def group_encrypt(self, chat_id: str, plaintext: bytes) -> bytes:
        """Encrypt and sign one group message with our sender key (distribute it first)."""
        own = self._own_sender_keys.get(chat_id)
        if own is None:
            raise NoSession(f"no sender key for chat {chat_id}: call sender_key_distribution first")
        return own.encrypt(plaintext)

    def group_decrypt(self, chat_id: str, user_id: str, device_id: str, ciphertext: bytes) -> bytes:
        """Verify and decrypt a member device's group message."""
        message = wire.GroupMessage.decode(ciphertext)
        for state in self._peer_sender_keys.get((chat_id, user_id, device_id), []):
            if state.distribution_id == message.distribution_id:
                return state.decrypt(message)
        raise NoSession(f"unknown sender key distribution {message.distribution_id}")

    # ---- persistence ----------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The complete state as versioned JSON (contains private keys: store it encrypted or protected)."""
        state = {
            "version": STATE_VERSION,
            "identity_seed": _b64(self._identity_seed),
            "signed_prekeys": [
                [k.key_id, _b64(k.private), _b64(k.signature), k.replaced_at] for k in self._signed_prekeys
            ],
            "one_time_prekeys": [[i, _b64(p)] for i, p in self._one_time_prekeys.items()],
            "next_one_time_id": self._next_one_time_id,
            "next_signed_id": self._next_signed_id,
            "sessions": [[u, d, [s.to_json() for s in ss]] for (u, d), ss in self._sessions.items()],
            "identities": [[u, d, _b64(k)] for (u, d), k in self._identities.items()],
            "seen_base_keys": [_b64(k) for k in self._seen_base_keys],
            "own_sender_keys": {chat: k.to_json() for chat, k in self._own_sender_keys.items()},
            "peer_sender_keys": [
                [c, u, d, [s.to_json() for s in ss]] for (c, u, d), ss in self._peer_sender_keys.items()
            ],
        }
        return json.dumps(state, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceCrypto:
        """Restore a state written by `to_bytes`; an unknown version raises CryptoError."""
        try:
            state = json.loads(data)
        except ValueError as exc:
            raise CryptoError("not a DeviceCrypto state") from exc
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise CryptoError(f"unsupported DeviceCrypto state version {state.get('version')!r}")
        device = cls(_unb64(state["identity_seed"]))
        device._signed_prekeys = [
            _OwnSignedPrekey(i, _unb64(p), _unb64(s), r) for i, p, s, r in state["signed_prekeys"]
        ]
        device._one_time_prekeys = {i: _unb64(p) for i, p in state["one_time_prekeys"]}
        device._next_one_time_id = state["next_one_time_id"]
        device._next_signed_id = state["next_signed_id"]
        device._sessions = {(u, d): [sessions.Session.from_json(s) for s in ss] for u, d, ss in state["sessions"]}
        device._identities = {(u, d): _unb64(k) for u, d, k in state["identities"]}
        device._seen_base_keys = [_unb64(k) for k in state["seen_base_keys"]]
        device._own_sender_keys = {c: OwnSenderKey.from_json(k) for c, k in state["own_sender_keys"].items()}
        device._peer_sender_keys = {
            (c, u, d): [PeerSenderKey.from_json(s) for s in ss] for c, u, d, ss in state["peer_sender_keys"]
        }
        return device


def _verify_bundle(address: Address, bundle: Bundle) -> sessions.PeerPrekeys:
    if (bundle.user_id, bundle.device_id) != address:
        raise BadBundle("bundle is for another device")
    spk, opk = bundle.signed_prekey, bundle.one_time_prekey
    if len(bundle.identity_key) != 32 or len(spk.public_key) != 32 or len(spk.signature) != 64:
        raise BadBundle("bad key or signature length")
    if opk is not None and len(opk.public_key) != 32:
        raise BadBundle("bad one-time prekey length")
    if not all(0 <= i <= _UINT32_MAX for i in (spk.key_id, 0 if opk is None else opk.key_id)):
        raise BadBundle("key id out of range")
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
