// DeviceCrypto: one device's whole end-to-end state, the browser twin of sup/client/crypto/device.py.
// Identity, prekeys, pairwise sessions, recorded peer identities (trust on first use) and sender keys.
//
// Every method that reads or changes state runs one at a time (an in-memory queue: WebCrypto is async, so
// two calls could otherwise interleave between their awaits). Failures never corrupt state: decryption works
// on copies and commits only on success. Persist `toJSON()` after each change (store.js does, under a Web
// Lock, so two tabs never both advance one ratchet). The state contains private keys.

import { equal, toBase64 } from "./bytes.js";
import { bundleFromJson, publishKeysBody, signedPrekeyMessage, uploadPrekeysBody, verifyBundle } from "./bundle.js";
import { keyOf, readState, STATE_FORMAT, STATE_VERSION } from "./devicestate.js";
import { BadBundle, CryptoError, DecryptError, DuplicateMessage, NoSession, UntrustedIdentity } from "./errors.js";
import { ed25519Public, ed25519Sign, randomBytes, x25519Public } from "./primitives.js";
import { Session } from "./ratchet.js";
import { OwnSenderKey, PeerSenderKey } from "./senderkeys.js";
import { isWeakPublicKey } from "./weakkeys.js";
import { x3dhInitiate, x3dhRespond } from "./x3dh.js";
import { decodeDistribution, decodeEnvelope, decodeGroupMessage, groupContext, sessionAdAppendix } from "./wire.js";

export { BadBundle, CryptoError, DecryptError, DuplicateMessage, NoSession, UntrustedIdentity };
export { STATE_FORMAT, STATE_VERSION };

// A replaced signed prekey keeps decrypting initial messages sent to it this long, at most this many.
export const SIGNED_PREKEY_GRACE_SECONDS = 30 * 24 * 3600;
export const MAX_OLD_SIGNED_PREKEYS = 4;
// Earlier sessions with a peer device, kept for messages in flight (and simultaneous initiation).
export const MAX_PREVIOUS_SESSIONS = 3;
// X3DH base keys already accepted: a replayed initial message without a one-time prekey is refused.
export const MAX_SEEN_BASE_KEYS = 2000;
// Distributions kept per sender and chat, so messages sent just before a rotation still decrypt.
export const MAX_SENDER_KEY_STATES = 5;
const UINT32_MAX = 0xffffffff;

/** @typedef {[string, string]} Address (user_id, device_id) */
/** @typedef {(n: number) => Uint8Array} RandomSource */
/** @typedef {{random?: RandomSource, now?: () => number}} DeviceOptions `now` in seconds since the epoch */

/**
 * @typedef {object} OwnSignedPrekey
 * @property {number} keyId
 * @property {Uint8Array} private
 * @property {Uint8Array} publicKey
 * @property {Uint8Array} signature
 * @property {number | null} replacedAt seconds since the epoch, once a newer one replaced it
 */

export class DeviceCrypto {
  /** Use DeviceCrypto.create or DeviceCrypto.fromJSON. */
  constructor(identitySeed, identityKey, address, { random = randomBytes, now = () => Date.now() / 1000 } = {}) {
    this._identitySeed = identitySeed;
    this._identityKey = identityKey;
    /** @type {Address | null} */
    this._address = address;
    this._random = random;
    this._now = now;
    /** @type {OwnSignedPrekey[]} oldest first; the last one is current */
    this._signedPrekeys = [];
    /** @type {Map<number, {private: Uint8Array, publicKey: Uint8Array}>} */
    this._oneTimePrekeys = new Map();
    this._nextOneTimeId = 1;
    this._nextSignedId = 1;
    /** @type {Map<string, {address: Address, sessions: Session[]}>} current session first */
    this._sessions = new Map();
    /** @type {Map<string, {address: Address, key: Uint8Array}>} */
    this._identities = new Map();
    /** @type {Uint8Array[]} */
    this._seenBaseKeys = [];
    /** @type {Map<string, OwnSenderKey>} by chat id */
    this._ownSenderKeys = new Map();
    /** @type {Map<string, {ids: [string, string, string], states: PeerSenderKey[]}>} newest first */
    this._peerSenderKeys = new Map();
    this._tail = Promise.resolve();
  }

