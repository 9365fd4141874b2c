"""Tokens in the browser: the access token expires and is refreshed, by two tabs at once, without ever
presenting one refresh token twice (that would end the device's session: docs/api.md "Refresh")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.conftest import MovableClock
from tests.web.conftest import AppServer, Browsers, running_server


@pytest.fixture(scope="module")
async def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture(scope="module")
async def sup_server(tmp_path_factory, clock: MovableClock) -> AsyncIterator[AppServer]:
    async with running_server(tmp_path_factory.mktemp("sup-session"), clock=clock) as server:
        yield server


async def test_expired_tokens_are_refreshed_by_two_tabs_at_once(browsers: Browsers, clock: MovableClock):
    alice = await browsers.sign_up()
    bob = await browsers.sign_up()
    await alice.start_direct(bob.username)
    await alice.send("before the tokens expire")
    second = (await browsers.another_tab(alice)).page

    clock.advance(3600)  # every access token is an hour past its 15 minutes
    # both tabs call the API at the same moment: each gets token_expired, and they refresh one at a time
    answers = await asyncio.gather(
        *(page.evaluate("async () => (await window.supApp.api.me()).username") for page in (alice.page, second))
    )
    assert answers == [alice.username, alice.username]
    await alice.send("after the tokens expired")
    await bob.open_chat(alice.username)
    await bob.sees("after the tokens expired")
    # the session is alive in both tabs (a reused refresh token would have ended it)
    for page in (alice.page, second):
        assert await page.evaluate("() => window.supApp.get().phase") == "ready"
    assert await second.evaluate("async () => (await window.supApp.api.me()).username") == alice.username
