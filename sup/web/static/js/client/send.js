// Sending, for the messenger (messenger.js): a local copy shown at once, then the outbox (outbox.js) or, for
// a file, an upload and the message at once; pairwise encryption in direct chats, sender keys in encrypted
// groups. The browser twin of the sending half of `Client` in sup/client/client.py.
//
// Pairwise: device_mismatch (409) and stale_devices (410) are answered by refetching the device lists and
// encrypting again under the same client_id. Sender keys: distributed pairwise before the first message and
// rotated when a member or device goes away or the server says sender_key_required. Every device of a user met
// after the first contact is announced (a notice) before anything is encrypted to it.

import { fromBase64, toBase64 } from "../crypto/bytes.js";
import { encryptAttachment } from "../crypto/attachments.js";
import * as envelopes from "../crypto/envelope.js";
import { ApiError } from "../api/http.js";
import { Batch } from "../store/db.js";
import { isEncrypted, newClientId } from "./chats.js";
import { DeviceGone, MemberWithoutDevice } from "./keys.js";
import { Work } from "./receive.js";

const SEND_ATTEMPTS = 6; // device lists can change between fetch and send; each retry refetches
const PAIRWISE_RETRIES = new Set(["device_mismatch", "stale_devices", "device_gone"]);
const GROUP_RETRIES = new Set(["sender_key_required", "sender_key_missing", "device_mismatch", "device_gone"]);
export const LOCAL_SEQ = 1e15; // pending messages sort after every stored one
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// 0, 0.25, 1, 2.25, 4 s: about 7 s in all for a new device of a member to publish its keys
const backoff = (attempt) => 250 * attempt * attempt;

export class Sender {
  /** @param {import("./messenger.js").Messenger} messenger */
  constructor(messenger) {
    this.m = messenger;
    this._lastLocal = 0; // the seq of the newest local copy
  }

  /** A chat's members (user ids): the cache, else the server's list, kept on the chat too. */
  async memberIds(chatId) {
    let members = this.m.members.get(chatId);
    if (members === undefined) {
      members = (await this.m.api.members(chatId)).map((m) => m.user_id);
      this.m.members.set(chatId, members);
      const chat = this.m.chats.get(chatId);
      if (chat && JSON.stringify(chat.member_ids ?? []) !== JSON.stringify(members)) {
        const work = new Work();
        this.m.putChat({ ...chat, member_ids: members }, work);
        await this.m.local.apply(work.batch);
      }
    }
    return members;
  }

  /** device id -> [user id, identity key] for every device that must read what I send in a chat. */
  async recipients(chatId) {
    const users = [...new Set([...(await this.memberIds(chatId)), this.m.userId])].sort();
    const out = new Map();
    let announced = false;
    for (const userId of users) {
      const devices = await this.m.keys.userDevices(userId);
      if ((await this.m.keys.meetDevices(userId, devices)).length) announced = true; // shown before encrypting
      for (const [deviceId, key] of devices) if (deviceId !== this.m.deviceId) out.set(deviceId, [userId, key]);
    }
    if (announced) this.m.notify({ what: "notices" });
    return out;
  }

  /** A local copy of what is being sent, shown at once; replaced by the stored message when it is sent. */
  async _pending(chatId, clientId, fields) {
    const work = new Work();
    // Strictly increasing: the outbox sends in this order, and two messages may be written the same millisecond.
    this._lastLocal = Math.max(this._lastLocal + 1, LOCAL_SEQ + Date.now());
    const record = {
      id: `local:${clientId}`,
      chat_id: chatId,
      seq: this._lastLocal,
      sender_id: this.m.userId,
      sender_device_id: this.m.deviceId,
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
      encrypted: isEncrypted(this.m.chats.get(chatId)),
      retry: fields.retry ?? null,
    };
    this.m.putMessage(record, work, { fromOthers: false });
    await this.m.store(work);
    return record;
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
    const chat = await this.m.chatFor(chatId);
    if (!chat) throw new Error("no such chat");
    if (story && !isEncrypted(chat)) throw new Error("a reply to a story goes to the author's direct chat");
    if (file) return this._sendFile(chat, clientId, fields);
    const content = { text: text ?? null, replyTo, stickerId, story };
    const settled = this.m.outbox.settled(clientId);
    await this._pending(chatId, clientId, { ...content, kind: stickerId ? "sticker" : "text", retry: content });
    this.m.outbox.flush({ chatId }).catch(() => {}); // its outcome comes through `settled`
    return settled;
  }

