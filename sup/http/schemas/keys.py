"""The end-to-end key directory: publishing keys, fetching bundles, sender keys."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from sup.domain.keydirectory import (
    Bundle,
    DeviceKeys,
    OneTimePrekey,
    SenderKeyDistribution,
    SignedPrekey,
)
from sup.e2ekeys import MAX_KEY_ID
from sup.http.schemas.common import Body
from sup.transport.inputs import whole
from sup.transport.sends import Recipient

KeyId = Annotated[int, Meta(ge=0, le=MAX_KEY_ID, description="Chosen by the device; unique per device.")]
PublicKey = Annotated[bytes, Meta(description="Base64 of a 32-byte public key.")]


class SignedPrekeyBody(Body):
    key_id: KeyId
    public_key: Annotated[bytes, Meta(description="Base64 of the 32-byte X25519 public key.")]
    signature: Annotated[bytes, Meta(description="Base64 of the 64-byte Ed25519 signature over 0x05 || public_key.")]

    def domain(self) -> SignedPrekey:
        return SignedPrekey(self.key_id, self.public_key, self.signature)


class OneTimePrekeyBody(Body):
    key_id: KeyId
    public_key: PublicKey


def one_time(keys: list[OneTimePrekeyBody]) -> list[OneTimePrekey]:
    return [OneTimePrekey(k.key_id, k.public_key) for k in keys]


class KeysPublish(Body):
    identity_key: Annotated[bytes, Meta(description="Base64 of this device's 32-byte Ed25519 identity key.")]
    signed_prekey: SignedPrekeyBody
    one_time_prekeys: Annotated[list[OneTimePrekeyBody], Meta(max_length=100)] = []


class PrekeysUpload(Body):
    signed_prekey: SignedPrekeyBody | None = None
    one_time_prekeys: Annotated[list[OneTimePrekeyBody], Meta(max_length=100)] = []


class PrekeyCount(msgspec.Struct, kw_only=True):
    one_time_prekeys: int


class DeviceKeysList(msgspec.Struct, kw_only=True):
    devices: list[DeviceKeys]


class BundleList(msgspec.Struct, kw_only=True):
    devices: list[Bundle]


class SenderKeyPost(Body):
    distribution_id: Annotated[str, Meta(min_length=1, max_length=64, pattern=whole(r"[\x21-\x7e]+"))]
    recipients: Annotated[list[Recipient], Meta(min_length=1, max_length=5000)]


class SenderKeyList(msgspec.Struct, kw_only=True):
    distributions: list[SenderKeyDistribution]
