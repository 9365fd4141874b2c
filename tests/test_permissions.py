"""The permission matrix: every chat and message endpoint refuses non-members, removed
members, members lacking the role permission, and blocked users — never with data.

- A chat I am not in (never was, was removed, left) does not exist for me: 404 `not_found`,
  answered exactly as for an id that exists nowhere, and the answer carries no title and
  no message body.
- A member whose role lacks the permission gets 403 `forbidden`, and nothing changes.
- A block gets 403 `blocked`: opening a direct chat (either direction), adding the blocker
  to a group, and any new message in a direct chat (either direction).

CASES lists every endpoint under /api/v1/chats and /api/v1/messages;
test_every_chat_and_message_route_is_in_the_matrix fails when a route is added without one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from sup.http.routes import ROUTES
from tests.conftest import Account, Api, Reply

CHATS = "/api/v1/chats"
MESSAGES = "/api/v1/messages"


@dataclass(frozen=True)
class Case:
    """One request against a chat. `route` is the path exactly as in sup.http.routes.ROUTES;
    its {placeholders} (and any in `body`) are filled from the scene."""

    method: str
    route: str
    body: Any = None
    params: dict[str, str] | None = None
    # placeholder -> scene key, when this case needs a different object than the default
    use: dict[str, str] = field(default_factory=dict)
    # why a member whose role holds no permission is refused (403), or None if allowed
    refused: str | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.route} {self.use or ''}".strip()


# Scene keys: chat_id (a group I may not see), message_id (the owner's message there, pinned),
# invite_id (an invite link of the chat),
# own_message_id (the actor's own message there, when they had one), user_id (another member),
# role_id (the chat's member role), new_user_id (someone not in the chat), my_chat_id and
# my_message_id (the actor's own unencrypted group and a message in it), client_id (fresh).
CASES: list[Case] = [
    Case("GET", f"{CHATS}/{{chat_id}}"),
    Case("PATCH", f"{CHATS}/{{chat_id}}", {"title": "pwned"}, refused="edit_info"),
    Case("PATCH", f"{CHATS}/{{chat_id}}", {"description": "pwned", "avatar_media_id": None}, refused="edit_info"),
    Case("GET", f"{CHATS}/{{chat_id}}/members"),
    Case("POST", f"{CHATS}/{{chat_id}}/members", {"user_ids": ["{new_user_id}"]}, refused="add_members"),
    Case("DELETE", f"{CHATS}/{{chat_id}}/members/{{user_id}}", refused="remove_members"),
    Case("PATCH", f"{CHATS}/{{chat_id}}/members/{{user_id}}", {"role_id": "{role_id}"}, refused="manage_roles"),
    Case("GET", f"{CHATS}/{{chat_id}}/roles"),
    Case("POST", f"{CHATS}/{{chat_id}}/roles", {"name": "Mine", "permissions": ["pin"]}, refused="manage_roles"),
    Case("PATCH", f"{CHATS}/{{chat_id}}/roles/{{role_id}}", {"permissions": []}, refused="manage_roles"),
    Case("GET", f"{CHATS}/{{chat_id}}/pins"),
    Case("POST", f"{CHATS}/{{chat_id}}/typing", {"active": True}),
    Case(
        "POST",
        MESSAGES,
        {"chat_id": "{chat_id}", "client_id": "{client_id}", "body": "let me in"},
        refused="send_messages",
    ),
    Case("GET", f"{MESSAGES}/chat/{{chat_id}}"),
    Case("GET", f"{MESSAGES}/chat/{{chat_id}}", params={"after": "0"}),
    Case("POST", f"{MESSAGES}/chat/{{chat_id}}/read", {"seq": 1}),
    Case("GET", f"{MESSAGES}/{{message_id}}"),
    Case("GET", f"{MESSAGES}/{{message_id}}", use={"message_id": "own_message_id"}),
    Case("PATCH", f"{MESSAGES}/{{message_id}}", {"body": "pwned"}, refused="only the sender edits"),
    Case(
        "PATCH",
        f"{MESSAGES}/{{message_id}}",
        {"body": "edited"},
        use={"message_id": "own_message_id"},
        refused="send_messages",
    ),
    Case("DELETE", f"{MESSAGES}/{{message_id}}", refused="delete_others"),
    Case("DELETE", f"{MESSAGES}/{{message_id}}", params={"scope": "me"}),
    Case("POST", f"{MESSAGES}/{{message_id}}/reactions", {"emoji": "👍"}),
    Case("DELETE", f"{MESSAGES}/{{message_id}}/reactions", params={"emoji": "🎉"}),
    # the chat's message, into a chat of mine
    Case("POST", f"{MESSAGES}/{{message_id}}/forward", {"chat_id": "{my_chat_id}", "client_id": "{client_id}"}),
    # a message of mine, into the chat
    Case(
        "POST",
        f"{MESSAGES}/{{message_id}}/forward",
        {"chat_id": "{chat_id}", "client_id": "{client_id}"},
        use={"message_id": "my_message_id"},
        refused="send_messages",
    ),
    Case("POST", f"{MESSAGES}/{{message_id}}/pin", use={"message_id": "own_message_id"}, refused="pin"),
    Case("DELETE", f"{MESSAGES}/{{message_id}}/pin", refused="pin"),
    # joining: a private chat cannot be joined from outside; links and requests need invite_users
    Case("POST", f"{CHATS}/{{chat_id}}/join"),
    Case("POST", f"{CHATS}/{{chat_id}}/invites", {"max_uses": 5}, refused="invite_users"),
    Case("GET", f"{CHATS}/{{chat_id}}/invites", refused="invite_users"),
    Case("DELETE", f"{CHATS}/{{chat_id}}/invites/{{invite_id}}", refused="invite_users"),
    Case("GET", f"{CHATS}/{{chat_id}}/join-requests", refused="invite_users"),
    Case("POST", f"{CHATS}/{{chat_id}}/join-requests/{{user_id}}/approve", refused="invite_users"),
    Case("DELETE", f"{CHATS}/{{chat_id}}/join-requests/{{user_id}}", refused="invite_users"),
    # last: these would change the scene most if they wrongly succeeded
    Case("DELETE", f"{MESSAGES}/{{message_id}}", use={"message_id": "own_message_id"}),
    Case("DELETE", f"{CHATS}/{{chat_id}}/members/{{user_id}}", use={"user_id": "actor_id"}),
    Case("POST", f"{CHATS}/{{chat_id}}/leave"),
    Case("DELETE", f"{CHATS}/{{chat_id}}", refused="only the owner deletes"),
]

# Routes under /api/v1/chats and /api/v1/messages that are not about one existing chat,
# and the test that covers each.
ELSEWHERE = {
    ("GET", CHATS): "test_outsiders_get_404_and_never_data (my list never shows the chat)",
    ("POST", CHATS): "test_blocks_refuse_with_403_blocked (opening a direct chat, creating a group)",
}


def test_every_chat_and_message_route_is_in_the_matrix():
    scoped = {
        (r.method, r.path)
        for r in ROUTES
        if r.path in (CHATS, MESSAGES) or r.path.startswith((f"{CHATS}/", f"{MESSAGES}/"))
    }
    covered = {(c.method, c.route) for c in CASES} | set(ELSEWHERE)
    assert scoped - covered == set(), "routes without a permission case"
    assert covered - scoped == set(), "cases for routes that do not exist"
    assert {(c.method, c.route) for c in BLOCKED} <= scoped


# -- running a case --------------------------------------------------------------------------


def fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format_map(values)
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    return value


async def run(api: Api, who: Account, case: Case, scene: dict[str, str]) -> Reply:
    values = {**scene, **{name: scene[key] for name, key in case.use.items()}, "client_id": str(uuid.uuid4())}
    return await api.request(
        case.method,
        fill(case.route, values),
        json=fill(case.body, values),
        params=case.params,
        token=who.access_token,
    )


def text_of(reply: Reply) -> str:
    body = reply.body
    return body.decode(errors="replace") if isinstance(body, bytes) else msgspec.json.encode(body).decode()


def secret(what: str) -> str:
    return f"secret-{what}-{uuid.uuid4().hex}"


async def ok(reply: Reply, status: int = 200) -> Any:
    assert reply.status == status, reply.body
    return reply.body


async def say(api: Api, who: Account, chat_id: str, body: str) -> dict[str, Any]:
    reply = await api.post(
        MESSAGES, json={"chat_id": chat_id, "client_id": str(uuid.uuid4()), "body": body}, token=who.access_token
    )
    return await ok(reply, 201)


async def new_chat(api: Api, who: Account, type: str, members: list[Account], title: str) -> str:
    fields: dict[str, Any] = {"encrypted": False} if type == "group" else {}
    body = {"type": type, "member_ids": [m.user_id for m in members], "title": title, **fields}
    return (await ok(await api.post(CHATS, json=body, token=who.access_token), 201))["id"]


async def roles_by_kind(api: Api, who: Account, chat_id: str) -> dict[str, str]:
    roles = (await ok(await api.get(f"{CHATS}/{chat_id}/roles", token=who.access_token)))["roles"]
    return {r["kind"]: r["id"] for r in roles if r["kind"] != "custom"}


async def snapshot(api: Api, owner: Account, chat_id: str, message_ids: list[str]) -> dict[str, Any]:
    """What the owner sees of the chat: nothing an outsider or a powerless member did may change it."""
    chat = await ok(await api.get(f"{CHATS}/{chat_id}", token=owner.access_token))
    members = await ok(await api.get(f"{CHATS}/{chat_id}/members", token=owner.access_token))
    roles = await ok(await api.get(f"{CHATS}/{chat_id}/roles", token=owner.access_token))
    pins = await ok(await api.get(f"{CHATS}/{chat_id}/pins", token=owner.access_token))
    messages = [await ok(await api.get(f"{MESSAGES}/{m}", token=owner.access_token)) for m in message_ids]
    return {
        "chat": {k: chat[k] for k in ("title", "description", "avatar_media_id", "last_seq")},
        "members": sorted((m["user_id"], m["role"]["id"]) for m in members["items"]),
        "roles": roles["roles"],
        "pins": [p["message_id"] for p in pins["pins"]],
        "messages": [(m["body"], m["deleted"], m["edited_at"], m["reactions"]) for m in messages],
    }


async def make_scene(
    api: Api,
    owner: Account,
    actor: Account,
    others: tuple[Account, Account],
    chat_id: str,
    message_ids: tuple[str, str],
) -> dict[str, str]:
    """The ids CASES fill in: the owner's chat and a message in it, the actor's own message in
    it, and a chat of the actor's own (which the requests must leave alone)."""
    member, newcomer = others
    message_id, own_message_id = message_ids
    my_chat_id = await new_chat(api, actor, "group", [], "mine")
    my_message = await say(api, actor, my_chat_id, "my own words")
    invite = await ok(await api.post(f"{CHATS}/{chat_id}/invites", json={}, token=owner.access_token), 201)
    return {
        "chat_id": chat_id,
        "message_id": message_id,
        "own_message_id": own_message_id,
        "user_id": member.user_id,
        "actor_id": actor.user_id,
        "role_id": (await roles_by_kind(api, owner, chat_id))["member"],
        "new_user_id": newcomer.user_id,
        "my_chat_id": my_chat_id,
        "my_message_id": my_message["id"],
        "invite_id": invite["id"],
    }


