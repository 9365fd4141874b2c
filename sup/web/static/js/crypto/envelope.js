// The message plaintext format (docs/e2e.md "Message plaintext format"; encode_envelope and the checks in
// sup/client/client.py): what goes inside every ciphertext, as UTF-8 JSON.
//
//   a message:   {"v": 2, "chat_id", "client_id", "text"?, "data"?, "attachments"?, "reply_to"?, "sticker_id"?,
//                 "story"?: {"id", "author_id"}}
//   an edit:     {"v": 2, "chat_id", "edit_of", "text"?, ...}
//   a sender key (pairwise, never in a message): {"v": 2, "chat_id", "sender_key": {"distribution_id", "key"}}
//
// The checks are what stop a malicious server: the chat check (an envelope names the chat it arrived in)
// and the message check (an envelope names the message it was encrypted for, or the one it edits).
// Anything refused is a DecryptError, which the SDK reports as undecryptable.

import { fromBase64, fromUtf8, toBase64, utf8 } from "./bytes.js";
import { CryptoError, DecryptError } from "./errors.js";

export const ENVELOPE_VERSION = 2;

/**
 * @typedef {object} Attachment a file inside a message
 * @property {string} mediaId the uploaded blob (server-visible)
 * @property {Uint8Array} key 32-byte AES key
 * @property {Uint8Array} digest SHA-256 of the blob as uploaded
 * @property {number} size plaintext bytes
 * @property {string} [mime] only the envelope carries it
 * @property {string} [name] only the envelope carries it
 */

/** @param {Attachment} a */
function attachmentJson(a) {
  return {
    media_id: a.mediaId,
    key: toBase64(a.key),
    digest: toBase64(a.digest),
    size: a.size,
    mime: a.mime ?? "application/octet-stream",
    name: a.name ?? "",
  };
}

/**
 * The plaintext of a message, before encryption: a new message's own `clientId`, or for an edit the
 * `clientId` of the message it replaces (`editOf`); exactly one of the two. Keys come out in the order
 * the Python SDK writes them, so both encode the same message to the same bytes.
 * @param {string} chatId
 * @param {{clientId?: string, editOf?: string, text?: string, data?: Uint8Array, attachments?: Attachment[],
 *   replyTo?: string, stickerId?: string, story?: {id: string, author_id: string}}} fields
 * @returns {Uint8Array}
 */
export function encodeEnvelope(
  chatId,
  { clientId, editOf, text, data, attachments = [], replyTo, stickerId, story } = {},
) {
  if ((clientId === undefined) === (editOf === undefined)) {
    throw new CryptoError("a message envelope has either a client_id (a new message) or edit_of (an edit)");
  }
  const envelope = { v: ENVELOPE_VERSION, chat_id: chatId };
  if (clientId !== undefined) envelope.client_id = clientId;
  else envelope.edit_of = editOf;
  if (text !== undefined) envelope.text = text;
  if (data !== undefined) envelope.data = toBase64(data);
  if (attachments.length) envelope.attachments = attachments.map(attachmentJson);
  if (replyTo !== undefined) envelope.reply_to = replyTo;
  if (stickerId !== undefined) envelope.sticker_id = stickerId;
  if (story !== undefined) envelope.story = { id: story.id, author_id: story.author_id }; // the server never sees it
  return utf8(JSON.stringify(envelope));
}

/**
 * The pairwise envelope that carries our sender key for a chat.
 * @param {string} chatId @param {string} distributionId @param {Uint8Array} distribution the 86-byte message
 */
export function encodeSenderKeyEnvelope(chatId, distributionId, distribution) {
  return utf8(
    JSON.stringify({
      v: ENVELOPE_VERSION,
      chat_id: chatId,
      sender_key: { distribution_id: distributionId, key: toBase64(distribution) },
    }),
  );
}

/**
 * The chat check: decode a decrypted plaintext and refuse it unless it is a version 2 envelope naming the
 * chat it arrived in (pairwise sessions are per device pair, not per chat, so the server could otherwise
 * move a message into another chat with the same two devices). Unknown fields are ignored.
 * @param {Uint8Array} plaintext @param {string} chatId @returns {Record<string, any>}
 */
export function decodeEnvelope(plaintext, chatId) {
  let envelope;
  try {
    envelope = JSON.parse(fromUtf8(plaintext));
  } catch {
    throw new DecryptError("the plaintext is not a message envelope");
  }
  if (envelope === null || typeof envelope !== "object" || Array.isArray(envelope) || envelope.v !== ENVELOPE_VERSION) {
    throw new DecryptError("unknown envelope version");
  }
  if (envelope.chat_id !== chatId) throw new DecryptError("the envelope names another chat (replayed by the server?)");
  return envelope;
}

