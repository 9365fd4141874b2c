// Receiving: every durable event of this device's stream, handled in order (the browser twin of the
// receiving half of sup/client/client.py). A batch of events becomes one `Work`: what it stores (one
// IndexedDB transaction), whether the crypto state moved, and what to do after the commit.
//
// Commit order, so a crash never loses a decrypted message nor shows one twice: (1) the messages and chats,
// (2) the crypto state, (3) the cursor, then the ack. Dying after (1) replays the events with the old crypto
// state: they decrypt again to the same records. Dying after (2) replays them into DuplicateMessage, and a
// message this device already stored is then skipped silently (only one it never stored is shown as lost).

import { fromBase64, toBase64 } from "../crypto/bytes.js";
import { CryptoError, DecryptError, DuplicateMessage, NoSession, UntrustedIdentity } from "../crypto/device.js";
import * as envelopes from "../crypto/envelope.js";
import { Batch } from "../store/db.js";
import { isEncrypted } from "./chats.js";
import { isCallFrame } from "./calls.js";

const GROUP_MESSAGE = 4; // second byte of a sender-key ciphertext (docs/e2e.md "Wire format")
const NOT_A_MEMBER = "the sender is not a member of this chat (removed; not added again since)";

/** What one batch of events changes, committed together. */
export class Work {
  constructor() {
    this.batch = new Batch();
    this.cryptoChanged = false;
    /** @type {(() => Promise<any>)[]} */
    this.after = [];
    /** message ids delivered or reported in this batch */
    this.shown = new Set();
    /** @type {Set<string>} chats whose messages changed */
    this.touched = new Set();
    this.chatsChanged = false;
    this.noticesChanged = false;
    /** @type {object[]} new messages from others, for notifications */
    this.incoming = [];
    /** @type {object[]} ephemeral frames (typing, presence) to pass on */
    this.ephemeral = [];
  }
}

export class Inbox {
  /** @param {import("./messenger.js").Messenger} messenger */
  constructor(messenger) {
    this.m = messenger;
  }

  get keys() {
    return this.m.keys;
  }
  get device() {
    return this.m.keys.device;
  }

  /** Handle one frame; a bad frame is logged and skipped (it must not stall the stream). */
  async handle(frame, work) {
    try {
      await this._handle(frame, work);
    } catch (error) {
      console.error(`could not handle ${frame.type} event ${frame.cursor}`, error);
    }
  }

  async _handle(frame, work) {
    const m = this.m;
    switch (frame.type) {
      case "message.new":
      case "message.edited":
        return this.receiveMessage(frame, work);
      case "sender_key":
        return this.receiveSenderKey(frame, work);
      case "keys.changed":
        return this.keysChanged(frame, work);
      case "message.deleted":
        return this.messageDeleted(frame, work);
      case "reaction.updated":
        return this.reactionUpdated(frame, work);
      case "message.pinned":
      case "message.unpinned":
        return this.pinned(frame, work, frame.type === "message.pinned");
      case "receipt.read":
        return this.receipt(frame, work);
      case "chat.created":
      case "chat.updated":
        await m.rememberChat(frame.chat, work);
        return;
      case "chat.member.added": {
        const chat = await m.rememberChat(frame.chat, work);
        m.members.delete(chat.id);
        work.after.push(() => m.membership.fetchMembers(chat.id));
        const added = frame.user_ids ?? [];
        this.membersBack(work, chat.id, added);
        if (added.includes(m.userId) && m.removed.has(chat.id)) {
          work.after.push(() => m.membership.recheckRemoved([chat.id]));
        }
        return;
      }
      case "chat.member.removed": {
        const { chat_id: chatId, user_id: userId } = frame;
        m.members.delete(chatId);
        const chat = await m.chatFor(chatId, work);
        if (userId === m.userId) {
          if (chat) m.putChat({ ...chat, left: true }, work);
          return;
        }
        await this.memberGone(work, chatId, userId);
        if (chat) m.putChat({ ...chat, member_ids: (chat.member_ids ?? []).filter((u) => u !== userId) }, work);
        if (chat && isEncrypted(chat) && chat.type === "group") m.needRotation(chatId, work);
        return;
      }
      case "chat.member.updated":
      case "chat.role.updated":
        m.members.delete(frame.chat_id);
        work.after.push(() => m.membership.refreshChat(frame.chat_id));
        return;
      case "chat.deleted":
        m.forgetChat(frame.chat_id, work);
        return;
      case "prekeys.low":
        work.after.push(() => m.keys.topUp());
        return;
      case "media.processed":
        work.ephemeral.push(frame);
        return;
      case "resync":
        // Events were pruned before we read them: caches may be stale, and what was missed is gone.
        m.members.clear();
        this.keys.forgetListed();
        work.after.push(() => m.membership.syncChats());
        if (m.removed.size) work.after.push(() => m.membership.recheckRemoved([...m.removed.keys()]));
        work.ephemeral.push(frame); // the state reads stories and sticker packs again
        return;
      case "typing":
      case "presence":
      case "stickers.installed":
      case "story.new":
      case "story.deleted":
      case "chat.join_request.new":
      case "chat.join_request.resolved":
        work.ephemeral.push(frame); // the state reads stickers and stories from the server again
        return;
      default:
        if (isCallFrame(frame)) return m.calls.onFrame(frame, work); // client/calls.js
        return;
    }
  }

