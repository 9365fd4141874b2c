// Search, as one results view: people and chats (the server's /search/users and /search/chats), and
// messages from two places merged newest first: the server's full-text search for the chats it can read
// (channels, unencrypted groups), and this device's own index (store/search.js) for end-to-end encrypted
// chats, over the messages it decrypted. Both read the query the same way (docs/api.md "Search"): words of
// letters and digits in any script, every one required, case and Latin diacritics ignored, the last word
// also a prefix while it is being typed.

import { isEncrypted } from "./chats.js";
import { allMessages, countMessages, SearchStore } from "../store/search.js";

const MAX_WORDS = 16;

/** The words of a text, as the index keeps them. */
export function words(text) {
  return (text ?? "")
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "") // the diacritics of Latin letters (é -> e)
    .toLowerCase()
    .split(/[^\p{L}\p{N}]+/u)
    .filter(Boolean);
}

/** A query: its words, and whether the last one is also a prefix (typed with no space after it). */
export function parseQuery(q) {
  const found = words(q).slice(0, MAX_WORDS);
  const prefix = found.length > 0 && !/\s$/.test(q) && found[found.length - 1].length >= 3;
  return { words: found, prefix };
}

/**
 * Where the words occur in `text`, as the server's snippet: segments in order, `match` true for words found,
 * cut to about `width` characters around the first match.
 */
export function snippet(text, query, width = 120) {
  const { words: wanted, prefix } = query;
  const segments = [];
  const re = /[\p{L}\p{N}]+/gu;
  let at = 0;
  let first = -1;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const w = words(m[0])[0] ?? "";
    const hit = wanted.some((q, i) => w === q || (prefix && i === wanted.length - 1 && w.startsWith(q)));
    if (!hit) continue;
    if (first < 0) first = m.index;
    if (m.index > at) segments.push({ text: text.slice(at, m.index), match: false });
    segments.push({ text: m[0], match: true });
    at = m.index + m[0].length;
  }
  if (at < text.length) segments.push({ text: text.slice(at), match: false });
  // cut what is far from the first match
  const start = Math.max(0, first - Math.floor(width / 3));
  let pos = 0;
  const out = [];
  for (const seg of segments) {
    const end = pos + seg.text.length;
    if (end > start && pos < start + width) {
      let piece = seg.text.slice(Math.max(0, start - pos), start + width - pos);
      if (!seg.match && pos < start) piece = "…" + piece.trimStart();
      if (!seg.match && end > start + width) piece = piece.trimEnd() + "…";
      out.push({ text: piece, match: seg.match });
    }
    pos = end;
  }
  return out;
}

/** Whether a stored message is searchable text. */
function eligible(m) {
  return m.status === "ok" && typeof m.text === "string" && m.text.trim() !== "";
}

function signature(m) {
  return `${m.edited_at ?? 0}:${m.text.length}`;
}

/**
 * This device's index of its encrypted chats. Kept current lazily, before a search: the messages the state
 * says were stored or removed since (`changedMessages`) are looked at again one by one; a chat whose message
 * count differs from the one its last whole reading found (another tab, a reload), or that changed in a way
 * not said message by message (`changedChats`), is read again whole, and only its changed records rewritten.
 */
export class LocalIndex {
  /** @param {import("../state/state.js").AppState} app */
  constructor(app) {
    this.app = app;
    this.store = null;
    this.checked = new Set(); // chats compared with the index once in this tab
  }

  async open() {
    if (!this.store) {
      const store = await SearchStore.open();
      // logging out deletes the database: let it go, and open a new one next time
      store.db.onversionchange = () => {
        store.close();
        if (this.store === store) this.store = null;
      };
      this.store = store;
    }
    return this.store;
  }

  /** Index what changed; returns how many messages were (re)indexed. */
  async refresh() {
    const store = await this.open();
    const appDb = this.app.local.db;
    const changed = this.app.changedChats;
    let indexed = 0;
    const ids = [...this.app.changedMessages];
    this.app.changedMessages.clear();
    if (ids.length) indexed += await this.indexMessages(ids);
    const chats = this.app.get().chats;
    if (chats.length) {
      // chats I left or that were deleted: their words go
      const current = new Set(chats.map((c) => c.id));
      for (const chatId of await store.indexedChats()) if (!current.has(chatId)) await store.dropChat(chatId);
    }
    for (const chat of chats) {
      if (!isEncrypted(chat)) continue;
      let stale = changed.has(chat.id) || !this.checked.has(chat.id);
      if (stale && !changed.has(chat.id)) {
        const [state, count] = await Promise.all([store.chatState(chat.id), countMessages(appDb, chat.id)]);
        stale = !state || state.count !== count;
      }
      changed.delete(chat.id);
      this.checked.add(chat.id);
      if (stale) indexed += await this.indexChat(chat.id);
    }
    return indexed;
  }

