// 1:1 calls in the browser (docs/protocol.md "Calls"), in two parts.
//
// `CallSignals` runs in the messenger (the leading tab, which holds the socket and the keys): it sends the
// call frames, and encrypts each SDP and ICE candidate to the one device at the other end of the call, in
// the pairwise session the chat's messages use, inside `{"v": 2, "chat_id", "call": {"id", "kind", "data"}}`
// (docs/e2e.md "Call signals"); what it receives it decrypts and checks the same way, and passes on as an
// ephemeral `call.signal` frame with `data` in the clear (never stored).
//
// `CallController` runs the RTCPeerConnection, the microphone (and camera) and the call's state for the
// screens (`snapshot.call`). It lives in the leading tab only: a call rings in the tab that is connected.

import { fromBase64, toBase64 } from "../crypto/bytes.js";

const ENVELOPE_VERSION = 2;
const ENDED_SHOWN_MS = 2500; // "Call ended" stays on screen this long
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

export class CallSignals {
  /** @param {import("./messenger.js").Messenger} m */
  constructor(m) {
    this.m = m;
    /** @type {Map<string, {chatId: string, peerUserId: string, peerDeviceId: string | null, caller: boolean}>} */
    this.calls = new Map();
  }

  /** What the screens may ask (through `Messenger.call`). */
  act(op, ...args) {
    switch (op) {
      case "invite": {
        const [chatId, video] = args;
        return this._send({ type: "call.invite", chat_id: chatId, video: Boolean(video), request_id: requestId() });
      }
      case "accept":
      case "reject":
      case "hangup":
        return this._send({ type: `call.${op}`, call_id: args[0], request_id: requestId() });
      case "signal":
        return this.signal(...args);
      default:
        throw new Error(`no call action ${op}`);
    }
  }

  _send(frame) {
    if (!this.m.socket?.ready) throw new Error("Not connected: the call cannot be placed now.");
    this.m.socket.send(frame);
  }

  /** An SDP (`{type, sdp}`) or a candidate, encrypted to the device at the other end. */
  async signal(callId, kind, data) {
    const call = this.calls.get(callId);
    if (!call || !call.peerDeviceId) throw new Error("This call has no answering device yet.");
    const plaintext = utf8.encode(
      JSON.stringify({ v: ENVELOPE_VERSION, chat_id: call.chatId, call: { id: callId, kind, data } }),
    );
    const keys = this.m.keys;
    let identity = (await keys.userDevices(call.peerUserId)).get(call.peerDeviceId);
    if (!identity) {
      keys.forgetListed([call.peerUserId]); // a device that logged in since the list was read
      identity = (await keys.userDevices(call.peerUserId)).get(call.peerDeviceId);
    }
    if (!identity) throw new Error("The other device has no published keys.");
    const ciphertext = await this.m._exclusive(async () => {
      try {
        return await keys.encryptTo(call.peerUserId, call.peerDeviceId, identity, plaintext);
      } finally {
        await keys.save(); // an encryption that happened must never be forgotten
      }
    });
    this._send({ type: "call.signal", call_id: callId, kind, ciphertext: toBase64(ciphertext) });
  }

  /** A call frame from the socket, in the inbox's batch (the crypto state is held). */
  async onFrame(frame, work) {
    switch (frame.type) {
      case "call.invited": {
        const info = frame.call;
        this.calls.set(info.id, { chatId: info.chat_id, peerUserId: info.callee_id, peerDeviceId: null, caller: true });
        break;
      }
      case "call.incoming": {
        const info = frame.call;
        this.calls.set(info.id, {
          chatId: info.chat_id,
          peerUserId: info.caller_id,
          peerDeviceId: info.caller_device_id,
          caller: false,
        });
        if (this.m.socket?.ready) this.m.socket.send({ type: "call.ringing", call_id: info.id }); // it rings here
        break;
      }
      case "call.accepted": {
        const call = this.calls.get(frame.call_id);
        if (call?.caller) call.peerDeviceId = frame.device_id;
        break;
      }
      case "call.ended":
        this.calls.delete(frame.call_id);
        break;
      case "call.signal": {
        const opened = await this._open(frame, work);
        if (opened === null) return;
        work.ephemeral.push(opened);
        return;
      }
      default:
        break;
    }
    work.ephemeral.push(frame);
  }

