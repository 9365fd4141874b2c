"""Two real WebRTC peers (aiortc), each driven by the SUP SDK, calling each other through SUP's signalling.

Used by tests/test_call_media.py and bench/calls.py. Each peer asks SUP for TURN credentials and
uses them with `iceTransportPolicy: "relay"`, so the only candidates are relay addresses of the TURN
server: media and data can only flow through it.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from av import AudioFrame

from sup.client.client import Client

SAMPLE_RATE = 48_000
PTIME = 0.020


class ToneTrack(MediaStreamTrack):
    """A 440 Hz tone, 20 ms a frame, in real time: audio that is not silence, so its arrival shows."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        samples = int(PTIME * SAMPLE_RATE)
        if self._start is None:
            self._start = time.time()
        else:
            self._pts += samples
            await asyncio.sleep(self._start + self._pts / SAMPLE_RATE - time.time())
        pcm = bytearray()
        for i in range(samples):
            value = int(12_000 * math.sin(2 * math.pi * 440 * (self._pts + i) / SAMPLE_RATE))
            pcm += value.to_bytes(2, "little", signed=True)
        frame = AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(bytes(pcm))
        frame.pts = self._pts
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame


@dataclass
class CallResult:
    call_id: str
    setup_seconds: float  # call.invite sent -> both peer connections "connected"
    echoed: str  # what came back over the data channel
    audio_frames: int  # audio frames the callee decoded from the caller's track
    audio_peak: int  # the loudest sample among them (0 would be silence)
    candidate_types: set[str] = field(default_factory=set)  # of every local candidate in both SDPs
    selected_local_types: list[str] = field(default_factory=list)  # of the ICE pairs in use
    ended: dict[str, Any] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)  # seconds after call.invite was sent


def _peak(frame: AudioFrame) -> int:
    """The loudest sample of a decoded frame, on the 16-bit scale (without numpy)."""
    data = bytes(frame.planes[0])
    if frame.format.name.startswith("s16"):
        return max((abs(v) for v in memoryview(data).cast("h")), default=0)
    if frame.format.name.startswith("flt"):
        return int(32767 * max((abs(v) for v in memoryview(data).cast("f")), default=0.0))
    raise ValueError(f"unexpected audio format {frame.format.name}")


def _candidate_types(sdp: str) -> set[str]:
    return {line.split(" typ ")[1].split()[0] for line in sdp.splitlines() if line.startswith("a=candidate:")}


def _selected_local_types(pc: RTCPeerConnection) -> list[str]:
    """The local candidate type of each nominated ICE pair (aioice's state: aiortc has no getStats for it)."""
    found = []
    for transceiver_transport in {t.receiver.transport for t in pc.getTransceivers()} | (
        {pc.sctp.transport} if pc.sctp else set()
    ):
        connection = transceiver_transport.transport._connection
        for pair in connection._nominated.values():
            found.append(pair.local_candidate.type)
    return found


async def _connected(pc: RTCPeerConnection, within: float) -> None:
    done = asyncio.get_running_loop().create_future()

    @pc.on("connectionstatechange")
    def _changed() -> None:
        if pc.connectionState == "connected" and not done.done():
            done.set_result(None)
        elif pc.connectionState == "failed" and not done.done():
            done.set_exception(ConnectionError("the peer connection failed"))

    if pc.connectionState == "connected":
        return
    await asyncio.wait_for(done, within)