# -- outsiders: never were, removed, left ----------------------------------------------------


@pytest.mark.parametrize("how", ["stranger", "removed", "left"])
async def test_outsiders_get_404_and_never_data(api: Api, how: str):
    owner, member, actor, newcomer = [await api.register() for _ in range(4)]
    title, description = secret("title"), secret("description")
    chat_id = await new_chat(api, owner, "group", [member] + ([actor] if how != "stranger" else []), title)
    await ok(await api.patch(f"{CHATS}/{chat_id}", json={"description": description}, token=owner.access_token))
    bodies = [secret("owner-message"), secret("member-message"), secret("actor-message")]
    message = await say(api, owner, chat_id, bodies[0])
    await say(api, member, chat_id, bodies[1])
    own = await say(api, actor if how != "stranger" else owner, chat_id, bodies[2])
    await ok(await api.post(f"{MESSAGES}/{message['id']}/pin", token=owner.access_token), 204)
    await ok(await api.post(f"{MESSAGES}/{message['id']}/reactions", json={"emoji": "🎉"}, token=member.access_token))
    if how == "removed":
        await ok(await api.delete(f"{CHATS}/{chat_id}/members/{actor.user_id}", token=owner.access_token), 204)
    elif how == "left":
        await ok(await api.post(f"{CHATS}/{chat_id}/leave", token=actor.access_token), 204)

    scene = await make_scene(api, owner, actor, (member, newcomer), chat_id, (message["id"], own["id"]))
    # the same requests with ids that exist nowhere: a chat I am not in must look just like them
    nowhere = {**scene, "chat_id": str(uuid.uuid4()), "message_id": str(uuid.uuid4())}
    nowhere |= {"own_message_id": str(uuid.uuid4()), "role_id": str(uuid.uuid4()), "invite_id": str(uuid.uuid4())}
    secrets = [title, description, *bodies]
    before = await snapshot(api, owner, chat_id, [message["id"], own["id"]])

    failures = []
    for case in CASES:
        reply = await run(api, actor, case, scene)
        unknown = await run(api, actor, case, nowhere)
        if (reply.status, reply.code) != (404, "not_found"):
            failures.append(f"{case}: {reply.status} {reply.body}")
        elif (reply.body["detail"], sorted(reply.body)) != (unknown.body.get("detail"), sorted(unknown.body)):
            failures.append(f"{case}: answers differently than for an unknown id: {reply.body} vs {unknown.body}")
        if leaked := [s for s in secrets if s in text_of(reply)]:
            failures.append(f"{case}: leaks {leaked}")
    assert not failures, "\n".join(failures)

    listed = await ok(await api.get(CHATS, params={"limit": "200"}, token=actor.access_token))
    assert [c["id"] for c in listed["items"]] == [scene["my_chat_id"]]
    assert not [s for s in secrets if s in msgspec.json.encode(listed).decode()]
    assert await snapshot(api, owner, chat_id, [message["id"], own["id"]]) == before


