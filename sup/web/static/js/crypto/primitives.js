// The WebCrypto primitives everything else is built on (docs/e2e.md "Primitives"), and the one non-WebCrypto
// operation the protocol needs: mapping an Ed25519 public key to its X25519 form with a few BigInt lines.
// No other curve arithmetic is done here, on purpose: X25519 and Ed25519 themselves run inside WebCrypto.
//
// Private keys come in and go out as raw 32-byte strings because the ratchet state has to be serialised
// (see docs/e2e.md "The browser implementation"); they are imported into WebCrypto for each operation as
// non-extractable CryptoKeys.

import { concat, equal } from "./bytes.js";
import { CryptoError, DecryptError } from "./errors.js";

const subtle = globalThis.crypto.subtle;

export const GCM_NONCE_SIZE = 12;
export const GCM_TAG_SIZE = 16;
export const ZERO_SALT = new Uint8Array(32);

/** @typedef {Uint8Array} Bytes */
/** @typedef {(n: number) => Bytes} RandomSource */

/**
 * `n` bytes from the browser's CSPRNG. Code that needs randomness takes a `RandomSource` argument that
 * defaults to this, so the test vectors can replay fixed values (as Python's _vectors.py does).
 * @type {RandomSource}
 */
export function randomBytes(n) {
  const out = new Uint8Array(n);
  // getRandomValues fills at most 65536 bytes per call.
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/** @param {Bytes} data @returns {Promise<Bytes>} */
export async function sha256(data) {
  return new Uint8Array(await subtle.digest("SHA-256", data));
}

/** @param {Bytes} data @returns {Promise<Bytes>} */
export async function sha512(data) {
  return new Uint8Array(await subtle.digest("SHA-512", data));
}

/** HMAC-SHA256. @param {Bytes} key @param {Bytes} data @returns {Promise<Bytes>} */
export async function hmacSha256(key, data) {
  const k = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, data));
}

/**
 * HKDF-SHA256 (RFC 5869); the default salt is 32 zero bytes ("zero salt" in docs/e2e.md).
 * @param {Bytes} ikm @param {Bytes} info @param {number} length in bytes @param {Bytes} [salt]
 * @returns {Promise<Bytes>}
 */
export async function hkdfSha256(ikm, info, length, salt = ZERO_SALT) {
  const k = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  return new Uint8Array(await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info }, k, length * 8));
}

async function aesKey(key, usage) {
  if (key.length !== 32) throw new CryptoError("AES-256 needs a 32-byte key");
  return subtle.importKey("raw", key, "AES-GCM", false, [usage]);
}

/**
 * AES-256-GCM with a 16-byte tag; returns ciphertext || tag.
 * @param {Bytes} key @param {Bytes} nonce 12 bytes @param {Bytes} plaintext @param {Bytes} aad
 * @returns {Promise<Bytes>}
 */
export async function aesGcmEncrypt(key, nonce, plaintext, aad) {
  const k = await aesKey(key, "encrypt");
  return new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, k, plaintext));
}

/**
 * Inverse of aesGcmEncrypt; a tag that does not verify (or a short input) is a DecryptError.
 * @param {Bytes} key @param {Bytes} nonce @param {Bytes} ciphertext @param {Bytes} aad
 * @returns {Promise<Bytes>}
 */
export async function aesGcmDecrypt(key, nonce, ciphertext, aad) {
  const k = await aesKey(key, "decrypt");
  try {
    return new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, k, ciphertext));
  } catch {
    throw new DecryptError("authentication failed");
  }
}

// PKCS#8 wrappers for a raw 32-byte private key: WebCrypto imports Ed25519/X25519 private keys only as
// PKCS#8 or JWK. The DER prefix is fixed (RFC 8410): SEQUENCE { version 0, AlgorithmIdentifier { OID
// 1.3.101.112 (Ed25519) or 1.3.101.110 (X25519) }, OCTET STRING { OCTET STRING (32 bytes) } }.
const PKCS8_ED25519 = new Uint8Array([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
]);
const PKCS8_X25519 = new Uint8Array([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
]);

function checkKey(key, what) {
  if (!(key instanceof Uint8Array) || key.length !== 32) throw new CryptoError(`${what} must be 32 bytes`);
}

