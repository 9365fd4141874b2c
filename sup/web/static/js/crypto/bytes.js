// Byte strings: the encodings docs/e2e.md uses everywhere. Integers are unsigned big-endian, ids in
// associated data are length-prefixed UTF-8 (`lp`), UUIDs travel as their 16 raw bytes, and keys in JSON
// are base64 with the standard alphabet and padding (what the server accepts, and nothing else).

import { CryptoError } from "./errors.js";

/** @typedef {Uint8Array} Bytes */

/**
 * Concatenate byte strings.
 * @param {...Bytes} parts
 * @returns {Bytes}
 */
export function concat(...parts) {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * Whether two byte strings are equal. The loop does not stop at the first difference: comparing secrets
 * (digests, keys) should not leak where they differ through timing.
 * @param {Bytes} a
 * @param {Bytes} b
 */
export function equal(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/**
 * Bytewise order (as Python compares `bytes`), for sorting keys.
 * @param {Bytes} a
 * @param {Bytes} b
 * @returns {number}
 */
export function compare(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** @param {Bytes} bytes @returns {string} lower-case hex */
export function toHex(bytes) {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

/** @param {string} hex @returns {Bytes} */
export function fromHex(hex) {
  if (typeof hex !== "string" || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new CryptoError("not a hex string");
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** @param {Bytes} bytes @returns {string} base64, standard alphabet, with padding */
export function toBase64(bytes) {
  let binary = "";
  // Chunked: String.fromCharCode(...bytes) overflows the argument limit for large attachments.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

// atob alone is lenient (it drops whitespace and accepts missing padding); the server is not, so neither
// are we: what we accept here is exactly what Python's b64decode(validate=True) accepts.
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Strict base64 (standard alphabet, padded).
 * @param {string} text
 * @param {number} [size] the exact number of bytes expected
 * @returns {Bytes}
 */
export function fromBase64(text, size) {
  if (typeof text !== "string" || !BASE64.test(text)) throw new CryptoError("not standard padded base64");
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  if (size !== undefined && out.length !== size) {
    throw new CryptoError(`expected ${size} bytes, got ${out.length}`);
  }
  return out;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** @param {string} text @returns {Bytes} UTF-8 */
export function utf8(text) {
  return encoder.encode(text);
}

/** Strict UTF-8 decoding: invalid bytes throw instead of becoming U+FFFD. @param {Bytes} bytes */
export function fromUtf8(bytes) {
  try {
    return decoder.decode(bytes);
  } catch {
    throw new CryptoError("not UTF-8");
  }
}

/** @param {number} n an integer 0 .. 2^16 - 1 @returns {Bytes} 2 bytes, big-endian */
export function uint16(n) {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff) throw new CryptoError("not a uint16");
  return new Uint8Array([n >>> 8, n & 0xff]);
}

/** @param {number} n an integer 0 .. 2^32 - 1 @returns {Bytes} 4 bytes, big-endian */
export function uint32(n) {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new CryptoError("not a uint32");
  return new Uint8Array([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
}

/** @param {Bytes} bytes @param {number} offset @returns {number} */
export function readUint32(bytes, offset) {
  return ((bytes[offset] << 24) | (bytes[offset + 1] << 16) | (bytes[offset + 2] << 8) | bytes[offset + 3]) >>> 0;
}

/**
 * `lp(s)`: uint16 byte length of UTF-8(s) || UTF-8(s). How ids go into associated data, unambiguously.
 * @param {string} text
 * @returns {Bytes}
 */
export function lp(text) {
  if (typeof text !== "string") throw new CryptoError("an id must be a string");
  const raw = utf8(text);
  if (raw.length > 0xffff) throw new CryptoError("id too long");
  return concat(uint16(raw.length), raw);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A UUID string as its 16 raw bytes (RFC 4122 order). @param {string} text @returns {Bytes} */
export function uuidToBytes(text) {
  if (typeof text !== "string" || !UUID.test(text)) throw new CryptoError("not a UUID");
  return fromHex(text.replaceAll("-", ""));
}

/** 16 raw bytes as a lower-case UUID string, the form Python's str(uuid.UUID(bytes=...)) gives. */
export function uuidFromBytes(bytes) {
  if (bytes.length !== 16) throw new CryptoError("a UUID is 16 bytes");
  const h = toHex(bytes);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