# -- members lacking a permission ------------------------------------------------------------


@pytest.mark.parametrize("chat_type", ["group", "channel"])
async def test_members_lacking_a_permission_get_403(api: Api, chat_type: str):
    """A group member given a custom role without permissions, or a channel subscriber."""
    owner, member, actor, newcomer = [await api.register() for _ in range(4)]
    chat_id = await new_chat(api, owner, chat_type, [member, actor], "powerless")
    roles = await roles_by_kind(api, owner, chat_id)
    writer = await ok(
        await api.post(
            f"{CHATS}/{chat_id}/roles",
            json={"name": "Writer", "permissions": ["send_messages"]},
            token=owner.access_token,
        ),
        201,
    )

    async def give(role_id: str) -> None:
        reply = await api.patch(
            f"{CHATS}/{chat_id}/members/{actor.user_id}", json={"role_id": role_id}, token=owner.access_token
        )
        await ok(reply, 204)

    await give(writer["id"])
    own = await say(api, actor, chat_id, "while I could")
    message = await say(api, owner, chat_id, "from the owner")
    await ok(await api.post(f"{MESSAGES}/{message['id']}/pin", token=owner.access_token), 204)
    if chat_type == "group":
        muted = await ok(
            await api.post(f"{CHATS}/{chat_id}/roles", json={"name": "Muted"}, token=owner.access_token), 201
        )
        await give(muted["id"])
    else:
        await give(roles["member"])  # a plain subscriber
    my_role = (await ok(await api.get(f"{CHATS}/{chat_id}", token=actor.access_token)))["my_role"]
    assert my_role["permissions"] == [], my_role

    scene = await make_scene(api, owner, actor, (member, newcomer), chat_id, (message["id"], own["id"]))
    before = await snapshot(api, owner, chat_id, [message["id"], own["id"]])

    failures = []
    for case in [c for c in CASES if c.refused]:
        reply = await run(api, actor, case, scene)
        if (reply.status, reply.code) != (403, "forbidden"):
            failures.append(f"{case} (needs {case.refused}): {reply.status} {reply.body}")
    assert not failures, "\n".join(failures)
    assert await snapshot(api, owner, chat_id, [message["id"], own["id"]]) == before

    # what needs no permission still works: reading, marking read, leaving
    assert (await api.get(f"{MESSAGES}/chat/{chat_id}", token=actor.access_token)).status == 200
    assert (await api.post(f"{MESSAGES}/chat/{chat_id}/read", json={"seq": 1}, token=actor.access_token)).status == 200
    assert (await api.post(f"{CHATS}/{chat_id}/leave", token=actor.access_token)).status == 204


