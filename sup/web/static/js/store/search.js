// The device's search index of end-to-end encrypted messages (database `sup-search`): the server has no text
// of them to search, so this device indexes what it decrypted (docs/web.md "Search"). One record per message,
// {id, chat_id, seq, created_at, sig, tokens}, with a multi-entry index on `tokens`: a word finds its messages
// without reading any message, and a prefix ("hel") is a key range. The text itself is not copied here (the
// messages are in `sup-app`), and logging out deletes this database with the other ones (store/db.js).

import { done, openDatabase, request } from "./idb.js";

export const SEARCH_DB = "sup-search";
const VERSION = 1;

export class SearchStore {
  /** @param {IDBDatabase} db */
  constructor(db) {
    this.db = db;
  }

  static async open() {
    const db = await openDatabase(SEARCH_DB, VERSION, (db) => {
      const docs = db.createObjectStore("docs", { keyPath: "id" });
      docs.createIndex("tokens", "tokens", { multiEntry: true });
      docs.createIndex("chat", "chat_id");
      db.createObjectStore("chats", { keyPath: "chat_id" }); // {chat_id, count}: what was indexed last
    });
    return new SearchStore(db);
  }

  close() {
    this.db.close();
  }

  /** {chat_id, count} of the last indexing of a chat, or undefined. */
  chatState(chatId) {
    return request(this.db.transaction("chats").objectStore("chats").get(chatId));
  }

  /** The indexed records of one chat. */
  docsOf(chatId) {
    return request(this.db.transaction("docs").objectStore("docs").index("chat").getAll(chatId));
  }

  /** Ids of the messages with a word equal to `word`, or starting with it when `prefix`. */
  async idsWith(word, prefix) {
    const range = prefix ? IDBKeyRange.bound(word, word + "\uffff") : IDBKeyRange.only(word);
    const keys = await request(this.db.transaction("docs").objectStore("docs").index("tokens").getAllKeys(range));
    return new Set(keys);
  }

  docs(ids) {
    const store = this.db.transaction("docs").objectStore("docs");
    return Promise.all(ids.map((id) => request(store.get(id))));
  }

  /** Put and delete records of one chat and note how many messages it had, in one transaction. */
  async update(chatId, put, remove, count) {
    const tx = this.db.transaction(["docs", "chats"], "readwrite");
    const docs = tx.objectStore("docs");
    for (const doc of put) docs.put(doc);
    for (const id of remove) docs.delete(id);
    tx.objectStore("chats").put({ chat_id: chatId, count });
    await done(tx);
  }

  /** Put and delete records of any chats. */
  async updateDocs(put, remove) {
    const tx = this.db.transaction("docs", "readwrite");
    const docs = tx.objectStore("docs");
    for (const doc of put) docs.put(doc);
    for (const id of remove) docs.delete(id);
    await done(tx);
  }

  /** The chats the index has records of. */
  indexedChats() {
    return request(this.db.transaction("chats").objectStore("chats").getAllKeys());
  }

  /** Forget a chat I am no longer in. */
  async dropChat(chatId) {
    const old = await this.docsOf(chatId);
    const tx = this.db.transaction(["docs", "chats"], "readwrite");
    for (const doc of old) tx.objectStore("docs").delete(doc.id);
    tx.objectStore("chats").delete(chatId);
    await done(tx);
  }
}

/** How many messages a chat has in the app's store (`sup-app`), and all of them: what is to be indexed. */
export function countMessages(appDb, chatId) {
  const range = IDBKeyRange.bound([chatId, -Infinity], [chatId, Infinity]);
  return request(appDb.transaction("messages").objectStore("messages").index("chat_seq").count(range));
}

export function allMessages(appDb, chatId) {
  const range = IDBKeyRange.bound([chatId, -Infinity], [chatId, Infinity]);
  return request(appDb.transaction("messages").objectStore("messages").index("chat_seq").getAll(range));
}
