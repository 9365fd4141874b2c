"""The web client's outbox: a message to someone who has no device yet waits on this device and goes by
itself, in order and once, when their first device publishes its keys; what is typed offline is sent when
the connection is back (docs/e2e.md "A member without a device")."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sup.client import Client, ReceivedMessage
from sup.transport.services import SERVICES
from tests.test_e2e_conversations import receive
from tests.web.conftest import PASSWORD, AppServer, Browsers, SdkUsers, WebUser


async def created_by_an_admin(server: AppServer) -> str:
    """The username of an account made as `sup admin create-user` makes it: no device yet."""
    username = f"gp{uuid.uuid4().hex[:10]}"
    await server.app[SERVICES].accounts.create_user(username, PASSWORD)
    return username


async def write(user: WebUser, text: str) -> Any:
    await user.composer.fill(text)
    await user.composer.press("Enter")
    return user.message(text)


async def test_messages_wait_for_a_first_device_and_for_the_connection(
    browsers: Browsers, sup_server: AppServer, tmp_path: Path
):
    alice = await browsers.sign_up()
    grandpa_name = await created_by_an_admin(sup_server)
    grandpa = None
    try:
        await alice.start_direct(grandpa_name)
        first = await write(alice, "hello grandpa")
        waiting = first.locator(".state-waiting").filter(has_text=f"Waiting for {grandpa_name}\u2019s first device")
        await waiting.wait_for(timeout=20_000)
        # what is written after it in that chat waits behind it; nothing failed, nothing to retry
        second = await write(alice, "are you there?")
        await second.locator(".state-waiting").wait_for()
        assert await alice.page.get_by_role("button", name="Retry").count() == 0

        # the outbox is on this device: a reload keeps both, waiting
        await alice.page.reload()
        await alice.ready()
        await alice.message("are you there?").locator(".state-waiting").wait_for()
        await alice.message("hello grandpa").locator(".state-waiting").wait_for()

        # grandpa signs in for the first time (login, then keys published: keys.changed each time)
        grandpa = await Client.login(sup_server.url, str(tmp_path / "grandpa.db"), grandpa_name, PASSWORD)
        await grandpa.start()
        for text in ("hello grandpa", "are you there?"):
            await alice.message(text).locator(".state-sent, .state-read").wait_for(timeout=30_000)
        got = [m for m in await receive(grandpa, 2) if isinstance(m, ReceivedMessage)]
        assert [m.text for m in got] == ["hello grandpa", "are you there?"]
        history = (await grandpa.http.history(got[0].chat_id))["items"]
        assert len(history) == len({m["client_id"] for m in history}) == 2  # once each

        # offline: what is typed waits for the connection, then goes in order
        await alice.page.context.set_offline(True)
        await alice.page.get_by_role("status").filter(has_text="You are offline").wait_for()
        for text in ("typed offline 1", "typed offline 2"):
            await (await write(alice, text)).locator(".state-queued").wait_for(timeout=20_000)
        await alice.page.context.set_offline(False)
        for text in ("typed offline 1", "typed offline 2"):
            await alice.message(text).locator(".state-sent, .state-read").wait_for(timeout=30_000)
        got = [m for m in await receive(grandpa, 2) if isinstance(m, ReceivedMessage)]
        assert [m.text for m in got] == ["typed offline 1", "typed offline 2"]
        texts = await alice.messages.locator("li.message .text").all_inner_texts()
        assert texts == ["hello grandpa", "are you there?", "typed offline 1", "typed offline 2"]
    finally:
        if grandpa is not None:
            await grandpa.close()


async def test_a_busy_server_is_tried_again_later(browsers: Browsers, sdk_users: SdkUsers):
    alice = await browsers.sign_up()
    bob = await sdk_users.register("bob")
    refused = 0

    async def busy(route: Any) -> None:
        nonlocal refused
        if route.request.method != "POST":
            await route.continue_()
            return
        refused += 1
        await route.fulfill(status=503, content_type="application/problem+json", body='{"code": "unavailable"}')

    await alice.start_direct(bob.username or "")
    await alice.page.route("**/api/v1/messages", busy)
    await (await write(alice, "while the server is busy")).locator(".state-queued").wait_for(timeout=20_000)
    await alice.page.unroute("**/api/v1/messages", busy)
    # nothing else happens (the socket stays up, the browser online): the outbox tries again by itself
    await alice.message("while the server is busy").locator(".state-sent, .state-read").wait_for(timeout=20_000)
    got = [m for m in await receive(bob, 1) if isinstance(m, ReceivedMessage)]
    assert [m.text for m in got] == ["while the server is busy"] and refused >= 1