# -- blocks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blocked:
    name: str
    actor: str  # "me" or "other": who makes the request
    method: str
    route: str
    body: Any
    directions: frozenset[str] = frozenset({"they_blocked_me", "i_blocked_them"})


THEY = frozenset({"they_blocked_me"})
SEALED = b"\x00opaque ciphertext"
BLOCKED: list[Blocked] = [
    Blocked("reopen our direct chat", "me", "POST", CHATS, {"type": "direct", "member_ids": ["{other_id}"]}),
    Blocked("they reopen our direct chat", "other", "POST", CHATS, {"type": "direct", "member_ids": ["{me_id}"]}),
    Blocked("open a new direct chat", "me", "POST", CHATS, {"type": "direct", "member_ids": ["{other2_id}"]}),
    Blocked(
        "create a group with them",
        "me",
        "POST",
        CHATS,
        {"type": "group", "title": "party", "member_ids": ["{other2_id}"], "encrypted": False},
        THEY,
    ),
    Blocked("add them to my group", "me", "POST", f"{CHATS}/{{chat_id}}/members", {"user_ids": ["{other_id}"]}, THEY),
    Blocked(
        "send in our direct chat",
        "me",
        "POST",
        MESSAGES,
        {
            "chat_id": "{direct_id}",
            "client_id": "{client_id}",
            "recipients": [{"device_id": "{other_device_id}", "ciphertext": SEALED}],
        },
    ),
    Blocked(
        "they send in our direct chat",
        "other",
        "POST",
        MESSAGES,
        {
            "chat_id": "{direct_id}",
            "client_id": "{client_id}",
            "recipients": [{"device_id": "{me_device_id}", "ciphertext": SEALED}],
        },
    ),
    Blocked(
        "forward into our direct chat",
        "me",
        "POST",
        f"{MESSAGES}/{{message_id}}/forward",
        {"chat_id": "{direct_id}", "client_id": "{client_id}"},
    ),
]


