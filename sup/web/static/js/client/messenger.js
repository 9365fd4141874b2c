// The messenger: one signed-in device, end-to-end encrypted, resumable; the browser twin of `Client` in
// sup/client/client.py. It runs in the one tab that leads (state/tabs.js): that tab holds the device's Web
// Lock, the crypto state in memory and the WebSocket. The other tabs read what it stores (store/db.js) and
// ask it to act (send, edit, ...) over the BroadcastChannel.
//
// Sending mirrors the SDK: per-device (pairwise) encryption in direct chats, with device_mismatch (409) and
// stale_devices (410) answered by refetching the device lists and encrypting again under the same
// client_id; sender keys in encrypted groups, distributed pairwise before the first message and rotated
// when a member or device goes away or the server says sender_key_required; every device of a user met
// after the first contact is announced (a notice) before anything is encrypted to it.

import { fromBase64, toBase64 } from "../crypto/bytes.js";
import { encryptAttachment } from "../crypto/attachments.js";
import * as envelopes from "../crypto/envelope.js";
import { ApiError } from "../api/http.js";
import { EventSocket } from "../api/socket.js";
import { Batch } from "../store/db.js";
import { CallSignals } from "./calls.js";
import { isEncrypted, newClientId, previewText } from "./chats.js";
import { DeviceGone, Keys, MemberWithoutDevice } from "./keys.js";
import { Outbox } from "./outbox.js";
import { Inbox, Work } from "./receive.js";

