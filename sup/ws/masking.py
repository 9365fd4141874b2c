"""RFC 6455 section 5.1: every frame a client sends is masked, and a server that receives an
unmasked one closes the connection (1002). aiohttp's parser accepts them, so the gateway's
response puts this check in front of it.

The check only reads frame headers (2 to 14 bytes each) and skips payloads without copying,
so it costs next to nothing; the real parser still does all the parsing.

It also stands in for aiohttp's heartbeat, which keeps a timer and its callbacks per socket (~1.6 KiB
on an idle one): every chunk read marks the socket as heard from, and the hub's one heartbeat loop
pings a socket that has been silent for a heartbeat and closes it when the ping is not answered
within half of one (the same rule as aiohttp's).
"""

from __future__ import annotations

from typing import Any

from aiohttp import WSCloseCode, web
from aiohttp.http_websocket import WebSocketError
from multidict import CIMultiDict


class MaskedFramesOnly:
    """Stands in for aiohttp's WebSocket parser on the connection; passes data on until an unmasked frame."""

    __slots__ = ("_header", "_parser", "_queue", "_refused", "_skip", "heard", "silent")

    def __init__(self, parser: Any, queue: Any) -> None:
        self._parser = parser
        self._queue = queue
        self._header = bytearray()  # the current frame's header, as far as it has arrived
        self._skip = 0  # payload bytes of the current frame still to come
        self._refused = False
        self.heard = True  # bytes arrived since the heartbeat last looked
        self.silent = 0  # heartbeat ticks (half a heartbeat each) without a byte from the client

    def feed_eof(self) -> None:
        self._parser.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._refused:
            return True, b""
        self.heard = True
        data = bytes(data)
        pos, end = 0, len(data)
        start = 0  # where the frame being read began in `data` (0: in an earlier chunk)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            if not self._header:
                start = pos
                if end - pos >= 2:  # the usual case, a header within this chunk: read it in place
                    second = data[pos + 1]
                    if not second & 0x80:
                        return self._refuse(data[:start])
                    short = second & 0x7F
                    extended = 2 if short == 126 else 8 if short == 127 else 0
                    if end - pos >= 6 + extended:
                        self._skip = int.from_bytes(data[pos + 2 : pos + 2 + extended], "big") if extended else short
                        pos += 6 + extended  # the header and its 4-byte mask
                        continue
            self._header.append(data[pos])
            pos += 1
            header = self._header
            if len(header) < 2:
                continue
            if not header[1] & 0x80:
                return self._refuse(data[:start])
            short = header[1] & 0x7F
            extended = 2 if short == 126 else 8 if short == 127 else 0
            if len(header) < 2 + extended + 4:
                continue
            self._skip = int.from_bytes(header[2 : 2 + extended], "big") if extended else short
            header.clear()
        return self._parser.feed_data(data)

    def _refuse(self, before: bytes) -> tuple[bool, bytes]:
        self._refused = True
        if before:  # the frames before it were fine: they are handled first
            self._parser.feed_data(before)
        self._queue.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR, "client frames must be masked"))
        return True, b""


class MaskCheckingResponse(web.WebSocketResponse):
    """A WebSocketResponse whose connection refuses unmasked client frames with 1002.

    Made with heartbeat=None: `beat`, called by the hub every half heartbeat, keeps it alive instead.
    """

    _guard: MaskedFramesOnly | None = None
    _transport: Any = None

    async def beat(self) -> None:
        """One heartbeat tick (half a heartbeat): ping after a heartbeat of silence, close when unanswered."""
        guard, transport = self._guard, self._transport
        if guard is None or self.closed or transport is None or transport.is_closing():
            return
        if guard.heard:
            guard.heard, guard.silent = False, 0
            return
        if transport.get_write_buffer_size():  # it is not reading: the hub's stall check decides, by progress
            guard.silent = 0
            return
        guard.silent += 1
        if guard.silent == 2:
            await self.ping()  # the buffer is empty: this writes at once, it does not wait
        elif guard.silent > 2:
            self._handle_ping_pong_exception(TimeoutError("no pong within half a heartbeat"))

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        handler: Any = request.protocol
        # Bytes that came with the upgrade request are fed to the parser as it is set: hold them back
        # and pass them through the check instead.
        tail, handler._message_tail = handler._message_tail, b""
        super()._post_start(request, protocol, writer)
        guard = MaskedFramesOnly(handler._payload_parser, self._reader)
        handler._payload_parser = guard
        self._guard = guard
        self._transport = request.transport
        # What an upgraded socket no longer needs, kept for its whole life otherwise (~1.5 KiB): the HTTP
        # parser (the WebSocket one reads from here on; aiohttp checks it for None) and the response
        # headers, security headers included, which are already sent.
        handler._parser = None
        self._headers = CIMultiDict()
        if tail:
            eof, _ = guard.feed_data(tail)
            if eof:
                handler.close()
