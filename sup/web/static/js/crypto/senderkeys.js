// Sender Keys for groups (docs/e2e.md "Sender Keys"; sup/client/crypto/senderkeys.py): one symmetric chain
// plus one Ed25519 signing key per sender and chat.
//
//   chain step on CK_i:  seed HMAC(CK_i, 0x01), next chain key CK_{i+1} = HMAC(CK_i, 0x02)
//   message keys:        HKDF(seed, zero salt, "SUP v1 group message key", 44) -> AES-256 key || GCM nonce
//
// Every group message is signed, so members cannot forge each other's messages, and both the signature and
// the GCM associated data start with the message's context (chat id and sender address, wire.groupContext),
// so the server cannot attribute a message to another device or chat.

import { fromBase64, toBase64, utf8, uuidFromBytes } from "./bytes.js";
import { CryptoError, DecryptError, DuplicateMessage } from "./errors.js";
import {
  aesGcmDecrypt,
  aesGcmEncrypt,
  ed25519Public,
  ed25519Sign,
  ed25519Verify,
  hkdfSha256,
  hmacSha256,
} from "./primitives.js";
import { MAX_SKIP, MAX_SKIPPED_KEYS } from "./ratchet.js";
import { encodeDistribution, encodeGroupMessage, groupAssociatedData, groupSignedPart } from "./wire.js";

export const GROUP_MESSAGE_KEY_INFO = utf8("SUP v1 group message key");
const SEED_INPUT = new Uint8Array([0x01]);
const CHAIN_INPUT = new Uint8Array([0x02]);

/** (message key seed, next chain key). @param {Uint8Array} chainKey */
export async function chainStep(chainKey) {
  return { seed: await hmacSha256(chainKey, SEED_INPUT), chainKey: await hmacSha256(chainKey, CHAIN_INPUT) };
}

/** Expand a message key seed into the AES-256 key and the 12-byte GCM nonce. @param {Uint8Array} seed */
export async function groupKeyMaterial(seed) {
  const okm = await hkdfSha256(seed, GROUP_MESSAGE_KEY_INFO, 44);
  return { key: okm.slice(0, 32), nonce: okm.slice(32) };
}

/** A random UUID version 4 from 16 random bytes, as Python's uuid.UUID(bytes=..., version=4) makes it. */
export function uuid4(random16) {
  const b = Uint8Array.from(random16);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return uuidFromBytes(b);
}

// An iteration count: 2^32 once the last wire iteration (2^32 - 1) has been used.
function counter(v) {
  if (!Number.isInteger(v) || v < 0 || v > 2 ** 32) throw new CryptoError("bad iteration");
  return v;
}

/** What both sides of one distribution of a sender key hold: where its chain stands, and who signs. */
class SenderChain {
  /**
   * @param {string} distributionId @param {number} iteration of the next message
   * @param {Uint8Array} chainKey @param {Uint8Array} signingKey the sender's Ed25519 public key
   */
  constructor(distributionId, iteration, chainKey, signingKey) {
    this.distributionId = distributionId;
    this.iteration = iteration;
    this.chainKey = chainKey;
    this.signingKey = signingKey;
  }
}

/** The sending side of our own sender key in one chat. */
export class OwnSenderKey extends SenderChain {
  /** As SenderChain, with `signingSeed`, the private half of `signingKey`. */
  constructor(distributionId, iteration, chainKey, signingSeed, signingKey) {
    super(distributionId, iteration, chainKey, signingKey);
    this.signingSeed = signingSeed;
  }

  /** A fresh sender key: new distribution id, chain key and signing key (drawn in that order). */
  static async generate(random) {
    const distributionId = uuid4(random(16));
    const chainKey = random(32);
    const signingSeed = random(32);
    return new OwnSenderKey(distributionId, 0, chainKey, signingSeed, await ed25519Public(signingSeed));
  }

  /** The 86-byte distribution message for the current iteration: a new member reads from here on. */
  distribution() {
    return encodeDistribution({
      distributionId: this.distributionId,
      iteration: this.iteration,
      chainKey: this.chainKey,
      signingKey: this.signingKey,
    });
  }

  /**
   * Encrypt and sign the next group message, then advance the chain.
   * @param {Uint8Array} plaintext @param {Uint8Array} context wire.groupContext(chat, own user, own device)
   */
  async encrypt(plaintext, context) {
    if (this.iteration > 0xffffffff) throw new CryptoError("sender key exhausted: rotate it");
    const step = await chainStep(this.chainKey);
    const { key, nonce } = await groupKeyMaterial(step.seed);
    const ad = groupAssociatedData(context, this.distributionId, this.iteration);
    const message = {
      distributionId: this.distributionId,
      iteration: this.iteration,
      ciphertext: await aesGcmEncrypt(key, nonce, plaintext, ad),
      signature: new Uint8Array(0),
    };
    message.signature = await ed25519Sign(this.signingSeed, groupSignedPart(message, context));
    this.chainKey = step.chainKey;
    this.iteration += 1;
    return encodeGroupMessage(message);
  }