  /** Send a queued message (outbox.js): delivered, then stored in place of its local copy. */
  async deliverQueued(record) {
    const chat = await this.m.chatFor(record.chat_id);
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
    this.m.putMessage(
      {
        id: sent.id,
        chat_id: chat.id,
        seq: sent.seq,
        sender_id: this.m.userId,
        sender_device_id: this.m.deviceId,
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
    await this.m.store(work);
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
      await this.m.replaceLocal({ ...pending, status: "failed", reason: error.message });
      throw error;
    }
  }

  /** Send a failed message again (same client id: never twice). */
  async retry(localId) {
    const record = await this.m.local.message(localId);
    if (!record || record.status !== "failed" || !record.retry) return;
    const work = new Work();
    work.batch.messages.set(localId, null);
    work.touched.add(record.chat_id);
    await this.m.store(work);
    return this.send(record.chat_id, { ...record.retry, clientId: record.client_id });
  }

  /** Drop a queued or failed message that never reached the server. */
  async discard(localId) {
    const record = await this.m.local.message(localId);
    if (!record) return;
    this.m.outbox.waits.delete(record.client_id);
    const work = new Work();
    work.batch.messages.set(localId, null);
    work.touched.add(record.chat_id);
    await this.m.store(work);
  }

  async _upload(chat, file, name, mime) {
    if (isEncrypted(chat)) {
      const { blob, key } = await encryptAttachment(new Uint8Array(await file.arrayBuffer()));
      const media = await this.m.api.upload(blob, { encrypted: true });
      return {
        media_id: media.id,
        key: toBase64(key.key),
        digest: toBase64(key.digest),
        size: key.size,
        mime,
        name,
      };
    }
    const media = await this.m.api.upload(file, { filename: name || "file" });
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
        return await this.m.api.sendMessage({ ...common, ...fields });
      } catch (error) {
        // Sent before (a retry after a lost answer) with other bytes: the original stands.
        if (error instanceof ApiError && error.code === "client_id_reused" && error.body.message_id) {
          return this.m.api.message(error.body.message_id);
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
    return this.encrypted(chat, plaintext, sent);
  }

  /** Encrypt for the chat (pairwise or with its sender key) and hand the fields to `deliver`. */
  encrypted(chat, plaintext, deliver) {
    if (!isEncrypted(chat)) throw new Error(`chat ${chat.id} is not end-to-end encrypted`);
    return chat.type === "group"
      ? this._sendGroup(chat.id, plaintext, deliver)
      : this._sendPairwise(chat.id, plaintext, deliver);
  }

  /** The other members of a chat that have no device with published keys, as the directory says now. */
  async withoutDevices(chatId) {
    this.m.members.delete(chatId);
    const others = (await this.memberIds(chatId)).filter((u) => u !== this.m.userId);
    this.m.keys.forgetListed(others);
    const without = [];
    for (const userId of others) if (!(await this.m.keys.userDevices(userId)).size) without.push(userId);
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
        const recipients = await this.m._exclusive(async () => {
          try {
            const out = [];
            for (const [deviceId, [userId, key]] of targets) {
              const ciphertext = await this.m.keys.encryptTo(userId, deviceId, key, plaintext);
              out.push({ device_id: deviceId, ciphertext: toBase64(ciphertext) });
            }
            return out;
          } finally {
            await this.m.keys.save(); // an encryption that happened must never be forgotten
          }
        });
        return await deliver({ recipients });
      } catch (error) {
        const code = error instanceof DeviceGone ? "device_gone" : error instanceof ApiError ? error.code : null;
        if (!PAIRWISE_RETRIES.has(code) || attempt === SEND_ATTEMPTS - 1) throw error;
        this.m.members.delete(chatId);
        const listed = error.body?.devices ?? [];
        this.m.keys.forgetListed(listed.length ? listed.map((d) => d.user_id) : null);
        await sleep(backoff(attempt)); // a device that just logged in publishes its keys next
      }
    }
  }

  async _sendGroup(chatId, plaintext, deliver) {
    for (let attempt = 0; ; attempt++) {
      try {
        const targets = await this.recipients(chatId);
        const ciphertext = await this.m._exclusive(async () => {
          try {
            await this._shareSenderKey(chatId, targets);
            return await this.m.keys.device.groupEncrypt(chatId, plaintext);
          } finally {
            await this.m.keys.save();
          }
        });
        return await deliver({ ciphertext: toBase64(ciphertext) });
      } catch (error) {
        const code = error instanceof DeviceGone ? "device_gone" : error instanceof ApiError ? error.code : null;
        if (!GROUP_RETRIES.has(code) || attempt === SEND_ATTEMPTS - 1) throw error;
        this.m.members.delete(chatId);
        const work = new Work();
        if (code === "sender_key_required") {
          this.m.needRotation(chatId, work); // the server forgot the chat's sender keys: a member left
        } else if (code === "sender_key_missing") {
          const shares = { ...(this.m.shares.get(chatId) ?? {}) };
          for (const d of error.body.missing_devices ?? []) delete shares[d];
          this.m.shares.set(chatId, shares);
          work.batch.kv.set("shares", Object.fromEntries(this.m.shares));
        }
        await this.m.local.apply(work.batch);
        if (code !== "sender_key_required") {
          this.m.keys.forgetListed();
          await sleep(backoff(attempt));
        }
      }
    }
  }

  /** Make sure every target device holds my current sender key for the chat (inside _exclusive). */
  async _shareSenderKey(chatId, targets) {
    const device = this.m.keys.device;
    let shares = this.m.shares.get(chatId) ?? {};
    // A device that has my key but is no longer a target (it or its user left) must not read on.
    if (this.m.rotations.has(chatId) || Object.keys(shares).some((d) => !targets.has(d))) {
      await device.rotateSenderKey(chatId);
      await this.m.keys.save();
      this.m.rotations.delete(chatId);
      shares = {};
      this.m.shares.set(chatId, shares);
      const batch = new Batch();
      batch.kv.set("rotations", [...this.m.rotations]);
      batch.kv.set("shares", Object.fromEntries(this.m.shares));
      await this.m.local.apply(batch);
    }
    const { distributionId, message } = await device.senderKeyDistribution(chatId);
    const needed = [...targets].filter(([d]) => shares[d] !== distributionId);
    if (!needed.length) return;
    const sealed = envelopes.encodeSenderKeyEnvelope(chatId, distributionId, message);
    const recipients = [];
    for (const [deviceId, [userId, key]] of needed) {
      recipients.push({
        device_id: deviceId,
        ciphertext: toBase64(await this.m.keys.encryptTo(userId, deviceId, key, sealed)),
      });
    }
    await this.m.keys.save();
    await this.m.api.postSenderKey(chatId, distributionId, recipients);
    const next = { ...shares };
    for (const r of recipients) next[r.device_id] = distributionId;
    this.m.shares.set(chatId, next);
    await this.m.local.set("shares", Object.fromEntries(this.m.shares));
  }
}