async def call_through_sup(caller: Client, callee: Client, chat_id: str, *, within: float = 30) -> CallResult:
    """Caller places the call, callee answers; offer, answer and candidates go through SUP encrypted; then a
    data channel echoes a line and the caller's tone plays at the callee. Both hang up the peer connections."""
    caller_ice = await caller.calls.turn_servers()
    callee_ice = await callee.calls.turn_servers()

    def config(servers: list[dict[str, Any]]) -> RTCConfiguration:
        ice = [RTCIceServer(urls=s["urls"], username=s["username"], credential=s["credential"]) for s in servers]
        return RTCConfiguration(iceServers=ice, iceTransportPolicy=RTCIceTransportPolicy.RELAY)

    pc_a, pc_b = RTCPeerConnection(config(caller_ice)), RTCPeerConnection(config(callee_ice))
    try:
        channel = pc_a.createDataChannel("chat")
        pc_a.addTrack(ToneTrack())
        received_track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        echoed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        @pc_b.on("track")
        def _track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and not received_track.done():
                received_track.set_result(track)

        @pc_b.on("datachannel")
        def _channel(remote) -> None:
            @remote.on("message")
            def _message(message: str) -> None:
                remote.send(f"echo: {message}")

        @channel.on("message")
        def _echo(message: str) -> None:
            if not echoed.done():
                echoed.set_result(message)

        started = time.perf_counter()
        marks: dict[str, float] = {}

        def mark(name: str) -> None:
            marks[name] = time.perf_counter() - started

        @pc_a.on("iceconnectionstatechange")
        def _ice() -> None:  # ICE found a working pair (through the relays); DTLS follows before "connected"
            if pc_a.iceConnectionState == "completed" and "ice_completed" not in marks:
                mark("ice_completed")

        call = await caller.calls.place(chat_id)
        call_id = call["id"]
        mark("invited")

        async def answer() -> None:
            await callee.calls.next_event(within, kind="incoming", call_id=call_id)
            await callee.calls.accept(call_id)
            offer = await callee.calls.next_event(within, kind="signal", call_id=call_id)
            await pc_b.setRemoteDescription(RTCSessionDescription(**offer.data))
            pc_b.addTrack(ToneTrack())  # audio both ways
            await pc_b.setLocalDescription(await pc_b.createAnswer())  # aiortc gathers every candidate first
            local = pc_b.localDescription
            await callee.calls.send_signal(call_id, "answer", {"type": local.type, "sdp": local.sdp})

        answering = asyncio.ensure_future(answer())
        await caller.calls.next_event(within, kind="accepted", call_id=call_id)
        mark("accepted")
        await pc_a.setLocalDescription(await pc_a.createOffer())
        mark("offer_gathered")
        offer = pc_a.localDescription
        await caller.calls.send_signal(call_id, "offer", {"type": offer.type, "sdp": offer.sdp})
        reply = await caller.calls.next_event(within, kind="signal", call_id=call_id)
        mark("answer_received")
        await pc_a.setRemoteDescription(RTCSessionDescription(**reply.data))
        await answering
        await asyncio.gather(_connected(pc_a, within), _connected(pc_b, within))
        setup = time.perf_counter() - started
        mark("connected")

        if channel.readyState != "open":
            opened = asyncio.get_running_loop().create_future()
            channel.on("open", lambda: opened.done() or opened.set_result(None))
            await asyncio.wait_for(opened, within)
        channel.send("hello through the relay")
        line = await asyncio.wait_for(echoed, within)

        track = await asyncio.wait_for(received_track, within)
        frames, peak = 0, 0
        while frames < 50:  # a second of audio
            frame = await asyncio.wait_for(track.recv(), within)
            frames += 1
            peak = max(peak, _peak(frame))

        result = CallResult(
            call_id=call_id,
            setup_seconds=setup,
            echoed=line,
            audio_frames=frames,
            audio_peak=peak,
            candidate_types=_candidate_types(pc_a.localDescription.sdp) | _candidate_types(pc_b.localDescription.sdp),
            selected_local_types=_selected_local_types(pc_a) + _selected_local_types(pc_b),
            marks=marks,
        )
        await caller.calls.hang_up(call_id)
        ended = await callee.calls.next_event(within, kind="ended", call_id=call_id)
        result.ended = {"reason": ended.reason, "duration_ms": ended.duration_ms}
        return result
    finally:
        await pc_a.close()
        await pc_b.close()
