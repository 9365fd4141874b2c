// The public prekey material a device publishes to the key directory and a peer fetches from it
// (docs/e2e.md "Identity and prekeys", "Key directory"): the JSON shapes the server's API takes and gives,
// with keys as base64 (standard alphabet, with padding), and the checks a bundle passes before X3DH uses it.

import { concat, fromBase64, toBase64 } from "./bytes.js";
import { BadBundle } from "./errors.js";
import { ed25519Verify } from "./primitives.js";
import { isWeakPublicKey } from "./weakkeys.js";

/**
 * @typedef {object} SignedPrekey an X25519 public key signed by the identity key over 0x05 || public key
 * @property {number} keyId uint32
 * @property {Uint8Array} publicKey
 * @property {Uint8Array} signature 64 bytes
 *
 * @typedef {object} OneTimePrekey an X25519 public key the server hands out at most once
 * @property {number} keyId uint32
 * @property {Uint8Array} publicKey
 *
 * @typedef {object} Bundle everything needed to start a session with one peer device
 * @property {string} userId
 * @property {string} deviceId
 * @property {Uint8Array} identityKey Ed25519
 * @property {SignedPrekey} signedPrekey
 * @property {OneTimePrekey | null} oneTimePrekey null when the device ran out
 */

const UINT32_MAX = 0xffffffff;

/** The exact bytes the signed prekey signature covers (fixed by the server contract): 0x05 || public key. */
export function signedPrekeyMessage(publicKey) {
  return concat(new Uint8Array([0x05]), publicKey);
}

/** `{"key_id", "public_key", "signature"}` as the server takes it. @param {SignedPrekey} k */
export function signedPrekeyJson(k) {
  return { key_id: k.keyId, public_key: toBase64(k.publicKey), signature: toBase64(k.signature) };
}

/** `{"key_id", "public_key"}` as the server takes it. @param {OneTimePrekey} k */
export function oneTimePrekeyJson(k) {
  return { key_id: k.keyId, public_key: toBase64(k.publicKey) };
}

/**
 * The body of `POST /api/v1/crypto/keys` (at most 100 one-time prekeys per request).
 * @param {Uint8Array} identityKey @param {SignedPrekey} signedPrekey @param {OneTimePrekey[]} oneTimePrekeys
 */
export function publishKeysBody(identityKey, signedPrekey, oneTimePrekeys) {
  return {
    identity_key: toBase64(identityKey),
    signed_prekey: signedPrekeyJson(signedPrekey),
    one_time_prekeys: oneTimePrekeys.map(oneTimePrekeyJson),
  };
}

/**
 * The body of `POST /api/v1/crypto/prekeys`: more one-time prekeys, and a rotated signed prekey if given.
 * @param {OneTimePrekey[]} oneTimePrekeys @param {SignedPrekey | null} [signedPrekey]
 */
export function uploadPrekeysBody(oneTimePrekeys, signedPrekey = null) {
  const body = { one_time_prekeys: oneTimePrekeys.map(oneTimePrekeyJson) };
  if (signedPrekey !== null) body.signed_prekey = signedPrekeyJson(signedPrekey);
  return body;
}

function keyId(value) {
  if (!Number.isInteger(value) || value < 0 || value > UINT32_MAX) throw new BadBundle("key id out of range");
  return value;
}

function bytes(value, what) {
  try {
    return fromBase64(value);
  } catch {
    throw new BadBundle(`${what} is not base64`);
  }
}

/**
 * A bundle as `GET /api/v1/crypto/prekeys/{user}/{device}` answers it (or one entry of `.../all`).
 * Only the shape is checked here; verifyBundle checks the keys.
 * @param {any} found @returns {Bundle}
 */
export function bundleFromJson(found) {
  if (found === null || typeof found !== "object") throw new BadBundle("a bundle is an object");
  const { user_id: userId, device_id: deviceId, signed_prekey: spk, one_time_prekey: opk } = found;
  if (typeof userId !== "string" || typeof deviceId !== "string") throw new BadBundle("bad address");
  if (spk === null || typeof spk !== "object") throw new BadBundle("no signed prekey");
  if (opk !== null && opk !== undefined && typeof opk !== "object") throw new BadBundle("bad one-time prekey");
  return {
    userId,
    deviceId,
    identityKey: bytes(found.identity_key, "identity_key"),
    signedPrekey: {
      keyId: keyId(spk.key_id),
      publicKey: bytes(spk.public_key, "signed prekey"),
      signature: bytes(spk.signature, "signature"),
    },
    oneTimePrekey: opk ? { keyId: keyId(opk.key_id), publicKey: bytes(opk.public_key, "one-time prekey") } : null,
  };
}

/** The inverse of bundleFromJson (what the server would answer for this bundle). @param {Bundle} b */
export function bundleToJson(b) {
  return {
    user_id: b.userId,
    device_id: b.deviceId,
    identity_key: toBase64(b.identityKey),
    signed_prekey: signedPrekeyJson(b.signedPrekey),
    one_time_prekey: b.oneTimePrekey === null ? null : oneTimePrekeyJson(b.oneTimePrekey),
  };
}

/**
 * Check a bundle before X3DH uses it, in the order sup/client/crypto/device.py does: for the address it was
 * fetched for, sizes, key ids, weak keys, then the signature. Anything wrong is a BadBundle.
 * @param {[string, string]} address the (user_id, device_id) the bundle was fetched for
 * @param {Bundle} bundle
 */
export async function verifyBundle(address, bundle) {
  if (bundle.userId !== address[0] || bundle.deviceId !== address[1])
    throw new BadBundle("bundle is for another device");
  const spk = bundle.signedPrekey;
  const opk = bundle.oneTimePrekey;
  if (bundle.identityKey.length !== 32 || spk.publicKey.length !== 32 || spk.signature.length !== 64) {
    throw new BadBundle("bad key or signature length");
  }
  if (opk !== null && opk.publicKey.length !== 32) throw new BadBundle("bad one-time prekey length");
  for (const k of opk === null ? [spk] : [spk, opk]) keyId(k.keyId);
  // Plain Ed25519 accepts a signature by a small-order key over any message; X3DH with a small-order prekey
  // would mix in a predictable (all-zero) DH output.
  if (await isWeakPublicKey("ed25519", bundle.identityKey))
    throw new BadBundle("small-order or non-canonical identity key");
  for (const k of opk === null ? [spk] : [spk, opk]) {
    if (await isWeakPublicKey("x25519", k.publicKey)) throw new BadBundle("small-order prekey");
  }
  if (!(await ed25519Verify(bundle.identityKey, spk.signature, signedPrekeyMessage(spk.publicKey)))) {
    throw new BadBundle("signed prekey signature does not verify");
  }
}