  /** Look at some messages again (stored, edited, deleted), whatever their chats. */
  async indexMessages(ids) {
    const store = await this.open();
    const put = [];
    const remove = [];
    const [messages, docs] = await Promise.all([
      Promise.all(ids.map((id) => this.app.local.message(id))),
      store.docs(ids),
    ]);
    for (let i = 0; i < ids.length; i++) {
      const m = messages[i];
      const chat = m ? this.app.chat(m.chat_id) : null;
      if (!m || !chat || !isEncrypted(chat) || !eligible(m)) {
        if (docs[i]) remove.push(ids[i]);
        continue;
      }
      const sig = signature(m);
      if (docs[i]?.sig === sig) continue;
      const tokens = [...new Set(words(m.text))];
      put.push({ id: m.id, chat_id: m.chat_id, seq: m.seq, created_at: m.created_at, sig, tokens });
    }
    // The chats' counts stay as their last whole reading left them: a tab that opens later compares them with
    // the store and reads again whole a chat that changed meanwhile, whatever this tab indexed or missed.
    await store.updateDocs(put, remove);
    return put.length;
  }

  async indexChat(chatId) {
    const store = await this.open();
    const [messages, docs] = await Promise.all([allMessages(this.app.local.db, chatId), store.docsOf(chatId)]);
    const had = new Map(docs.map((d) => [d.id, d]));
    const put = [];
    for (const m of messages) {
      if (!eligible(m) || m.id.startsWith("local:")) continue;
      const sig = signature(m);
      const old = had.get(m.id);
      had.delete(m.id);
      if (old?.sig === sig) continue;
      const tokens = [...new Set(words(m.text))];
      put.push({ id: m.id, chat_id: chatId, seq: m.seq, created_at: m.created_at, sig, tokens });
    }
    await store.update(chatId, put, [...had.keys()], messages.length);
    return put.length;
  }

  /** Messages of my encrypted chats with every word of the query, newest first. */
  async search(query, { chatId = null, limit = 50 } = {}) {
    if (!query.words.length) return [];
    await this.refresh();
    const store = await this.open();
    let ids = null;
    for (let i = 0; i < query.words.length; i++) {
      const found = await store.idsWith(query.words[i], query.prefix && i === query.words.length - 1);
      ids = ids === null ? found : new Set([...ids].filter((id) => found.has(id)));
      if (!ids.size) return [];
    }
    const member = new Set(this.app.get().chats.map((c) => c.id));
    // Message ids are UUIDv7, time-ordered: the newest first without reading every match (a common word
    // is in thousands), a page of records at a time until `limit` are found.
    const ordered = [...ids].sort().reverse();
    const results = [];
    for (let at = 0; at < ordered.length && results.length < limit; at += limit) {
      const docs = await store.docs(ordered.slice(at, at + limit));
      for (const doc of docs) {
        if (!doc || !member.has(doc.chat_id) || (chatId && doc.chat_id !== chatId)) continue;
        const message = await this.app.local.message(doc.id);
        if (!message || !eligible(message)) continue;
        results.push({ message, snippet: snippet(message.text, query), where: "device" });
        if (results.length >= limit) break;
      }
    }
    return results;
  }

}

let shared = null;

/** The index of the device signed in now (a new one after logging out and in as someone else). */
export function indexFor(app) {
  const deviceId = app.get().deviceId;
  if (shared?.deviceId !== deviceId) shared = Object.assign(new LocalIndex(app), { deviceId });
  return shared;
}

/**
 * Everything a query finds: {users, chats, messages, errors}. Each part is asked for on its own, so one that
 * fails (the server unreachable, say) leaves the others, and the device's own results, shown.
 */
export async function searchEverywhere(app, index, q) {
  const query = parseQuery(q);
  const errors = [];
  if (!query.words.length) return { users: [], chats: [], messages: [], errors, query };
  const ask = (promise, what) =>
    promise.catch((error) => {
      errors.push({ what, error });
      return null;
    });
  const text = q.trim();
  const [users, chats, server, local] = await Promise.all([
    ask(app.api.get("/search/users", { query: { q: text.slice(0, 64), limit: 10 } }), "people"),
    ask(app.api.get("/search/chats", { query: { q: text.slice(0, 64), limit: 20 } }), "chats"),
    ask(app.api.get("/search/messages", { query: { q: text, limit: 30 } }), "messages"),
    ask(index.search(query), "messages on this device"),
  ]);
  const seen = new Set();
  const messages = [];
  for (const item of [...(local ?? []), ...(server?.items ?? []).map((it) => ({ ...it, where: "server" }))]) {
    if (seen.has(item.message.id)) continue;
    seen.add(item.message.id);
    messages.push(item);
  }
  messages.sort((a, b) => b.message.created_at - a.message.created_at);
  return { users: users?.items ?? [], chats: chats?.items ?? [], messages, errors, query };
}

/**
 * Open a chat at a message: the chat's window grows (older pages from this device, and from the server for a
 * chat it can read) until the message is in it, then it is scrolled to, marked and focused.
 */
export async function showMessage(app, chatId, messageId, navigate) {
  navigate(`/chats/${chatId}`);
  await app.openChat(chatId);
  for (let i = 0; i < 60 && !app.get().messages.some((m) => m.id === messageId); i++) {
    if (!app.get().hasOlder) break;
    await app.loadOlder();
  }
  for (let i = 0; i < 40; i++) {
    const el = document.getElementById(`m-${messageId}`);
    if (el) {
      el.scrollIntoView({ block: "center" });
      el.classList.add("found-message");
      el.setAttribute("tabindex", "-1");
      el.focus({ preventScroll: true });
      setTimeout(() => el.classList.remove("found-message"), 4000);
      return true;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}
