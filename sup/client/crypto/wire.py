"""The versioned binary wire format: every byte a peer (or a JavaScript client) must produce or parse.

All integers are unsigned big-endian. Every structure starts with a version byte and a type byte
(`MessageType`); a parser rejects any other version. Pairwise and group messages are at `VERSION` (2: the
sender's and recipient's addresses are authenticated); sender key distributions and attachment blobs did
not change and stay at 1. docs/e2e.md ("Wire format") is the reference.
"""

from __future__ import annotations

import enum
import struct
import uuid
from dataclasses import dataclass

from sup.client.crypto.errors import CryptoError, DecryptError

VERSION = 2
DISTRIBUTION_VERSION = 1
ATTACHMENT_VERSION = 1
KEY_SIZE = 32
SIGNATURE_SIZE = 64
TAG_SIZE = 16
DISTRIBUTION_ID_SIZE = 16

_U32 = struct.Struct(">I")
# version, type, identity key, base key, signed prekey id, one-time prekey flag
_PREKEY_HEAD = struct.Struct(">BB32s32sIB")
# version, ratchet key, previous sending chain length, index: the authenticated ratchet header
_RATCHET_HEADER = struct.Struct(">B32sII")
_DISTRIBUTION = struct.Struct(">BB16sI32s32s")
_GROUP_HEAD = struct.Struct(">BB16sI")
_U16 = struct.Struct(">H")


class MessageType(enum.IntEnum):
    """The second byte of every structure."""

    PREKEY_MESSAGE = 1
    MESSAGE = 2
    SENDER_KEY_DISTRIBUTION = 3
    GROUP_MESSAGE = 4
    ATTACHMENT = 5


@dataclass(frozen=True, slots=True)
class PrekeyHeader:
    """The X3DH part of an initial message: who is speaking and which of our prekeys they used."""

    identity_key: bytes
    base_key: bytes
    signed_prekey_id: int
    one_time_prekey_id: int | None


@dataclass(frozen=True, slots=True)
class RatchetMessage:
    """A Double Ratchet header plus AES-256-GCM ciphertext (tag included)."""

    ratchet_key: bytes
    previous_chain_length: int
    index: int
    ciphertext: bytes

    def header_bytes(self) -> bytes:
        """The 41-byte ratchet header that is authenticated as associated data."""
        return ratchet_header(self.ratchet_key, self.previous_chain_length, self.index)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A pairwise message: an initial (prekey) message when `prekey` is set, a normal one otherwise."""

    prekey: PrekeyHeader | None
    message: RatchetMessage


def length_prefixed(text: str) -> bytes:
    """u16 byte length || UTF-8 bytes: how ids are put into associated data, unambiguously."""
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise CryptoError("id too long")
    return _U16.pack(len(raw)) + raw


def address_bytes(user_id: str, device_id: str) -> bytes:
    """One device's address as authenticated: length_prefixed(user_id) || length_prefixed(device_id)."""
    return length_prefixed(user_id) + length_prefixed(device_id)


def session_ad_appendix(initiator: tuple[str, str], responder: tuple[str, str]) -> bytes:
    """What follows 0xED || IK_A || 0xED || IK_B in a session's associated data: both addresses, initiator first."""
    return address_bytes(*initiator) + address_bytes(*responder)


def ratchet_header(ratchet_key: bytes, previous_chain_length: int, index: int) -> bytes:
    """VERSION || ratchet public key (32) || previous sending chain length (u32) || index (u32)."""
    return _RATCHET_HEADER.pack(VERSION, ratchet_key, previous_chain_length, index)


def encode_envelope(envelope: Envelope) -> bytes:
    """Serialise a pairwise message."""
    m = envelope.message
    body = m.header_bytes()[1:] + m.ciphertext
    p = envelope.prekey
    if p is None:
        return bytes((VERSION, MessageType.MESSAGE)) + body
    head = _PREKEY_HEAD.pack(
        VERSION,
        MessageType.PREKEY_MESSAGE,
        p.identity_key,
        p.base_key,
        p.signed_prekey_id,
        0 if p.one_time_prekey_id is None else 1,
    )
    if p.one_time_prekey_id is not None:
        head += _U32.pack(p.one_time_prekey_id)
    return head + body