  // Run `fn` after every earlier call has finished: one operation at a time per device object.
  async _exclusive(fn) {
    const previous = this._tail;
    let release;
    this._tail = new Promise((resolve) => (release = resolve));
    try {
      await previous;
      return await fn();
    } finally {
      release();
    }
  }

  // ---- identity and prekeys --------------------------------------------------------------------------

  /**
   * A new device: a fresh identity key and a first signed prekey (no one-time prekeys yet). Give the device's
   * own address here or later with setAddress: sessions and group messages authenticate it.
   * @param {string} [userId] @param {string} [deviceId] @param {DeviceOptions} [options]
   *   `random` replaces the CSPRNG (test vectors only; never in production code)
   */
  static async create(userId, deviceId, options = {}) {
    const random = options.random ?? randomBytes;
    const seed = random(32);
    const device = new DeviceCrypto(seed, await ed25519Public(seed), null, options);
    if (userId !== undefined || deviceId !== undefined) {
      if (userId === undefined || deviceId === undefined)
        throw new TypeError("give both userId and deviceId, or neither");
      device.setAddress(userId, deviceId);
    }
    await device._rotateSignedPrekey();
    return device;
  }

  /** This device's own (user_id, device_id), once set. @returns {Address | null} */
  get address() {
    return this._address === null ? null : [...this._address];
  }

  /** Record this device's own address (once; the same address again is a no-op). */
  setAddress(userId, deviceId) {
    if (typeof userId !== "string" || typeof deviceId !== "string" || !userId || !deviceId) {
      throw new TypeError("userId and deviceId must be non-empty strings");
    }
    if (this._address !== null && (this._address[0] !== userId || this._address[1] !== deviceId)) {
      throw new CryptoError(`this state belongs to ${this._address[0]}/${this._address[1]}`);
    }
    this._address = [userId, deviceId];
  }

  _ownAddress() {
    if (this._address === null) {
      throw new CryptoError("own address unknown: DeviceCrypto.create(userId, deviceId) or setAddress()");
    }
    return this._address;
  }

  /** The 32-byte Ed25519 identity public key, as published. */
  get identityKey() {
    return this._identityKey;
  }

  /** Our identity key pair, as X3DH takes it on either side. */
  _ownIdentity() {
    return { identitySeed: this._identitySeed, identityKey: this._identityKey };
  }

  /** The current signed prekey (public part). @returns {import("./bundle.js").SignedPrekey} */
  signedPrekey() {
    const k = this._signedPrekeys[this._signedPrekeys.length - 1];
    return { keyId: k.keyId, publicKey: k.publicKey, signature: k.signature };
  }

  /** Make a new signed prekey; the replaced private key stays usable for 30 days (at most 4 old ones). */
  rotateSignedPrekey() {
    return this._exclusive(() => this._rotateSignedPrekey());
  }

  async _rotateSignedPrekey() {
    const now = this._now();
    const kept = this._signedPrekeys.map((k) => ({ ...k }));
    if (kept.length) kept[kept.length - 1].replacedAt = now;
    const young = kept.filter((k) => now - (k.replacedAt ?? now) < SIGNED_PREKEY_GRACE_SECONDS);
    const priv = this._random(32);
    const publicKey = await x25519Public(priv);
    const signature = await ed25519Sign(this._identitySeed, signedPrekeyMessage(publicKey));
    const key = { keyId: this._nextSignedId, private: priv, publicKey, signature, replacedAt: null };
    this._signedPrekeys = [...young.slice(-MAX_OLD_SIGNED_PREKEYS), key];
    this._nextSignedId = (this._nextSignedId % UINT32_MAX) + 1;
    return this.signedPrekey();
  }

