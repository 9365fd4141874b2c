// Safety numbers (docs/e2e.md "Safety numbers"; sup/client/crypto/safety.py): Signal's numeric fingerprint,
// version 0, extended to a user's several device keys.
//
//   keys        = the user's 32-byte Ed25519 identity keys, de-duplicated, sorted bytewise, concatenated
//   h           = 0x00 0x00 || keys || UTF-8(user_id); 5200 times h = SHA-512(h || keys)
//   fingerprint = six 5-byte big-endian numbers from h[0:30], each mod 100000 as 5 digits (30 digits)
//   number      = min(fp_A, fp_B) || max(fp_A, fp_B)   (60 digits, identical on both sides)

import { compare, concat, toHex, utf8 } from "./bytes.js";
import { CryptoError } from "./errors.js";
import { sha512 } from "./primitives.js";

export const ITERATIONS = 5200;
const FINGERPRINT_VERSION = new Uint8Array([0, 0]);

/**
 * The 30-digit fingerprint of one user's identity keys.
 * @param {string} userId @param {Uint8Array[]} identityKeys @returns {Promise<string>}
 */
export async function fingerprint(userId, identityKeys) {
  if (identityKeys.length === 0) throw new CryptoError("at least one identity key is needed");
  const unique = new Map(identityKeys.map((k) => [toHex(k), k]));
  const keys = concat(...[...unique.values()].sort(compare));
  let digest = concat(FINGERPRINT_VERSION, keys, utf8(userId));
  for (let i = 0; i < ITERATIONS; i++) digest = await sha512(concat(digest, keys));
  let out = "";
  for (let i = 0; i < 30; i += 5) {
    let n = 0;
    for (let j = i; j < i + 5; j++) n = n * 256 + digest[j]; // 40 bits: exact in a double
    out += String(n % 100000).padStart(5, "0");
  }
  return out;
}

/**
 * The 60-digit safety number two users compare; identical on both sides.
 * @param {string} myUserId @param {Uint8Array[]} myKeys @param {string} theirUserId @param {Uint8Array[]} theirKeys
 */
export async function safetyNumber(myUserId, myKeys, theirUserId, theirKeys) {
  const a = await fingerprint(myUserId, myKeys);
  const b = await fingerprint(theirUserId, theirKeys);
  return a < b ? a + b : b + a;
}
