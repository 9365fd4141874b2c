"""Search over HTTP, on SQLite (FTS5) and Postgres (tsvector, pg_trgm): users by name, chats by
title, messages by their words; what it must never return; and input that must not hurt."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from typing import Any

from tests.conftest import Account, Api, Reply, Server, plain_group, say

SEARCH = "/api/v1/search"
CHATS = "/api/v1/chats"


def token() -> str:
    """A word no other test uses (letters only: digits would be words of their own)."""
    return "".join(chr(ord("a") + int(c, 16) % 26) for c in uuid.uuid4().hex[:10])


async def find(api: Api, who: Account, **params: Any) -> Reply:
    return await api.get(f"{SEARCH}/messages", params={k: str(v) for k, v in params.items()}, token=who.access_token)


async def bodies(api: Api, who: Account, **params: Any) -> list[str]:
    reply = await find(api, who, **params)
    assert reply.status == 200, reply.body
    return [item["message"]["body"] for item in reply.body["items"]]


async def users(api: Api, who: Account, q: str) -> list[str]:
    reply = await api.get(f"{SEARCH}/users", params={"q": q}, token=who.access_token)
    assert reply.status == 200, reply.body
    return [user["username"] for user in reply.body["items"]]


async def chats(api: Api, who: Account, q: str) -> list[dict[str, Any]]:
    reply = await api.get(f"{SEARCH}/chats", params={"q": q}, token=who.access_token)
    assert reply.status == 200, reply.body
    return reply.body["items"]


async def channel(api: Api, owner: Account, title: str, *members: Account, visibility: str = "private") -> str:
    reply = await api.post(
        CHATS,
        json={"type": "channel", "title": title, "member_ids": [m.user_id for m in members], "visibility": visibility},
        token=owner.access_token,
    )
    assert reply.status == 201, reply.body
    return reply.body["id"]


async def sent(api: Api, who: Account, chat_id: str, body: str) -> dict[str, Any]:
    reply = await say(api, who, chat_id, body)
    assert reply.status == 201, reply.body
    return reply.body


# -- users ------------------------------------------------------------------------------------


async def test_users_by_username_prefix_display_name_and_similar_spelling(api: Api):
    word = token()
    me = await api.register()
    jonathan = await api.register(f"jo_{word}", display_name=f"Jonathan {word.capitalize()}")
    joanna = await api.register(f"{word}_joanna", display_name="Joanna")
    exact = await api.register(word[:8])

    # The exact name, then a username starting with it, then a word of a display name, then similar names.
    assert (await users(api, me, word[:8]))[:3] == [exact.username, joanna.username, jonathan.username]
    assert (await users(api, me, word.upper()))[:3] == [joanna.username, jonathan.username, exact.username]
    assert (await users(api, me, f"jo_{word[:4]}"))[0] == jonathan.username
    assert jonathan.username in await users(api, me, f"jonathon {word}")  # spelled a little differently
    assert await users(api, me, "jo") != []  # shorter than a trigram: the start of a name
    assert me.username not in await users(api, me, me.username)  # not myself


async def test_users_who_block_me_are_not_found(api: Api):
    word = token()
    me, blocker, blocked_by_me = await api.register(), await api.register(f"b_{word}"), await api.register(f"c_{word}")
    assert await users(api, me, word) == [blocker.username, blocked_by_me.username]

    await api.post("/api/v1/users/me/block", json={"user_id": me.user_id}, token=blocker.access_token)
    await api.post("/api/v1/users/me/block", json={"user_id": blocked_by_me.user_id}, token=me.access_token)
    assert await users(api, me, word) == [blocked_by_me.username]  # I may still find whom I block
    assert await users(api, blocked_by_me, word) == [blocker.username]

    await api.delete(f"/api/v1/users/me/block/{me.user_id}", token=blocker.access_token)
    assert await users(api, me, word) == [blocker.username, blocked_by_me.username]


async def test_a_renamed_user_is_found_by_the_new_name_only(api: Api):
    old, new = token(), token()
    me = await api.register()
    user = await api.register(display_name=f"Zed {old}")
    assert await users(api, me, old) == [user.username]
    reply = await api.patch("/api/v1/users/me", json={"display_name": f"Zed {new}"}, token=user.access_token)
    assert reply.status == 200, reply.body
    assert await users(api, me, old) == []
    assert await users(api, me, new) == [user.username]


# -- chats ------------------------------------------------------------------------------------


async def test_chats_mine_and_public_ones_by_title(api: Api):
    word = token()
    me, other = await api.register(), await api.register()
    mine = await plain_group(api, me, title=f"{word} family")
    theirs_private = await channel(api, other, f"{word} secret")
    theirs_public = await channel(api, other, f"{word} news", visibility="public")
    member_of = await channel(api, other, f"{word} club", me)

    found = {chat["id"]: chat for chat in await chats(api, me, word)}
    assert set(found) == {mine, theirs_public, member_of}
    assert theirs_private not in found
    assert found[theirs_public]["joined"] is False and found[theirs_public]["member_count"] == 1
    assert found[member_of]["joined"] is True and found[member_of]["member_count"] == 2
    # Containing it first; then similar titles (sharing a long word is similar enough).
    for similar in (f"{word} new", f"{word[:-1]}x news"):
        assert (await chats(api, me, similar))[0]["id"] == theirs_public

    reply = await api.patch(f"{CHATS}/{theirs_public}", json={"title": f"{token()} renamed"}, token=other.access_token)
    assert reply.status == 200, reply.body
    assert theirs_public not in {chat["id"] for chat in await chats(api, me, word)}


async def test_a_public_chat_whose_owner_blocks_me_is_not_listed(api: Api):
    word = token()
    me, owner = await api.register(), await api.register()
    public = await channel(api, owner, f"{word} open", visibility="public")
    assert [chat["id"] for chat in await chats(api, me, word)] == [public]
    await api.post("/api/v1/users/me/block", json={"user_id": me.user_id}, token=owner.access_token)
    assert await chats(api, me, word) == []


# -- messages ---------------------------------------------------------------------------------


async def test_messages_by_word_in_any_script_with_case_and_diacritics_folded(api: Api):
    word = token()
    me = await api.register()
    news = await channel(api, me, "news")
    texts = [
        f"{word} Crème brûlée at the CAFÉ",
        f"{word} Привет, как дела?",
        f"{word} Καλημέρα κόσμε",
        f"{word} write to bob@example.com about v3.14",
    ]
    for text in texts:
        await sent(api, me, news, text)

    assert await bodies(api, me, q=f"{word} creme brulee cafe") == [texts[0]]
    assert await bodies(api, me, q=f"{word} ПРИВЕТ") == [texts[1]]
    assert await bodies(api, me, q=f"{word} ΚΑΛΗΜΈΡΑ") == [texts[2]]  # (diacritics: Latin letters only)
    assert await bodies(api, me, q=f"{word} example") == [texts[3]]
    assert await bodies(api, me, q=f"{word} 14") == [texts[3]]
    assert await bodies(api, me, q=f"{word} cre") == [texts[0]]  # typing: the last word as a prefix
    assert await bodies(api, me, q=f"{word} cre ") == []  # a space after it: the whole word
    assert await bodies(api, me, q=word) == list(reversed(texts))  # newest first


async def test_snippets_mark_the_words_found_as_plain_text(api: Api):
    word = token()
    me = await api.register()
    news = await channel(api, me, "news")
    body = "<b>not html</b> " + "filler " * 40 + f"the {word} is here & there " + "tail " * 40
    await sent(api, me, news, body)
    (item,) = (await find(api, me, q=word)).body["items"]
    parts = item["snippet"]
    assert [part["text"] for part in parts if part["match"]] == [word]
    text = "".join(part["text"] for part in parts)
    assert text.startswith("…") and text.endswith("…") and len(text) <= 170
    assert f"the {word} is here & there" in text
    (item,) = (await find(api, me, q="html " + word)).body["items"]
    assert "".join(part["text"] for part in item["snippet"]).startswith("<b>not html</b>")


async def test_only_chats_i_am_in_now(api: Api):
    word = token()
    me, other = await api.register(), await api.register()
    shared = await plain_group(api, other, me)
    theirs = await plain_group(api, other)
    public = await channel(api, other, "public news", visibility="public")
    await sent(api, other, shared, f"{word} shared")
    await sent(api, other, theirs, f"{word} theirs")
    await sent(api, other, public, f"{word} public, but I have not joined")
    assert await bodies(api, me, q=word) == [f"{word} shared"]

    within = await find(api, me, q=word, chat_id=theirs)
    assert within.status == 404 and within.code == "not_found"  # not mine: as if it did not exist

    reply = await api.post(f"{CHATS}/{shared}/leave", token=me.access_token)
    assert reply.status == 204, reply.body
    assert await bodies(api, me, q=word) == []
    assert (await find(api, me, q=word, chat_id=shared)).status == 404


async def test_within_one_chat(api: Api):
    word = token()
    me = await api.register()
    one, two = await channel(api, me, "one"), await channel(api, me, "two")
    await sent(api, me, one, f"{word} in one")
    await sent(api, me, two, f"{word} in two")
    assert await bodies(api, me, q=word, chat_id=one) == [f"{word} in one"]
    assert sorted(await bodies(api, me, q=word)) == [f"{word} in one", f"{word} in two"]
    for i in range(3):
        await sent(api, me, one, f"{word} again {i}")
    first = await find(api, me, q=word, chat_id=one, limit=2)
    assert [item["message"]["body"] for item in first.body["items"]] == [f"{word} again 2", f"{word} again 1"]
    rest = await find(api, me, q=word, chat_id=one, limit=2, before=first.body["next_cursor"])
    assert [item["message"]["body"] for item in rest.body["items"]] == [f"{word} again 0", f"{word} in one"]
    for order in ("newest", "relevance"):
        every = await find(api, me, q=word, chat_id=one, order=order, limit=1)
        assert every.status == 200 and every.body["next_cursor"], every.body


async def test_edits_and_deletes_follow_at_once(api: Api):
    word, new = token(), token()
    me, reader = await api.register(), await api.register()
    news = await channel(api, me, "news", reader)
    edited = await sent(api, me, news, f"{word} before the edit")
    deleted = await sent(api, me, news, f"{word} deleted for everyone")
    hidden = await sent(api, me, news, f"{word} hidden by the reader")
    assert len(await bodies(api, reader, q=word)) == 3

    reply = await api.patch(f"/api/v1/messages/{edited['id']}", json={"body": f"{new} after"}, token=me.access_token)
    assert reply.status == 200, reply.body
    assert await bodies(api, reader, q=new) == [f"{new} after"]
    assert await bodies(api, reader, q=f"{word} before") == []

    reply = await api.delete(f"/api/v1/messages/{deleted['id']}", token=me.access_token)
    assert reply.status == 204, reply.body
    reply = await api.delete(f"/api/v1/messages/{hidden['id']}", params={"scope": "me"}, token=reader.access_token)
    assert reply.status == 204, reply.body
    assert await bodies(api, reader, q=word) == []
    assert await bodies(api, me, q=word) == [f"{word} hidden by the reader"]  # hidden for the reader only


async def test_messages_committed_together_are_all_found_and_a_retry_once(api: Api):
    # Sends at the same moment share a transaction; SQLite's index learns them all at its commit.
    word = token()
    me, reader = await api.register(), await api.register()
    news = await channel(api, me, "together", reader)
    replies = await asyncio.gather(*(say(api, me, news, f"{word} number {n}") for n in range(40)))
    assert [reply.status for reply in replies] == [201] * 40
    retried = await say(api, me, news, f"{word} number 0", client_id=replies[0].body["client_id"])
    assert retried.status in (200, 201) and retried.body["id"] == replies[0].body["id"], retried.body
    found = await bodies(api, reader, q=word, limit=50)
    assert sorted(found) == sorted(f"{word} number {n}" for n in range(40))

    edited = replies[1].body["id"]
    reply = await api.patch(f"/api/v1/messages/{edited}", json={"body": "changed"}, token=me.access_token)
    assert reply.status == 200, reply.body
    assert len(await bodies(api, reader, q=word, limit=50)) == 39


async def test_system_messages_and_encrypted_chats_are_not_searched(api: Api):
    me, bob = await api.register(), await api.register()
    group = await plain_group(api, me, title="plain")
    reply = await api.patch(f"{CHATS}/{group}", json={"title": "title_changed"}, token=me.access_token)
    assert reply.status == 200, reply.body
    assert await bodies(api, me, q="title_changed", chat_id=group) == []  # the system message's JSON

    await api.publish_keys(me, bob)
    direct = (await api.post(CHATS, json={"type": "direct", "member_ids": [bob.user_id]}, token=me.access_token)).body
    secret = token()
    ciphertext = base64.b64encode(secret.encode() + os.urandom(16)).decode()
    reply = await api.post(
        "/api/v1/messages",
        json={
            "chat_id": direct["id"],
            "client_id": str(uuid.uuid4()),
            "recipients": [{"device_id": bob.device_id, "ciphertext": ciphertext}],
        },
        token=me.access_token,
    )
    assert reply.status == 201, reply.body
    assert await bodies(api, bob, q=secret) == []
    assert await bodies(api, bob, q=secret, chat_id=direct["id"]) == []


async def test_newest_first_page_by_page(api: Api):
    word = token()
    me = await api.register()
    news = await channel(api, me, "news")
    texts = [f"{word} number {i}" for i in range(7)]
    for text in texts:
        await sent(api, me, news, text)
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"q": word, "limit": 3}
        if cursor:
            params["before"] = cursor
        reply = await find(api, me, **params)
        assert reply.status == 200, reply.body
        seen += [item["message"]["body"] for item in reply.body["items"]]
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
        await sent(api, me, news, f"{word} sent while paging")  # newer: not in the pages that follow
    assert seen == list(reversed(texts))


async def test_most_relevant_first_page_by_page(api: Api):
    word, other = token(), token()
    me = await api.register()
    news = await channel(api, me, "news")
    weak = await sent(api, me, news, f"{word} and then a lot of other words that dilute it {other} somewhere far")
    strong = await sent(api, me, news, f"{word} {other}")
    middle = await sent(api, me, news, f"{word} {other} and a few more words here")
    await sent(api, me, news, f"{word} only")  # does not have both words
    reply = await find(api, me, q=f"{word} {other}", order="relevance", limit=2)
    assert reply.status == 200, reply.body
    first = reply.body["items"]
    assert [item["message"]["id"] for item in first] == [strong["id"], middle["id"]]
    assert first[0]["score"] >= first[1]["score"]
    await sent(api, me, news, f"{word} {other} newer, after the first page")
    reply = await find(api, me, q=f"{word} {other}", order="relevance", before=reply.body["next_cursor"], limit=2)
    assert [item["message"]["id"] for item in reply.body["items"]] == [weak["id"]]
    assert reply.body["next_cursor"] is None


# -- bad input --------------------------------------------------------------------------------


async def test_queries_that_are_not_words_find_nothing_and_break_nothing(api: Api):
    word = token()
    me = await api.register()
    news = await channel(api, me, "news")
    await sent(api, me, news, f"{word} near or and not")
    for q in ['"', "*", "(", ")", '" * ( ) - ^ : NEAR/2', "", "   ", "\u200b", "🙂"]:
        reply = await find(api, me, q=q)
        assert reply.status == 200 and reply.body == {"items": [], "next_cursor": None}, (q, reply.body)
    # Operator words are words: every one is required, none is an operator.
    for q in [f"{word} NEAR", f"{word} OR", f"{word} AND NOT", f'{word} "near"', f"({word} not"]:
        assert await bodies(api, me, q=q) == [f"{word} near or and not"], q
    assert await bodies(api, me, q=f"{word} OR nothingelse") == []
    for q in ["'; DROP TABLE messages; --", "x' OR '1'='1", "%", "_", "\\", "$1"]:
        for path in ("messages", "users", "chats"):
            reply = await api.get(f"{SEARCH}/{path}", params={"q": q}, token=me.access_token)
            assert reply.status == 200, (path, q, reply.body)
    assert await bodies(api, me, q=word) == [f"{word} near or and not"]  # and the table is still there


async def test_oversized_and_malformed_queries_are_refused(api: Api):
    me = await api.register()
    for path in ("messages", "users", "chats"):
        reply = await api.get(f"{SEARCH}/{path}", params={"q": "word " * 2048}, token=me.access_token)  # 10 kB
        assert 400 <= reply.status < 500, (path, reply.status)
        reply = await api.get(f"{SEARCH}/{path}", params={"q": "w" * 300}, token=me.access_token)
        assert reply.status == 422 and reply.code == "validation_failed", reply.body
        assert (await api.get(f"{SEARCH}/{path}", token=me.access_token)).status == 422  # no q
        reply = await api.get(f"{SEARCH}/{path}", params={"q": "a", "limit": "0"}, token=me.access_token)
        assert reply.status == 422
    reply = await find(api, me, q=" ".join(token() for _ in range(17)))
    assert reply.status == 422 and "16 words" in reply.body["detail"]
    for cursor in ["x", "n:abc", "n:", "r:1:nan:" + str(uuid.uuid4()), "r:1:2", "n:1'; --"]:
        reply = await find(api, me, q="word", before=cursor)
        assert reply.status == 422 and reply.body["field"] == "before", (cursor, reply.body)
    for order in ("oldest", ""):
        assert (await find(api, me, q="word", order=order)).status == 422
    assert (await find(api, me, q="word", chat_id="not-a-uuid")).status == 422
    assert (await api.get(f"{SEARCH}/messages", params={"q": "word"})).status == 401


async def test_the_cursor_of_one_order_is_refused_by_the_other(server: Server):
    api = server.api
    word = token()
    me = await api.register()
    news = await channel(api, me, "news")
    for i in range(3):
        await sent(api, me, news, f"{word} {i}")
    newest = (await find(api, me, q=word, limit=1)).body["next_cursor"]
    relevant = (await find(api, me, q=word, limit=1, order="relevance")).body["next_cursor"]
    assert newest and relevant
    assert (await find(api, me, q=word, order="relevance", before=newest)).status == 422
    assert (await find(api, me, q=word, before=relevant)).status == 422