  /**
   * Make `n` new one-time prekeys to upload; key ids count up from 1.
   * @returns {Promise<import("./bundle.js").OneTimePrekey[]>}
   */
  generateOneTimePrekeys(n) {
    if (!Number.isInteger(n) || n < 0 || n > 10000) throw new RangeError("n must be between 0 and 10000");
    return this._exclusive(async () => {
      const created = new Map();
      let next = this._nextOneTimeId;
      while (created.size < n) {
        const keyId = next;
        next = (next % UINT32_MAX) + 1;
        if (this._oneTimePrekeys.has(keyId)) continue;
        const priv = this._random(32);
        created.set(keyId, { private: priv, publicKey: await x25519Public(priv) });
      }
      // Committed in one step, so a snapshot never holds half a batch.
      for (const [keyId, key] of created) this._oneTimePrekeys.set(keyId, key);
      this._nextOneTimeId = next;
      return [...created].map(([keyId, key]) => ({ keyId, publicKey: key.publicKey }));
    });
  }

  /** How many one-time prekey private keys are still unused here. */
  oneTimePrekeysLeft() {
    return this._oneTimePrekeys.size;
  }

  /** The body of `POST /api/v1/crypto/keys`: identity key, current signed prekey, the given one-time prekeys. */
  publishKeysBody(oneTimePrekeys = []) {
    return publishKeysBody(this.identityKey, this.signedPrekey(), oneTimePrekeys);
  }

  /** The body of `POST /api/v1/crypto/prekeys`: one-time prekeys, plus the current signed prekey if asked. */
  uploadPrekeysBody(oneTimePrekeys, { withSignedPrekey = false } = {}) {
    return uploadPrekeysBody(oneTimePrekeys, withSignedPrekey ? this.signedPrekey() : null);
  }

  // ---- identities of peers ---------------------------------------------------------------------------

  /** The identity key recorded for a peer device (first contact, or acceptIdentity). */
  peerIdentity(userId, deviceId) {
    return this._identities.get(keyOf(userId, deviceId))?.key ?? null;
  }

  /** Trust `key` for this peer device from now on; sessions made with another key are dropped. */
  acceptIdentity(userId, deviceId, key) {
    return this._exclusive(async () => {
      const id = keyOf(userId, deviceId);
      this._identities.set(id, { address: [userId, deviceId], key });
      const entry = this._sessions.get(id);
      if (entry === undefined) return;
      const kept = entry.sessions.filter((s) => equal(s.peerIdentity, key));
      if (kept.length) entry.sessions = kept;
      else this._sessions.delete(id);
    });
  }

  _checkIdentity(address, key) {
    const recorded = this.peerIdentity(...address);
    if (recorded !== null && !equal(recorded, key)) throw new UntrustedIdentity(address[0], address[1], key);
  }

  // ---- pairwise sessions -----------------------------------------------------------------------------

  /** Whether a session with this peer device exists. */
  hasSession(userId, deviceId) {
    return (this._sessions.get(keyOf(userId, deviceId))?.sessions.length ?? 0) > 0;
  }

  /** Drop every session with this peer device; its recorded identity key is kept. */
  forgetSession(userId, deviceId) {
    return this._exclusive(async () => {
      this._sessions.delete(keyOf(userId, deviceId));
    });
  }