  // ---- members who left ------------------------------------------------------------------------------

  async memberGone(work, chatId, userId) {
    const m = this.m;
    const removed = m.removed.get(chatId) ?? new Set();
    removed.add(userId);
    m.removed.set(chatId, removed);
    work.batch.kv.set("removed", m.dumpRemoved());
    if (await this.device.forgetSenderKeys(userId, null, { chatId })) work.cryptoChanged = true;
  }

  membersBack(work, chatId, userIds) {
    const m = this.m;
    const removed = m.removed.get(chatId);
    if (!removed || !userIds.some((u) => removed.has(u))) return;
    for (const u of userIds) removed.delete(u);
    if (!removed.size) m.removed.delete(chatId);
    work.batch.kv.set("removed", m.dumpRemoved());
  }

  // ---- keys ------------------------------------------------------------------------------------------

  async keysChanged(frame, work) {
    const m = this.m;
    const userId = frame.user_id;
    const deviceIds = frame.device_ids ?? [];
    this.keys.listed.delete(userId);
    if (frame.change === "added") work.after.push(() => this.keys.checkNewDevices(userId));
    if (frame.change === "removed") {
      const known = await this.keys.knownDevices(userId);
      for (const deviceId of deviceIds) {
        known.delete(deviceId);
        work.batch.forgetDevices.push([userId, deviceId]);
        if (await this.device.forgetSenderKeys(userId, deviceId)) work.cryptoChanged = true;
      }
    }
    if (frame.change === "removed" || frame.change === "identity") {
      for (const chat of m.chats.values()) {
        if (chat.type === "group" && isEncrypted(chat) && (chat.member_ids ?? []).includes(userId)) {
          m.needRotation(chat.id, work);
        }
      }
      // Not knowing the members of every group here, rotate where we have shared a key with that device.
      for (const [chatId, shares] of m.shares) {
        if (deviceIds.some((d) => d in shares)) m.needRotation(chatId, work);
      }
    }
    if (frame.change === "identity") {
      for (const deviceId of deviceIds) {
        if (this.device.hasSession(userId, deviceId)) {
          await this.device.forgetSession(userId, deviceId);
          work.cryptoChanged = true;
        }
        if (userId !== m.userId && (await this.keys.knownDevices(userId)).size) {
          work.batch.notices.push({
            type: "identity_changed",
            user_id: userId,
            device_id: deviceId,
            identity_key: null,
            at: Date.now(),
            dismissed: false,
          });
          work.noticesChanged = true;
        }
      }
    }
  }

  async pairwiseDecrypt(userId, deviceId, ciphertext, work) {
    let plaintext;
    try {
      plaintext = await this.device.decrypt(userId, deviceId, ciphertext);
    } catch (error) {
      if (!(error instanceof UntrustedIdentity)) throw error;
      await this.device.acceptIdentity(userId, deviceId, error.identityKey);
      await this.keys.identityChanged(userId, deviceId, error.identityKey, work.batch);
      work.noticesChanged = true;
      plaintext = await this.device.decrypt(userId, deviceId, ciphertext);
    }
    work.cryptoChanged = true;
    const identityKey = this.device.peerIdentity(userId, deviceId);
    if (identityKey !== null && (await this.keys.knownDevices(userId)).size) {
      // A device never listed to me, writing to me: a user met before has one more device.
      const notices = await this.keys.meetDevices(userId, new Map([[deviceId, identityKey]]), work.batch);
      if (notices.length) work.noticesChanged = true;
    }
    return plaintext;
  }

