// X3DH (docs/e2e.md "Sessions"), as the Python `x3dh` package runs it with Ed25519 identity keys and
// SHA-256. Alice (the initiator) holds the verified bundle; Bob answers an initial message:
//
//   DH1 = X25519(IK_A, SPK_B)  DH2 = X25519(EK_A, IK_B)  DH3 = X25519(EK_A, SPK_B)  DH4 = X25519(EK_A, OPK_B)
//   SK  = HKDF(0xFF * 32 || DH1 || DH2 || DH3 [|| DH4], zero salt, "SUP v1 X3DH", 32)
//   AD  = 0xED || IK_A || 0xED || IK_B || addr(A) || addr(B)
//
// Identity keys are used for X25519 through their Montgomery form (primitives.ed25519PublicToX25519), and
// the own identity's X25519 private key is clamp(SHA-512(seed)[0:32]). Bundle verification (signature,
// weak keys) is bundle.js's; this module only does the key agreement.

import { concat, utf8 } from "./bytes.js";
import { ed25519PublicToX25519, hkdfSha256, x25519, x25519PrivateOfSeed, x25519Public } from "./primitives.js";

export const X3DH_INFO = utf8("SUP v1 X3DH");
// Public keys are encoded as a type byte and the 32 raw bytes: 0x05 for X25519 (the byte the signed
// prekey signature covers) and 0xED for an Ed25519 identity key.
export const CURVE25519_PREFIX = 0x05;
export const ED25519_PREFIX = 0xed;

const PADDING = new Uint8Array(32).fill(0xff);

function associatedData(initiatorIdentity, responderIdentity, adAppendix) {
  return concat(
    new Uint8Array([ED25519_PREFIX]),
    initiatorIdentity,
    new Uint8Array([ED25519_PREFIX]),
    responderIdentity,
    adAppendix,
  );
}

/**
 * @typedef {object} X3DHResult
 * @property {Uint8Array} sharedSecret SK, 32 bytes
 * @property {Uint8Array} associatedData AD
 * @property {Uint8Array[]} dh DH1..DH3 (and DH4), for the test vectors
 */

/**
 * Active X3DH (Alice). Every input is already verified; a small-order key makes X25519 throw CryptoError.
 * @param {object} a
 * @param {Uint8Array} a.identitySeed own identity seed
 * @param {Uint8Array} a.identityKey own Ed25519 identity public key
 * @param {Uint8Array} a.peerIdentityKey the bundle's identity key
 * @param {Uint8Array} a.signedPrekey the bundle's signed prekey (X25519 public)
 * @param {Uint8Array | null} a.oneTimePrekey the bundle's one-time prekey, if any
 * @param {Uint8Array} a.ephemeralPrivate EK_A's private key (fresh randomness)
 * @param {Uint8Array} a.adAppendix wire.sessionAdAppendix(own address, peer address)
 * @returns {Promise<X3DHResult & {baseKey: Uint8Array}>}
 */
export async function x3dhInitiate(a) {
  const ownPrivate = await x25519PrivateOfSeed(a.identitySeed);
  const peerIdentity = ed25519PublicToX25519(a.peerIdentityKey);
  const dh = [
    await x25519(ownPrivate, a.signedPrekey),
    await x25519(a.ephemeralPrivate, peerIdentity),
    await x25519(a.ephemeralPrivate, a.signedPrekey),
  ];
  if (a.oneTimePrekey !== null) dh.push(await x25519(a.ephemeralPrivate, a.oneTimePrekey));
  return {
    sharedSecret: await hkdfSha256(concat(PADDING, ...dh), X3DH_INFO, 32),
    associatedData: associatedData(a.identityKey, a.peerIdentityKey, a.adAppendix),
    baseKey: await x25519Public(a.ephemeralPrivate),
    dh,
  };
}

/**
 * Passive X3DH (Bob), for an initial message whose keys were already checked (weakkeys.js).
 * @param {object} a
 * @param {Uint8Array} a.identitySeed own identity seed
 * @param {Uint8Array} a.identityKey own Ed25519 identity public key
 * @param {Uint8Array} a.peerIdentityKey the initial message's identity key (IK_A)
 * @param {Uint8Array} a.baseKey the initial message's base key (EK_A)
 * @param {Uint8Array} a.signedPrekeyPrivate the private key of the signed prekey it names
 * @param {Uint8Array | null} a.oneTimePrekeyPrivate the private key of the one-time prekey it names, if any
 * @param {Uint8Array} a.adAppendix wire.sessionAdAppendix(peer address, own address)
 * @returns {Promise<X3DHResult>}
 */
export async function x3dhRespond(a) {
  const ownPrivate = await x25519PrivateOfSeed(a.identitySeed);
  const peerIdentity = ed25519PublicToX25519(a.peerIdentityKey);
  const dh = [
    await x25519(a.signedPrekeyPrivate, peerIdentity),
    await x25519(ownPrivate, a.baseKey),
    await x25519(a.signedPrekeyPrivate, a.baseKey),
  ];
  if (a.oneTimePrekeyPrivate !== null) dh.push(await x25519(a.oneTimePrekeyPrivate, a.baseKey));
  return {
    sharedSecret: await hkdfSha256(concat(PADDING, ...dh), X3DH_INFO, 32),
    associatedData: associatedData(a.peerIdentityKey, a.identityKey, a.adAppendix),
    dh,
  };
}