function fromBase64Url(text) {
  const binary = atob(text.replaceAll("-", "+").replaceAll("_", "/"));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

// The public half of a private key: WebCrypto derives it when the key is exported as JWK ("x"). Only this
// one import is extractable, and only for the length of this call.
async function publicOf(prefix, algorithm, usage, privateKey) {
  const k = await subtle.importKey("pkcs8", concat(prefix, privateKey), algorithm, true, [usage]);
  return fromBase64Url((await subtle.exportKey("jwk", k)).x);
}

/** The Ed25519 public key of a 32-byte seed (RFC 8032 private key). @param {Bytes} seed */
export async function ed25519Public(seed) {
  checkKey(seed, "an Ed25519 seed");
  return publicOf(PKCS8_ED25519, { name: "Ed25519" }, "sign", seed);
}

/** A deterministic RFC 8032 signature. @param {Bytes} seed @param {Bytes} message @returns {Promise<Bytes>} */
export async function ed25519Sign(seed, message) {
  checkKey(seed, "an Ed25519 seed");
  const k = await subtle.importKey("pkcs8", concat(PKCS8_ED25519, seed), { name: "Ed25519" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign({ name: "Ed25519" }, k, message));
}

/**
 * Plain Ed25519 verification (as the server does). Any malformed input is `false`. NB: a small-order key
 * "verifies" chosen signatures over anything; check it with weakkeys.js first.
 * @param {Bytes} publicKey @param {Bytes} signature @param {Bytes} message
 */
export async function ed25519Verify(publicKey, signature, message) {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    const k = await subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    return await subtle.verify({ name: "Ed25519" }, k, signature, message);
  } catch {
    return false;
  }
}

/** The X25519 public key of a 32-byte private key (clamped by X25519 itself, RFC 7748). @param {Bytes} priv */
export async function x25519Public(priv) {
  checkKey(priv, "an X25519 private key");
  return publicOf(PKCS8_X25519, { name: "X25519" }, "deriveBits", priv);
}

/**
 * X25519(private, public). An all-zero result (a small-order public key) throws CryptoError: it would
 * contribute nothing secret. Chromium refuses it itself with an OperationError; the explicit check keeps
 * that true on any engine.
 * @param {Bytes} priv @param {Bytes} pub @returns {Promise<Bytes>}
 */
export async function x25519(priv, pub) {
  checkKey(priv, "an X25519 private key");
  checkKey(pub, "an X25519 public key");
  let shared;
  try {
    const k = await subtle.importKey("pkcs8", concat(PKCS8_X25519, priv), { name: "X25519" }, false, ["deriveBits"]);
    const p = await subtle.importKey("raw", pub, { name: "X25519" }, false, []);
    shared = new Uint8Array(await subtle.deriveBits({ name: "X25519", public: p }, k, 256));
  } catch {
    throw new CryptoError("X25519 failed (small-order public key?)");
  }
  if (equal(shared, new Uint8Array(32))) throw new CryptoError("X25519 gave all zeros (small-order public key)");
  return shared;
}

/**
 * RFC 7748 clamping: clear bits 0-2 of byte 0, clear bit 7 and set bit 6 of byte 31.
 * @param {Bytes} scalar 32 bytes @returns {Bytes} a clamped copy
 */
export function clamp(scalar) {
  const out = Uint8Array.from(scalar);
  out[0] &= 248;
  out[31] = (out[31] & 127) | 64;
  return out;
}

/**
 * The X25519 private key of an identity seed: clamp(SHA-512(seed)[0:32]), the scalar Ed25519 itself uses,
 * so its X25519 public key is the Edwards-to-Montgomery map of the Ed25519 public key.
 * @param {Bytes} seed @returns {Promise<Bytes>}
 */
export async function x25519PrivateOfSeed(seed) {
  checkKey(seed, "an Ed25519 seed");
  return clamp((await sha512(seed)).subarray(0, 32));
}

const P = 2n ** 255n - 19n;

function bytesToBigIntLE(bytes) {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]);
  return n;
}

function bigIntToBytesLE(n) {
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

function powMod(base, exponent, modulus) {
  let result = 1n;
  base %= modulus;
  while (exponent > 0n) {
    if (exponent & 1n) result = (result * base) % modulus;
    base = (base * base) % modulus;
    exponent >>= 1n;
  }
  return result;
}

/**
 * The X25519 form of an Ed25519 public key: u = (1 + y) / (1 - y) mod p, where y is the key with its sign
 * bit (bit 7 of byte 31) cleared. Callers reject weak keys (weakkeys.js) first; y >= p and y = 1 (no
 * inverse) throw here as well.
 * @param {Bytes} edPublic @returns {Bytes}
 */
export function ed25519PublicToX25519(edPublic) {
  checkKey(edPublic, "an Ed25519 public key");
  const masked = Uint8Array.from(edPublic);
  masked[31] &= 0x7f;
  const y = bytesToBigIntLE(masked);
  if (y >= P || y === 1n) throw new CryptoError("not a usable Ed25519 public key");
  const denominator = (1n - y + P) % P;
  const u = ((1n + y) * powMod(denominator, P - 2n, P)) % P; // Fermat inverse: p is prime
  return bigIntToBytesLE(u);
}
