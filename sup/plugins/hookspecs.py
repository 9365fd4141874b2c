"""The hooks a SUP plugin may implement, and the values they take and return.

Each hook is one function below with a one-line docstring; docs/plugins.md lists them, generated
from this module (`python -m sup.docgen`; tests/test_docs.py fails while the two differ).

A hook implementation is a function (or method) marked with `@hookimpl`, named like the hook, that
takes some or all of the hook's arguments by name. It may be `async def` or a plain function.

- Provider hooks (`send_email`, `send_push`, `turn_credentials`, `call_token`) are asked in turn,
  the last registered first, until one answers something other than None: a plugin answers None
  for what is not its business (another push provider's device, say).
- Observer hooks (`user_registered`, `device_added`, `message_sent`) are told after the
  transaction that made the event true has committed, in the background: they cannot slow the
  request down nor undo it, and what they raise is logged, not answered. They never see message
  content, which is end-to-end encrypted anyway.
- `startup` and `shutdown` open and close what a plugin holds (an HTTP session, a connection).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

PROJECT = "sup"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# -- what the hooks take and answer -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """One plain-text email; the sender (From) is the mail plugin's business."""

    to: str
    subject: str
    text: str


@dataclass(frozen=True, slots=True)
class PushDevice:
    """A device's push subscription (Web Push, UnifiedPush...), as the device registered it."""

    user_id: str
    device_id: str
    provider: str  # e.g. "webpush": a push plugin answers only for its own providers
    endpoint: str
    keys: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PushPayload:
    """What a push says: no content, only enough for the device to wake up and fetch (docs/e2e.md)."""

    kind: str  # "message", "call"...
    chat_id: str | None = None
    urgency: str = "normal"  # RFC 8030: very-low, low, normal, high
    ttl_seconds: int = 3600


@dataclass(frozen=True, slots=True)
class PushResult:
    """What a push service answered. A provider may answer True instead of PushResult("delivered")."""

    outcome: str  # "delivered"; "retry" (429, 5xx, unreachable); "gone" (404, 410: forget it); "rejected"
    status: int = 0  # the push service's HTTP status, 0 when none came back
    retry_after: float | None = None  # seconds, from its Retry-After
    detail: str = ""


@dataclass(frozen=True, slots=True)
class TurnCredentials:
    """Time-limited credentials for TURN relays (WebRTC's RTCIceServer: urls, username, credential)."""

    username: str
    credential: str
    ttl_seconds: int
    expires_at: int  # unix time, seconds
    uris: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CallCaller:
    """Who asks to join a call: a device of a member of the chat."""

    user_id: str
    device_id: str
    display_name: str


@dataclass(frozen=True, slots=True)
class CallRoom:
    """The call of one chat. `room` is SUP's name for it: stable, and it does not reveal the chat id."""

    chat_id: str
    chat_type: str
    room: str


@dataclass(frozen=True, slots=True)
class CallToken:
    """What a client needs to join a group call: the media server's URL, a token, the room."""

    url: str
    token: str
    room: str
    expires_at: int  # unix time, seconds


@dataclass(frozen=True, slots=True)
class UserRegistered:
    user_id: str
    username: str
    at: int  # milliseconds since the epoch


@dataclass(frozen=True, slots=True)
class DeviceAdded:
    user_id: str
    device_id: str
    at: int


@dataclass(frozen=True, slots=True)
class MessageSent:
    """A message stored in a chat: who, where and when, never what."""

    message_id: str
    chat_id: str
    chat_type: str
    seq: int
    kind: str
    encrypted: bool
    sender_id: str
    sender_device_id: str
    recipient_ids: tuple[str, ...]  # the other members at the time of sending
    at: int


Maybe = Any | Awaitable[Any]


# -- the hooks ---------------------------------------------------------------------------------


@hookspec
def startup() -> Maybe:
    """Open what the plugin holds (clients, connections) as the server starts."""


@hookspec
def shutdown() -> Maybe:
    """Close what `startup` opened, as the server stops."""


@hookspec
def send_email(message: OutgoingEmail) -> Maybe:
    """Deliver one email; answer True once it is handed over (the built-in SMTP mailer does this)."""


@hookspec
def send_push(device: PushDevice, payload: PushPayload) -> Maybe:
    """Wake one device through its push service; answer a PushResult, or True once delivered (built in: Web Push)."""


@hookspec
def turn_credentials(user_id: str, device_id: str) -> Maybe:
    """Time-limited TURN credentials (TurnCredentials) for a device (built in: coturn's shared secret)."""


@hookspec
def call_token(caller: CallCaller, room: CallRoom) -> Maybe:
    """A CallToken to join the group call of a chat the caller is a member of (the livekit plugin)."""


@hookspec
def user_registered(event: UserRegistered) -> Maybe:
    """Observe an account created (registration or `sup admin create-user`), after commit."""


@hookspec
def device_added(event: DeviceAdded) -> Maybe:
    """Observe a new device logged in (every login is one), after commit."""


@hookspec
def message_sent(event: MessageSent) -> Maybe:
    """Observe a message stored in a chat (its ids and recipients, never its content), after commit."""


PROVIDERS = ("send_email", "send_push", "turn_credentials", "call_token")
OBSERVERS = ("user_registered", "device_added", "message_sent")
LIFECYCLE = ("startup", "shutdown")


def hook_functions() -> dict[str, Any]:
    """Every hook of the specification, by name, in the order above."""
    return {name: value for name, value in globals().items() if hasattr(value, f"{PROJECT}_spec")}