def decode_envelope(data: bytes) -> Envelope:
    """Parse a pairwise message; anything malformed raises DecryptError."""
    if len(data) < 2 or data[0] != VERSION:
        raise DecryptError("unsupported envelope version")
    offset = 2
    prekey = None
    if data[1] == MessageType.PREKEY_MESSAGE:
        if len(data) < _PREKEY_HEAD.size:
            raise DecryptError("truncated prekey message")
        _, _, identity_key, base_key, spk_id, has_opk = _PREKEY_HEAD.unpack_from(data)
        offset = _PREKEY_HEAD.size
        opk_id = None
        if has_opk == 1:
            if len(data) < offset + 4:
                raise DecryptError("truncated prekey message")
            (opk_id,) = _U32.unpack_from(data, offset)
            offset += 4
        elif has_opk != 0:
            raise DecryptError("bad one-time prekey flag")
        prekey = PrekeyHeader(identity_key, base_key, spk_id, opk_id)
    elif data[1] != MessageType.MESSAGE:
        raise DecryptError("not a pairwise message")
    header_size = _RATCHET_HEADER.size - 1
    if len(data) < offset + header_size + TAG_SIZE:
        raise DecryptError("truncated message")
    ratchet_key, previous, index = struct.unpack_from(">32sII", data, offset)
    return Envelope(prekey, RatchetMessage(ratchet_key, previous, index, bytes(data[offset + header_size :])))


@dataclass(frozen=True, slots=True)
class SenderKeyDistribution:
    """A sender key's chain state at `iteration` plus its public signing key (86 bytes on the wire)."""

    distribution_id: str
    iteration: int
    chain_key: bytes
    signing_key: bytes

    def encode(self) -> bytes:
        """Serialise."""
        return _DISTRIBUTION.pack(
            DISTRIBUTION_VERSION,
            MessageType.SENDER_KEY_DISTRIBUTION,
            uuid.UUID(self.distribution_id).bytes,
            self.iteration,
            self.chain_key,
            self.signing_key,
        )

    @classmethod
    def decode(cls, data: bytes) -> SenderKeyDistribution:
        """Parse; anything malformed raises CryptoError."""
        if len(data) != _DISTRIBUTION.size or data[:2] != bytes(
            (DISTRIBUTION_VERSION, MessageType.SENDER_KEY_DISTRIBUTION)
        ):
            raise CryptoError("malformed sender key distribution message")
        _, _, dist_id, iteration, chain_key, signing_key = _DISTRIBUTION.unpack(data)
        return cls(str(uuid.UUID(bytes=dist_id)), iteration, chain_key, signing_key)


@dataclass(frozen=True, slots=True)
class GroupMessage:
    """A sender-key message: header, AES-256-GCM ciphertext, Ed25519 signature.

    Both the GCM associated data and the signature start with the message's context (chat id, sender user
    id, sender device id; never sent), so a message attributed to another chat or device does not verify.
    """

    distribution_id: str
    iteration: int
    ciphertext: bytes
    signature: bytes

    @staticmethod
    def header(distribution_id: str, iteration: int) -> bytes:
        """The 22-byte header."""
        return _GROUP_HEAD.pack(VERSION, MessageType.GROUP_MESSAGE, uuid.UUID(distribution_id).bytes, iteration)

    @staticmethod
    def context(chat_id: str, user_id: str, device_id: str) -> bytes:
        """length_prefixed(chat_id) || length_prefixed(sender user_id) || length_prefixed(sender device_id)."""
        return length_prefixed(chat_id) + address_bytes(user_id, device_id)

    @classmethod
    def associated_data(cls, context: bytes, distribution_id: str, iteration: int) -> bytes:
        """The AES-GCM associated data: context || header."""
        return context + cls.header(distribution_id, iteration)

    def signed_part(self, context: bytes) -> bytes:
        """The bytes the signature covers: context || header || ciphertext."""
        return context + self.wire_part()

    def wire_part(self) -> bytes:
        """Header and ciphertext as sent (everything before the signature)."""
        return self.header(self.distribution_id, self.iteration) + self.ciphertext

    def encode(self) -> bytes:
        """Serialise."""
        return self.wire_part() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> GroupMessage:
        """Parse; anything malformed raises DecryptError."""
        if len(data) < _GROUP_HEAD.size + TAG_SIZE + SIGNATURE_SIZE:
            raise DecryptError("truncated group message")
        if data[0] != VERSION or data[1] != MessageType.GROUP_MESSAGE:
            raise DecryptError(f"not a version {VERSION} group message")
        _, _, dist_id, iteration = _GROUP_HEAD.unpack_from(data)
        return cls(
            str(uuid.UUID(bytes=dist_id)),
            iteration,
            bytes(data[_GROUP_HEAD.size : -SIGNATURE_SIZE]),
            bytes(data[-SIGNATURE_SIZE:]),
        )
