// The device's local data in IndexedDB (database `sup-app`): the session (refresh token), the event cursor,
// chats, the messages this device sent or decrypted (the server cannot decrypt them for us again: a ratchet
// message decrypts once), the devices met (for new-device notices and safety numbers), notices, and group
// messages waiting for their sender key. The crypto state is elsewhere (crypto/store.js, `sup-crypto-<device>`).
//
// Writes of one batch of events go through `apply(batch)` in one transaction, so a batch is stored whole
// or not at all. Only the tab that leads (state/tabs.js) writes; the others read and are told what changed.

import { done, openDatabase, request } from "./idb.js";
import { SEARCH_DB } from "./search.js";

const DB_NAME = "sup-app";
const DB_VERSION = 1;
const STORES = ["kv", "chats", "messages", "devices", "notices", "pending"];

/** What one batch changes; applied in one transaction. */
export class Batch {
  constructor() {
    /** @type {Map<string, any>} */ this.kv = new Map();
    /** @type {Map<string, object | null>} null deletes */ this.chats = new Map();
    /** @type {Map<string, object | null>} null deletes */ this.messages = new Map();
    /** @type {object[]} */ this.devices = [];
    /** @type {[string, string][]} */ this.forgetDevices = [];
    /** @type {object[]} */ this.notices = [];
    /** @type {Map<string, object | null>} */ this.pending = new Map();
    /** @type {string[]} chats whose messages were all removed */ this.dropChats = [];
  }

  get empty() {
    return (
      !this.kv.size &&
      !this.chats.size &&
      !this.messages.size &&
      !this.devices.length &&
      !this.forgetDevices.length &&
      !this.notices.length &&
      !this.pending.size &&
      !this.dropChats.length
    );
  }
}

export class LocalStore {
  /** @param {IDBDatabase} db */
  constructor(db) {
    this.db = db;
  }

  static async open(name = DB_NAME) {
    const db = await openDatabase(name, DB_VERSION, (db) => {
      db.createObjectStore("kv");
      db.createObjectStore("chats", { keyPath: "id" });
      const messages = db.createObjectStore("messages", { keyPath: "id" });
      messages.createIndex("chat_seq", ["chat_id", "seq"]);
      const devices = db.createObjectStore("devices", { keyPath: ["user_id", "device_id"] });
      devices.createIndex("user", "user_id");
      db.createObjectStore("notices", { keyPath: "id", autoIncrement: true });
      const pending = db.createObjectStore("pending", { keyPath: "message_id" });
      pending.createIndex("sender", ["chat_id", "sender", "device"]);
    });
    return new LocalStore(db);
  }

  close() {
    this.db.close();
  }

  _read(store) {
    return this.db.transaction(store, "readonly").objectStore(store);
  }

  // ---- key-value -------------------------------------------------------------------------------------

  get(key) {
    return request(this._read("kv").get(key));
  }

  async set(key, value) {
    const batch = new Batch();
    batch.kv.set(key, value);
    await this.apply(batch);
  }

  // ---- chats -----------------------------------------------------------------------------------------

  chats() {
    return request(this._read("chats").getAll());
  }

  chat(chatId) {
    return request(this._read("chats").get(chatId));
  }

  // ---- messages --------------------------------------------------------------------------------------

  message(messageId) {
    return request(this._read("messages").get(messageId));
  }

  /**
   * Up to `limit` messages of a chat with seq below `beforeSeq` (newest first from the store), oldest first.
   * @returns {Promise<object[]>}
   */
  messages(chatId, { beforeSeq = Infinity, limit = 50 } = {}) {
    const range = IDBKeyRange.bound([chatId, -Infinity], [chatId, beforeSeq], false, true);
    const cursorReq = this._read("messages").index("chat_seq").openCursor(range, "prev");
    const found = [];
    return new Promise((resolve, reject) => {
      cursorReq.onerror = () => reject(cursorReq.error);
      cursorReq.onsuccess = () => {
        const cursor = cursorReq.result;
        if (cursor && found.length < limit) {
          found.push(cursor.value);
          cursor.continue();
        } else resolve(found.reverse());
      };
    });
  }

  /** The messages of this device not (yet) on the server, `local:<client id>`: the outbox and failed sends. */
  localMessages() {
    return request(this._read("messages").getAll(IDBKeyRange.bound("local:", "local:\uffff")));
  }

  /** The message of a chat at `seq` (the store's copy, to bind an edit to what this device read). */
  async messageAt(chatId, seq) {
    const found = await request(this._read("messages").index("chat_seq").getAll([chatId, seq]));
    return found[0] ?? null;
  }

  /** How many messages of others a chat has after `seq` (unread). */
  async countAfter(chatId, seq, me) {
    const range = IDBKeyRange.bound([chatId, seq], [chatId, Infinity], true, true);
    const all = await request(this._read("messages").index("chat_seq").getAll(range));
    return all.filter((m) => m.sender_id !== me && m.status !== "system" && m.status !== "pending").length;
  }

  // ---- devices met, notices, pending -----------------------------------------------------------------

  /** device id -> identity key (base64) of the devices of `userId` this device has met. */
  async knownDevices(userId) {
    const rows = await request(this._read("devices").index("user").getAll(userId));
    return new Map(rows.map((r) => [r.device_id, r.identity_key]));
  }

  notices() {
    return request(this._read("notices").getAll());
  }

  pendingFor(chatId, sender, device) {
    return request(this._read("pending").index("sender").getAll([chatId, sender, device]));
  }

  // ---- writing ---------------------------------------------------------------------------------------

  /** @param {Batch} batch */
  async apply(batch) {
    if (batch.empty) return;
    const tx = this.db.transaction(STORES, "readwrite");
    const kv = tx.objectStore("kv");
    for (const [key, value] of batch.kv) value === undefined ? kv.delete(key) : kv.put(value, key);
    const chats = tx.objectStore("chats");
    for (const [id, chat] of batch.chats) chat === null ? chats.delete(id) : chats.put(chat);
    const messages = tx.objectStore("messages");
    for (const chatId of batch.dropChats) {
      messages.index("chat_seq").openKeyCursor(IDBKeyRange.bound([chatId, -Infinity], [chatId, Infinity])).onsuccess = (
        event,
      ) => {
        const cursor = event.target.result;
        if (!cursor) return;
        messages.delete(cursor.primaryKey);
        cursor.continue();
      };
    }
    for (const [id, message] of batch.messages) message === null ? messages.delete(id) : messages.put(message);
    const devices = tx.objectStore("devices");
    for (const device of batch.devices) devices.put(device);
    for (const key of batch.forgetDevices) devices.delete(key);
    const notices = tx.objectStore("notices");
    for (const notice of batch.notices) notice.id === undefined ? notices.add(notice) : notices.put(notice);
    const pending = tx.objectStore("pending");
    for (const [id, frame] of batch.pending) frame === null ? pending.delete(id) : pending.put(frame);
    await done(tx);
  }

  /** Forget everything (logging out): the database is deleted, and the search index of its messages. */
  async destroy() {
    this.db.close();
    for (const name of [DB_NAME, SEARCH_DB]) {
      await new Promise((resolve) => {
        const req = indexedDB.deleteDatabase(name);
        req.onsuccess = req.onerror = req.onblocked = () => resolve();
      });
    }
  }
}
