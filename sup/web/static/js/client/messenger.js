// The messenger: one signed-in device, end-to-end encrypted, resumable; the browser twin of `Client` in
// sup/client/client.py. It runs in the one tab that leads (state/tabs.js): that tab holds the device's Web
// Lock, the crypto state in memory and the WebSocket. The other tabs read what it stores (store/db.js) and
// ask it to act (send, edit, ...) over the BroadcastChannel.
//
// The messenger holds the state in memory (chats, members, sender-key shares) and stores every change; its
// collaborators do the rest: receive.js the events, send.js sending (pairwise and sender-key encryption,
// uploads), outbox.js the queue, actions.js what the user does to messages, membership.js chats and members
// as the server has them, calls.js call signalling, keys.js the device's keys.

import { toBase64 } from "../crypto/bytes.js";
import { EventSocket } from "../api/socket.js";
import { MessageActions } from "./actions.js";
import { CallSignals } from "./calls.js";
import { isEncrypted, previewText } from "./chats.js";
import { Keys } from "./keys.js";
import { Membership } from "./membership.js";
import { Outbox } from "./outbox.js";
import { Inbox, Work } from "./receive.js";
import { LOCAL_SEQ, Sender } from "./send.js";

/**
 * The messenger's actions a following tab may ask the leading one to run (state.js), by name, each with the
 * part of the messenger that does it, where it is written: sending in send.js, messages in actions.js, chats
 * and members in membership.js; "messenger" for the few it does itself.
 */
const ACTIONS = {
  send: "sender",
  retry: "sender",
  discard: "sender",
  edit: "actions",
  remove: "actions",
  react: "actions",
  setPinned: "actions",
  markRead: "actions",
  forward: "actions",
  loadHistory: "actions",
  dismissNotice: "actions",
  syncChats: "membership",
  createDirect: "membership",
  createGroup: "membership",
  addMembers: "membership",
  removeMember: "membership",
  leave: "membership",
  deleteChat: "membership",
  safetyNumber: "messenger",
  typing: "messenger",
  call: "messenger",
};

/**
 * @typedef {object} Change what the messenger tells the state after storing something
 * @property {"chats" | "messages" | "notices" | "status" | "incoming" | "frame" | "ended"} what
 * @property {string} [chatId] @property {object} [message] @property {object} [frame] @property {object} [status]
 */

export class Messenger {
  /**
   * @param {{api: import("../api/http.js").Api, local: import("../store/db.js").LocalStore,
   *   keystore: import("../crypto/store.js").DeviceStore, session: {userId: string, deviceId: string},
   *   notify: (change: Change) => void}} deps
   */
  constructor({ api, local, keystore, session, notify }) {
    this.api = api;
    this.local = local;
    this.userId = session.userId;
    this.deviceId = session.deviceId;
    this.notify = notify;
    this.keys = new Keys({
      api,
      local,
      keystore,
      userId: this.userId,
      deviceId: this.deviceId,
      onNotices: () => notify({ what: "notices" }),
    });
    this.inbox = new Inbox(this);
    this.outbox = new Outbox(this);
    this.sender = new Sender(this);
    this.actions = new MessageActions(this);
    this.membership = new Membership(this);
    this.calls = new CallSignals(this);
    /** @type {Map<string, object>} */ this.chats = new Map();
    /** @type {Map<string, string[]>} chat id -> member user ids (a cache) */ this.members = new Map();
    /** @type {Map<string, Set<string>>} chat id -> users seen leaving, not added back since */ this.removed =
      new Map();
    /** @type {Map<string, Record<string, string>>} chat id -> device id -> distribution id shared */ this.shares =
      new Map();
    /** @type {Set<string>} groups whose sender key must be replaced before the next message */ this.rotations =
      new Set();
    this._tail = Promise.resolve();
    this.socket = null;
    this.status = { state: "connecting" };
  }

  // ---- lifecycle -------------------------------------------------------------------------------------