  // ---- messages --------------------------------------------------------------------------------------

  async receiveMessage(frame, work) {
    const m = this.m;
    const message = frame.message;
    const edited = frame.type === "message.edited";
    if (message.deleted) return;
    if (message.kind === "system") {
      if (!edited) m.putMessage(this.systemRecord(message), work, { fromOthers: false });
      return;
    }
    const sender = message.sender_id;
    const device = message.sender_device_id;
    if (device === m.deviceId) {
      // Mine, from this very device: stored when it was sent. In a plaintext chat keep the server's copy.
      const chat = await m.chatFor(message.chat_id, work);
      if (chat && !isEncrypted(chat)) await this.deliverPlain(message, work, edited);
      return;
    }
    const chatId = message.chat_id;
    const ciphertext = message.ciphertext ? fromBase64(message.ciphertext) : null;
    if (ciphertext === null && message.body !== null && message.body !== undefined) {
      const chat = await m.chatFor(chatId, work);
      if (chat === null || chat === undefined || isEncrypted(chat)) {
        // Only the server can have written it: members never send plaintext here.
        const where = chat ? "an end-to-end encrypted chat" : "an unknown chat";
        return this.undecryptable(work, message, `a plaintext message in ${where} (refused)`, edited);
      }
      return this.deliverPlain(message, work, edited);
    }
    if (ciphertext === null || !sender || !device) {
      return this.undecryptable(work, message, "no ciphertext for this device", edited);
    }
    if (m.removed.get(chatId)?.has(sender)) return this.undecryptable(work, message, NOT_A_MEMBER, edited);
    let envelope;
    let original;
    try {
      let plaintext;
      if (ciphertext.length > 1 && ciphertext[1] === GROUP_MESSAGE) {
        try {
          plaintext = await this.device.groupDecrypt(chatId, sender, device, ciphertext);
        } catch (error) {
          if (!(error instanceof NoSession)) throw error;
          // Its sender key has not arrived yet: keep it until the sender_key event does.
          work.batch.pending.set(message.id, {
            message_id: message.id,
            chat_id: chatId,
            sender,
            device,
            frame: { type: frame.type, message },
          });
          return;
        }
        work.cryptoChanged = true;
      } else {
        plaintext = await this.pairwiseDecrypt(sender, device, ciphertext, work);
      }
      envelope = envelopes.decodeEnvelope(plaintext, chatId);
      original = await this.boundTo(message, envelope, edited, work);
    } catch (error) {
      if (error instanceof DuplicateMessage) return this.duplicate(work, message);
      if (error instanceof CryptoError || error instanceof TypeError) {
        return this.undecryptable(work, message, `${error.name}: ${error.message}`, edited);
      }
      throw error;
    }
    return this.deliver(work, message, envelope, { edited, original });
  }

  async receiveSenderKey(frame, work) {
    const m = this.m;
    const { chat_id: chatId, sender_user_id: sender, sender_device_id: device } = frame;
    try {
      const plaintext = await this.pairwiseDecrypt(sender, device, fromBase64(frame.ciphertext), work);
      const envelope = envelopes.decodeEnvelope(plaintext, chatId);
      const share = envelopes.senderKeyOf(envelope, frame.distribution_id);
      if (m.removed.get(chatId)?.has(sender)) {
        console.warn(`sender key from ${sender}/${device} for ${chatId} refused: not a member`);
        for (const p of await this.waiting(work, chatId, sender, device)) {
          work.batch.pending.set(p.message_id, null);
          await this.undecryptable(work, p.frame.message, NOT_A_MEMBER, p.frame.type === "message.edited");
        }
        return;
      }
      await this.device.processSenderKeyDistribution(chatId, sender, device, share.distribution);
    } catch (error) {
      if (error instanceof DuplicateMessage) return;
      if (error instanceof CryptoError || error instanceof TypeError) {
        console.warn(`sender key from ${sender}/${device} for ${chatId} refused`, error);
        return;
      }
      throw error;
    }
    work.cryptoChanged = true;
    const seen = new Set();
    for (const p of await this.waiting(work, chatId, sender, device)) {
      const message = p.frame.message;
      if (seen.has(message.id)) continue;
      seen.add(message.id);
      const edited = p.frame.type === "message.edited";
      let envelope;
      let original;
      try {
        const plaintext = await this.device.groupDecrypt(chatId, sender, device, fromBase64(message.ciphertext));
        envelope = envelopes.decodeEnvelope(plaintext, chatId);
        original = await this.boundTo(message, envelope, edited, work);
      } catch (error) {
        if (error instanceof NoSession) continue; // another distribution still to come
        work.batch.pending.set(message.id, null);
        if (error instanceof DuplicateMessage) await this.duplicate(work, message);
        else await this.undecryptable(work, message, `${error.name}: ${error.message}`, edited);
        continue;
      }
      work.batch.pending.set(message.id, null);
      await this.deliver(work, message, envelope, { edited, original });
    }
  }