  /**
   * Encrypt for one peer device. Without a session, `bundle` starts one (X3DH); it is ignored otherwise.
   * @param {string} userId @param {string} deviceId @param {Uint8Array} plaintext
   * @param {import("./bundle.js").Bundle | object | null} [bundle] a Bundle, or the server's JSON for one
   * @returns {Promise<Uint8Array>} the envelope (wire format)
   */
  encrypt(userId, deviceId, plaintext, bundle = null) {
    const address = /** @type {Address} */ ([userId, deviceId]);
    return this._exclusive(async () => {
      const existing = this._sessions.get(keyOf(...address));
      if (existing?.sessions.length) return existing.sessions[0].encrypt(plaintext);
      if (bundle === null) throw new NoSession(`no session with ${userId}/${deviceId} and no bundle`);
      const appendix = sessionAdAppendix(this._ownAddress(), address);
      const peer = bundle.identityKey instanceof Uint8Array ? bundle : bundleFromJson(bundle);
      await verifyBundle(address, peer);
      this._checkIdentity(address, peer.identityKey);
      const ephemeralPrivate = this._random(32);
      const ratchetPrivate = this._random(32);
      let session;
      let envelope;
      try {
        const agreed = await x3dhInitiate({
          ...this._ownIdentity(),
          peerIdentityKey: peer.identityKey,
          signedPrekey: peer.signedPrekey.publicKey,
          oneTimePrekey: peer.oneTimePrekey?.publicKey ?? null,
          ephemeralPrivate,
          adAppendix: appendix,
        });
        session = await Session.initiate({
          sharedSecret: agreed.sharedSecret,
          associatedData: agreed.associatedData,
          peerIdentity: peer.identityKey,
          peerSignedPrekey: peer.signedPrekey.publicKey,
          prekey: {
            identityKey: this._identityKey,
            baseKey: agreed.baseKey,
            signedPrekeyId: peer.signedPrekey.keyId,
            oneTimePrekeyId: peer.oneTimePrekey?.keyId ?? null,
          },
          ratchetPrivate,
        });
        envelope = await session.encrypt(plaintext);
      } catch (error) {
        throw new BadBundle(`key agreement failed: ${error.message}`);
      }
      if (this.peerIdentity(...address) === null) {
        this._identities.set(keyOf(...address), { address, key: peer.identityKey });
      }
      this._sessions.set(keyOf(...address), { address, sessions: [session] });
      return envelope;
    });
  }

  /**
   * Decrypt an envelope from a peer device; on any error the state is unchanged.
   * @param {string} userId @param {string} deviceId @param {Uint8Array} envelope @returns {Promise<Uint8Array>}
   */
  decrypt(userId, deviceId, envelope) {
    const address = /** @type {Address} */ ([userId, deviceId]);
    return this._exclusive(async () => {
      this._ownAddress();
      const parsed = decodeEnvelope(envelope);
      const known = this._sessions.get(keyOf(...address))?.sessions ?? [];
      const prekey = parsed.prekey;
      if (prekey === null) {
        if (!known.length) throw new NoSession(`no session with ${userId}/${deviceId}`);
        return this._decryptWith(address, known, parsed.message);
      }
      const sameSession = known.filter((s) => equal(s.baseKey, prekey.baseKey));
      // The initiator repeats the X3DH header until we answer: this is that session.
      if (sameSession.length) return this._decryptWith(address, sameSession, parsed.message);
      return this._acceptInitial(address, parsed);
    });
  }

  async _decryptWith(address, candidates, message) {
    let duplicate = false;
    for (const session of candidates) {
      let plaintext;
      try {
        plaintext = await session.decrypt(message, this._random);
      } catch (error) {
        if (error instanceof DuplicateMessage) duplicate = true;
        else if (!(error instanceof DecryptError)) throw error;
        continue;
      }
      // The session that last decrypted becomes current, so both sides converge on one session.
      const entry = this._sessions.get(keyOf(...address));
      entry.sessions = [session, ...entry.sessions.filter((s) => s !== session)];
      return plaintext;
    }
    if (duplicate) throw new DuplicateMessage("message already decrypted");
    throw new DecryptError("no session could decrypt the message");
  }

