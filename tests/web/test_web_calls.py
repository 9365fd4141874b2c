"""Calls in the web client: two people in two browser contexts (Chromium's fake microphone) call each other
through a real SUP server; the signalling, with its SDP and ICE end-to-end encrypted, runs in the browsers'
own code (js/client/calls.js), and each side's RTCPeerConnection reaches "connected"."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.web.conftest import AppServer, Browsers, WebUser, sdk_user


async def in_call(user: WebUser, status: str, timeout: float = 30_000) -> None:
    dialog = user.page.get_by_role("dialog")
    try:
        await dialog.locator(f'.call-status[data-status="{status}"]').wait_for(timeout=timeout)
    except Exception as error:
        raise AssertionError(await user.explain(f"is not {status}")) from error


async def test_two_people_call_each_other_in_the_browser(browsers: Browsers, screenshot_dir: Path):
    alice = await browsers.sign_up("Alice Liddell")
    bob = await browsers.sign_up("Bob Builder")
    await alice.write_to(bob, "Can I call you?")

    # Alice calls: Bob's browser rings, with Accept and Decline.
    await alice.page.get_by_role("button", name="Call Bob Builder").click()
    incoming = bob.page.get_by_role("alertdialog", name="Alice Liddell")
    await incoming.wait_for(timeout=20_000)
    await alice.page.get_by_role("dialog").get_by_text("Ringing…").wait_for(timeout=20_000)
    await bob.screenshot(screenshot_dir, "desktop-light-incoming-call")
    await incoming.get_by_role("button", name="Accept").click()

    # Offer, answer and candidates go through SUP, encrypted; both peer connections connect.
    await in_call(alice, "connected")
    await in_call(bob, "connected")
    await alice.screenshot(screenshot_dir, "desktop-light-call")
    mute = alice.page.get_by_role("button", name="Mute")
    await mute.click()
    await alice.page.get_by_role("button", name="Unmute").wait_for()
    assert await alice.page.get_by_role("button", name="Unmute").get_attribute("aria-pressed") == "true"

    # Bob hangs up: both screens say so, and the chat keeps a line with the call's length.
    await bob.page.get_by_role("dialog").get_by_role("button", name="Hang up").click()
    await alice.page.get_by_role("dialog").get_by_text("Call ended").wait_for(timeout=20_000)
    await alice.messages.get_by_text("Call, 0:").wait_for(timeout=20_000)
    await bob.messages.get_by_text("Call, 0:").wait_for(timeout=20_000)

    # A call Bob declines is a declined call for both.
    await alice.page.get_by_role("dialog").wait_for(state="detached", timeout=10_000)
    await alice.page.get_by_role("button", name="Call Bob Builder").click()
    incoming = bob.page.get_by_role("alertdialog", name="Alice Liddell")
    await incoming.get_by_role("button", name="Decline").click()
    await alice.page.get_by_role("dialog").get_by_text("Declined").wait_for(timeout=20_000)
    await alice.messages.get_by_text("Call declined").wait_for(timeout=20_000)


async def test_the_sdk_calls_the_browser(browsers: Browsers, sup_server: AppServer, tmp_path: Path):
    """The Python SDK with an aiortc peer calls a person in Chromium: the call signals the two implementations
    encrypt (client/calls.py, js/client/calls.js) are the same envelope, and the two WebRTC stacks connect."""
    aiortc = pytest.importorskip("aiortc")
    from aiortc.sdp import candidate_from_sdp

    from tests.webrtc_peer import ToneTrack

    web = await browsers.sign_up("Wendy Web")
    sdk = await sdk_user(sup_server, tmp_path / "sdk.db")
    pc = aiortc.RTCPeerConnection()
    try:
        web_id = await web.page.evaluate("() => window.supApp.get().me.id")
        chat = await sdk.direct_chat(web_id)
        await web.page.get_by_role("navigation", name="Chats").get_by_role("link").first.wait_for(timeout=20_000)

        pc.addTrack(ToneTrack())
        call = await sdk.calls.place(chat["id"])
        incoming = web.page.get_by_role("alertdialog")
        await incoming.wait_for(timeout=20_000)
        assert (await sdk.calls.next_event(10, kind="ringing")).device_id  # the page said it rings
        await incoming.get_by_role("button", name="Accept").click()
        await sdk.calls.next_event(20, kind="accepted", call_id=call["id"])

        await pc.setLocalDescription(await pc.createOffer())
        await sdk.calls.send_signal(call["id"], "offer", {"type": "offer", "sdp": pc.localDescription.sdp})
        answer = await sdk.calls.next_event(20, kind="signal", call_id=call["id"])
        assert answer.signal == "answer"
        await pc.setRemoteDescription(aiortc.RTCSessionDescription(**answer.data))

        async def candidates() -> None:  # the page trickles its candidates after its answer
            while True:
                event = await sdk.calls.next_event(None, kind="signal", call_id=call["id"])
                found = event.data
                if event.signal == "candidate" and found and found.get("candidate"):
                    candidate = candidate_from_sdp(found["candidate"].split(":", 1)[1])
                    candidate.sdpMid, candidate.sdpMLineIndex = found.get("sdpMid"), found.get("sdpMLineIndex")
                    await pc.addIceCandidate(candidate)

        trickle = asyncio.ensure_future(candidates())
        try:
            await in_call(web, "connected")
            for _ in range(200):
                if pc.connectionState == "connected":
                    break
                await asyncio.sleep(0.05)
            assert pc.connectionState == "connected"
        finally:
            trickle.cancel()
        await web.page.get_by_role("dialog").get_by_role("button", name="Hang up").click()
        ended = await sdk.calls.next_event(10, kind="ended", call_id=call["id"])
        assert ended.reason == "hangup" and ended.duration_ms is not None
    finally:
        await pc.close()
        await sdk.close()