@pytest.mark.parametrize("direction", ["they_blocked_me", "i_blocked_them"])
async def test_blocks_refuse_with_403_blocked(api: Api, direction: str):
    me, other, other2 = [await api.register() for _ in range(3)]
    await api.publish_keys(other)
    direct_id = (
        await ok(
            await api.post(CHATS, json={"type": "direct", "member_ids": [other.user_id]}, token=me.access_token), 201
        )
    )["id"]
    chat_id = await new_chat(api, me, "group", [], "my group")
    message = await say(api, me, chat_id, "worth forwarding")
    scene = {
        "me_id": me.user_id,
        "other_id": other.user_id,
        "other2_id": other2.user_id,
        "me_device_id": me.device_id,
        "other_device_id": other.device_id,
        "direct_id": direct_id,
        "chat_id": chat_id,
        "message_id": message["id"],
    }
    sealed = next(c for c in BLOCKED if c.name == "send in our direct chat")
    await ok(await run_blocked(api, me, sealed, scene), 201)  # the envelope is right: only the block refuses it

    for blocker, blocked in (
        [(other, me), (other2, me)] if direction == "they_blocked_me" else [(me, other), (me, other2)]
    ):
        reply = await api.post("/api/v1/users/me/block", json={"user_id": blocked.user_id}, token=blocker.access_token)
        await ok(reply, 201)
    last_seq = (await ok(await api.get(f"{CHATS}/{direct_id}", token=me.access_token)))["last_seq"]

    failures = []
    for case in BLOCKED:
        if direction not in case.directions:
            continue
        reply = await run_blocked(api, me if case.actor == "me" else other, case, scene)
        if (reply.status, reply.code) != (403, "blocked"):
            failures.append(f"{case.name}: {reply.status} {reply.body}")
    assert not failures, "\n".join(failures)

    assert sorted(c["id"] for c in (await ok(await api.get(CHATS, token=me.access_token)))["items"]) == sorted(
        [direct_id, chat_id]
    )
    assert (await ok(await api.get(f"{CHATS}/{direct_id}", token=me.access_token)))["last_seq"] == last_seq
    members = (await ok(await api.get(f"{CHATS}/{chat_id}/members", token=me.access_token)))["items"]
    assert [m["user_id"] for m in members] == [me.user_id]

    # unblocked, the same message goes through
    blocker, blocked = (other, me) if direction == "they_blocked_me" else (me, other)
    await ok(await api.delete(f"/api/v1/users/me/block/{blocked.user_id}", token=blocker.access_token), 204)
    await ok(await run_blocked(api, me, sealed, scene), 201)


async def run_blocked(api: Api, who: Account, case: Blocked, scene: dict[str, str]) -> Reply:
    values = {**scene, "client_id": str(uuid.uuid4())}
    return await api.request(
        case.method, fill(case.route, values), json=fill(case.body, values), token=who.access_token
    )
