"""The end-to-end key directory of the REST API (docs/api.md, docs/e2e.md): identity keys, prekeys, sender keys.

Keys travel as standard base64; these methods take and return bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from sup.client.transport import Transport, b64d, b64e
from sup.client.transport import segment as _p


class PrekeyLike(Protocol):
    key_id: int
    public_key: bytes


class SignedPrekeyLike(Protocol):
    key_id: int
    public_key: bytes
    signature: bytes


def _prekey_json(key: PrekeyLike) -> dict[str, Any]:
    return {"key_id": key.key_id, "public_key": b64e(key.public_key)}


def _signed_prekey_json(key: SignedPrekeyLike) -> dict[str, Any]:
    return {"key_id": key.key_id, "public_key": b64e(key.public_key), "signature": b64e(key.signature)}


def _decode_key_record(record: dict[str, Any]) -> dict[str, Any]:
    """A key-directory entry with its base64 fields as bytes."""
    out = dict(record)
    out["identity_key"] = b64d(record["identity_key"])
    spk = record.get("signed_prekey")
    if spk is not None:
        out["signed_prekey"] = {
            "key_id": spk["key_id"],
            "public_key": b64d(spk["public_key"]),
            "signature": b64d(spk["signature"]),
        }
    if "one_time_prekey" in record:
        otk = record["one_time_prekey"]
        out["one_time_prekey"] = (
            None if otk is None else {"key_id": otk["key_id"], "public_key": b64d(otk["public_key"])}
        )
    return out


class KeysApi(Transport):
    """The key directory: what this device publishes, and the bundles it starts sessions from."""

    # -- the end-to-end key directory -------------------------------------------------------

    async def publish_keys(
        self, identity_key: bytes, signed_prekey: SignedPrekeyLike, one_time_prekeys: Iterable[PrekeyLike]
    ) -> int:
        """POST /crypto/keys: this device's identity, signed prekey and one-time prekeys;
        the number of one-time prekeys stored."""
        answer = await self.request(
            "POST",
            "/crypto/keys",
            json={
                "identity_key": b64e(identity_key),
                "signed_prekey": _signed_prekey_json(signed_prekey),
                "one_time_prekeys": [_prekey_json(k) for k in one_time_prekeys],
            },
            idempotent=True,
        )
        return answer["one_time_prekeys"]

    async def upload_prekeys(
        self, one_time_prekeys: Iterable[PrekeyLike], signed_prekey: SignedPrekeyLike | None = None
    ) -> int:
        """POST /crypto/prekeys: more one-time prekeys, and a rotated signed prekey if given."""
        body: dict[str, Any] = {"one_time_prekeys": [_prekey_json(k) for k in one_time_prekeys]}
        if signed_prekey is not None:
            body["signed_prekey"] = _signed_prekey_json(signed_prekey)
        answer = await self.request("POST", "/crypto/prekeys", json=body, idempotent=True)
        return answer["one_time_prekeys"]

    async def prekey_status(self) -> dict[str, Any]:
        """GET /crypto/prekeys: `{"one_time_prekeys", "signed_prekey_id", "signed_prekey_created_at"}`."""
        return await self.request("GET", "/crypto/prekeys")

    async def device_keys(self, user_id: str, device_id: str) -> dict[str, Any]:
        """GET /crypto/keys/{user}/{device}: identity key and signed prekey, consuming nothing."""
        return _decode_key_record(await self.request("GET", f"/crypto/keys/{_p(user_id)}/{_p(device_id)}"))

    async def user_keys(self, user_id: str) -> list[dict[str, Any]]:
        """GET /crypto/keys/{user}/all: every active device of a user that published keys."""
        answer = await self.request("GET", f"/crypto/keys/{_p(user_id)}/all")
        return [_decode_key_record(d) for d in answer["devices"]]

    async def prekey_bundle(self, user_id: str, device_id: str) -> dict[str, Any]:
        """GET /crypto/prekeys/{user}/{device}: a bundle for X3DH; consumes one one-time prekey.

        Not idempotent: a retry would consume another prekey, which is harmless but wasteful.
        """
        return _decode_key_record(await self.request("GET", f"/crypto/prekeys/{_p(user_id)}/{_p(device_id)}"))

    async def prekey_bundles(self, user_id: str) -> list[dict[str, Any]]:
        """GET /crypto/prekeys/{user}/all: a bundle for each of the user's devices."""
        answer = await self.request("GET", f"/crypto/prekeys/{_p(user_id)}/all")
        return [_decode_key_record(d) for d in answer["devices"]]

    async def post_sender_key(self, chat_id: str, distribution_id: str, recipients: Mapping[str, bytes]) -> None:
        """POST /crypto/sender-keys/{chat}: my sender-key distribution, pairwise-encrypted per device."""
        await self.request(
            "POST",
            f"/crypto/sender-keys/{_p(chat_id)}",
            json={
                "distribution_id": distribution_id,
                "recipients": [{"device_id": d, "ciphertext": b64e(c)} for d, c in recipients.items()],
            },
            idempotent=True,
        )