  /** Group messages of one sender device waiting for its key: stored ones and this batch's. */
  async waiting(work, chatId, sender, device) {
    const stored = await this.m.local.pendingFor(chatId, sender, device);
    const here = [...work.batch.pending.values()].filter(
      (p) => p !== null && p.chat_id === chatId && p.sender === sender && p.device === device,
    );
    const byId = new Map();
    for (const p of [...stored, ...here]) if (work.batch.pending.get(p.message_id) !== null) byId.set(p.message_id, p);
    return [...byId.values()];
  }

  async duplicate(work, message) {
    // Keys used before: fine if this device has it, else it was lost and must say so.
    if (work.shown.has(message.id) || (await this.m.storedMessage(message.id, work))) return;
    await this.undecryptable(work, message, "its message keys were already used, but this device never showed it");
  }

  /**
   * The message check (docs/e2e.md): an envelope was encrypted for this very message; for an edit, what this
   * device has of the original (null if nothing).
   */
  async boundTo(message, envelope, edited, work) {
    if (!edited) {
      envelopes.checkNewMessage(envelope, message);
      return null;
    }
    if ("client_id" in envelope || typeof envelope.edit_of !== "string") {
      throw new DecryptError("a new message delivered as an edit (replayed by the server?)");
    }
    const stored = await this.m.storedMessage(message.id, work);
    if (stored && stored.seq !== message.seq) {
      throw new DecryptError("the edited message is not where this device has it (seq changed by the server?)");
    }
    // The client_id recorded when the original arrived; the server's word only if this device never read it.
    envelopes.checkEdit(envelope, stored?.client_id || message.client_id);
    return stored ?? null;
  }

  async deliver(work, message, envelope, { edited, original }) {
    const m = this.m;
    let attachments;
    let replyTo;
    let extra;
    try {
      attachments = envelopes.attachmentsOf(envelope).map((a) => ({
        media_id: a.mediaId,
        key: toBase64(a.key),
        digest: toBase64(a.digest),
        size: a.size,
        mime: a.mime,
        name: a.name,
      }));
      replyTo = edited ? (original?.reply_to ?? null) : envelopes.replyToOf(envelope);
      // As reply_to: from the envelope, never the server's copy; an edit keeps the original's.
      const { stickerId, story } = edited
        ? { stickerId: original?.sticker_id ?? null, story: original?.story ?? null }
        : envelopes.stickerAndStoryOf(envelope);
      extra = { sticker_id: stickerId, story };
    } catch (error) {
      return this.undecryptable(work, message, `${error.name}: ${error.message}`, edited);
    }
    const text = typeof envelope.text === "string" ? envelope.text : null;
    if (edited) {
      const base = original ?? this.record(message, { client_id: envelope.edit_of, reply_to: null });
      m.putMessage(
        { ...base, text, attachments: base.attachments ?? attachments, edited_at: message.edited_at ?? Date.now() },
        work,
        {
          fromOthers: false,
        },
      );
      work.shown.add(message.id);
      return;
    }
    const record = this.record(message, { client_id: envelope.client_id, reply_to: replyTo, text, attachments, ...extra });
    m.putMessage(record, work, { fromOthers: message.sender_id !== m.userId });
    work.shown.add(message.id);
  }

