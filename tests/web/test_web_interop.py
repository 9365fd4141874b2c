"""The web client and the Python SDK are devices of the same kind: each decrypts what the other sends, in a
direct chat and in an encrypted group, files included. Afterwards, the server's database and files hold
none of what the browser wrote (the scan of tests/test_no_plaintext_at_rest.py), while a channel message
written the same way is found: the scan sees what it should."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from sup.app import DATABASE
from sup.client import ReceivedMessage
from tests import media_samples as samples
from tests.conftest import png_bytes
from tests.test_e2e_conversations import receive
from tests.test_no_plaintext_at_rest import Markers, database_cells, files_under, search, sqlite_files
from tests.web.conftest import AppServer, Browsers, sdk_user


async def test_browser_and_python_sdk_chat_and_nothing_is_stored_in_clear(
    browsers: Browsers, sup_server: AppServer, tmp_path: Path
):
    marks = Markers()
    alice = await browsers.sign_up()
    bob = await sdk_user(sup_server, tmp_path / "bob.db")
    carol = await sdk_user(sup_server, tmp_path / "carol.db")
    try:
        # a direct chat started in the browser
        await alice.start_direct(bob.username or "")
        text = f"from the browser {marks.new('direct from the browser')}"
        await alice.send(text)
        (got,) = await receive(bob, 1)
        assert isinstance(got, ReceivedMessage) and got.text == text, got
        direct = got.chat_id
        sent = await bob.send_text(direct, f"from python {marks.new('direct from python')}")
        await alice.sees("from python")

        # an edit and a reply from the browser, checked by the SDK's envelope checks
        edited = f"edited in the browser {marks.new('edit from the browser')}"
        await alice.edit("from the browser", edited)
        (got,) = await receive(bob, 1)
        assert isinstance(got, ReceivedMessage) and got.edited and got.text == edited, got
        await alice.message_action("from python", "Reply")
        await alice.composer.fill(f"a reply {marks.new('reply from the browser')}")
        await alice.composer.press("Enter")
        (got,) = await receive(bob, 1)
        assert isinstance(got, ReceivedMessage) and got.reply_to == sent["id"], got

        # a photo encrypted in the browser, decrypted by the SDK; and one the other way
        photo = png_bytes(40, 30) + marks.new("inside the browser's photo").encode()
        path = tmp_path / "secret.png"
        path.write_bytes(photo)
        await alice.page.locator("#attach-input").set_input_files(str(path))
        (got,) = await receive(bob, 1)
        assert isinstance(got, ReceivedMessage), got
        (attachment,) = got.attachments
        assert attachment.name == "secret.png" and attachment.mime == "image/png"
        assert await bob.download(attachment) == photo
        marks.secret("attachment key", attachment.key)
        await bob.send_file(direct, samples.jpeg(64, 48, gps=False), name="from-python.jpg", mime="image/jpeg")
        image = alice.messages.get_by_role("img", name="Photo: from-python.jpg")
        await image.wait_for(timeout=20_000)
        assert await image.evaluate("img => img.complete && img.naturalWidth") == 64

        # an encrypted group: the browser's sender key reaches the SDK and the SDK's the browser
        await alice.create_group("Mixed", [bob.username or "", carol.username or ""])
        group_text = f"group from the browser {marks.new('group from the browser')}"
        await alice.send(group_text)
        for client in (bob, carol):
            (got,) = await receive(client, 1)
            assert isinstance(got, ReceivedMessage) and got.text == group_text, got
        group = got.chat_id
        await bob.send_text(group, f"group from python {marks.new('group from python')}")
        await carol.send_text(group, "carol too")
        await alice.sees("group from python")
        await alice.sees("carol too")
        await alice.send(f"and back {marks.new('second group message')}")
        for client in (bob, carol):
            # each first gets the other's group message, then the browser's
            texts = [got.text for got in await receive(client, 2)]
            assert texts[1].startswith("and back"), texts
        # the positive control: a channel message written in the browser is plaintext by design
        control = Markers()
        await alice.create_group("Public", [bob.username or ""], kind="Channel")
        await alice.send(f"news {control.new('channel message')}")
    finally:
        await asyncio.gather(bob.close(), carol.close())

    server = SimpleNamespace(db=sup_server.app[DATABASE], config=sup_server.config)
    cells = await database_cells(server)
    stored = await asyncio.to_thread(files_under, Path(sup_server.config.data_dir))
    raw = await asyncio.to_thread(sqlite_files, server)
    leaks = await asyncio.to_thread(search, marks.needles, [*cells, *stored, *raw])
    assert leaks == {}, f"plaintext or keys at rest: {leaks}"
    found = await asyncio.to_thread(search, control.needles, [*cells, *stored, *raw])
    assert "messages.body" in found["channel message"]
