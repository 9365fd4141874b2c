"""The messaging benchmark's ceiling: a bare aiohttp + uvloop server that answers its protocol from memory.

It speaks the part of SUP's WebSocket protocol the throughput phase uses, the same frames: `authenticate`
answered by `ready`; `message.send` answered by `message.sent` to the sender and a `message.new`, with
that device's next cursor, to every member device of the chat (the sender's own included); `ack` read and
dropped. Nothing is stored, checked or made durable, and there is one process and no database: what
Python, aiohttp and uvloop alone do on this machine. `bench/messaging.py` runs its throughput phase
against it right after SUP's, with the same clients and chats, so SUP's figure can be read against a
ceiling measured in the same run (figures on these machines move 2-3x from day to day).

    python bench/echo_server.py --port N --members FILE

FILE: {"accounts": [{"token", "user_id", "device_id"}, ...], "chats": {"<chat id>": ["<user id>", ...]}}.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from typing import Any

import msgspec
import uvloop
from aiohttp import WSMsgType, web

WS_PATH = "/api/v1/ws"


class _Frame(msgspec.Struct):
    type: str
    token: str = ""
    request_id: str | None = None
    chat_id: str = ""
    client_id: str = ""
    body: str | None = None


class _Message(msgspec.Struct):
    id: str
    seq: int
    chat_id: str
    sender_id: str
    client_id: str
    body: str | None


class _New(msgspec.Struct, tag_field="type", tag="message.new"):
    cursor: int
    message: _Message


class _Sent(msgspec.Struct, tag_field="type", tag="message.sent"):
    request_id: str | None
    message: _Message


class Echo:
    def __init__(self, members: dict[str, Any]) -> None:
        self.accounts = {a["token"]: (a["user_id"], a["device_id"]) for a in members["accounts"]}
        self.devices_of: dict[str, list[str]] = {}
        for user_id, device_id in self.accounts.values():
            self.devices_of.setdefault(user_id, []).append(device_id)
        self.chats: dict[str, list[str]] = {
            chat: [d for user in users for d in self.devices_of.get(user, [])]
            for chat, users in members["chats"].items()
        }
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.cursors: dict[str, int] = {}
        self.seqs: dict[str, int] = {}
        self.ids = itertools.count(1)
        self.decode = msgspec.json.Decoder(_Frame).decode
        self.encode = msgspec.json.Encoder().encode

    async def health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        first = await ws.receive()
        account = self.accounts.get(self.decode(first.data).token) if first.type is WSMsgType.TEXT else None
        if account is None:
            await ws.close(code=4001, message=b"unknown token")
            return ws
        user_id, device_id = account
        self.sockets[device_id] = ws
        await ws.send_str(f'{{"type":"ready","resume_from":{self.cursors.get(device_id, 0)}}}')
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = self.decode(msg.data)
                if frame.type == "message.send":
                    await self.send(ws, user_id, frame)
        finally:
            if self.sockets.get(device_id) is ws:
                del self.sockets[device_id]
        return ws

    async def send(self, ws: web.WebSocketResponse, sender_id: str, frame: _Frame) -> None:
        seq = self.seqs[frame.chat_id] = self.seqs.get(frame.chat_id, 0) + 1
        message = _Message(f"m{next(self.ids)}", seq, frame.chat_id, sender_id, frame.client_id, frame.body)
        for device_id in self.chats.get(frame.chat_id, ()):
            cursor = self.cursors[device_id] = self.cursors.get(device_id, 0) + 1
            target = self.sockets.get(device_id)
            if target is not None:
                await target.send_str(self.encode(_New(cursor, message)).decode())
        await ws.send_str(self.encode(_Sent(frame.request_id, message)).decode())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--members", required=True, help="JSON file: accounts and chat members")
    args = p.parse_args()
    with open(args.members) as f:
        echo = Echo(json.load(f))
    app = web.Application()
    app.router.add_get("/health", echo.health)
    app.router.add_get(WS_PATH, echo.websocket)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
