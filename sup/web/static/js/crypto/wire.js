// The versioned binary wire format (docs/e2e.md "Wire format"; sup/client/crypto/wire.py): every byte a
// peer must produce or parse. Every structure starts with a version byte and a type byte, and a parser
// rejects any other version. Pairwise and group messages are at VERSION 2 (the sender's and recipient's
// addresses are authenticated); sender key distributions and attachment blobs did not change and stay at 1.

import { concat, lp, readUint32, uint32, uuidFromBytes, uuidToBytes } from "./bytes.js";
import { CryptoError, DecryptError } from "./errors.js";

export const VERSION = 2;
export const DISTRIBUTION_VERSION = 1;
export const ATTACHMENT_VERSION = 1;
export const KEY_SIZE = 32;
export const SIGNATURE_SIZE = 64;
export const TAG_SIZE = 16;
export const NONCE_SIZE = 12;

/** The second byte of every structure. */
export const MessageType = Object.freeze({
  PREKEY_MESSAGE: 1,
  MESSAGE: 2,
  SENDER_KEY_DISTRIBUTION: 3,
  GROUP_MESSAGE: 4,
  ATTACHMENT: 5,
});

const PREKEY_HEAD_SIZE = 71; // version, type, identity key, base key, signed prekey id, one-time flag
const RATCHET_HEADER_SIZE = 41; // version, ratchet key, PN, N
const DISTRIBUTION_SIZE = 86;
const GROUP_HEAD_SIZE = 22;

/**
 * @typedef {object} PrekeyHeader the X3DH part of an initial message
 * @property {Uint8Array} identityKey the sender's Ed25519 identity key
 * @property {Uint8Array} baseKey the sender's ephemeral X25519 key
 * @property {number} signedPrekeyId
 * @property {number | null} oneTimePrekeyId
 *
 * @typedef {object} RatchetMessage a Double Ratchet header plus AES-256-GCM ciphertext (tag included)
 * @property {Uint8Array} ratchetKey
 * @property {number} previousChainLength PN
 * @property {number} index N
 * @property {Uint8Array} ciphertext
 *
 * @typedef {object} Envelope a pairwise message; an initial (prekey) message when `prekey` is set
 * @property {PrekeyHeader | null} prekey
 * @property {RatchetMessage} message
 */

/** One device's address as authenticated: lp(user_id) || lp(device_id). */
export function addressBytes(userId, deviceId) {
  return concat(lp(userId), lp(deviceId));
}

/**
 * What follows 0xED || IK_A || 0xED || IK_B in a session's associated data: both addresses, the
 * initiator's (the sender of the prekey message) first, on both sides.
 * @param {[string, string]} initiator @param {[string, string]} responder
 */
export function sessionAdAppendix(initiator, responder) {
  return concat(addressBytes(...initiator), addressBytes(...responder));
}

/** The 41-byte ratchet header authenticated with every message: 0x02 || ratchet key || PN || N. */
export function ratchetHeader(ratchetKey, previousChainLength, index) {
  if (ratchetKey.length !== KEY_SIZE) throw new CryptoError("a ratchet key is 32 bytes");
  return concat(new Uint8Array([VERSION]), ratchetKey, uint32(previousChainLength), uint32(index));
}

/** Serialise a pairwise message. @param {Envelope} envelope @returns {Uint8Array} */
export function encodeEnvelope({ prekey, message }) {
  const body = concat(
    ratchetHeader(message.ratchetKey, message.previousChainLength, message.index).subarray(1),
    message.ciphertext,
  );
  if (prekey === null) return concat(new Uint8Array([VERSION, MessageType.MESSAGE]), body);
  const hasOneTime = prekey.oneTimePrekeyId !== null;
  return concat(
    new Uint8Array([VERSION, MessageType.PREKEY_MESSAGE]),
    prekey.identityKey,
    prekey.baseKey,
    uint32(prekey.signedPrekeyId),
    new Uint8Array([hasOneTime ? 1 : 0]),
    hasOneTime ? uint32(prekey.oneTimePrekeyId) : new Uint8Array(0),
    body,
  );
}

/** Parse a pairwise message; anything malformed is a DecryptError. @param {Uint8Array} data @returns {Envelope} */
export function decodeEnvelope(data) {
  if (!(data instanceof Uint8Array) || data.length < 2 || data[0] !== VERSION) {
    throw new DecryptError("unsupported envelope version");
  }
  let offset = 2;
  let prekey = null;
  if (data[1] === MessageType.PREKEY_MESSAGE) {
    if (data.length < PREKEY_HEAD_SIZE) throw new DecryptError("truncated prekey message");
    const flag = data[70];
    offset = PREKEY_HEAD_SIZE;
    let oneTimePrekeyId = null;
    if (flag === 1) {
      if (data.length < offset + 4) throw new DecryptError("truncated prekey message");
      oneTimePrekeyId = readUint32(data, offset);
      offset += 4;
    } else if (flag !== 0) {
      throw new DecryptError("bad one-time prekey flag");
    }
    prekey = {
      identityKey: data.slice(2, 34),
      baseKey: data.slice(34, 66),
      signedPrekeyId: readUint32(data, 66),
      oneTimePrekeyId,
    };
  } else if (data[1] !== MessageType.MESSAGE) {
    throw new DecryptError("not a pairwise message");
  }
  const headerSize = RATCHET_HEADER_SIZE - 1;
  if (data.length < offset + headerSize + TAG_SIZE) throw new DecryptError("truncated message");
  return {
    prekey,
    message: {
      ratchetKey: data.slice(offset, offset + 32),
      previousChainLength: readUint32(data, offset + 32),
      index: readUint32(data, offset + 36),
      ciphertext: data.slice(offset + headerSize),
    },
  };
}