  async _open(frame, work) {
    const call = this.calls.get(frame.call_id);
    if (!call || frame.from_device_id !== call.peerDeviceId || !frame.ciphertext) {
      console.warn(`dropped a call signal from a device not in call ${frame.call_id}`);
      return null;
    }
    let envelope;
    try {
      const plaintext = await this.m.inbox.pairwiseDecrypt(
        call.peerUserId,
        call.peerDeviceId,
        fromBase64(frame.ciphertext),
        work,
      );
      envelope = JSON.parse(fromUtf8.decode(plaintext));
    } catch (error) {
      console.warn("dropped a call signal that does not decrypt", error);
      return null;
    }
    const signal = envelope?.call;
    if (
      envelope?.v !== ENVELOPE_VERSION ||
      envelope.chat_id !== call.chatId ||
      signal?.id !== frame.call_id ||
      signal?.kind !== frame.kind
    ) {
      console.warn("dropped a call signal bound to another chat or call");
      return null;
    }
    return { type: "call.signal", cursor: null, call_id: frame.call_id, kind: signal.kind, data: signal.data };
  }
}

function requestId() {
  return `call-${crypto.randomUUID()}`;
}

/** Whether a frame is one for the calls (a call event, or the error answering a call frame). */
export function isCallFrame(frame) {
  return (
    typeof frame?.type === "string" &&
    (frame.type.startsWith("call.") || (frame.type === "error" && String(frame.request_id ?? "").startsWith("call-")))
  );
}

/**
 * The call of this tab, for the screens: `state.snapshot.call` is
 * `{id, chatId, peerId, direction: "outgoing" | "incoming", status, video, muted, startedAt, reason}`, or null;
 * `status` is "calling", "ringing", "connecting", "connected" or "ended".
 */
export class CallController {
  /** @param {import("../state/state.js").AppState} state */
  constructor(state) {
    this.state = state;
    this.pc = null;
    this.local = null;
    /** the other side's audio and video, for the call screen's media elements */
    this.remote = new MediaStream();
    this._chain = Promise.resolve(); // frames are handled one at a time, in order
    this._clear = null;
  }

  get call() {
    return this.state.snapshot.call;
  }

  _set(patch) {
    this.state.set({ call: patch === null ? null : { ...(this.call ?? {}), ...patch } });
  }

  /** Call the other member of a direct chat. */
  async place(chat, { video = false } = {}) {
    if (this.call && this.call.status !== "ended") return;
    clearTimeout(this._clear);
    this._set(null);
    this._set({
      id: null,
      chatId: chat.id,
      peerId: chat.peer?.id ?? null,
      direction: "outgoing",
      status: "calling",
      video,
      muted: false,
      startedAt: null,
      reason: null,
    });
    try {
      await this.state.act("call", "invite", chat.id, video);
    } catch (error) {
      this._end("failed", error.message);
    }
  }

  async accept() {
    const call = this.call;
    if (!call || call.direction !== "incoming" || call.status !== "ringing") return;
    this._set({ status: "connecting" });
    try {
      await this._peer();
      await this.state.act("call", "accept", call.id);
    } catch (error) {
      this._end("failed", error.message);
    }
  }

  decline() {
    const call = this.call;
    if (!call) return;
    this.state.act("call", "reject", call.id).catch(() => {});
    this._end("declined");
  }

  hangUp() {
    const call = this.call;
    if (!call) return;
    if (call.id) this.state.act("call", "hangup", call.id).catch(() => {});
    this._end("hangup");
  }

  toggleMute() {
    const muted = !this.call?.muted;
    for (const track of this.local?.getAudioTracks() ?? []) track.enabled = !muted;
    this._set({ muted });
  }

  onFrame(frame) {
    this._chain = this._chain
      .then(() => this._handle(frame))
      .catch((error) => {
        console.warn("call", error);
        if (this.call && this.call.status !== "ended") this.hangUp();
      });
  }

