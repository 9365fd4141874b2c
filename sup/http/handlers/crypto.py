"""The E2E key directory under /api/v1/crypto: public keys in, public keys out, sender keys relayed."""

from __future__ import annotations

from sup.domain.keydirectory import Bundle, DeviceKeys, PrekeyStatus
from sup.http import schemas as s
from sup.http.api import Call


async def publish_keys(call: Call, body: s.KeysPublish) -> s.PrekeyCount:
    """POST /api/v1/crypto/keys: publish my device's identity key, signed prekey and one-time prekeys."""
    count = await call.services.keys.publish(
        call.who.user_id,
        call.who.device_id,
        body.identity_key,
        body.signed_prekey.domain(),
        s.one_time(body.one_time_prekeys),
    )
    return s.PrekeyCount(one_time_prekeys=count)


async def upload_prekeys(call: Call, body: s.PrekeysUpload) -> s.PrekeyCount:
    """POST /api/v1/crypto/prekeys: add one-time prekeys and/or rotate my signed prekey."""
    signed = body.signed_prekey.domain() if body.signed_prekey is not None else None
    count = await call.services.keys.upload_prekeys(call.who.device_id, signed, s.one_time(body.one_time_prekeys))
    return s.PrekeyCount(one_time_prekeys=count)


async def prekey_status(call: Call) -> PrekeyStatus:
    """GET /api/v1/crypto/prekeys: how many one-time prekeys my device has left, and its signed prekey."""
    return await call.services.keys.status(call.who.device_id)


async def get_keys(call: Call) -> DeviceKeys:
    """GET /api/v1/crypto/keys/{user_id}/{device_id}: a device's public keys; nothing is consumed."""
    return (await call.services.keys.device_keys(call.param("user_id"), call.param("device_id")))[0]


async def get_all_keys(call: Call) -> s.DeviceKeysList:
    """GET /api/v1/crypto/keys/{user_id}/all: the public keys of every active device of a user."""
    return s.DeviceKeysList(devices=await call.services.keys.device_keys(call.param("user_id"), None))


async def get_bundle(call: Call) -> Bundle:
    """GET /api/v1/crypto/prekeys/{user_id}/{device_id}: a prekey bundle; each one-time prekey goes out once."""
    return (await call.services.keys.bundles(call.who.user_id, call.param("user_id"), call.param("device_id")))[0]


async def get_all_bundles(call: Call) -> s.BundleList:
    """GET /api/v1/crypto/prekeys/{user_id}/all: a prekey bundle for every active device of a user."""
    return s.BundleList(devices=await call.services.keys.bundles(call.who.user_id, call.param("user_id"), None))


async def distribute_sender_key(call: Call, body: s.SenderKeyPost) -> None:
    """POST /api/v1/crypto/sender-keys/{chat_id}: relay my group sender key, encrypted per member device."""
    await call.services.keys.distribute_sender_key(
        call.who.user_id,
        call.who.device_id,
        call.param("chat_id"),
        body.distribution_id,
        [(r.device_id, r.ciphertext) for r in body.recipients],
    )


async def my_sender_keys(call: Call) -> s.SenderKeyList:
    """GET /api/v1/crypto/sender-keys/{chat_id}: the current sender keys other members sent my device."""
    found = await call.services.keys.my_distributions(call.who.user_id, call.who.device_id, call.param("chat_id"))
    return s.SenderKeyList(distributions=found)
