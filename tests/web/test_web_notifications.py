"""Desktop notifications while a tab is open: one for a message in a chat that is not on screen, none for
the chat that is (unless the tab is hidden), and never the text of an end-to-end encrypted message (a
notification leaves the page for the system's notification centre). See docs/web.md "Notifications"."""

from __future__ import annotations

from tests.web.conftest import AppServer, Browsers, SdkUsers, WebUser

# Records every notification the page makes (the real one is made too: the permission is granted).
RECORD = """
(() => {
  const Real = window.Notification;
  if (!Real) return;
  window.__notifications = [];
  window.Notification = class extends Real {
    constructor(title, options = {}) {
      window.__notifications.push({ title, body: options.body ?? "", tag: options.tag ?? "" });
      super(title, options);
    }
    static get permission() {
      return Real.permission;
    }
    static requestPermission(...args) {
      return Real.requestPermission(...args);
    }
  };
})();
"""
HIDE = """
Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
document.dispatchEvent(new Event("visibilitychange"));
"""


async def notifications(user: WebUser) -> list[dict[str, str]]:
    return await user.page.evaluate("() => window.__notifications")


async def until_notified(user: WebUser, count: int) -> list[dict[str, str]]:
    await user.page.wait_for_function("n => window.__notifications.length >= n", arg=count, timeout=20_000)
    return await notifications(user)


async def test_notifications_for_chats_not_on_screen(browsers: Browsers, sup_server: AppServer, sdk_users: SdkUsers):
    alice = await browsers.open()
    await alice.page.context.grant_permissions(["notifications"], origin=sup_server.url)
    await alice.page.context.add_init_script(RECORD)
    await alice.sign_up("Alice")
    bob = await sdk_users.register("bob")
    carol = await sdk_users.register("carol")
    alice_id = await alice.page.evaluate("() => window.supApp.get().me.id")
    with_bob = await bob.direct_chat_with(alice.username)
    with_carol = await carol.direct_chat_with(alice.username)
    await bob.send_text(with_bob["id"], "the first one, before any chat is open")
    (first,) = await until_notified(alice, 1)
    assert first == {"title": bob.username, "body": "New message", "tag": with_bob["id"]}

    await alice.open_chat(bob.username or "")
    await alice.sees("the first one")
    # the chat on screen: no notification; another chat: one, without its (encrypted) text
    await bob.send_text(with_bob["id"], "while alice reads this chat")
    await alice.sees("while alice reads this chat")
    await carol.send_text(with_carol["id"], "a secret from carol")
    shown = await until_notified(alice, 2)
    assert shown[1] == {"title": carol.username, "body": "New message", "tag": with_carol["id"]}
    assert all("secret" not in n["body"] and "reads this chat" not in n["body"] for n in shown)

    # a channel is readable by the server anyway: its notification may show the text
    channel = await bob.http.create_chat("channel", [alice_id], title="Club news")
    await bob.send_text(channel["id"], "Meeting moved to Friday")
    shown = await until_notified(alice, 3)
    assert shown[2] == {
        "title": f"{bob.username} in Club news",
        "body": "Meeting moved to Friday",
        "tag": channel["id"],
    }

    # the tab is hidden: the open chat notifies too
    await alice.page.evaluate(HIDE)
    await bob.send_text(with_bob["id"], "are you still there?")
    shown = await until_notified(alice, 4)
    assert shown[3] == {"title": bob.username, "body": "New message", "tag": with_bob["id"]}
    assert len(await notifications(alice)) == 4
