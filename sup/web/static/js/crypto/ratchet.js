// Pairwise sessions: the Double Ratchet (docs/e2e.md "Sessions"), step for step as the Python
// `doubleratchet` package runs it under sup/client/crypto/sessions.py, so both sides derive the same keys:
//
//   root step on DH output dh:  HKDF(dh, salt = root key, "SUP v1 root chain", 64) -> new root key || chain key
//   chain step on chain key CK: message key HMAC(CK, 0x01), next chain key HMAC(CK, 0x02)
//   message key MK:             HKDF(MK, zero salt, "SUP v1 message key", 44) -> AES-256 key || GCM nonce
//   GCM associated data:        AD || ratchet header (41 bytes, wire.ratchetHeader)
//
// Alice's first ratchet key pair is fresh and her first sending chain comes from DH(ratchet_A, SPK_B). Bob
// uses his signed prekey as his first ratchet key pair: on Alice's first message he derives his receiving
// chain from DH(SPK_B, ratchet_A), then draws a new ratchet key pair for his sending chain.
//
// Bounds: one message derives at most MAX_SKIP keys (the rest of the previous receiving chain and the new
// chain together), a session stores at most MAX_SKIPPED_KEYS (oldest dropped first), and it remembers its
// last 64 receiving ratchet keys so that a replay from an older chain is reported as a duplicate.
// Decryption works on a copy of the ratchet and commits only on success.

import { concat, equal, fromBase64, toBase64, toHex, utf8 } from "./bytes.js";
import { CryptoError, DecryptError, DuplicateMessage } from "./errors.js";
import { aesGcmDecrypt, aesGcmEncrypt, hkdfSha256, hmacSha256, x25519, x25519Public } from "./primitives.js";
import { encodeEnvelope, ratchetHeader } from "./wire.js";

export const ROOT_CHAIN_INFO = utf8("SUP v1 root chain");
export const MESSAGE_KEY_INFO = utf8("SUP v1 message key");
export const MAX_SKIP = 1000;
export const MAX_SKIPPED_KEYS = 2000;
export const SEEN_RATCHET_KEYS = 64;

const MESSAGE_KEY_INPUT = new Uint8Array([0x01]);
const CHAIN_KEY_INPUT = new Uint8Array([0x02]);

/**
 * One step of the root chain.
 * @param {Uint8Array} rootKey @param {Uint8Array} dhOutput
 * @returns {Promise<{rootKey: Uint8Array, chainKey: Uint8Array}>}
 */
export async function rootStep(rootKey, dhOutput) {
  const okm = await hkdfSha256(dhOutput, ROOT_CHAIN_INFO, 64, rootKey);
  return { rootKey: okm.slice(0, 32), chainKey: okm.slice(32) };
}

/**
 * One step of a message chain.
 * @param {Uint8Array} chainKey @returns {Promise<{messageKey: Uint8Array, chainKey: Uint8Array}>}
 */
export async function chainStep(chainKey) {
  return {
    messageKey: await hmacSha256(chainKey, MESSAGE_KEY_INPUT),
    chainKey: await hmacSha256(chainKey, CHAIN_KEY_INPUT),
  };
}

/**
 * Expand a single-use message key into the AES-256 key and the GCM nonce: the nonce is derived, never
 * random, and never repeats because the key is used once.
 * @param {Uint8Array} messageKey @returns {Promise<{key: Uint8Array, nonce: Uint8Array}>}
 */
export async function messageKeyMaterial(messageKey) {
  const okm = await hkdfSha256(messageKey, MESSAGE_KEY_INFO, 44);
  return { key: okm.slice(0, 32), nonce: okm.slice(32) };
}

async function seal(messageKey, plaintext, aad) {
  const { key, nonce } = await messageKeyMaterial(messageKey);
  return aesGcmEncrypt(key, nonce, plaintext, aad);
}

