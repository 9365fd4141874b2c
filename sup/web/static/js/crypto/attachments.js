// Attachment encryption (docs/e2e.md "Attachments"; sup/client/crypto/attachments.py): a fresh AES-256-GCM
// key and nonce per file; the key travels inside the E2E message that references the file.
//
// Blob (what gets uploaded): 0x01 0x05 || nonce (12) || ciphertext || tag (16); the two header bytes are the
// GCM associated data. `digest` is SHA-256 of the whole blob, so a recipient rejects a swapped blob before
// decrypting; `size` is the plaintext length.

import { equal } from "./bytes.js";
import { DecryptError } from "./errors.js";
import { aesGcmDecrypt, aesGcmEncrypt, GCM_NONCE_SIZE, randomBytes, sha256 } from "./primitives.js";
import { ATTACHMENT_HEADER, decodeAttachmentBlob, encodeAttachmentBlob } from "./wire.js";

/**
 * @typedef {object} AttachmentKey what a message carries so its recipients can fetch and check a file
 * @property {Uint8Array} key 32 bytes
 * @property {Uint8Array} digest SHA-256 of the blob as uploaded
 * @property {number} size plaintext bytes
 */

/**
 * Encrypt `data` under a fresh random key. The optional fixed key and nonce are for the test vectors only.
 * @param {Uint8Array} data
 * @param {{key?: Uint8Array, nonce?: Uint8Array, random?: (n: number) => Uint8Array}} [options]
 * @returns {Promise<{blob: Uint8Array, key: AttachmentKey}>}
 */
export async function encryptAttachment(data, { key, nonce, random = randomBytes } = {}) {
  key ??= random(32);
  nonce ??= random(GCM_NONCE_SIZE);
  const blob = encodeAttachmentBlob(nonce, await aesGcmEncrypt(key, nonce, data, ATTACHMENT_HEADER));
  return { blob, key: { key, digest: await sha256(blob), size: data.length } };
}

/**
 * Check the digest, then decrypt (the GCM tag), then check the size; any mismatch is a DecryptError.
 * @param {Uint8Array} blob @param {AttachmentKey} key @returns {Promise<Uint8Array>}
 */
export async function decryptAttachment(blob, key) {
  if (!equal(await sha256(blob), key.digest)) throw new DecryptError("attachment digest mismatch");
  const { nonce, ciphertext } = decodeAttachmentBlob(blob);
  const data = await aesGcmDecrypt(key.key, nonce, ciphertext, ATTACHMENT_HEADER);
  if (data.length !== key.size) throw new DecryptError("attachment size mismatch");
  return data;
}