  async _handle(frame) {
    const call = this.call;
    switch (frame.type) {
      case "call.invited":
        if (call?.direction === "outgoing" && !call.id && frame.call.chat_id === call.chatId) {
          this._set({ id: frame.call.id, expiresAt: frame.call.expires_at });
        }
        return;
      case "call.incoming":
        if (call && call.status !== "ended") return; // already in a call here (the server answers busy)
        clearTimeout(this._clear);
        this._set(null);
        this._set({
          id: frame.call.id,
          chatId: frame.call.chat_id,
          peerId: frame.call.caller_id,
          direction: "incoming",
          status: "ringing",
          video: frame.call.video,
          muted: false,
          startedAt: null,
          reason: null,
        });
        return;
      case "error":
        if (call && call.status !== "ended" && call.status !== "connected") this._end("failed", frame.detail);
        return;
      default:
        break;
    }
    if (!call || frame.call_id !== call.id) return;
    switch (frame.type) {
      case "call.ringing":
        if (call.direction === "outgoing" && call.status === "calling") this._set({ status: "ringing" });
        return;
      case "call.accepted":
        if (call.direction === "outgoing") {
          this._set({ status: "connecting" });
          await this._peer();
          await this.pc.setLocalDescription(await this.pc.createOffer());
          const offer = this.pc.localDescription;
          await this.state.act("call", "signal", call.id, "offer", { type: offer.type, sdp: offer.sdp });
          this._sdpSent();
        }
        return;
      case "call.signal":
        return this._signal(frame);
      case "call.ended":
        this._end(frame.reason);
        return;
      default:
        return;
    }
  }

  async _signal(frame) {
    const pc = this.pc;
    if (!pc) return;
    const id = this.call.id;
    if (frame.kind === "offer") {
      await pc.setRemoteDescription(frame.data);
      await pc.setLocalDescription(await pc.createAnswer());
      const answer = pc.localDescription;
      await this.state.act("call", "signal", id, "answer", { type: answer.type, sdp: answer.sdp });
      this._sdpSent();
      await this._flushCandidates();
    } else if (frame.kind === "answer") {
      await pc.setRemoteDescription(frame.data);
      await this._flushCandidates();
    } else if (frame.kind === "candidate") {
      if (pc.remoteDescription) await pc.addIceCandidate(frame.data);
      else this._candidates.push(frame.data);
    }
  }

  /** My SDP went: the candidates gathered meanwhile follow it (the other side gets the SDP first). */
  _sdpSent() {
    const held = this._held ?? [];
    this._held = null;
    for (const candidate of held) this._sendCandidate(candidate);
  }

  _sendCandidate(candidate) {
    const call = this.call;
    if (!call?.id) return;
    this.state.act("call", "signal", call.id, "candidate", candidate).catch((error) => {
      console.warn("could not send an ICE candidate", error);
    });
  }

  async _flushCandidates() {
    for (const candidate of this._candidates.splice(0)) await this.pc.addIceCandidate(candidate);
  }

  async _peer() {
    let iceServers = [];
    try {
      const turn = await this.state.api.get("/calls/turn");
      iceServers = [{ urls: turn.uris, username: turn.username, credential: turn.credential }];
    } catch (error) {
      console.info("no TURN relay from this server; direct connections only", error?.code ?? error);
    }
    this._candidates = [];
    this._held = []; // my candidates, until my offer or answer has gone
    this.remote = new MediaStream();
    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    this.local = await navigator.mediaDevices.getUserMedia({ audio: true, video: Boolean(this.call?.video) });
    for (const track of this.local.getTracks()) pc.addTrack(track, this.local);
    pc.ontrack = (event) => {
      this.remote.addTrack(event.track);
      this.state.set({ call: { ...this.call } }); // the call screen attaches the stream
    };
    pc.onicecandidate = (event) => {
      if (this.pc !== pc || !event.candidate) return;
      if (this._held) this._held.push(event.candidate.toJSON());
      else this._sendCandidate(event.candidate.toJSON());
    };
    pc.onconnectionstatechange = () => {
      if (this.pc !== pc) return;
      if (pc.connectionState === "connected" && this.call?.status !== "connected") {
        this._set({ status: "connected", startedAt: Date.now() });
      } else if (pc.connectionState === "failed") {
        this.hangUp();
      }
    };
  }

  _end(reason, detail = "") {
    this.pc?.close();
    this.pc = null;
    for (const track of this.local?.getTracks() ?? []) track.stop();
    this.local = null;
    if (!this.call) return;
    this._set({ status: "ended", reason, detail });
    clearTimeout(this._clear);
    this._clear = setTimeout(() => {
      if (this.call?.status === "ended") this._set(null);
    }, ENDED_SHOWN_MS);
  }
}