async function open(messageKey, ciphertext, aad) {
  const { key, nonce } = await messageKeyMaterial(messageKey);
  return aesGcmDecrypt(key, nonce, ciphertext, aad);
}

function skippedId(ratchetKey, index) {
  return `${toHex(ratchetKey)}:${index}`;
}

/**
 * @typedef {object} Chain
 * @property {Uint8Array} chainKey
 * @property {number} length the number of steps taken (the next message index)
 *
 * @typedef {object} RatchetState the part of a session that decryption works on a copy of
 * @property {Uint8Array} rootKey
 * @property {Uint8Array} ownPrivate own current ratchet private key
 * @property {Uint8Array} ownPublic
 * @property {Uint8Array} otherPublic the peer's current ratchet public key
 * @property {Chain} sending
 * @property {number | null} previousSendingLength PN; null before the first DH ratchet step
 * @property {Chain | null} receiving null until the first message from the peer
 */

function copyRatchet(r) {
  return { ...r, sending: { ...r.sending }, receiving: r.receiving === null ? null : { ...r.receiving } };
}

/** One pairwise Double Ratchet session with one peer device. */
export class Session {
  /**
   * @param {object} fields
   * @param {RatchetState} fields.ratchet
   * @param {Uint8Array} fields.associatedData X3DH AD (both identities and addresses)
   * @param {Uint8Array} fields.peerIdentity
   * @param {Uint8Array} fields.baseKey the X3DH base key: a re-sent initial message carrying it belongs here
   * @param {import("./wire.js").PrekeyHeader | null} fields.pendingPrekey set on the initiator until the peer
   *   answers: every message repeats the X3DH header meanwhile
   * @param {Map<string, {ratchetKey: Uint8Array, index: number, messageKey: Uint8Array}>} [fields.skipped]
   *   skipped message keys, oldest first
   * @param {Uint8Array[]} [fields.seenRatchetKeys] the last SEEN_RATCHET_KEYS receiving ratchet keys
   */
  constructor({ ratchet, associatedData, peerIdentity, baseKey, pendingPrekey, skipped, seenRatchetKeys }) {
    this.ratchet = ratchet;
    this.associatedData = associatedData;
    this.peerIdentity = peerIdentity;
    this.baseKey = baseKey;
    this.pendingPrekey = pendingPrekey;
    this.skipped = skipped ?? new Map();
    this.seenRatchetKeys = seenRatchetKeys ?? [];
  }

  /**
   * Alice's side, from a finished X3DH: the session, ready for its first message.
   * @param {object} a
   * @param {Uint8Array} a.sharedSecret @param {Uint8Array} a.associatedData @param {Uint8Array} a.peerIdentity
   * @param {Uint8Array} a.peerSignedPrekey Bob's signed prekey, his first ratchet public key
   * @param {import("./wire.js").PrekeyHeader} a.prekey the X3DH header to repeat until Bob answers
   * @param {Uint8Array} a.ratchetPrivate Alice's first ratchet private key (fresh randomness)
   */
  static async initiate(a) {
    const sending = await rootStep(a.sharedSecret, await x25519(a.ratchetPrivate, a.peerSignedPrekey));
    return new Session({
      ratchet: {
        rootKey: sending.rootKey,
        ownPrivate: a.ratchetPrivate,
        ownPublic: await x25519Public(a.ratchetPrivate),
        otherPublic: a.peerSignedPrekey,
        sending: { chainKey: sending.chainKey, length: 0 },
        previousSendingLength: null,
        receiving: null,
      },
      associatedData: a.associatedData,
      peerIdentity: a.peerIdentity,
      baseKey: a.prekey.baseKey,
      pendingPrekey: a.prekey,
    });
  }

