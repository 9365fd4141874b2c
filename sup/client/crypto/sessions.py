"""Pairwise sessions: X3DH (package `x3dh`) feeding a Double Ratchet (package `doubleratchet`).

The libraries are configured with WebCrypto primitives only: X3DH over X25519 with HKDF-SHA256, a root
chain on HKDF-SHA256, message chains on HMAC-SHA256, and AES-256-GCM as the AEAD.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import doubleratchet
import x3dh
from doubleratchet.recommended import HashFunction as RatchetHash
from doubleratchet.recommended import diffie_hellman_ratchet_curve25519, kdf_hkdf, kdf_separate_hmacs
from x3dh.models import BaseStateModel, IdentityKeyPairModel, SignedPreKeyPairModel
from x3dh.types import SecretType

from sup.client.crypto import primitives, wire
from sup.client.crypto.errors import DecryptError, DuplicateMessage
from sup.client.crypto.stored import b64, unb64

X3DH_INFO = b"SUP v1 X3DH"
ROOT_CHAIN_INFO = b"SUP v1 root chain"
MESSAGE_KEY_INFO = b"SUP v1 message key"
# HMAC input bytes for the message chains: chain key = HMAC(ck, 0x02), message key = HMAC(ck, 0x01), as Signal.
MESSAGE_CHAIN_CONSTANT = b"\x02\x01"
# At most this many message keys are derived for one incoming message, counting both the rest of the previous
# receiving chain and the new chain (a bigger jump is refused), and at most MAX_SKIPPED_KEYS are kept per
# session for late messages, oldest discarded first.
MAX_SKIP = 1000
MAX_SKIPPED_KEYS = 2000
# Old receiving ratchet keys remembered per session, to call a replay from an old chain a duplicate.
_SEEN_RATCHET_KEYS = 64

CURVE25519_PREFIX = b"\x05"
ED25519_PREFIX = b"\xed"


class X3DHState(x3dh.BaseState):
    """X3DH with Ed25519 identity keys; public keys are encoded as a type byte plus the 32 raw bytes."""

    @staticmethod
    def _encode_public_key(key_format: x3dh.IdentityKeyFormat, pub: bytes) -> bytes:
        # 0x05 for X25519 is fixed by the server contract (it is what the signed prekey signature covers).
        if key_format is x3dh.IdentityKeyFormat.CURVE_25519:
            return CURVE25519_PREFIX + pub
        return ED25519_PREFIX + pub


def x3dh_state(identity_seed: bytes, spk_private: bytes, spk_signature: bytes, opk_private: bytes | None) -> X3DHState:
    """An x3dh state holding just the keys one key agreement needs; our own store stays the source of truth."""
    model = BaseStateModel(
        identity_key=IdentityKeyPairModel(secret=identity_seed, secret_type=SecretType.SEED),
        signed_pre_key=SignedPreKeyPairModel(priv=spk_private, sig=spk_signature, timestamp=0),
        old_signed_pre_key=None,
        pre_keys=frozenset() if opk_private is None else frozenset([opk_private]),
    )
    return X3DHState.from_model(model, x3dh.IdentityKeyFormat.ED_25519, x3dh.HashFunction.SHA_256, X3DH_INFO)


class _RootKDF(kdf_hkdf.KDF):
    @staticmethod
    def _get_hash_function() -> RatchetHash:
        return RatchetHash.SHA_256

    @staticmethod
    def _get_info() -> bytes:
        return ROOT_CHAIN_INFO


class _ChainKDF(kdf_separate_hmacs.KDF):
    @staticmethod
    def _get_hash_function() -> RatchetHash:
        return RatchetHash.SHA_256


def message_key_material(message_key: bytes) -> tuple[bytes, bytes]:
    """Expand a 32-byte ratchet message key into an AES-256 key and a 12-byte GCM nonce."""
    okm = primitives.hkdf_sha256(message_key, MESSAGE_KEY_INFO, 32 + primitives.GCM_NONCE_SIZE)
    return okm[:32], okm[32:]


class _AEAD(doubleratchet.AEAD):
    """AES-256-GCM; key and nonce both come from the single-use message key, so a nonce never repeats."""

    @staticmethod
    async def encrypt(plaintext: bytes, key: bytes, associated_data: bytes) -> bytes:
        aes_key, nonce = message_key_material(key)
        return primitives.aes_gcm_encrypt(aes_key, nonce, plaintext, associated_data)

    @staticmethod
    async def decrypt(ciphertext: bytes, key: bytes, associated_data: bytes) -> bytes:
        aes_key, nonce = message_key_material(key)
        try:
            return primitives.aes_gcm_decrypt(aes_key, nonce, ciphertext, associated_data)
        except DecryptError as exc:
            raise doubleratchet.AuthenticationFailedException(str(exc)) from exc


class _DHRatchet(diffie_hellman_ratchet_curve25519.DiffieHellmanRatchet):
    @staticmethod
    def _generate_priv() -> bytes:
        return primitives.random_bytes(32)


class _Ratchet(doubleratchet.DoubleRatchet):
    @staticmethod
    def _build_associated_data(associated_data: bytes, header: doubleratchet.Header) -> bytes:
        # The ratchet header has a fixed 41-byte length at the end, so plain concatenation stays unambiguous.
        return associated_data + wire.ratchet_header(
            header.ratchet_pub, header.previous_sending_chain_length, header.sending_chain_length
        )


_RATCHET_CONFIG = (_DHRatchet, _RootKDF, _ChainKDF, MESSAGE_CHAIN_CONSTANT, MAX_SKIP, MAX_SKIPPED_KEYS, _AEAD)


@dataclass
class Session:
    """One pairwise Double Ratchet session with one peer device."""

    ratchet: _Ratchet
    associated_data: bytes
    peer_identity: bytes
    # The X3DH ephemeral key: a re-sent initial message carrying it belongs to this session.
    base_key: bytes
    # Set on the initiator until the peer answers: every message repeats the X3DH header meanwhile.
    pending_prekey: wire.PrekeyHeader | None
    seen_ratchet_keys: list[bytes] = field(default_factory=list)

    async def encrypt(self, plaintext: bytes) -> bytes:
        """Encrypt the next message of this session into an envelope."""
        encrypted = await self.ratchet.encrypt_message(plaintext, self.associated_data)
        return wire.encode_envelope(wire.Envelope(self.pending_prekey, _to_wire(encrypted)))

    def keys_to_skip(self, message: wire.RatchetMessage) -> int:
        """How many message keys decrypting `message` would derive and store as skipped (0 for a stored key)."""
        model = self.ratchet.model
        if any(s.ratchet_pub == message.ratchet_key and s.index == message.index for s in model.skipped_message_keys):
            return 0
        dh = model.diffie_hellman_ratchet
        receiving = dh.symmetric_key_ratchet.receiving_chain
        received = None if receiving is None else receiving.length
        if message.ratchet_key == dh.other_ratchet_pub and received is not None:
            return max(message.index - received, 0)
        # A new ratchet key: the rest of the current receiving chain, then the new chain up to `index`.
        rest = 0 if received is None else max(message.previous_chain_length - received, 0)
        return rest + message.index

    async def decrypt(self, message: wire.RatchetMessage) -> bytes:
        """Decrypt; on any failure the session is left exactly as it was."""
        # Checked before the library runs: it only warns about a huge previous-chain gap and then skips those
        # keys silently, and it bounds the two chains separately (2 * MAX_SKIP keys for one message).
        # (PN + N bounds the count from above, so everyday messages skip building the library's model.)
        if message.previous_chain_length + message.index > MAX_SKIP and self.keys_to_skip(message) > MAX_SKIP:
            if self._is_consumed(message):
                raise DuplicateMessage("message already decrypted")
            raise DecryptError(f"more than {MAX_SKIP} message keys skipped")
        try:
            plaintext = await self.ratchet.decrypt_message(_from_wire(message), self.associated_data)
        except doubleratchet.DuplicateMessageException as exc:
            raise DuplicateMessage("message already decrypted") from exc
        except (doubleratchet.AuthenticationFailedException, doubleratchet.DoSProtectionException) as exc:
            if self._is_consumed(message):
                raise DuplicateMessage("message already decrypted") from exc
            raise DecryptError(f"cannot decrypt: {exc}") from exc
        except Exception as exc:  # the libraries raise ValueError & co. on garbage keys
            raise DecryptError(f"cannot decrypt: {exc}") from exc
        self.pending_prekey = None
        self._saw(message.ratchet_key)
        return plaintext

    def _saw(self, ratchet_key: bytes) -> None:
        if ratchet_key not in self.seen_ratchet_keys:
            self.seen_ratchet_keys.append(ratchet_key)
            del self.seen_ratchet_keys[:-_SEEN_RATCHET_KEYS]

    def _is_consumed(self, message: wire.RatchetMessage) -> bool:
        # The library only spots duplicates on the current chain; on an older chain a key that is not among
        # the skipped keys was already used (or discarded for the bound), which we also report as duplicate.
        if message.ratchet_key not in self.seen_ratchet_keys[:-1]:
            return False
        skipped = {(s.ratchet_pub, s.index) for s in self.ratchet.model.skipped_message_keys}
        return (message.ratchet_key, message.index) not in skipped

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot (the ratchet part is the library's own versioned JSON)."""
        p = self.pending_prekey
        return {
            "ratchet": self.ratchet.json,
            "ad": b64(self.associated_data),
            "peer_identity": b64(self.peer_identity),
            "base_key": b64(self.base_key),
            "pending_prekey": None
            if p is None
            else [b64(p.identity_key), b64(p.base_key), p.signed_prekey_id, p.one_time_prekey_id],
            "seen_ratchet_keys": [b64(k) for k in self.seen_ratchet_keys],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Session:
        """Inverse of `to_json`."""
        p = data["pending_prekey"]
        return cls(
            ratchet=_Ratchet.from_json(data["ratchet"], *_RATCHET_CONFIG),
            associated_data=unb64(data["ad"]),
            peer_identity=unb64(data["peer_identity"]),
            base_key=unb64(data["base_key"]),
            pending_prekey=None if p is None else wire.PrekeyHeader(unb64(p[0]), unb64(p[1]), p[2], p[3]),
            seen_ratchet_keys=[unb64(k) for k in data["seen_ratchet_keys"]],
        )


def _to_wire(m: doubleratchet.EncryptedMessage) -> wire.RatchetMessage:
    h = m.header
    return wire.RatchetMessage(h.ratchet_pub, h.previous_sending_chain_length, h.sending_chain_length, m.ciphertext)


def _from_wire(m: wire.RatchetMessage) -> doubleratchet.EncryptedMessage:
    return doubleratchet.EncryptedMessage(
        header=doubleratchet.Header(m.ratchet_key, m.previous_chain_length, m.index), ciphertext=m.ciphertext
    )


@dataclass(frozen=True)
class PeerPrekeys:
    """The verified public half of a bundle, as the initiator needs it."""

    identity_key: bytes
    signed_prekey_id: int
    signed_prekey: bytes
    signed_prekey_signature: bytes
    one_time_prekey_id: int | None
    one_time_prekey: bytes | None


async def x3dh_initiate(
    own: X3DHState, peer: PeerPrekeys, ad_appendix: bytes
) -> tuple[bytes, bytes, wire.PrekeyHeader]:
    """Active X3DH: shared secret, associated data (+ `ad_appendix`) and the header for the peer.

    Raises x3dh's errors. `ad_appendix` is `wire.session_ad_appendix(own address, peer address)`.
    """
    bundle = x3dh.Bundle(
        identity_key=peer.identity_key,
        signed_pre_key=peer.signed_prekey,
        signed_pre_key_sig=peer.signed_prekey_signature,
        pre_keys=frozenset() if peer.one_time_prekey is None else frozenset([peer.one_time_prekey]),
    )
    secret, ad, header = await own.get_shared_secret_active(
        bundle, associated_data_appendix=ad_appendix, require_pre_key=False
    )
    prekey = wire.PrekeyHeader(
        header.identity_key, header.ephemeral_key, peer.signed_prekey_id, peer.one_time_prekey_id
    )
    return secret, ad, prekey


async def x3dh_respond(
    own: X3DHState, prekey: wire.PrekeyHeader, spk_public: bytes, opk_public: bytes | None, ad_appendix: bytes
) -> tuple[bytes, bytes]:
    """Passive X3DH: shared secret and associated data (+ `ad_appendix`). Raises x3dh's errors."""
    header = x3dh.Header(
        identity_key=prekey.identity_key,
        ephemeral_key=prekey.base_key,
        signed_pre_key=spk_public,
        pre_key=opk_public,
    )
    secret, ad, _ = await own.get_shared_secret_passive(
        header, associated_data_appendix=ad_appendix, require_pre_key=False
    )
    return secret, ad


async def initiate(own: X3DHState, peer: PeerPrekeys, ad_appendix: bytes, plaintext: bytes) -> tuple[Session, bytes]:
    """Start a session from a verified bundle and encrypt its first message."""
    secret, ad, prekey = await x3dh_initiate(own, peer, ad_appendix)
    ratchet, encrypted = await _Ratchet.encrypt_initial_message(
        *_RATCHET_CONFIG, secret, peer.signed_prekey, plaintext, ad
    )
    session = Session(ratchet, ad, peer.identity_key, prekey.base_key, prekey)
    return session, wire.encode_envelope(wire.Envelope(prekey, _to_wire(encrypted)))


async def respond(
    own: X3DHState, envelope: wire.Envelope, spk_private: bytes, opk_private: bytes | None, ad_appendix: bytes
) -> tuple[Session, bytes]:
    """Accept an initial message: the new session and the plaintext. Raises DecryptError; changes nothing."""
    prekey = envelope.prekey
    assert prekey is not None
    try:
        secret, ad = await x3dh_respond(
            own,
            prekey,
            primitives.x25519_public(spk_private),
            None if opk_private is None else primitives.x25519_public(opk_private),
            ad_appendix,
        )
        ratchet, plaintext = await _Ratchet.decrypt_initial_message(
            *_RATCHET_CONFIG, secret, spk_private, _from_wire(envelope.message), ad
        )
    except Exception as exc:  # x3dh, doubleratchet and xeddsa raise assorted errors on bad input
        raise DecryptError(f"cannot decrypt initial message: {exc}") from exc
    session = Session(ratchet, ad, prekey.identity_key, prekey.base_key, None)
    session._saw(envelope.message.ratchet_key)
    return session, plaintext
