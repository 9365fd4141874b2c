// The errors the crypto core raises, one class per outcome a caller must tell apart.
// They mirror sup/client/crypto/errors.py: same names, same hierarchy, so code written against the
// Python SDK reads the same here. Each error's `name` is its class name, set in CryptoError, because
// `name` is what crosses page boundaries and shows in logs (tests read `error.name`); the client has
// no build step, so class names are never minified away.

/** Base class of every error raised by the crypto modules. */
export class CryptoError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** A message could not be decrypted (tampered, truncated, unknown keys); the state is unchanged. */
export class DecryptError extends CryptoError {}

/** The message's key was already consumed: it was decrypted before, so it never decrypts twice. */
export class DuplicateMessage extends DecryptError {}

/** There is no pairwise session (or no sender key distribution) for this peer. */
export class NoSession extends CryptoError {}

/** A peer's identity key differs from the one recorded on first contact. */
export class UntrustedIdentity extends CryptoError {
  /**
   * @param {string} userId
   * @param {string} deviceId
   * @param {Uint8Array} identityKey the new, not yet trusted key
   */
  constructor(userId, deviceId, identityKey) {
    super(`identity key of ${userId}/${deviceId} changed`);
    this.userId = userId;
    this.deviceId = deviceId;
    this.identityKey = identityKey;
  }
}

/** A prekey bundle is malformed, uses a weak key, or its signed prekey signature does not verify. */
export class BadBundle extends CryptoError {}