/**
 * @typedef {object} SenderKeyDistribution a sender key's chain state at `iteration` (86 bytes on the wire)
 * @property {string} distributionId a UUID
 * @property {number} iteration
 * @property {Uint8Array} chainKey
 * @property {Uint8Array} signingKey Ed25519 public key
 */

/** @param {SenderKeyDistribution} d @returns {Uint8Array} */
export function encodeDistribution(d) {
  if (d.chainKey.length !== KEY_SIZE || d.signingKey.length !== KEY_SIZE) throw new CryptoError("bad key size");
  return concat(
    new Uint8Array([DISTRIBUTION_VERSION, MessageType.SENDER_KEY_DISTRIBUTION]),
    uuidToBytes(d.distributionId),
    uint32(d.iteration),
    d.chainKey,
    d.signingKey,
  );
}

/**
 * Parse; anything malformed is a CryptoError (as in Python: a distribution is not a message).
 * @param {Uint8Array} data @returns {SenderKeyDistribution}
 */
export function decodeDistribution(data) {
  if (
    !(data instanceof Uint8Array) ||
    data.length !== DISTRIBUTION_SIZE ||
    data[0] !== DISTRIBUTION_VERSION ||
    data[1] !== MessageType.SENDER_KEY_DISTRIBUTION
  ) {
    throw new CryptoError("malformed sender key distribution message");
  }
  return {
    distributionId: uuidFromBytes(data.subarray(2, 18)),
    iteration: readUint32(data, 18),
    chainKey: data.slice(22, 54),
    signingKey: data.slice(54, 86),
  };
}

/**
 * A group message's `context`: lp(chat_id) || lp(sender user_id) || lp(sender device_id). Never sent:
 * the receiver builds it from the chat and the sender device the server names.
 */
export function groupContext(chatId, userId, deviceId) {
  return concat(lp(chatId), addressBytes(userId, deviceId));
}

/** The 22-byte group message header: version, type, distribution id, iteration. */
export function groupHeader(distributionId, iteration) {
  return concat(new Uint8Array([VERSION, MessageType.GROUP_MESSAGE]), uuidToBytes(distributionId), uint32(iteration));
}

/** The AES-GCM associated data of a group message: context || header. */
export function groupAssociatedData(context, distributionId, iteration) {
  return concat(context, groupHeader(distributionId, iteration));
}

/**
 * @typedef {object} GroupMessage
 * @property {string} distributionId
 * @property {number} iteration
 * @property {Uint8Array} ciphertext with its tag
 * @property {Uint8Array} signature Ed25519, over context || header || ciphertext
 */

/** Header and ciphertext as sent (everything the signature follows). @param {GroupMessage} m */
export function groupWirePart(m) {
  return concat(groupHeader(m.distributionId, m.iteration), m.ciphertext);
}

/** The bytes the signature covers: context || header || ciphertext. */
export function groupSignedPart(m, context) {
  return concat(context, groupWirePart(m));
}

/** @param {GroupMessage} m @returns {Uint8Array} */
export function encodeGroupMessage(m) {
  if (m.signature.length !== SIGNATURE_SIZE) throw new CryptoError("a signature is 64 bytes");
  return concat(groupWirePart(m), m.signature);
}

/** Parse; anything malformed is a DecryptError. @param {Uint8Array} data @returns {GroupMessage} */
export function decodeGroupMessage(data) {
  if (!(data instanceof Uint8Array) || data.length < GROUP_HEAD_SIZE + TAG_SIZE + SIGNATURE_SIZE) {
    throw new DecryptError("truncated group message");
  }
  if (data[0] !== VERSION || data[1] !== MessageType.GROUP_MESSAGE) {
    throw new DecryptError(`not a version ${VERSION} group message`);
  }
  return {
    distributionId: uuidFromBytes(data.subarray(2, 18)),
    iteration: readUint32(data, 18),
    ciphertext: data.slice(GROUP_HEAD_SIZE, data.length - SIGNATURE_SIZE),
    signature: data.slice(data.length - SIGNATURE_SIZE),
  };
}

/** The two header bytes of an attachment blob, which are also its GCM associated data. */
export const ATTACHMENT_HEADER = new Uint8Array([ATTACHMENT_VERSION, MessageType.ATTACHMENT]);

/** An attachment blob: 0x01 0x05 || nonce (12) || ciphertext and tag. */
export function encodeAttachmentBlob(nonce, ciphertext) {
  if (nonce.length !== NONCE_SIZE) throw new CryptoError("a GCM nonce is 12 bytes");
  return concat(ATTACHMENT_HEADER, nonce, ciphertext);
}

/**
 * Parse an attachment blob; anything malformed is a DecryptError.
 * @param {Uint8Array} blob @returns {{nonce: Uint8Array, ciphertext: Uint8Array}}
 */
export function decodeAttachmentBlob(blob) {
  if (
    blob.length < ATTACHMENT_HEADER.length + NONCE_SIZE + TAG_SIZE ||
    blob[0] !== ATTACHMENT_VERSION ||
    blob[1] !== MessageType.ATTACHMENT
  ) {
    throw new DecryptError("not a version 1 attachment");
  }
  return { nonce: blob.slice(2, 2 + NONCE_SIZE), ciphertext: blob.slice(2 + NONCE_SIZE) };
}