  async start() {
    for (const [chatId, users] of Object.entries((await this.local.get("removed")) ?? {})) {
      this.removed.set(chatId, new Set(users));
    }
    for (const [chatId, shares] of Object.entries((await this.local.get("shares")) ?? {}))
      this.shares.set(chatId, shares);
    this.rotations = new Set((await this.local.get("rotations")) ?? []);
    for (const chat of await this.local.chats()) this.chats.set(chat.id, chat);
    await this.keys.load();
    await this.keys.publishIfNeeded();
    await this.outbox.load();
    this._onOnline = () => this.outbox.wake();
    addEventListener("online", this._onOnline);
    this.socket = new EventSocket(this.api, {
      cursor: async () => (await this.local.get("cursor")) ?? null,
      onFrames: (frames) => this.onFrames(frames),
      onStatus: (state, detail = {}) => {
        this.status = { state, ...detail };
        if (state === "online") this.outbox.wake(); // what was queued meanwhile, and what waits for a device
        this.notify({ what: "status", status: this.status });
        if (detail.revoked || detail.ended) this.notify({ what: "ended" });
      },
    });
    this.socket.start();
    this.membership.syncChats().catch((error) => console.warn("could not list chats", error));
    this.keys.rotateIfOld().catch((error) => console.warn("could not rotate the signed prekey", error));
    // A check after a keys.changed does not survive a closed tab: look at my own devices at every start.
    this.keys.checkNewDevices(this.userId).catch((error) => console.warn("could not list my devices", error));
  }

  stop() {
    this.socket?.stop();
    removeEventListener("online", this._onOnline);
    clearTimeout(this.outbox._retry);
  }

  /** Run `fn` after every earlier change of the crypto state: one at a time, as the SDK's lock. */
  _exclusive(fn) {
    const run = this._tail.then(fn);
    this._tail = run.catch(() => {});
    return run;
  }

  /** A call action (client/calls.js): "invite", "accept", "reject", "hangup" or "signal". */
  call(op, ...args) {
    return this.calls.act(op, ...args);
  }

  // ---- events ----------------------------------------------------------------------------------------

  /** One batch of frames from the socket: handled, stored, and the cursor to acknowledge returned. */
  onFrames(frames) {
    return this._exclusive(async () => {
      const work = new Work();
      let cursor = null;
      for (const frame of frames) {
        await this.inbox.handle(frame, work);
        if (typeof frame.cursor === "number") cursor = frame.cursor;
      }
      await this.commit(work, cursor);
      for (const frame of frames) this.outbox.onFrame(frame);
      return cursor;
    });
  }

  /** Store what a batch changed: messages and chats, then the crypto state, then the cursor. */
  async commit(work, cursor = null) {
    try {
      await this.local.apply(work.batch);
    } catch (error) {
      // Nothing was kept: forget what moved in memory, so the replay decrypts again.
      await this.keys.load();
      this.keys.known.clear();
      this.chats = new Map((await this.local.chats()).map((c) => [c.id, c]));
      throw error;
    }
    if (work.cryptoChanged) await this.keys.save();
    if (cursor !== null) await this.local.set("cursor", cursor);
    this.emit(work);
    for (const action of work.after) action().catch((error) => console.warn("after a batch of events", error));
  }

  emit(work) {
    if (work.chatsChanged) this.notify({ what: "chats" });
    // which messages changed (any chat's): the search index looks at just those again (client/search.js)
    const ids = [...work.batch.messages.keys()].filter((id) => !id.startsWith("local:"));
    for (const chatId of work.touched) this.notify({ what: "messages", chatId, ids });
    if (work.noticesChanged || work.batch.notices.length) this.notify({ what: "notices" });
    for (const message of work.incoming) this.notify({ what: "incoming", message });
    for (const frame of work.ephemeral) this.notify({ what: "frame", frame });
  }

  /** Apply a batch made outside the event stream (sending, actions), under the same order. */
  async store(work) {
    await this.commit(work, null);
  }

  // ---- chats (memory + store) ------------------------------------------------------------------------

  putChat(chat, work) {
    this.chats.set(chat.id, chat);
    work.batch.chats.set(chat.id, chat);
    work.chatsChanged = true;
  }

  async chatFor(chatId, work = null) {
    let chat = this.chats.get(chatId);
    if (chat === undefined) {
      try {
        chat = await this.pin(await this.api.chat(chatId));
      } catch (error) {
        console.warn(`could not look up chat ${chatId}`, error);
        return null;
      }
      if (work) this.putChat(chat, work);
      else this.chats.set(chat.id, chat);
    }
    return chat;
  }

