// A DeviceCrypto state (device.js toJSON) read back: the browser's own format (not the Python SDK's: sessions
// are laid out differently). A stored state is checked field by field before a device is built from it: an
// unknown format or version, or anything malformed, is a CryptoError, never a device half restored.

import { fromBase64 } from "./bytes.js";
import { CryptoError } from "./errors.js";
import { ed25519Public, x25519Public } from "./primitives.js";
import { Session } from "./ratchet.js";
import { OwnSenderKey, PeerSenderKey } from "./senderkeys.js";

export const STATE_FORMAT = "sup-browser-device";
export const STATE_VERSION = 1;
const UINT32_MAX = 0xffffffff;

// Map keys for tuples of ids: JSON of the array cannot be confused across boundaries.
export const keyOf = (...ids) => JSON.stringify(ids);

/**
 * The fields of a DeviceCrypto, read from a state written by its toJSON.
 * @param {any} state
 */
export async function readState(state) {
  if (state === null || typeof state !== "object" || state.format !== STATE_FORMAT) {
    throw new CryptoError("not a browser DeviceCrypto state");
  }
  if (state.version !== STATE_VERSION) throw new CryptoError(`unsupported DeviceCrypto state version ${state.version}`);
  try {
    return await readFields(state);
  } catch (error) {
    if (error instanceof CryptoError) throw error;
    throw new CryptoError(`malformed DeviceCrypto state: ${error.name}: ${error.message}`);
  }
}

const malformed = (what) => new CryptoError(`malformed DeviceCrypto state: ${what}`);

const list = (v) => {
  if (!Array.isArray(v)) throw malformed("expected a list");
  return v;
};
const tuple = (v, n) => {
  if (!Array.isArray(v) || v.length !== n) throw malformed(`expected ${n} items`);
  return v;
};
const str = (v) => {
  if (typeof v !== "string") throw malformed("expected a string");
  return v;
};
const id = (v) => {
  if (!Number.isInteger(v) || v < 0 || v > UINT32_MAX) throw malformed("bad key id");
  return v;
};
const object = (v, what) => {
  if (v === null || typeof v !== "object") throw malformed(what);
  return v;
};

async function readFields(s) {
  let address = null;
  if (s.address !== null && s.address !== undefined) {
    const [u, d] = tuple(s.address, 2);
    if (!str(u) || !str(d)) throw malformed("empty address");
    address = [u, d];
  }
  const identitySeed = fromBase64(s.identity_seed, 32);
  const identityKey = await ed25519Public(identitySeed);
  const signedPrekeys = [];
  for (const entry of list(s.signed_prekeys)) {
    const [keyId, priv, signature, replacedAt] = tuple(entry, 4);
    if (replacedAt !== null && typeof replacedAt !== "number") throw malformed("bad time");
    const p = fromBase64(priv, 32);
    signedPrekeys.push({
      keyId: id(keyId),
      private: p,
      publicKey: await x25519Public(p),
      signature: fromBase64(signature, 64),
      replacedAt,
    });
  }
  if (!signedPrekeys.length) throw malformed("no signed prekey");
  const oneTimePrekeys = new Map();
  for (const entry of list(s.one_time_prekeys)) {
    const [keyId, priv] = tuple(entry, 2);
    const p = fromBase64(priv, 32);
    oneTimePrekeys.set(id(keyId), { private: p, publicKey: await x25519Public(p) });
  }
  const nextOneTimeId = id(s.next_one_time_id);
  const nextSignedId = id(s.next_signed_id);
  const sessions = new Map();
  for (const entry of list(s.sessions)) {
    const [u, d, stored] = tuple(entry, 3);
    const loaded = [];
    for (const one of list(stored)) loaded.push(await Session.fromJSON(object(one, "bad session")));
    sessions.set(keyOf(str(u), str(d)), { address: [u, d], sessions: loaded });
  }
  const identities = new Map();
  for (const entry of list(s.identities)) {
    const [u, d, key] = tuple(entry, 3);
    identities.set(keyOf(str(u), str(d)), { address: [u, d], key: fromBase64(key, 32) });
  }
  const seenBaseKeys = list(s.seen_base_keys).map((k) => fromBase64(k, 32));
  const ownSenderKeys = new Map();
  for (const entry of list(s.own_sender_keys)) {
    const [chat, key] = tuple(entry, 2);
    ownSenderKeys.set(str(chat), await OwnSenderKey.fromJSON(object(key, "bad sender key")));
  }
  const peerSenderKeys = new Map();
  for (const entry of list(s.peer_sender_keys)) {
    const [c, u, d, states] = tuple(entry, 4);
    const loaded = list(states).map((one) => PeerSenderKey.fromJSON(object(one, "bad sender key")));
    peerSenderKeys.set(keyOf(str(c), str(u), str(d)), { ids: [c, u, d], states: loaded });
  }
  return {
    address,
    identitySeed,
    identityKey,
    signedPrekeys,
    oneTimePrekeys,
    nextOneTimeId,
    nextSignedId,
    sessions,
    identities,
    seenBaseKeys,
    ownSenderKeys,
    peerSenderKeys,
  };
}