  async _acceptInitial(address, envelope) {
    const prekey = envelope.prekey;
    if (this._seenBaseKeys.some((k) => equal(k, prekey.baseKey))) {
      throw new DuplicateMessage("initial message already accepted");
    }
    if ((await isWeakPublicKey("ed25519", prekey.identityKey)) || (await isWeakPublicKey("x25519", prekey.baseKey))) {
      throw new DecryptError("initial message with a small-order or non-canonical key");
    }
    const spk = this._signedPrekeys.find((k) => k.keyId === prekey.signedPrekeyId);
    if (spk === undefined) throw new DecryptError(`unknown or expired signed prekey ${prekey.signedPrekeyId}`);
    let opk = null;
    if (prekey.oneTimePrekeyId !== null) {
      opk = this._oneTimePrekeys.get(prekey.oneTimePrekeyId) ?? null;
      if (opk === null) throw new DecryptError(`one-time prekey ${prekey.oneTimePrekeyId} already used or unknown`);
    }
    // The claimed sender's address and ours are authenticated: relabelled by the server, this fails.
    const appendix = sessionAdAppendix(address, this._ownAddress());
    let accepted;
    try {
      const agreed = await x3dhRespond({
        ...this._ownIdentity(),
        peerIdentityKey: prekey.identityKey,
        baseKey: prekey.baseKey,
        signedPrekeyPrivate: spk.private,
        oneTimePrekeyPrivate: opk?.private ?? null,
        adAppendix: appendix,
      });
      accepted = await Session.respond({
        sharedSecret: agreed.sharedSecret,
        associatedData: agreed.associatedData,
        peerIdentity: prekey.identityKey,
        baseKey: prekey.baseKey,
        signedPrekeyPrivate: spk.private,
        message: envelope.message,
        random: this._random,
      });
    } catch (error) {
      throw new DecryptError(`cannot decrypt initial message: ${error.message}`);
    }
    // Checked only now that the message authenticated, so a forgery cannot pose as an identity change.
    this._checkIdentity(address, prekey.identityKey);
    const id = keyOf(...address);
    this._identities.set(id, { address, key: prekey.identityKey });
    if (prekey.oneTimePrekeyId !== null) this._oneTimePrekeys.delete(prekey.oneTimePrekeyId);
    this._seenBaseKeys = [...this._seenBaseKeys, prekey.baseKey].slice(-MAX_SEEN_BASE_KEYS);
    const earlier = this._sessions.get(id)?.sessions ?? [];
    this._sessions.set(id, { address, sessions: [accepted.session, ...earlier].slice(0, 1 + MAX_PREVIOUS_SESSIONS) });
    return accepted.plaintext;
  }

  // ---- sender keys -----------------------------------------------------------------------------------

  /**
   * Our sender key for the chat, creating it if needed.
   * @returns {Promise<{distributionId: string, message: Uint8Array}>} message: the 86-byte distribution
   */
  senderKeyDistribution(chatId) {
    return this._exclusive(async () => {
      let own = this._ownSenderKeys.get(chatId);
      if (own === undefined) {
        own = await OwnSenderKey.generate(this._random);
        this._ownSenderKeys.set(chatId, own);
      }
      return { distributionId: own.distributionId, message: own.distribution() };
    });
  }

  /** Replace our sender key for the chat (after a member left): a new distribution id, chain and signing key. */
  rotateSenderKey(chatId) {
    return this._exclusive(async () => {
      const own = await OwnSenderKey.generate(this._random);
      this._ownSenderKeys.set(chatId, own);
      return { distributionId: own.distributionId, message: own.distribution() };
    });
  }

  /** Store a member device's sender key (the message arrived pairwise-encrypted from that device). */
  processSenderKeyDistribution(chatId, userId, deviceId, message) {
    return this._exclusive(async () => {
      const dist = decodeDistribution(message);
      const id = keyOf(chatId, userId, deviceId);
      const states = this._peerSenderKeys.get(id)?.states ?? [];
      // Already known: re-processing must not rewind the chain, or old messages would decrypt again.
      if (states.some((s) => s.distributionId === dist.distributionId && equal(s.signingKey, dist.signingKey))) return;
      const others = states.filter((s) => s.distributionId !== dist.distributionId);
      this._peerSenderKeys.set(id, {
        ids: [chatId, userId, deviceId],
        states: [PeerSenderKey.fromDistribution(dist), ...others].slice(0, MAX_SENDER_KEY_STATES),
      });
    });
  }