  /**
   * Bob's side: start the session from an initial message and decrypt it. Throws DecryptError (or
   * CryptoError for a small-order ratchet key); nothing exists until it succeeds.
   * @param {object} a
   * @param {Uint8Array} a.sharedSecret @param {Uint8Array} a.associatedData @param {Uint8Array} a.peerIdentity
   * @param {Uint8Array} a.baseKey
   * @param {Uint8Array} a.signedPrekeyPrivate Bob's first ratchet private key
   * @param {import("./wire.js").RatchetMessage} a.message
   * @param {(n: number) => Uint8Array} a.random source of Bob's next ratchet key
   * @returns {Promise<{session: Session, plaintext: Uint8Array}>}
   */
  static async respond(a) {
    const receiving = await rootStep(a.sharedSecret, await x25519(a.signedPrekeyPrivate, a.message.ratchetKey));
    const ownPrivate = a.random(32);
    const sending = await rootStep(receiving.rootKey, await x25519(ownPrivate, a.message.ratchetKey));
    const session = new Session({
      ratchet: {
        rootKey: sending.rootKey,
        ownPrivate,
        ownPublic: await x25519Public(ownPrivate),
        otherPublic: a.message.ratchetKey,
        sending: { chainKey: sending.chainKey, length: 0 },
        previousSendingLength: null,
        receiving: { chainKey: receiving.chainKey, length: 0 },
      },
      associatedData: a.associatedData,
      peerIdentity: a.peerIdentity,
      baseKey: a.baseKey,
      pendingPrekey: null,
    });
    const { messageKey, skipped } = await nextDecryptionKey(session.ratchet, a.message, a.random);
    const plaintext = await open(messageKey, a.message.ciphertext, session._aad(a.message));
    for (const entry of skipped) session.skipped.set(skippedId(entry.ratchetKey, entry.index), entry);
    session._saw(a.message.ratchetKey);
    return { session, plaintext };
  }

  _aad(message) {
    return concat(this.associatedData, ratchetHeader(message.ratchetKey, message.previousChainLength, message.index));
  }

  /** Encrypt the next message of this session into a pairwise envelope (wire format). */
  async encrypt(plaintext) {
    const r = this.ratchet;
    const message = {
      ratchetKey: r.ownPublic,
      previousChainLength: r.previousSendingLength ?? 0,
      index: r.sending.length,
      ciphertext: new Uint8Array(0),
    };
    const step = await chainStep(r.sending.chainKey);
    message.ciphertext = await seal(step.messageKey, plaintext, this._aad(message));
    r.sending = { chainKey: step.chainKey, length: r.sending.length + 1 };
    return encodeEnvelope({ prekey: this.pendingPrekey, message });
  }

  /**
   * How many message keys decrypting `message` would derive and store as skipped (0 for a stored key).
   * @param {import("./wire.js").RatchetMessage} message
   */
  keysToSkip(message) {
    if (this.skipped.has(skippedId(message.ratchetKey, message.index))) return 0;
    const r = this.ratchet;
    const received = r.receiving === null ? null : r.receiving.length;
    if (equal(message.ratchetKey, r.otherPublic) && received !== null) return Math.max(message.index - received, 0);
    // A new ratchet key: the rest of the current receiving chain, then the new chain up to `index`.
    const rest = received === null ? 0 : Math.max(message.previousChainLength - received, 0);
    return rest + message.index;
  }