  toJSON() {
    return {
      distribution_id: this.distributionId,
      iteration: this.iteration,
      chain_key: toBase64(this.chainKey),
      signing_seed: toBase64(this.signingSeed),
    };
  }

  static async fromJSON(d) {
    if (typeof d.distribution_id !== "string") throw new CryptoError("bad distribution id");
    const seed = fromBase64(d.signing_seed, 32);
    const key = new OwnSenderKey(
      d.distribution_id,
      counter(d.iteration),
      fromBase64(d.chain_key, 32),
      seed,
      await ed25519Public(seed),
    );
    key.distribution(); // validates the distribution id as a UUID
    return key;
  }
}

/** The receiving side of one peer device's sender key (one distribution). */
export class PeerSenderKey extends SenderChain {
  /**
   * As SenderChain, with the keys of messages skipped so far.
   * @param {string} distributionId @param {number} iteration @param {Uint8Array} chainKey @param {Uint8Array} signingKey
   * @param {Map<number, Uint8Array>} [skipped] iteration -> seed, oldest first
   */
  constructor(distributionId, iteration, chainKey, signingKey, skipped) {
    super(distributionId, iteration, chainKey, signingKey);
    this.skipped = skipped ?? new Map();
  }

  /** @param {import("./wire.js").SenderKeyDistribution} d */
  static fromDistribution(d) {
    return new PeerSenderKey(d.distributionId, d.iteration, d.chainKey, d.signingKey);
  }

  /**
   * Verify (first) and decrypt; the state changes only on success.
   * @param {import("./wire.js").GroupMessage} message @param {Uint8Array} context of the claimed sender
   */
  async decrypt(message, context) {
    if (!(await ed25519Verify(this.signingKey, message.signature, groupSignedPart(message, context)))) {
      throw new DecryptError("bad group message signature");
    }
    const derived = [];
    let chainKey = this.chainKey;
    let seed;
    if (message.iteration < this.iteration) {
      seed = this.skipped.get(message.iteration);
      if (seed === undefined) throw new DuplicateMessage("group message already decrypted");
    } else {
      if (message.iteration - this.iteration > MAX_SKIP) {
        throw new DecryptError(`more than ${MAX_SKIP} group messages skipped`);
      }
      for (let i = this.iteration; i < message.iteration; i++) {
        const step = await chainStep(chainKey);
        derived.push([i, step.seed]);
        chainKey = step.chainKey;
      }
      const step = await chainStep(chainKey);
      seed = step.seed;
      chainKey = step.chainKey;
    }
    const { key, nonce } = await groupKeyMaterial(seed);
    const ad = groupAssociatedData(context, message.distributionId, message.iteration);
    const plaintext = await aesGcmDecrypt(key, nonce, message.ciphertext, ad);
    if (message.iteration < this.iteration) {
      this.skipped.delete(message.iteration);
    } else {
      for (const [i, s] of derived) this.skipped.set(i, s);
      for (const oldest of this.skipped.keys()) {
        if (this.skipped.size <= MAX_SKIPPED_KEYS) break;
        this.skipped.delete(oldest);
      }
      this.chainKey = chainKey;
      this.iteration = message.iteration + 1;
    }
    return plaintext;
  }

  toJSON() {
    return {
      distribution_id: this.distributionId,
      iteration: this.iteration,
      chain_key: toBase64(this.chainKey),
      signing_key: toBase64(this.signingKey),
      skipped: [...this.skipped].map(([i, s]) => [i, toBase64(s)]),
    };
  }

  static fromJSON(d) {
    if (typeof d.distribution_id !== "string") throw new CryptoError("bad distribution id");
    if (!Array.isArray(d.skipped)) throw new CryptoError("bad skipped keys");
    const skipped = new Map();
    for (const entry of d.skipped) {
      if (!Array.isArray(entry) || entry.length !== 2) throw new CryptoError("bad skipped key");
      skipped.set(counter(entry[0]), fromBase64(entry[1], 32));
    }
    return new PeerSenderKey(
      d.distribution_id,
      counter(d.iteration),
      fromBase64(d.chain_key, 32),
      fromBase64(d.signing_key, 32),
      skipped,
    );
  }
}
