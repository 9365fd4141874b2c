// Weak public keys (docs/e2e.md "Weak keys"; sup/e2ekeys.py): small-order or non-canonical
// Ed25519 keys, and small-order X25519 keys. Plain Ed25519 (WebCrypto's too) accepts a signature by a
// small-order key over any message, for example key 01 00..00 with R = 01 00..00 and S = 0, so a bundle's
// signature check alone proves nothing about such a key; X25519 with a small-order key gives an all-zero
// shared secret that contributes nothing.

import { fromHex, toHex } from "./bytes.js";

const P = 2n ** 255n - 19n;

// The encodings of the eight points of order 1, 2, 4 or 8, with the x sign bit cleared, plus the
// non-canonical y + p forms that fit in 255 bits: libsodium's list, the same seven as sup/e2ekeys.py.
const ED25519_SMALL_ORDER = new Set([
  "0000000000000000000000000000000000000000000000000000000000000000", // y = 0, order 4
  "0100000000000000000000000000000000000000000000000000000000000000", // y = 1, the identity
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p - 1, order 2
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p (non-canonical 0)
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p + 1 (non-canonical 1)
]);

/** The seven encodings, as bytes (for tests and for the server-side mirror). */
export const ED25519_SMALL_ORDER_ENCODINGS = [...ED25519_SMALL_ORDER].map(fromHex);

function weakEd25519(key) {
  const masked = Uint8Array.from(key);
  masked[31] &= 0x7f;
  if (ED25519_SMALL_ORDER.has(toHex(masked))) return true;
  let y = 0n;
  for (let i = 31; i >= 0; i--) y = (y << 8n) | BigInt(masked[i]);
  return y >= P; // a non-canonical y
}

// The key is small-order exactly when X25519 with a fresh private key gives 32 zero bytes (u mod p is the u
// of one of the eight small-order points). Chromium refuses that result with an OperationError; another
// engine may return the zeros: both mean weak.
async function weakX25519(key) {
  const subtle = globalThis.crypto.subtle;
  try {
    const mine = await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
    const theirs = await subtle.importKey("raw", key, { name: "X25519" }, false, []);
    const shared = new Uint8Array(await subtle.deriveBits({ name: "X25519", public: theirs }, mine.privateKey, 256));
    return shared.every((b) => b === 0);
  } catch {
    return true;
  }
}

/**
 * True when `key` is not 32 bytes, has small order, or (Ed25519) is a non-canonical encoding.
 * @param {"ed25519" | "x25519"} kind
 * @param {Uint8Array} key
 * @returns {Promise<boolean>}
 */
export async function isWeakPublicKey(kind, key) {
  if (kind !== "ed25519" && kind !== "x25519") throw new TypeError(`unknown key kind ${kind}`);
  if (!(key instanceof Uint8Array) || key.length !== 32) return true;
  return kind === "ed25519" ? weakEd25519(key) : weakX25519(key);
}