  /**
   * The chat as the server describes it, except that encryption is never turned off: a direct chat is always
   * encrypted, and a chat seen encrypted once stays so (else a server could ask for the next message in
   * plaintext by announcing `encrypted: false`).
   */
  async pin(chat) {
    const known = this.chats.get(chat.id) ?? (await this.local.chat(chat.id));
    const merged = { ...(known ?? {}), ...chat };
    // An event's chat (chat.member.added) is the same for every member, without anyone's role: keep mine.
    if (!chat.my_role && known?.my_role) merged.my_role = known.my_role;
    if (isEncrypted(chat) || (known && isEncrypted(known))) {
      if (!chat.encrypted) console.warn(`the server says chat ${chat.id} is not end-to-end encrypted: ignored`);
      merged.encrypted = true;
    }
    delete merged.last_message;
    return merged;
  }

  /** A chat from an event or an answer: pinned, stored, and for a direct chat its other member found. */
  async rememberChat(chat, work) {
    const pinned = await this.pin(chat);
    pinned.left = false;
    this.putChat(pinned, work);
    if (!pinned.member_ids || (pinned.type === "direct" && !pinned.peer)) {
      work.after.push(() => this.membership.fetchMembers(pinned.id));
    }
    return pinned;
  }

  forgetChat(chatId, work) {
    this.chats.delete(chatId);
    this.members.delete(chatId);
    work.batch.chats.set(chatId, null);
    work.batch.dropChats.push(chatId);
    work.chatsChanged = true;
    work.touched.add(chatId);
    if (this.removed.delete(chatId)) work.batch.kv.set("removed", this.dumpRemoved());
  }

  needRotation(chatId, work) {
    this.rotations.add(chatId);
    work.batch.kv.set("rotations", [...this.rotations]);
  }

  dumpRemoved() {
    return Object.fromEntries([...this.removed].map(([chat, users]) => [chat, [...users]]));
  }

  // ---- messages (memory of this batch + store) -------------------------------------------------------

  async storedMessage(messageId, work = null) {
    const here = work?.batch.messages.get(messageId);
    if (here !== undefined) return here;
    return (await this.local.message(messageId)) ?? null;
  }

  /** Store a message record and keep its chat's preview, last seq and unread count up to date. */
  putMessage(record, work, { fromOthers }) {
    work.batch.messages.set(record.id, record);
    work.touched.add(record.chat_id);
    const chat = this.chats.get(record.chat_id);
    if (!chat || record.seq >= LOCAL_SEQ) return;
    const next = { ...chat };
    if (record.seq >= (chat.preview?.seq ?? 0)) {
      const system = record.status === "system";
      next.preview = {
        text: previewText(record),
        action: system ? record.action : undefined, // said with people's names by the list (state.previewOf)
        seq: record.seq,
        sender_id: system ? null : record.sender_id,
      };
      next.activity = Math.max(chat.activity ?? 0, record.created_at ?? 0);
    }
    next.last_seq = Math.max(chat.last_seq ?? 0, record.seq);
    if (fromOthers && record.seq > (chat.last_read_seq ?? 0) && record.status !== "system") {
      next.unread_count = (chat.unread_count ?? 0) + 1;
      work.incoming.push(record);
    }
    this.putChat(next, work);
  }

  /** Store a local record again with changes (a queued message that waits, or failed). */
  async replaceLocal(record) {
    const work = new Work();
    this.putMessage(record, work, { fromOthers: false });
    await this.store(work);
  }

  // ---- actions ---------------------------------------------------------------------------------------

  /** Run an action (ACTIONS) by name, for state.js: asked in this tab or by a following one. */
  run(method, args) {
    if (!Object.hasOwn(ACTIONS, method)) throw new Error(`cannot run ${method} here`);
    const part = ACTIONS[method] === "messenger" ? this : this[ACTIONS[method]];
    return part[method](...args);
  }

  typing(chatId, active) {
    this.socket?.send({ type: "typing", chat_id: chatId, active });
  }

  /** The safety number with a user (60 digits) and the devices it covers. */
  safetyNumber(userId) {
    return this._exclusive(() => this.keys.safetyNumber(userId));
  }

  /** My identity key's fingerprint digits, to tell this device apart in lists. */
  identityKey() {
    return toBase64(this.keys.identityKey);
  }
}