  /**
   * Drop a member's sender keys (one device's, or all of the user's; in one chat, or in all), when the
   * member or device goes away, so a key it kept cannot be used to write as it. Whether any were held.
   * @param {string} userId @param {string | null} [deviceId] @param {{chatId?: string | null}} [options]
   */
  forgetSenderKeys(userId, deviceId = null, { chatId = null } = {}) {
    return this._exclusive(async () => {
      let any = false;
      for (const [id, { ids }] of this._peerSenderKeys) {
        if (ids[1] === userId && (deviceId === null || ids[2] === deviceId) && (chatId === null || ids[0] === chatId)) {
          this._peerSenderKeys.delete(id);
          any = true;
        }
      }
      return any;
    });
  }

  /** Encrypt and sign one group message with our sender key (distribute it first). */
  groupEncrypt(chatId, plaintext) {
    return this._exclusive(async () => {
      const own = this._ownSenderKeys.get(chatId);
      if (own === undefined) throw new NoSession(`no sender key for chat ${chatId}: call senderKeyDistribution first`);
      return own.encrypt(plaintext, groupContext(chatId, ...this._ownAddress()));
    });
  }

  /** Verify and decrypt a member device's group message (signed for this chat and that sender device). */
  groupDecrypt(chatId, userId, deviceId, ciphertext) {
    return this._exclusive(async () => {
      const message = decodeGroupMessage(ciphertext);
      const context = groupContext(chatId, userId, deviceId);
      for (const state of this._peerSenderKeys.get(keyOf(chatId, userId, deviceId))?.states ?? []) {
        if (state.distributionId === message.distributionId) return state.decrypt(message, context);
      }
      throw new NoSession(`unknown sender key distribution ${message.distributionId}`);
    });
  }

  // ---- persistence -----------------------------------------------------------------------------------

  /**
   * The complete state as a JSON-able object (private keys included, base64). Call between operations
   * (store.js does, inside its lock); every operation commits in one synchronous step, so a snapshot taken
   * while one is awaiting shows the state before it.
   */
  toJSON() {
    return {
      format: STATE_FORMAT,
      version: STATE_VERSION,
      address: this.address,
      identity_seed: toBase64(this._identitySeed),
      signed_prekeys: this._signedPrekeys.map((k) => [
        k.keyId,
        toBase64(k.private),
        toBase64(k.signature),
        k.replacedAt,
      ]),
      one_time_prekeys: [...this._oneTimePrekeys].map(([id, k]) => [id, toBase64(k.private)]),
      next_one_time_id: this._nextOneTimeId,
      next_signed_id: this._nextSignedId,
      sessions: [...this._sessions.values()].map(({ address, sessions }) => [
        ...address,
        sessions.map((s) => s.toJSON()),
      ]),
      identities: [...this._identities.values()].map(({ address, key }) => [...address, toBase64(key)]),
      seen_base_keys: this._seenBaseKeys.map(toBase64),
      own_sender_keys: [...this._ownSenderKeys].map(([chat, k]) => [chat, k.toJSON()]),
      peer_sender_keys: [...this._peerSenderKeys.values()].map(({ ids, states }) => [
        ...ids,
        states.map((s) => s.toJSON()),
      ]),
    };
  }

  /**
   * Restore a state written by toJSON; an unknown format or version, or anything malformed, is a CryptoError.
   * @param {any} state @param {DeviceOptions} [options]
   */
  static async fromJSON(state, options = {}) {
    const s = await readState(state);
    const device = new DeviceCrypto(s.identitySeed, s.identityKey, s.address, options);
    device._signedPrekeys = s.signedPrekeys;
    device._oneTimePrekeys = s.oneTimePrekeys;
    device._nextOneTimeId = s.nextOneTimeId;
    device._nextSignedId = s.nextSignedId;
    device._sessions = s.sessions;
    device._identities = s.identities;
    device._seenBaseKeys = s.seenBaseKeys;
    device._ownSenderKeys = s.ownSenderKeys;
    device._peerSenderKeys = s.peerSenderKeys;
    return device;
  }
}
