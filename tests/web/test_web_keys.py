"""Keys as the web client handles them: a contact's changed identity key shows a banner; one-time prekeys
are topped up on prekeys.low; and what only a server could forge (a plaintext body in an encrypted chat)
is shown as undecryptable, never as a message."""

from __future__ import annotations

import asyncio
import uuid

from sup.client import ReceivedMessage
from sup.client.crypto import DeviceCrypto
from tests.test_e2e_conversations import receive
from tests.web.conftest import Browsers, SdkUsers


async def test_identity_change_prekey_top_up_and_forgeries(browsers: Browsers, sdk_users: SdkUsers):
    alice = await browsers.sign_up()
    bob = await sdk_users.register("bob")
    await alice.start_direct(bob.username or "")
    await alice.send("hello under the first key")
    (got,) = await receive(bob, 1)
    chat_id = got.chat_id

    # bob's device publishes a new identity key (a reinstall, or a key substituted by someone)
    fresh = DeviceCrypto.create(bob.user_id, bob.device_id)
    await bob.http.publish_keys(fresh.identity_key, fresh.signed_prekey(), fresh.generate_one_time_prekeys(5))
    banner = alice.page.get_by_role("status").filter(has_text="The safety number with")
    await banner.wait_for(timeout=20_000)
    assert "new key" in await banner.inner_text()

    # prekeys.low: something drains alice's one-time prekeys; her tab uploads more
    me = await alice.page.evaluate("() => [window.supApp.get().me.id, window.supApp.get().deviceId]")
    for _ in range(85):
        await bob.http.prekey_bundle(*me)
    await alice.page.wait_for_function(
        "async () => (await window.supApp.api.prekeyStatus()).one_time_prekeys > 20", timeout=20_000, polling=500
    )

    # what only a server can forge, delivered as events: refused and shown as undecryptable
    forged = {
        "type": "message.new",
        "cursor": None,
        "message": {
            "id": str(uuid.uuid4()),
            "chat_id": chat_id,
            "seq": 10_000,
            "sender_id": bob.user_id,
            "sender_device_id": bob.device_id,
            "client_id": "forged",
            "kind": "text",
            "body": "a plaintext body the server wrote",
            "created_at": 1,
        },
    }
    await alice.page.evaluate("frame => window.supApp.messenger.onFrames([frame])", forged)
    await alice.messages.get_by_text("This message could not be decrypted on this device.").wait_for()
    assert await alice.messages.get_by_text("a plaintext body the server wrote").count() == 0


async def test_the_sdk_reads_the_browser_after_its_identity_changed(browsers: Browsers, sdk_users: SdkUsers):
    """The browser signs out and a new browser logs in: the SDK meets a new device, and reads it."""
    alice = await browsers.sign_up()
    bob = await sdk_users.register("bob")
    chat = await bob.direct_chat_with(alice.username)
    await bob.send_text(chat["id"], "hi browser")
    await alice.open_chat(bob.username or "")
    await alice.sees("hi browser")
    await alice.page.get_by_role("link", name="Settings and profile").click()
    alice.page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await alice.page.get_by_role("button", name="Log out").click()
    await alice.page.get_by_role("button", name="Log in").wait_for()

    again = await browsers.open(alice.username)
    await again.log_in()
    await bob.send_text(chat["id"], "to your new device")
    await again.open_chat(bob.username or "")
    await again.sees("to your new device")
    await again.send("answer from the new device")
    found = [m for m in await receive(bob, 1) if isinstance(m, ReceivedMessage)]
    assert found and found[0].text == "answer from the new device"