  /**
   * Decrypt; on any failure the session is left exactly as it was.
   * @param {import("./wire.js").RatchetMessage} message
   * @param {(n: number) => Uint8Array} random source of our next ratchet key, if this message ratchets
   * @returns {Promise<Uint8Array>}
   */
  async decrypt(message, random) {
    // The combined bound, checked before anything is derived (PN + N bounds the count from above).
    if (message.previousChainLength + message.index > MAX_SKIP && this.keysToSkip(message) > MAX_SKIP) {
      if (this._isConsumed(message)) throw new DuplicateMessage("message already decrypted");
      throw new DecryptError(`more than ${MAX_SKIP} message keys skipped`);
    }
    const id = skippedId(message.ratchetKey, message.index);
    const stored = this.skipped.get(id);
    const work = copyRatchet(this.ratchet);
    let plaintext;
    let derived = [];
    try {
      let messageKey;
      if (stored !== undefined) {
        messageKey = stored.messageKey;
      } else {
        ({ messageKey, skipped: derived } = await nextDecryptionKey(work, message, random));
      }
      plaintext = await open(messageKey, message.ciphertext, this._aad(message));
    } catch (error) {
      if (error instanceof DuplicateMessage) throw error;
      // A failed tag (or too big a jump) on an older chain, for a key that is no longer stored, is a replay.
      if (error instanceof DecryptError && this._isConsumed(message)) {
        throw new DuplicateMessage("message already decrypted");
      }
      throw new DecryptError(`cannot decrypt: ${error.message}`);
    }
    // Success: commit the copy, drop the used key, store the new skipped keys, oldest discarded first.
    this.skipped.delete(id);
    for (const entry of derived) this.skipped.set(skippedId(entry.ratchetKey, entry.index), entry);
    for (const oldest of this.skipped.keys()) {
      if (this.skipped.size <= MAX_SKIPPED_KEYS) break;
      this.skipped.delete(oldest);
    }
    this.ratchet = work;
    this.pendingPrekey = null;
    this._saw(message.ratchetKey);
    return plaintext;
  }

  _saw(ratchetKey) {
    if (this.seenRatchetKeys.some((k) => equal(k, ratchetKey))) return;
    this.seenRatchetKeys.push(ratchetKey);
    if (this.seenRatchetKeys.length > SEEN_RATCHET_KEYS)
      this.seenRatchetKeys.splice(0, this.seenRatchetKeys.length - SEEN_RATCHET_KEYS);
  }

  // The ratchet only spots duplicates on the current chain; on an older chain a key that is not among the
  // skipped keys was already used (or discarded for the bound), which is reported as a duplicate too.
  _isConsumed(message) {
    const older = this.seenRatchetKeys.slice(0, -1);
    if (!older.some((k) => equal(k, message.ratchetKey))) return false;
    return !this.skipped.has(skippedId(message.ratchetKey, message.index));
  }

  /** A JSON-able snapshot (private keys included, base64). */
  toJSON() {
    const r = this.ratchet;
    const p = this.pendingPrekey;
    return {
      ad: toBase64(this.associatedData),
      peer_identity: toBase64(this.peerIdentity),
      base_key: toBase64(this.baseKey),
      pending_prekey:
        p === null ? null : [toBase64(p.identityKey), toBase64(p.baseKey), p.signedPrekeyId, p.oneTimePrekeyId],
      seen_ratchet_keys: this.seenRatchetKeys.map(toBase64),
      root_key: toBase64(r.rootKey),
      own_ratchet_private: toBase64(r.ownPrivate),
      other_ratchet_public: toBase64(r.otherPublic),
      sending: [toBase64(r.sending.chainKey), r.sending.length],
      previous_sending_length: r.previousSendingLength,
      receiving: r.receiving === null ? null : [toBase64(r.receiving.chainKey), r.receiving.length],
      skipped: [...this.skipped.values()].map((s) => [toBase64(s.ratchetKey), s.index, toBase64(s.messageKey)]),
    };
  }

