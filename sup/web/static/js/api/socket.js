// The WebSocket gateway (docs/protocol.md) as a resumable, ordered stream of frames.
//
// It authenticates with the cursor of the last event the caller has *processed* (not merely received),
// hands frames to `onFrames` one batch at a time and waits for it before the next batch, then acks.
// After a network loss, 1001 (server going away) or 4008 (this client fell behind) it reconnects with
// backoff and resumes from that cursor, so nothing is skipped and nothing is handled twice. 4001 means
// the access token expired: refresh and reconnect. 4003 means this device was revoked: the session is
// over. 4400 means the server refused a frame: a bug, reported and retried slowly.

import { SessionEnded } from "./http.js";

export const CLOSE = Object.freeze({ GOING_AWAY: 1001, UNAUTHORIZED: 4001, REVOKED: 4003, RESUME: 4008, BAD: 4400 });
const ACK_DELAY = 500; // ms; the server stores acks at most once a second anyway
const MAX_BACKOFF = 30_000;
const READY_TIMEOUT = 15_000;
// The server pings every websocket.heartbeat_seconds; the browser answers those by itself. This is our
// own check that the connection still carries data (a laptop waking from sleep keeps a dead socket).
const PING_EVERY = 25_000;

/**
 * @typedef {object} SocketHooks
 * @property {() => Promise<number | null>} cursor the last processed cursor (null: let the server decide)
 * @property {(frames: object[]) => Promise<number | null>} onFrames handle a batch in order; the cursor to ack
 * @property {(status: "connecting" | "online" | "offline", detail?: object) => void} onStatus
 * @property {(ready: object) => Promise<void>} [onReady]
 */

export class EventSocket {
  /** @param {import("./http.js").Api} api @param {SocketHooks} hooks */
  constructor(api, hooks) {
    this.api = api;
    this.hooks = hooks;
    this.ws = null;
    this.stopped = false;
    this.attempt = 0;
    this.queue = [];
    this.draining = false;
    this.received = null; // the last durable cursor received on this connection
    this.ackWanted = null;
    this.ackSent = null;
    this.ackTimer = null;
    this.pingTimer = null;
    this.retryTimer = null;
    this.lastData = 0;
    this.connections = 0;
    this.idle = Promise.resolve();
    this._onOnline = () => this._reconnectSoon(0);
  }

  start() {
    this.stopped = false;
    globalThis.addEventListener?.("online", this._onOnline);
    this._connect();
  }

  stop() {
    this.stopped = true;
    globalThis.removeEventListener?.("online", this._onOnline);
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    this._flushAck();
    this.ws?.close(1000, "bye");
    this.ws = null;
  }

  /** Send a frame if connected (typing); dropped otherwise. */
  send(frame) {
    if (this.ws?.readyState === WebSocket.OPEN && this.ready) this.ws.send(JSON.stringify(frame));
  }

  async _connect() {
    if (this.stopped) return;
    this.hooks.onStatus("connecting");
    this.ready = false;
    this.received = null;
    let cursor;
    try {
      if (this.api.access === null) await this.api.refresh(null);
      // A batch still being handled moves the cursor: resume after it, or it would come again.
      await this.idle;
      cursor = await this.hooks.cursor();
    } catch (error) {
      if (error instanceof SessionEnded) return this.hooks.onStatus("offline", { ended: true });
      return this._retry();
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/api/v1/ws`);
    this.ws = ws;
    const readyTimer = setTimeout(() => ws.close(4000, "no ready"), READY_TIMEOUT);
    ws.onopen = () => {
      const frame = { type: "authenticate", token: this.api.access };
      if (cursor !== null && cursor !== undefined) frame.cursor = cursor;
      ws.send(JSON.stringify(frame));
    };
    ws.onmessage = (event) => {
      this.lastData = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === "ready") {
        clearTimeout(readyTimer);
        this.ready = true;
        this.attempt = 0;
        this.connections += 1;
        this.received = frame.resume_from ?? cursor ?? null;
        this.hooks.onStatus("online", frame);
        if (frame.resync) this.queue.push({ type: "resync", cursor: null, resume_from: frame.resume_from });
        this._startPings();
        this._drain();
        return;
      }
      if (frame.type === "pong") return;
      if (typeof frame.cursor === "number") {
        // A replay after a reconnect may repeat what a batch in progress already has: skip it.
        if (this.received !== null && frame.cursor <= this.received) return;
        this.received = frame.cursor;
      }
      this.queue.push(frame);
      this._drain();
    };
    ws.onclose = (event) => {
      clearTimeout(readyTimer);
      clearInterval(this.pingTimer);
      if (this.ws === ws) this.ws = null;
      this.ready = false;
      this.queue = []; // not handled yet: the next connection resumes from the handled cursor
      if (this.stopped) return;
      if (event.code === CLOSE.REVOKED) {
        this.stopped = true;
        this.hooks.onStatus("offline", { revoked: true, code: event.code });
        return;
      }
      this.hooks.onStatus("offline", { code: event.code });
      if (event.code === CLOSE.UNAUTHORIZED) {
        this.api
          .refresh(this.api.access)
          .then(() => this._reconnectSoon(0))
          .catch((error) => {
            if (error instanceof SessionEnded) this.hooks.onStatus("offline", { ended: true });
            else this._retry();
          });
        return;
      }
      if (event.code === CLOSE.BAD) console.error("the server refused a frame of this client (4400)", event.reason);
      this._retry(event.code === CLOSE.BAD ? 10 : 0);
    };
  }

  _retry(extra = 0) {
    this.attempt += 1 + extra;
    const base = Math.min(MAX_BACKOFF, 500 * 2 ** Math.min(this.attempt, 6));
    this._reconnectSoon(base / 2 + Math.random() * (base / 2)); // jitter: not every client at once
  }

  _reconnectSoon(delay) {
    if (this.stopped || (this.ws && this.ws.readyState <= WebSocket.OPEN)) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this._connect(), delay);
  }

  _startPings() {
    clearInterval(this.pingTimer);
    this.lastData = Date.now();
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastData > PING_EVERY * 2) {
        this.ws?.close(4000, "silent"); // a dead connection: reconnect
        return;
      }
      this.send({ type: "ping" });
    }, PING_EVERY);
  }

  async _drain() {
    if (this.draining) return;
    this.draining = true;
    let done;
    this.idle = new Promise((resolve) => (done = resolve));
    try {
      while (this.queue.length) {
        const frames = this.queue.splice(0, 200);
        let cursor = null;
        try {
          cursor = await this.hooks.onFrames(frames);
        } catch (error) {
          // Nothing of this batch is acknowledged: reconnecting replays it from the processed cursor.
          console.error("could not handle events", error);
          this.queue = [];
          this.ws?.close(4000, "handler failed");
          return;
        }
        if (cursor !== null && cursor !== undefined) this._ack(cursor);
      }
    } finally {
      this.draining = false;
      done();
    }
  }

  _ack(cursor) {
    if (this.ackWanted !== null && cursor <= this.ackWanted) return;
    this.ackWanted = cursor;
    if (this.ackTimer === null) this.ackTimer = setTimeout(() => this._flushAck(), ACK_DELAY);
  }

  _flushAck() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.ackWanted === null || this.ackWanted === this.ackSent) return;
    if (this.ws?.readyState === WebSocket.OPEN && this.ready) {
      this.ws.send(JSON.stringify({ type: "ack", cursor: this.ackWanted }));
      this.ackSent = this.ackWanted;
    }
  }
}
