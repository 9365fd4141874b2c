"""Push notifications: this device's push subscription, and the key push services know SUP by."""

from __future__ import annotations

from sup.domain.push import Subscription
from sup.http import schemas as s
from sup.http.api import Call


async def subscribe(call: Call, body: s.PushSubscriptionRequest) -> Subscription:
    """POST /api/v1/push/subscriptions: register this device's Web Push or UnifiedPush subscription.

    One per device: registering again replaces it. The endpoint must be https and resolve to public
    addresses only (unless the server's operator allows others); the keys are those RFC 8291
    encrypts to. Pushes carry no content: only that something is new, and in which chat.
    """
    who = call.who
    return await call.services.push.subscribe(who.user_id, who.device_id, body.endpoint, body.p256dh, body.auth)


async def get_subscription(call: Call) -> Subscription:
    """GET /api/v1/push/subscriptions: this device's push subscription (404 when it has none)."""
    return await call.services.push.subscription(call.who.device_id)


async def unsubscribe(call: Call) -> None:
    """DELETE /api/v1/push/subscriptions: stop pushes to this device (204 whether or not it had a subscription)."""
    await call.services.push.unsubscribe(call.who.device_id)


async def vapid_key(call: Call) -> s.VapidKeyResponse:
    """GET /api/v1/push/vapid: the server's VAPID public key, to subscribe with."""
    return s.VapidKeyResponse(public_key=call.services.push.vapid())
