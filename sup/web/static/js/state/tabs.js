// Several tabs of one device. Exactly one tab leads: it holds the device's Web Lock (the same lock
// crypto/store.js takes for every change of the crypto state) for as long as it is open, keeps the crypto
// state in memory, owns the WebSocket and writes the local store. The others follow: they read the store,
// hear what changed over a BroadcastChannel, and ask the leader to act (send, edit, react...) with a
// small request/answer protocol on the same channel. When the leader closes, the browser gives the lock to
// the next tab in line, which starts leading: no ratchet is ever advanced by two tabs.

const RPC_TIMEOUT = 60_000;

export class Tabs {
  /** @param {string} name one channel and lock per device */
  constructor(name) {
    this.channel = new BroadcastChannel(`sup-tabs-${name}`);
    this.leading = false;
    this.handlers = new Set();
    this.calls = new Map();
    this.serve = null;
    this._release = null;
    this.channel.onmessage = (event) => this._receive(event.data);
  }

  /**
   * Lead when the lock `lockName` comes to this tab (now, or when the leading tab closes).
   * @param {string} lockName @param {() => Promise<void>} onLead
   */
  lead(lockName, onLead) {
    const released = new Promise((resolve) => (this._release = resolve));
    navigator.locks
      .request(lockName, async () => {
        this.leading = true;
        await onLead();
        this.post({ kind: "leader" });
        await released; // held until the tab closes or signs out
      })
      .catch((error) => console.error("could not take the lead", error));
  }

  /** Give the lead up (signing out). */
  release() {
    this.leading = false;
    this._release?.();
  }

  close() {
    this.release();
    this.channel.close();
  }

  post(message) {
    this.channel.postMessage(message);
  }

  /** Listen to what the other tabs post. */
  on(handler) {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  /** Ask the leading tab to run `method(...args)`; retried while no tab leads (one is taking over). */
  call(method, args) {
    const id = crypto.randomUUID();
    return new Promise((resolve, reject) => {
      const started = Date.now();
      const entry = { resolve, reject, timer: null };
      const ask = () => {
        if (Date.now() - started > RPC_TIMEOUT) {
          this.calls.delete(id);
          reject(new Error("the tab that holds this device's keys does not answer"));
          return;
        }
        this.post({ kind: "call", id, method, args });
        entry.timer = setTimeout(ask, 5000);
      };
      this.calls.set(id, entry);
      ask();
    });
  }

  async _receive(message) {
    if (message?.kind === "call") {
      if (!this.leading || this.serve === null) return;
      if (this._answered?.has(message.id)) return; // asked again while running: answered once
      (this._answered ??= new Set()).add(message.id);
      try {
        const value = await this.serve(message.method, message.args);
        this.post({ kind: "answer", id: message.id, value });
      } catch (error) {
        this.post({
          kind: "answer",
          id: message.id,
          error: { name: error.name, message: error.message, code: error.code },
        });
      }
      return;
    }
    if (message?.kind === "answer") {
      const entry = this.calls.get(message.id);
      if (!entry) return;
      this.calls.delete(message.id);
      clearTimeout(entry.timer);
      if (message.error) {
        const error = new Error(message.error.message);
        error.name = message.error.name;
        error.code = message.error.code;
        entry.reject(error);
      } else entry.resolve(message.value);
      return;
    }
    for (const handler of this.handlers) handler(message);
  }
}