  /** Inverse of toJSON; anything malformed throws (the caller turns it into CryptoError). */
  static async fromJSON(d) {
    const key = (v) => fromBase64(v, 32);
    const count = (v) => {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new CryptoError("bad counter");
      return v;
    };
    const chain = (v) => {
      if (!Array.isArray(v) || v.length !== 2) throw new CryptoError("bad chain");
      return { chainKey: key(v[0]), length: count(v[1]) };
    };
    const list = (v) => {
      if (!Array.isArray(v)) throw new CryptoError("expected a list");
      return v;
    };
    const p = d.pending_prekey;
    let pendingPrekey = null;
    if (p !== null) {
      if (!Array.isArray(p) || p.length !== 4) throw new CryptoError("bad pending prekey");
      pendingPrekey = {
        identityKey: key(p[0]),
        baseKey: key(p[1]),
        signedPrekeyId: count(p[2]),
        oneTimePrekeyId: p[3] === null ? null : count(p[3]),
      };
    }
    const ownPrivate = key(d.own_ratchet_private);
    const skipped = new Map();
    for (const entry of list(d.skipped)) {
      if (!Array.isArray(entry) || entry.length !== 3) throw new CryptoError("bad skipped key");
      const s = { ratchetKey: key(entry[0]), index: count(entry[1]), messageKey: key(entry[2]) };
      skipped.set(skippedId(s.ratchetKey, s.index), s);
    }
    const previous = d.previous_sending_length;
    return new Session({
      ratchet: {
        rootKey: key(d.root_key),
        ownPrivate,
        ownPublic: await x25519Public(ownPrivate),
        otherPublic: key(d.other_ratchet_public),
        sending: chain(d.sending),
        previousSendingLength: previous === null ? null : count(previous),
        receiving: d.receiving === null ? null : chain(d.receiving),
      },
      associatedData: fromBase64(d.ad),
      peerIdentity: key(d.peer_identity),
      baseKey: key(d.base_key),
      pendingPrekey,
      skipped,
      seenRatchetKeys: list(d.seen_ratchet_keys).map(key),
    });
  }
}

/**
 * The message key for `message`, advancing `r` (a working copy): a DH ratchet step first when the message
 * carries a new ratchet key, then the receiving chain up to its index. Returns the keys skipped on the way.
 * Throws DecryptError (too many keys to skip), DuplicateMessage (an index already passed on the current
 * chain) or CryptoError (a small-order ratchet key, or no receiving chain).
 */
async function nextDecryptionKey(r, message, random) {
  const skipped = [];
  if (!equal(message.ratchetKey, r.otherPublic)) {
    if (r.receiving !== null) {
      const missing = Math.max(message.previousChainLength - r.receiving.length, 0);
      // More than MAX_SKIP here is refused by Session.decrypt's combined bound before we get here.
      if (missing <= MAX_SKIP) await skipKeys(r, missing, skipped);
    }
    r.otherPublic = message.ratchetKey;
    const receiving = await rootStep(r.rootKey, await x25519(r.ownPrivate, r.otherPublic));
    r.receiving = { chainKey: receiving.chainKey, length: 0 };
    r.ownPrivate = random(32);
    r.ownPublic = await x25519Public(r.ownPrivate);
    const sending = await rootStep(receiving.rootKey, await x25519(r.ownPrivate, r.otherPublic));
    r.rootKey = sending.rootKey;
    r.previousSendingLength = r.sending.length;
    r.sending = { chainKey: sending.chainKey, length: 0 };
  }
  if (r.receiving === null) throw new CryptoError("no receiving chain for this ratchet key");
  const missing = Math.max(message.index - r.receiving.length, 0);
  if (missing > MAX_SKIP) throw new DecryptError(`more than ${MAX_SKIP} message keys skipped`);
  await skipKeys(r, missing, skipped);
  if (message.index < r.receiving.length) throw new DuplicateMessage("message already decrypted");
  const step = await chainStep(r.receiving.chainKey);
  r.receiving = { chainKey: step.chainKey, length: r.receiving.length + 1 };
  return { messageKey: step.messageKey, skipped };
}

async function skipKeys(r, count, into) {
  for (let i = 0; i < count; i++) {
    const step = await chainStep(r.receiving.chainKey);
    into.push({ ratchetKey: r.otherPublic, index: r.receiving.length, messageKey: step.messageKey });
    r.receiving = { chainKey: step.chainKey, length: r.receiving.length + 1 };
  }
}
