"""Web Push in the browser: the service worker at /sw.js, the toggle "Notifications when the tab is closed",
and the notification the worker shows for a push ("New message", the chat's link, no content).

What headless Chromium cannot do, and so what is tested instead: it has no push service (Chromium builds
without Google's keys cannot reach FCM), so PushManager.subscribe fails there; the toggle is tested up to
that point (permission, worker registered, the VAPID key fetched and handed over) and must then say why,
not break. The push itself is delivered to the worker through the DevTools protocol
(ServiceWorker.deliverPushMessage, the "Push" button of DevTools), with the tab closed, and the
notification it shows is read back with registration.getNotifications(). A click on a system
notification cannot be made headless; the click handler is not exercised here.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.web.conftest import AppServer, Browsers

CHAT_ID = "01a24758-a5c0-7a0f-8243-6999934d1efe"


async def test_the_service_worker_is_served_from_the_root_with_its_own_policy(sup_server: AppServer):
    async with aiohttp.ClientSession() as session, session.get(f"{sup_server.url}/sw.js") as response:
        body = await response.text()
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert response.headers["Cache-Control"] == "no-cache"  # browsers look for a new worker at every visit
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert 'addEventListener("push"' in body and "showNotification" in body


async def test_the_toggle_registers_the_worker_and_subscribes_or_says_why(browsers: Browsers, sup_server: AppServer):
    alice = await browsers.open()
    context = alice.page.context
    await context.grant_permissions(["notifications"], origin=sup_server.url)
    await alice.sign_up("Alice")
    try:
        await alice.page.goto(f"{sup_server.url}/settings/notifications")
        toggle = alice.page.get_by_label("Notifications when the tab is closed")
        await toggle.wait_for(timeout=20_000)
        assert not await toggle.is_checked()
        await toggle.click()
        subscribed = alice.page.get_by_label("Notifications when the tab is closed").and_(
            alice.page.locator(":checked")
        )
        refused = alice.page.get_by_role("alert")
        await subscribed.or_(refused).first.wait_for(timeout=20_000)
        scope = await alice.page.evaluate("async () => (await navigator.serviceWorker.ready).scope")
        assert scope == f"{sup_server.url}/"
        if await refused.count():
            # Headless Chromium: no push service. The page says so, and the server has no subscription.
            text = await refused.inner_text()
            assert text.strip(), "the refusal says why"
            print(f"PushManager.subscribe in this browser: refused ({text.strip()})")
            assert not await toggle.is_checked()
        else:
            # A browser with a push service: the subscription is registered for this device.
            endpoint = await alice.page.evaluate(
                "async () => (await window.supApp.api.request('GET', '/push/subscriptions')).endpoint"
            )
            assert endpoint.startswith("https://")
            print(f"PushManager.subscribe in this browser: subscribed at {endpoint.split('/')[2]}")

        # The tab closes; a push arrives for the worker (as the push service would deliver it).
        registration_id = await _registration_id(context, alice.page, sup_server.url)
        blank = await context.new_page()
        await alice.page.close()
        cdp = await context.new_cdp_session(blank)
        await cdp.send("ServiceWorker.enable")
        payload = json.dumps({"type": "new", "kind": "message", "chat_id": CHAT_ID}) + " " * 40
        await cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": f"{sup_server.url}/", "registrationId": registration_id, "data": payload},
        )
        shown = await _notifications(context, sup_server.url)
        assert len(shown) == 1, shown
        assert shown[0]["title"] == "New message"
        assert shown[0]["url"] == f"/chats/{CHAT_ID}"
        assert "Alice" not in shown[0]["body"] and shown[0]["tag"] == CHAT_ID

        # A push that names no chat (a burst across chats) opens the chat list.
        await cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": f"{sup_server.url}/", "registrationId": registration_id, "data": '{"type":"new"}'},
        )
        await asyncio.sleep(0)
        urls = {n["url"] for n in await _notifications(context, sup_server.url, count=2)}
        assert urls == {f"/chats/{CHAT_ID}", "/"}
    finally:
        for page in list(alice.page.context.pages):
            await page.close()


async def _registration_id(context: Any, page: Any, origin: str) -> str:
    cdp = await context.new_cdp_session(page)
    found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def registrations(event: dict[str, Any]) -> None:
        for registration in event["registrations"]:
            if registration["scopeURL"] == f"{origin}/" and not registration.get("isDeleted") and not found.done():
                found.set_result(registration["registrationId"])

    cdp.on("ServiceWorker.workerRegistrationUpdated", registrations)
    await cdp.send("ServiceWorker.enable")
    try:
        return await asyncio.wait_for(found, 20)
    finally:
        await cdp.detach()


async def _notifications(context: Any, origin: str, count: int = 1) -> list[dict[str, Any]]:
    """The worker's notifications, read from a tab opened for that (after the push, so the worker saw none)."""
    page = await context.new_page()
    try:
        await page.goto(f"{origin}/login")
        return await page.evaluate(
            """async (count) => {
                const registration = await navigator.serviceWorker.ready;
                for (let i = 0; i < 200; i++) {
                    const shown = await registration.getNotifications();
                    if (shown.length >= count) {
                        return shown.map(n => ({title: n.title, body: n.body, tag: n.tag, url: n.data?.url}));
                    }
                    await new Promise(resolve => setTimeout(resolve, 50));
                }
                return [];
            }""",
            count,
        )
    finally:
        await page.close()