  async deliverPlain(message, work, edited) {
    const m = this.m;
    const existing = await m.storedMessage(message.id, work);
    const attachments = message.media_id ? [{ media_id: message.media_id, size: 0, mime: "", name: "" }] : [];
    const record = {
      ...(existing ?? {}),
      ...this.record(message, { client_id: message.client_id, reply_to: message.reply_to ?? null }),
      text: message.body ?? "",
      sticker_id: message.sticker_id ?? null,
      attachments,
      encrypted: false,
    };
    if (existing?.reactions && !message.reactions?.length) record.reactions = existing.reactions;
    if (message.sender_device_id === m.deviceId) work.batch.messages.set(`local:${message.client_id}`, null);
    m.putMessage(record, work, { fromOthers: !edited && !existing && message.sender_id !== m.userId });
    work.shown.add(message.id);
  }

  record(message, fields) {
    return {
      id: message.id,
      chat_id: message.chat_id,
      seq: message.seq,
      sender_id: message.sender_id ?? null,
      sender_device_id: message.sender_device_id ?? null,
      kind: message.kind,
      status: "ok",
      text: null,
      attachments: [],
      created_at: message.created_at ?? Date.now(),
      edited_at: message.edited_at ?? null,
      reactions: message.reactions ?? [],
      forwarded_from: message.forwarded_from ?? null,
      encrypted: true,
      ...fields,
    };
  }

  systemRecord(message) {
    let action = {};
    try {
      action = JSON.parse(message.body ?? "{}");
    } catch {
      action = {};
    }
    return { ...this.record(message, { client_id: message.client_id }), status: "system", action, encrypted: false };
  }

  async undecryptable(work, message, reason, edited = false) {
    console.warn(`message ${message.id} in ${message.chat_id} is undecryptable: ${reason}`);
    work.shown.add(message.id);
    if (edited) return; // a refused edit is reported; the message stays as this device had it
    this.m.putMessage(
      { ...this.record(message, { client_id: message.client_id }), status: "undecryptable", reason },
      work,
      {
        fromOthers: false,
      },
    );
  }

  // ---- what happens to messages ----------------------------------------------------------------------

  async messageDeleted(frame, work) {
    const m = this.m;
    const stored = await m.storedMessage(frame.message_id, work);
    if (!frame.for_everyone) {
      work.batch.messages.set(frame.message_id, null);
      work.touched.add(frame.chat_id);
      return;
    }
    const base = stored ?? { id: frame.message_id, chat_id: frame.chat_id, seq: frame.seq, created_at: Date.now() };
    m.putMessage({ ...base, status: "deleted", text: null, attachments: [], reactions: [] }, work, {
      fromOthers: false,
    });
  }

  async reactionUpdated(frame, work) {
    const m = this.m;
    const stored = await m.storedMessage(frame.message_id, work);
    if (!stored) return;
    const reactions = (stored.reactions ?? []).filter((r) => r.emoji !== frame.emoji);
    const before = (stored.reactions ?? []).find((r) => r.emoji === frame.emoji);
    const me = frame.user_id === m.userId ? frame.added : (before?.me ?? false);
    if (frame.count > 0) reactions.push({ emoji: frame.emoji, count: frame.count, me });
    m.putMessage({ ...stored, reactions }, work, { fromOthers: false });
  }

  async pinned(frame, work, on) {
    const m = this.m;
    const chat = await m.chatFor(frame.chat_id, work);
    if (chat) {
      const pins = (chat.pinned_ids ?? []).filter((id) => id !== frame.message_id);
      if (on) pins.push(frame.message_id);
      m.putChat({ ...chat, pinned_ids: pins }, work);
    }
    const stored = await m.storedMessage(frame.message_id, work);
    if (stored) m.putMessage({ ...stored, pinned: on }, work, { fromOthers: false });
  }

  async receipt(frame, work) {
    const m = this.m;
    const chat = await m.chatFor(frame.chat_id, work);
    if (!chat) return;
    if (frame.user_id === m.userId) {
      const lastRead = Math.max(chat.last_read_seq ?? 0, frame.seq);
      const unread = lastRead >= (chat.last_seq ?? 0) ? 0 : await m.local.countAfter(chat.id, lastRead, m.userId);
      m.putChat({ ...chat, last_read_seq: lastRead, unread_count: unread }, work);
    } else {
      const readBy = { ...(chat.read_by ?? {}) };
      readBy[frame.user_id] = Math.max(readBy[frame.user_id] ?? 0, frame.seq);
      m.putChat({ ...chat, read_by: readBy }, work);
    }
  }
}