/**
 * The message check for a `message.new`: the envelope must carry this message's own client_id (chosen by
 * the sender before encrypting) and must not be an edit.
 * @param {Record<string, any>} envelope from decodeEnvelope @param {{client_id?: string}} message the event's message
 */
export function checkNewMessage(envelope, message) {
  if ("edit_of" in envelope) throw new DecryptError("an edit delivered as a new message (replayed by the server?)");
  if (typeof envelope.client_id !== "string" || envelope.client_id !== message.client_id) {
    throw new DecryptError("the envelope belongs to another message: its client_id differs (replayed?)");
  }
}

/**
 * The message check for a `message.edited`: the envelope must be an edit (no client_id of its own) of the
 * message whose client_id this device recorded when the original arrived (the server's copy counts only
 * for a message this device never read: the caller decides which to pass).
 * @param {Record<string, any>} envelope @param {string} originalClientId
 */
export function checkEdit(envelope, originalClientId) {
  if ("client_id" in envelope || typeof envelope.edit_of !== "string") {
    throw new DecryptError("a new message delivered as an edit (replayed by the server?)");
  }
  if (envelope.edit_of !== originalClientId)
    throw new DecryptError("the edit was made for another message (replayed by the server?)");
}

/**
 * The sender key an envelope carries, refused when its distribution id is not the `sender_key` event's.
 * @param {Record<string, any>} envelope @param {string} eventDistributionId
 * @returns {{distributionId: string, distribution: Uint8Array}}
 */
export function senderKeyOf(envelope, eventDistributionId) {
  const share = envelope.sender_key;
  if (share === null || typeof share !== "object") throw new DecryptError("not a sender key envelope");
  if (share.distribution_id !== eventDistributionId) {
    throw new DecryptError("the sender key names another distribution than its event");
  }
  try {
    return { distributionId: share.distribution_id, distribution: fromBase64(share.key) };
  } catch {
    throw new DecryptError("malformed sender key");
  }
}

/**
 * The attachments of an envelope, each with its key. In an end-to-end encrypted chat an attachment without
 * a key is refused: it would be fetched as the server serves it, with no digest to check.
 * @param {Record<string, any>} envelope @returns {Attachment[]}
 */
export function attachmentsOf(envelope) {
  const listed = envelope.attachments ?? [];
  if (!Array.isArray(listed)) throw new DecryptError("malformed envelope: attachments is not a list");
  return listed.map((a) => {
    try {
      if (a === null || typeof a !== "object") throw new CryptoError("not an object");
      if (!Number.isInteger(a.size) || a.size < 0) throw new CryptoError("bad size");
      const attachment = {
        mediaId: String(a.media_id),
        key: fromBase64(a.key),
        digest: fromBase64(a.digest),
        size: a.size,
        mime: String(a.mime || "application/octet-stream"),
        name: String(a.name || ""),
      };
      if (attachment.key.length !== 32 || attachment.digest.length !== 32) throw new CryptoError("no key");
      return attachment;
    } catch (error) {
      throw new DecryptError(`malformed envelope: an attachment without a valid key (${error.message})`);
    }
  });
}

/**
 * `reply_to` from the envelope only (never the server's cleartext copy); null when absent.
 * @param {Record<string, any>} envelope @returns {string | null}
 */
export function replyToOf(envelope) {
  const replyTo = envelope.reply_to ?? null;
  if (replyTo !== null && typeof replyTo !== "string")
    throw new DecryptError("malformed envelope: reply_to is not a message id");
  return replyTo;
}

/**
 * The sticker (`sticker_id`) and the story a message answers (`story`: {id, author_id}) from the envelope only
 * (a server could swap the cleartext sticker_id); either malformed is a DecryptError (malformed envelope).
 * @param {Record<string, any>} envelope @returns {{stickerId: string | null, story: {id: string, author_id: string} | null}}
 */
export function stickerAndStoryOf(envelope) {
  const stickerId = envelope.sticker_id ?? null;
  const story = envelope.story ?? null;
  if (stickerId !== null && typeof stickerId !== "string") throw new DecryptError("malformed envelope: sticker_id");
  if (story !== null && (typeof story !== "object" || typeof story.id !== "string" || typeof story.author_id !== "string")) {
    throw new DecryptError("malformed envelope: story");
  }
  return { stickerId, story: story && { id: story.id, author_id: story.author_id } };
}