const SEND_ATTEMPTS = 6; // device lists can change between fetch and send; each retry refetches
const PAIRWISE_RETRIES = new Set(["device_mismatch", "stale_devices", "device_gone"]);
const GROUP_RETRIES = new Set(["sender_key_required", "sender_key_missing", "device_mismatch", "device_gone"]);
const LOCAL_SEQ = 1e15; // pending messages sort after every stored one
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// 0, 0.25, 1, 2.25, 4 s: about 7 s in all for a new device of a member to publish its keys
const backoff = (attempt) => 250 * attempt * attempt;

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
    this.syncChats().catch((error) => console.warn("could not list chats", error));
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

  // ---- chats (memory + store) --------------------------------------------------------------------------

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
      work.after.push(() => this.fetchMembers(pinned.id));
    }
    return pinned;
  }

  /** A chat's members (for a direct chat, who the other person is), kept on the chat for the screens. */
  async fetchMembers(chatId) {
    const { items: list, count } = await this.api.membersAndCount(chatId);
    const chat = this.chats.get(chatId);
    if (!chat) return;
    const other = list.find((m) => m.user_id !== this.userId) ?? list[0];
    const work = new Work();
    const next = { ...chat, member_ids: list.map((m) => m.user_id), member_count: count };
    if (chat.type === "direct" && other) {
      next.peer = { id: other.user_id, username: other.username, display_name: other.display_name };
    }
    this.putChat(next, work);
    await this.store(work);
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

  /** Every chat from the server, merged with what is stored (previews of encrypted chats stay local). */
  async syncChats() {
    const listed = await this.api.chats();
    const work = new Work();
    const seen = new Set();
    for (const chat of listed) {
      seen.add(chat.id);
      const pinned = await this.pin(chat);
      pinned.left = false;
      pinned.activity = Math.max(pinned.activity ?? 0, chat.last_message?.created_at ?? chat.updated_at ?? 0);
      if (!isEncrypted(pinned) && chat.last_message) {
        const last = chat.last_message;
        const system = last.kind === "system" ? this.inbox.systemRecord(last) : null;
        pinned.preview = {
          // a system message's body is its action as JSON (a join, a new title): the list says it in words
          text: previewText(system ?? { text: last.body, status: "ok" }),
          action: system?.action,
          seq: chat.last_message.seq,
          sender_id: system ? null : chat.last_message.sender_id,
        };
      }
      this.putChat(pinned, work);
      if (!pinned.member_ids || (pinned.type === "direct" && !pinned.peer)) {
        work.after.push(() => this.fetchMembers(pinned.id));
      }
    }
    for (const [chatId, chat] of this.chats)
      if (!seen.has(chatId) && !chat.left) this.putChat({ ...chat, left: true }, work);
    await this.store(work);
  }

  async refreshChat(chatId) {
    const work = new Work();
    await this.rememberChat(await this.api.chat(chatId), work);
    await this.store(work);
    await this.fetchMembers(chatId);
  }

  /** After events were missed: who is listed as a member again was added back meanwhile. */
  async recheckRemoved(chatIds) {
    for (const chatId of chatIds) {
      await this._exclusive(async () => {
        if (!this.removed.has(chatId)) return;
        const members = (await this.api.members(chatId)).map((m) => m.user_id);
        const work = new Work();
        this.inbox.membersBack(work, chatId, members);
        await this.store(work);
      });
    }
  }

  // ---- messages (memory of this batch + store) ---------------------------------------------------------

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

  // ---- sending -----------------------------------------------------------------------------------------

  async memberIds(chatId) {
    let members = this.members.get(chatId);
    if (members === undefined) {
      members = (await this.api.members(chatId)).map((m) => m.user_id);
      this.members.set(chatId, members);
      const chat = this.chats.get(chatId);
      if (chat && JSON.stringify(chat.member_ids ?? []) !== JSON.stringify(members)) {
        const work = new Work();
        this.putChat({ ...chat, member_ids: members }, work);
        await this.local.apply(work.batch);
      }
    }
    return members;
  }

  /** device id -> [user id, identity key] for every device that must read what I send in a chat. */
  async recipients(chatId) {
    const users = [...new Set([...(await this.memberIds(chatId)), this.userId])].sort();
    const out = new Map();
    let announced = false;
    for (const userId of users) {
      const devices = await this.keys.userDevices(userId);
      if ((await this.keys.meetDevices(userId, devices)).length) announced = true; // shown before encrypting
      for (const [deviceId, key] of devices) if (deviceId !== this.deviceId) out.set(deviceId, [userId, key]);
    }
    if (announced) this.notify({ what: "notices" });
    return out;
  }

  /** A local copy of what is being sent, shown at once; replaced by the stored message when it is sent. */
  async _pending(chatId, clientId, fields) {
    const work = new Work();
    // Strictly increasing: the outbox sends in this order, and two messages may be written the same millisecond.
    this._lastLocal = Math.max((this._lastLocal ?? 0) + 1, LOCAL_SEQ + Date.now());
    const record = {
      id: `local:${clientId}`,
      chat_id: chatId,
      seq: this._lastLocal,
      sender_id: this.userId,
      sender_device_id: this.deviceId,
      client_id: clientId,
      kind: fields.kind ?? "text",
      status: "pending",
      text: fields.text ?? null,
      attachments: fields.attachments ?? [],
      reply_to: fields.replyTo ?? null,
      sticker_id: fields.stickerId ?? null,
      story: fields.story ?? null,
      created_at: Date.now(),
      reactions: [],
      encrypted: isEncrypted(this.chats.get(chatId)),
      retry: fields.retry ?? null,
    };
    this.putMessage(record, work, { fromOthers: false });
    await this.store(work);
    return record;
  }

  /** Store a local record again with changes (a queued message that waits, or failed). */
  async replaceLocal(record) {
    const work = new Work();
    this.putMessage(record, work, { fromOthers: false });
    await this.store(work);
  }

  /**
   * Send a message; the same clientId again is a retry (the server returns the original). Anything but a file
   * goes through the outbox (outbox.js): what it answers is `{sent}`, or `{waiting: user ids}` when members
   * have no device to read it yet, or `{queued: true}` when the server cannot be reached; it is sent later.
   * @param {string} chatId
   * @param {{text?: string, replyTo?: string | null, clientId?: string, file?: Blob, name?: string, mime?: string,
   *   stickerId?: string | null, story?: {id: string, author_id: string} | null}} fields
   */
  async send(chatId, fields = {}) {
    const { text, replyTo = null, clientId = newClientId(), file = null, stickerId = null, story = null } = fields;
    const chat = await this.chatFor(chatId);
    if (!chat) throw new Error("no such chat");
    if (story && !isEncrypted(chat)) throw new Error("a reply to a story goes to the author's direct chat");
    if (file) return this._sendFile(chat, clientId, fields);
    const content = { text: text ?? null, replyTo, stickerId, story };
    const settled = this.outbox.settled(clientId);
    await this._pending(chatId, clientId, { ...content, kind: stickerId ? "sticker" : "text", retry: content });
    this.outbox.flush({ chatId }).catch(() => {}); // its outcome comes through `settled`
    return settled;
  }

  /** Send a queued message (outbox.js): delivered, then stored in place of its local copy. */
  async deliverQueued(record) {
    const chat = await this.chatFor(record.chat_id);
    if (!chat) throw new Error("no such chat");
    const fields = record.retry;
    const sent = await this._deliver(chat, record.client_id, { ...fields, attachment: null });
    await this._stored(chat, record, sent, fields);
    return sent;
  }

  /** The server has a message this device sent: its record takes the place of the local copy. */
  async _stored(chat, local, sent, { text = null, replyTo = null, stickerId = null, story = null, attachment = null }) {
    const work = new Work();
    work.batch.messages.set(local.id, null);
    this.putMessage(
      {
        id: sent.id,
        chat_id: chat.id,
        seq: sent.seq,
        sender_id: this.userId,
        sender_device_id: this.deviceId,
        client_id: local.client_id,
        kind: sent.kind,
        status: "ok",
        text: text ?? (isEncrypted(chat) ? null : (sent.body ?? "")),
        attachments: attachment ? [attachment] : [],
        reply_to: replyTo,
        sticker_id: stickerId ?? sent.sticker_id ?? null,
        story,
        created_at: sent.created_at,
        reactions: sent.reactions ?? [],
        encrypted: isEncrypted(chat),
      },
      work,
      { fromOthers: false },
    );
    await this.store(work);
  }

  async _sendFile(chat, clientId, { text, replyTo = null, file, name = "", mime = "" }) {
    const pending = await this._pending(chat.id, clientId, {
      text,
      replyTo,
      kind: "media",
      attachments: [{ media_id: null, size: file.size, mime: mime || file.type, name }],
    });
    try {
      const attachment = await this._upload(chat, file, name, mime || file.type || "application/octet-stream");
      const sent = await this._deliver(chat, clientId, { text, replyTo, attachment });
      await this._stored(chat, pending, sent, { text, replyTo, attachment });
      return { sent };
    } catch (error) {
      await this.replaceLocal({ ...pending, status: "failed", reason: error.message });
      throw error;
    }
  }

  /** Send a failed message again (same client id: never twice). */
  async retry(localId) {
    const record = await this.local.message(localId);
    if (!record || record.status !== "failed" || !record.retry) return;
    const work = new Work();
    work.batch.messages.set(localId, null);
    work.touched.add(record.chat_id);
    await this.store(work);
    return this.send(record.chat_id, { ...record.retry, clientId: record.client_id });
  }

  async _upload(chat, file, name, mime) {
    if (isEncrypted(chat)) {
      const { blob, key } = await encryptAttachment(new Uint8Array(await file.arrayBuffer()));
      const media = await this.api.upload(blob, { encrypted: true });
      return {
        media_id: media.id,
        key: toBase64(key.key),
        digest: toBase64(key.digest),
        size: key.size,
        mime,
        name,
      };
    }
    const media = await this.api.upload(file, { filename: name || "file" });
    return { media_id: media.id, size: media.size, mime: media.mime, name: media.filename };
  }

  async _deliver(chat, clientId, { text, replyTo, attachment, stickerId = null, story = null }) {
    const kind = attachment ? "media" : stickerId ? "sticker" : "text";
    const common = { chat_id: chat.id, client_id: clientId, kind };
    if (attachment) common.media_id = attachment.media_id;
    if (stickerId) common.sticker_id = stickerId; // the server checks it is in a published pack
    if (replyTo) common.reply_to = replyTo;
    const sent = async (fields) => {
      try {
        return await this.api.sendMessage({ ...common, ...fields });
      } catch (error) {
        // Sent before (a retry after a lost answer) with other bytes: the original stands.
        if (error instanceof ApiError && error.code === "client_id_reused" && error.body.message_id) {
          return this.api.message(error.body.message_id);
        }
        throw error;
      }
    };
    if (!isEncrypted(chat)) return sent({ body: text ?? "" });
    // The sticker and the story answered travel in the envelope too: receivers take them from there.
    const plaintext = envelopes.encodeEnvelope(chat.id, {
      clientId,
      text: text ?? undefined,
      replyTo: replyTo ?? undefined,
      stickerId: stickerId ?? undefined,
      story: story ?? undefined,
      attachments: attachment
        ? [
            {
              mediaId: attachment.media_id,
              key: fromBase64(attachment.key),
              digest: fromBase64(attachment.digest),
              size: attachment.size,
              mime: attachment.mime,
              name: attachment.name,
            },
          ]
        : [],
    });
    return this._encrypted(chat, plaintext, sent);
  }

  _encrypted(chat, plaintext, deliver) {
    if (!isEncrypted(chat)) throw new Error(`chat ${chat.id} is not end-to-end encrypted`);
    return chat.type === "group"
      ? this._sendGroup(chat.id, plaintext, deliver)
      : this._sendPairwise(chat.id, plaintext, deliver);
  }

  /** The other members of a chat that have no device with published keys, as the directory says now. */
  async withoutDevices(chatId) {
    this.members.delete(chatId);
    const others = (await this.memberIds(chatId)).filter((u) => u !== this.userId);
    this.keys.forgetListed(others);
    const without = [];
    for (const userId of others) if (!(await this.keys.userDevices(userId)).size) without.push(userId);
    return without.sort();
  }

  async _sendPairwise(chatId, plaintext, deliver) {
    for (let attempt = 0; ; attempt++) {
      try {
        const targets = await this.recipients(chatId);
        if (!targets.size) {
          // No device to encrypt to at all: the server would refuse an empty list (422 encryption_required)
          // when a member's first device published its keys since the lists were read; the directory says
          // whom the message waits for, or lists the new device (then the lists are read again).
          const without = await this.withoutDevices(chatId);
          if (without.length) throw new MemberWithoutDevice(without);
          if (attempt === SEND_ATTEMPTS - 1) throw new Error("no device to encrypt to");
          continue;
        }
        const recipients = await this._exclusive(async () => {
          try {
            const out = [];
            for (const [deviceId, [userId, key]] of targets) {
              const ciphertext = await this.keys.encryptTo(userId, deviceId, key, plaintext);
              out.push({ device_id: deviceId, ciphertext: toBase64(ciphertext) });
            }
            return out;
          } finally {
            await this.keys.save(); // an encryption that happened must never be forgotten
          }
        });
        return await deliver({ recipients });
      } catch (error) {
        const code = error instanceof DeviceGone ? "device_gone" : error instanceof ApiError ? error.code : null;
        if (!PAIRWISE_RETRIES.has(code) || attempt === SEND_ATTEMPTS - 1) throw error;
        this.members.delete(chatId);
        const listed = error.body?.devices ?? [];
        this.keys.forgetListed(listed.length ? listed.map((d) => d.user_id) : null);
        await sleep(backoff(attempt)); // a device that just logged in publishes its keys next
      }
    }
  }

  async _sendGroup(chatId, plaintext, deliver) {
    for (let attempt = 0; ; attempt++) {
      try {
        const targets = await this.recipients(chatId);
        const ciphertext = await this._exclusive(async () => {
          try {
            await this._shareSenderKey(chatId, targets);
            return await this.keys.device.groupEncrypt(chatId, plaintext);
          } finally {
            await this.keys.save();
          }
        });
        return await deliver({ ciphertext: toBase64(ciphertext) });
      } catch (error) {
        const code = error instanceof DeviceGone ? "device_gone" : error instanceof ApiError ? error.code : null;
        if (!GROUP_RETRIES.has(code) || attempt === SEND_ATTEMPTS - 1) throw error;
        this.members.delete(chatId);
        const work = new Work();
        if (code === "sender_key_required") {
          this.needRotation(chatId, work); // the server forgot the chat's sender keys: a member left
        } else if (code === "sender_key_missing") {
          const shares = { ...(this.shares.get(chatId) ?? {}) };
          for (const d of error.body.missing_devices ?? []) delete shares[d];
          this.shares.set(chatId, shares);
          work.batch.kv.set("shares", Object.fromEntries(this.shares));
        }
        await this.local.apply(work.batch);
        if (code !== "sender_key_required") {
          this.keys.forgetListed();
          await sleep(backoff(attempt));
        }
      }
    }
  }

  /** Make sure every target device holds my current sender key for the chat (inside _exclusive). */
  async _shareSenderKey(chatId, targets) {
    const device = this.keys.device;
    let shares = this.shares.get(chatId) ?? {};
    // A device that has my key but is no longer a target (it or its user left) must not read on.
    if (this.rotations.has(chatId) || Object.keys(shares).some((d) => !targets.has(d))) {
      await device.rotateSenderKey(chatId);
      await this.keys.save();
      this.rotations.delete(chatId);
      shares = {};
      this.shares.set(chatId, shares);
      const batch = new Batch();
      batch.kv.set("rotations", [...this.rotations]);
      batch.kv.set("shares", Object.fromEntries(this.shares));
      await this.local.apply(batch);
    }
    const { distributionId, message } = await device.senderKeyDistribution(chatId);
    const needed = [...targets].filter(([d]) => shares[d] !== distributionId);
    if (!needed.length) return;
    const sealed = envelopes.encodeSenderKeyEnvelope(chatId, distributionId, message);
    const recipients = [];
    for (const [deviceId, [userId, key]] of needed) {
      recipients.push({
        device_id: deviceId,
        ciphertext: toBase64(await this.keys.encryptTo(userId, deviceId, key, sealed)),
      });
    }
    await this.keys.save();
    await this.api.postSenderKey(chatId, distributionId, recipients);
    const next = { ...shares };
    for (const r of recipients) next[r.device_id] = distributionId;
    this.shares.set(chatId, next);
    await this.local.set("shares", Object.fromEntries(this.shares));
  }

  /** Replace the text of one of my messages (re-encrypted for the chat's current devices). */
  async edit(messageId, text) {
    const stored = await this.local.message(messageId);
    if (!stored) throw new Error("no such message here");
    const chat = await this.chatFor(stored.chat_id);
    if (!isEncrypted(chat)) {
      await this.api.editMessage(messageId, { body: text });
    } else {
      // The edit names the original by the client_id recorded here when it was sent or received.
      const plaintext = envelopes.encodeEnvelope(chat.id, { editOf: stored.client_id, text });
      await this._encrypted(chat, plaintext, (fields) => this.api.editMessage(messageId, fields));
    }
    const work = new Work();
    this.putMessage({ ...stored, text, edited_at: Date.now() }, work, { fromOthers: false });
    await this.store(work);
  }

  /** Delete a message for me, or for everyone. */
  async remove(messageId, scope) {
    await this.api.deleteMessage(messageId, scope);
    const stored = await this.local.message(messageId);
    if (!stored) return;
    const work = new Work();
    if (scope === "me") {
      work.batch.messages.set(messageId, null);
      work.touched.add(stored.chat_id);
    } else {
      this.putMessage({ ...stored, status: "deleted", text: null, attachments: [], reactions: [] }, work, {
        fromOthers: false,
      });
    }
    await this.store(work);
  }

  /** Drop a queued or failed message that never reached the server. */
  async discard(localId) {
    const record = await this.local.message(localId);
    if (!record) return;
    this.outbox.waits.delete(record.client_id);
    const work = new Work();
    work.batch.messages.set(localId, null);
    work.touched.add(record.chat_id);
    await this.store(work);
  }

  async react(messageId, emoji, add) {
    const answer = add ? await this.api.react(messageId, emoji) : await this.api.unreact(messageId, emoji);
    const stored = await this.local.message(messageId);
    if (!stored) return;
    const work = new Work();
    this.putMessage({ ...stored, reactions: answer.reactions }, work, { fromOthers: false });
    await this.store(work);
  }

  async setPinned(messageId, pinned) {
    await (pinned ? this.api.pin(messageId) : this.api.unpin(messageId));
  }

  /** Mark a chat read up to `seq` (what the user has seen). */
  async markRead(chatId, seq) {
    const chat = this.chats.get(chatId);
    if (!chat || seq <= (chat.last_read_seq ?? 0)) {
      if (chat?.unread_count) {
        const work = new Work();
        this.putChat({ ...chat, unread_count: 0 }, work);
        await this.store(work);
      }
      return;
    }
    await this.api.markRead(chatId, seq);
    const work = new Work();
    const unread = seq >= (chat.last_seq ?? 0) ? 0 : await this.local.countAfter(chatId, seq, this.userId);
    this.putChat({ ...(this.chats.get(chatId) ?? chat), last_read_seq: seq, unread_count: unread }, work);
    await this.store(work);
  }

  /** Forward a message of a plaintext chat into another plaintext chat (the server copies it). */
  async forward(messageId, chatId) {
    const sent = await this.api.forward(messageId, chatId, newClientId());
    const work = new Work();
    await this.inbox.deliverPlain(sent, work, false);
    await this.store(work);
    return sent;
  }

  typing(chatId, active) {
    this.socket?.send({ type: "typing", chat_id: chatId, active });
  }

  // ---- chats and members -------------------------------------------------------------------------------

  async createDirect(username) {
    const user = await this.api.userByUsername(username.trim().replace(/^@/, ""));
    if (user.id === this.userId) throw new Error("That is you: pick someone else.");
    const chat = await this.api.createChat({ type: "direct", member_ids: [user.id] });
    const work = new Work();
    const pinned = await this.rememberChat(chat, work);
    pinned.peer = { id: user.id, username: user.username, display_name: user.display_name };
    pinned.member_ids = [this.userId, user.id];
    work.after = [];
    this.putChat(pinned, work);
    await this.store(work);
    return pinned;
  }

  async _userIds(usernames) {
    const ids = [];
    for (const name of usernames) ids.push((await this.api.userByUsername(name.trim().replace(/^@/, ""))).id);
    return ids;
  }

  /** A group (encrypted unless asked otherwise) or a channel, with members given by username. */
  async createGroup({ type = "group", title, usernames = [], encrypted = true }) {
    const ids = await this._userIds(usernames);
    const body = { type, title, member_ids: ids };
    if (type === "group") body.encrypted = encrypted;
    const chat = await this.api.createChat(body);
    const work = new Work();
    const pinned = await this.rememberChat(chat, work);
    await this.store(work);
    return pinned;
  }

  async addMembers(chatId, usernames) {
    const ids = await this._userIds(usernames);
    const answer = await this.api.addMembers(chatId, ids);
    this.members.delete(chatId);
    return answer;
  }

  async removeMember(chatId, userId) {
    await this.api.removeMember(chatId, userId);
    this.members.delete(chatId);
    const work = new Work();
    this.needRotation(chatId, work);
    await this.store(work);
  }

  async leave(chatId) {
    await this.api.leaveChat(chatId);
    const work = new Work();
    this.forgetChat(chatId, work);
    await this.store(work);
  }

  async deleteChat(chatId) {
    await this.api.deleteChat(chatId);
    const work = new Work();
    this.forgetChat(chatId, work);
    await this.store(work);
  }

  /** A plaintext chat's history from the server, before `beforeSeq` (encrypted history is local only). */
  async loadHistory(chatId, beforeSeq = null) {
    const chat = await this.chatFor(chatId);
    if (!chat || isEncrypted(chat)) return { more: false };
    const page = await this.api.history(chatId, { before: beforeSeq ?? undefined, limit: 50 });
    const work = new Work();
    for (const message of page.items) {
      if (message.kind === "system") this.putMessage(this.inbox.systemRecord(message), work, { fromOthers: false });
      else if (message.deleted)
        this.putMessage({ ...this.inbox.record(message, {}), status: "deleted" }, work, { fromOthers: false });
      else await this.inbox.deliverPlain(message, work, true);
    }
    await this.store(work);
    return { more: page.next_before !== null };
  }

  async dismissNotice(id) {
    const notices = await this.local.notices();
    const notice = notices.find((n) => n.id === id);
    if (!notice) return;
    const batch = new Batch();
    batch.notices.push({ ...notice, dismissed: true });
    await this.local.apply(batch);
    this.notify({ what: "notices" });
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
