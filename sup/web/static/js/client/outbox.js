// The outbox: messages kept on this device until the server has them, sent in order (the browser twin of
// sup/client/outbox.py).
//
// Every message but a file goes through it: text, a sticker, a reply to a story. It is stored first (a record
// `local:<client_id>` in the `messages` store, shown at once), with the client_id it keeps until the server
// has it, so a send whose answer was lost is sent again as the same message, never as a second one. Then
// `flush` sends a chat's queued messages oldest first:
//
// - the server could not be reached (offline, 5xx, 429): the message stays ("queued") and every later one
//   with it; they go when the connection is back (the socket is ready again, or the browser is online), or
//   at the next try (2 s after the first failure, doubling to a minute);
// - 409 `member_without_device`: a member of this encrypted chat has no device that can read it yet (an
//   account an admin made and nobody has used, or one whose devices all signed out). The message waits
//   ("waiting", with the members it waits for) and every later one of that chat waits behind it. They go by
//   themselves when `keys.changed` (added) says one of those members has a device with keys, when a member
//   leaves, when events were missed (resync) and when the socket reconnects;
// - any other refusal: the message is marked failed, with Retry and Discard.
//
// Files do not wait: their upload would be deleted as an orphan after a day (as in the SDK).

import { isTransient, SessionEnded } from "../api/http.js";

// Events after which a message waiting for a member's device may go: the member has a device with keys now,
// or left (the server no longer waits for it), or the chat is gone, or events were missed.
const MAY_UNBLOCK = new Set(["keys.changed", "chat.member.removed", "chat.deleted", "resync"]);
const QUEUED = new Set(["pending", "queued", "waiting"]);

/**
 * @typedef {{sent: object} | {waiting: string[]} | {queued: true}} Settled what became of a queued message
 */

export class Outbox {
  /** @param {import("./messenger.js").Messenger} messenger */
  constructor(messenger) {
    this.m = messenger;
    this._tail = Promise.resolve(); // one flush at a time keeps the order
    /** @type {Map<string, {chatId: string, users: Set<string>}>} client id -> members it waits for */
    this.waits = new Map();
    /** @type {Map<string, {resolve: (s: Settled) => void, reject: (e: Error) => void}>} */
    this.waiters = new Map();
    this._waking = null;
    /** @type {null | "waiting" | "all"} what to flush again once the running flush is done */
    this._again = null;
    this._retry = null; // the timer of the next try after the server was busy or out of reach
    this._failures = 0; // tries in a row that could not reach it
  }

  /**
   * At start: which messages wait for a device (the events that free them may come at once). A file whose
   * sending was cut off (the tab closed) is marked failed: files do not wait.
   */
  async load() {
    for (const record of await this.m.local.localMessages()) {
      if (record.status === "waiting") {
        this.waits.set(record.client_id, { chatId: record.chat_id, users: new Set(record.waiting_for ?? []) });
      } else if (record.status === "pending" && !record.retry) {
        await this.m.replaceLocal({ ...record, status: "failed", reason: "interrupted: send it again" });
      }
    }
  }

  /** The queued messages, oldest first. */
  async entries() {
    const records = await this.m.local.localMessages();
    return records.filter((r) => QUEUED.has(r.status) && r.retry).sort((a, b) => a.seq - b.seq);
  }

  waitsIn(chatId) {
    for (const wait of this.waits.values()) if (wait.chatId === chatId) return true;
    return false;
  }

  /** A promise of what becomes of a message queued under `clientId` (resolved by the flush that tries it). */
  settled(clientId) {
    return new Promise((resolve, reject) => this.waiters.set(clientId, { resolve, reject }));
  }

  _settle(clientId, outcome, error = null) {
    const waiter = this.waiters.get(clientId);
    if (!waiter) return;
    this.waiters.delete(clientId);
    if (error) waiter.reject(error);
    else waiter.resolve(outcome);
  }

  /**
   * Send queued messages in order: one chat's (`chatId`), or all. With `onlyWaiting`, only those that wait for
   * a device (and in each chat none after one that does not: it would be overtaken).
   */
  flush({ chatId = null, onlyWaiting = false } = {}) {
    const run = this._tail.then(() => this._flush(chatId, onlyWaiting));
    this._tail = run.catch(() => {});
    return run;
  }

