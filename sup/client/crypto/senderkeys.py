"""Sender Keys for groups, after Signal's design: one symmetric chain plus one signing key per sender.

A sender's chain key CK_i gives the message key seed HMAC-SHA256(CK_i, 0x01) and the next chain key
HMAC-SHA256(CK_i, 0x02). The seed expands with HKDF-SHA256 into an AES-256-GCM key and nonce. Every group
message is signed with the sender key's Ed25519 key, so members cannot forge each other's messages, and the
signature and associated data cover the chat id and sender address (`wire.GroupMessage.context`), so the
server cannot attribute a message to another device or chat.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sup.client.crypto import primitives, wire
from sup.client.crypto.errors import DecryptError, DuplicateMessage
from sup.client.crypto.sessions import MAX_SKIP, MAX_SKIPPED_KEYS
from sup.client.crypto.stored import b64, unb64

GROUP_MESSAGE_KEY_INFO = b"SUP v1 group message key"
_SEED_INPUT = b"\x01"
_CHAIN_INPUT = b"\x02"


def chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    """(message key seed, next chain key)."""
    return primitives.hmac_sha256(chain_key, _SEED_INPUT), primitives.hmac_sha256(chain_key, _CHAIN_INPUT)


def group_key_material(seed: bytes) -> tuple[bytes, bytes]:
    """Expand a message key seed into an AES-256 key and a 12-byte GCM nonce."""
    okm = primitives.hkdf_sha256(seed, GROUP_MESSAGE_KEY_INFO, 32 + primitives.GCM_NONCE_SIZE)
    return okm[:32], okm[32:]


@dataclass
class _SenderChain:
    """What both sides of a sender key hold: which distribution it is, and where its chain stands."""

    distribution_id: str
    iteration: int
    chain_key: bytes

    def _chain_json(self) -> dict[str, Any]:
        return {"distribution_id": self.distribution_id, "iteration": self.iteration, "chain_key": b64(self.chain_key)}


@dataclass
class OwnSenderKey(_SenderChain):
    """The sending side of our sender key in one chat."""

    signing_seed: bytes

    @classmethod
    def generate(cls) -> OwnSenderKey:
        """A fresh sender key: new distribution id, chain key and signing key."""
        dist = str(uuid.UUID(bytes=primitives.random_bytes(16), version=4))
        return cls(dist, 0, primitives.random_bytes(32), primitives.random_bytes(32))

    def distribution(self) -> wire.SenderKeyDistribution:
        """The state at the current iteration: a new member can read from here on, never earlier."""
        return wire.SenderKeyDistribution(
            self.distribution_id, self.iteration, self.chain_key, primitives.ed25519_public(self.signing_seed)
        )

    def encrypt(self, plaintext: bytes, context: bytes) -> bytes:
        """Encrypt and sign the next group message, advancing the chain; `context` is GroupMessage.context."""
        seed, next_chain = chain_step(self.chain_key)
        key, nonce = group_key_material(seed)
        ad = wire.GroupMessage.associated_data(context, self.distribution_id, self.iteration)
        ciphertext = primitives.aes_gcm_encrypt(key, nonce, plaintext, ad)
        unsigned = wire.GroupMessage(self.distribution_id, self.iteration, ciphertext, b"")
        signature = primitives.ed25519_sign(self.signing_seed, unsigned.signed_part(context))
        self.chain_key, self.iteration = next_chain, self.iteration + 1
        return wire.GroupMessage(self.distribution_id, self.iteration - 1, ciphertext, signature).encode()

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable snapshot."""
        return {**self._chain_json(), "signing_seed": b64(self.signing_seed)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OwnSenderKey:
        """Inverse of `to_json`."""
        return cls(d["distribution_id"], d["iteration"], unb64(d["chain_key"]), unb64(d["signing_seed"]))


@dataclass
class PeerSenderKey(_SenderChain):
    """The receiving side of one peer device's sender key (one distribution)."""

    signing_key: bytes
    # iteration -> message key seed, for messages that have not arrived yet; oldest first
    skipped: OrderedDict[int, bytes] = field(default_factory=OrderedDict)

    @classmethod
    def from_distribution(cls, d: wire.SenderKeyDistribution) -> PeerSenderKey:
        """Start receiving from a distribution message."""
        return cls(d.distribution_id, d.iteration, d.chain_key, d.signing_key)

    def decrypt(self, message: wire.GroupMessage, context: bytes) -> bytes:
        """Verify and decrypt (`context`: GroupMessage.context of the claimed sender); state changes only on success."""
        if not primitives.ed25519_verify(self.signing_key, message.signature, message.signed_part(context)):
            raise DecryptError("bad group message signature")
        new_skipped: list[tuple[int, bytes]] = []
        chain_key = self.chain_key
        if message.iteration < self.iteration:
            seed = self.skipped.get(message.iteration)
            if seed is None:
                raise DuplicateMessage("group message already decrypted")
        else:
            if message.iteration - self.iteration > MAX_SKIP:
                raise DecryptError(f"more than {MAX_SKIP} group messages skipped")
            for i in range(self.iteration, message.iteration):
                skipped_seed, chain_key = chain_step(chain_key)
                new_skipped.append((i, skipped_seed))
            seed, chain_key = chain_step(chain_key)
        key, nonce = group_key_material(seed)
        ad = wire.GroupMessage.associated_data(context, message.distribution_id, message.iteration)
        plaintext = primitives.aes_gcm_decrypt(key, nonce, message.ciphertext, ad)
        if message.iteration < self.iteration:
            del self.skipped[message.iteration]
        else:
            self.skipped.update(new_skipped)
            while len(self.skipped) > MAX_SKIPPED_KEYS:
                self.skipped.popitem(last=False)
            self.chain_key, self.iteration = chain_key, message.iteration + 1
        return plaintext

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable snapshot."""
        return {
            **self._chain_json(),
            "signing_key": b64(self.signing_key),
            "skipped": [[i, b64(s)] for i, s in self.skipped.items()],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PeerSenderKey:
        """Inverse of `to_json`."""
        return cls(
            d["distribution_id"],
            d["iteration"],
            unb64(d["chain_key"]),
            unb64(d["signing_key"]),
            OrderedDict((i, unb64(s)) for i, s in d["skipped"]),
        )
