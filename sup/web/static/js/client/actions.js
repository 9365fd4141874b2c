// What the user does to messages, for the messenger (messenger.js): edit, delete, react, pin, mark read,
// forward; a plaintext chat's history; notices dismissed.

import * as envelopes from "../crypto/envelope.js";
import { Batch } from "../store/db.js";
import { isEncrypted, newClientId } from "./chats.js";
import { Work } from "./receive.js";

export class MessageActions {
  /** @param {import("./messenger.js").Messenger} messenger */
  constructor(messenger) {
    this.m = messenger;
  }

  /** Replace the text of one of my messages (re-encrypted for the chat's current devices). */
  async edit(messageId, text) {
    const stored = await this.m.local.message(messageId);
    if (!stored) throw new Error("no such message here");
    const chat = await this.m.chatFor(stored.chat_id);
    if (!isEncrypted(chat)) {
      await this.m.api.editMessage(messageId, { body: text });
    } else {
      // The edit names the original by the client_id recorded here when it was sent or received.
      const plaintext = envelopes.encodeEnvelope(chat.id, { editOf: stored.client_id, text });
      await this.m.sender.encrypted(chat, plaintext, (fields) => this.m.api.editMessage(messageId, fields));
    }
    const work = new Work();
    this.m.putMessage({ ...stored, text, edited_at: Date.now() }, work, { fromOthers: false });
    await this.m.store(work);
  }

  /** Delete a message for me, or for everyone. */
  async remove(messageId, scope) {
    await this.m.api.deleteMessage(messageId, scope);
    const stored = await this.m.local.message(messageId);
    if (!stored) return;
    const work = new Work();
    if (scope === "me") {
      work.batch.messages.set(messageId, null);
      work.touched.add(stored.chat_id);
    } else {
      this.m.putMessage({ ...stored, status: "deleted", text: null, attachments: [], reactions: [] }, work, {
        fromOthers: false,
      });
    }
    await this.m.store(work);
  }

  async react(messageId, emoji, add) {
    const answer = add ? await this.m.api.react(messageId, emoji) : await this.m.api.unreact(messageId, emoji);
    const stored = await this.m.local.message(messageId);
    if (!stored) return;
    const work = new Work();
    this.m.putMessage({ ...stored, reactions: answer.reactions }, work, { fromOthers: false });
    await this.m.store(work);
  }

  async setPinned(messageId, pinned) {
    await (pinned ? this.m.api.pin(messageId) : this.m.api.unpin(messageId));
  }

  /** Mark a chat read up to `seq` (what the user has seen). */
  async markRead(chatId, seq) {
    const chat = this.m.chats.get(chatId);
    if (!chat || seq <= (chat.last_read_seq ?? 0)) {
      if (chat?.unread_count) {
        const work = new Work();
        this.m.putChat({ ...chat, unread_count: 0 }, work);
        await this.m.store(work);
      }
      return;
    }
    await this.m.api.markRead(chatId, seq);
    const work = new Work();
    const unread = seq >= (chat.last_seq ?? 0) ? 0 : await this.m.local.countAfter(chatId, seq, this.m.userId);
    this.m.putChat({ ...(this.m.chats.get(chatId) ?? chat), last_read_seq: seq, unread_count: unread }, work);
    await this.m.store(work);
  }

  /** Forward a message of a plaintext chat into another plaintext chat (the server copies it). */
  async forward(messageId, chatId) {
    const sent = await this.m.api.forward(messageId, chatId, newClientId());
    const work = new Work();
    await this.m.inbox.deliverPlain(sent, work, false);
    await this.m.store(work);
    return sent;
  }

  /** A plaintext chat's history from the server, before `beforeSeq` (encrypted history is local only). */
  async loadHistory(chatId, beforeSeq = null) {
    const chat = await this.m.chatFor(chatId);
    if (!chat || isEncrypted(chat)) return { more: false };
    const page = await this.m.api.history(chatId, { before: beforeSeq ?? undefined, limit: 50 });
    const work = new Work();
    for (const message of page.items) {
      if (message.kind === "system") this.m.putMessage(this.m.inbox.systemRecord(message), work, { fromOthers: false });
      else if (message.deleted)
        this.m.putMessage({ ...this.m.inbox.record(message, {}), status: "deleted" }, work, { fromOthers: false });
      else await this.m.inbox.deliverPlain(message, work, true);
    }
    await this.m.store(work);
    return { more: page.next_before !== null };
  }

  async dismissNotice(id) {
    const notices = await this.m.local.notices();
    const notice = notices.find((n) => n.id === id);
    if (!notice) return;
    const batch = new Batch();
    batch.notices.push({ ...notice, dismissed: true });
    await this.m.local.apply(batch);
    this.m.notify({ what: "notices" });
  }
}