  async _flush(chatId, onlyWaiting) {
    const blocked = new Map(); // chat -> members its first held message waits for
    const skipped = new Set();
    let unreachable = null;
    for (const record of await this.entries()) {
      const chat = record.chat_id;
      if ((chatId !== null && chat !== chatId) || skipped.has(chat)) continue;
      if (onlyWaiting && record.status !== "waiting") {
        skipped.add(chat);
        continue;
      }
      if (unreachable !== null) {
        await this._mark(record, { status: "queued" });
        this._settle(record.client_id, { queued: true });
        continue;
      }
      if (blocked.has(chat)) {
        await this._wait(record, blocked.get(chat));
        continue;
      }
      try {
        const sent = await this.m.sender.deliverQueued(record);
        this.waits.delete(record.client_id);
        this._settle(record.client_id, { sent });
      } catch (error) {
        if (error instanceof SessionEnded) throw error;
        if (error.code === "member_without_device") {
          // the server's 409, or the directory's word when no device at all could be named (send.js)
          const users = (error.userIds ?? error.body?.user_ids ?? []).map(String).sort();
          this.m.keys.forgetListed(users); // no retry helps until they have a device: keys.changed says when
          blocked.set(chat, users);
          await this._wait(record, users);
        } else if (isTransient(error)) {
          unreachable = error;
          await this._mark(record, { status: "queued" });
          this._settle(record.client_id, { queued: true });
        } else {
          this.waits.delete(record.client_id);
          await this._mark(record, { status: "failed", reason: error.message, waiting_for: undefined });
          this._settle(record.client_id, null, error);
        }
      }
    }
    clearTimeout(this._retry);
    if (unreachable === null) {
      this._failures = 0;
      return;
    }
    // Offline, the socket's return says when to try again; a busy server (429, 5xx) does not: try again later,
    // a little later each time (2 s doubling to a minute), not in a tight loop.
    this._failures += 1;
    const delay = Math.min(60_000, 2000 * 2 ** (this._failures - 1));
    console.info(`queued messages wait for the server; trying again in ${delay / 1000} s`, unreachable);
    this._retry = setTimeout(() => this.wake(), delay);
  }

  /** Mark a message as waiting for these members' first devices. */
  async _wait(record, users) {
    this.waits.set(record.client_id, { chatId: record.chat_id, users: new Set(users) });
    if (record.status !== "waiting" || String(record.waiting_for) !== String(users)) {
      await this._mark(record, { status: "waiting", waiting_for: users });
    }
    this._settle(record.client_id, { waiting: users });
  }

  async _mark(record, fields) {
    const current = await this.m.local.message(record.id);
    if (!current) return; // discarded meanwhile
    await this.m.replaceLocal({ ...current, ...fields });
  }

  // ---- sending again by itself -------------------------------------------------------------------------

  /** After a batch of events is stored: one that may let a waiting message go starts a flush. */
  onFrame(frame) {
    if (!this.waits.size || !MAY_UNBLOCK.has(frame.type)) return;
    if (frame.type === "keys.changed") {
      if (frame.change !== "added") return;
      if (![...this.waits.values()].some((w) => w.users.has(frame.user_id))) return;
    } else if (frame.type !== "resync" && !this.waitsIn(frame.chat_id)) return;
    this.wake({ onlyWaiting: true });
  }

  /**
   * Try again soon (once, however many events asked meanwhile): everything when the connection is back
   * (`onlyWaiting` false), or only what waits for a device.
   */
  wake({ onlyWaiting = false } = {}) {
    if (this._waking) {
      this._again = !onlyWaiting || this._again === "all" ? "all" : "waiting";
      return;
    }
    this._waking = (async () => {
      let only = onlyWaiting;
      for (;;) {
        this._again = null;
        try {
          await this.flush({ onlyWaiting: only });
        } catch (error) {
          if (!(error instanceof SessionEnded)) console.warn("could not send queued messages", error);
          break;
        }
        if (this._again === null) break;
        only = this._again === "waiting";
      }
      this._waking = null;
    })();
  }
}

