// The errors the crypto core raises, one class per outcome a caller must tell apart.
// They mirror sup/client/crypto/errors.py: same names, same hierarchy, so code written against the
// Python SDK reads the same here. `name` is set explicitly so it survives minification-free logging and
// crosses page boundaries (tests read `error.name`).

/** Base class of every error raised by the crypto modules. */
export class CryptoError extends Error {
  constructor(message) {
    super(message);
    this.name = "CryptoError";
  }
}

/** A message could not be decrypted (tampered, truncated, unknown keys); the state is unchanged. */
export class DecryptError extends CryptoError {
  constructor(message) {
    super(message);
    this.name = "DecryptError";
  }
}

/** The message's key was already consumed: it was decrypted before, so it never decrypts twice. */
export class DuplicateMessage extends DecryptError {
  constructor(message) {
    super(message);
    this.name = "DuplicateMessage";
  }
}

/** There is no pairwise session (or no sender key distribution) for this peer. */
export class NoSession extends CryptoError {
  constructor(message) {
    super(message);
    this.name = "NoSession";
  }
}

/** A peer's identity key differs from the one recorded on first contact. */
export class UntrustedIdentity extends CryptoError {
  /**
   * @param {string} userId
   * @param {string} deviceId
   * @param {Uint8Array} identityKey the new, not yet trusted key
   */
  constructor(userId, deviceId, identityKey) {
    super(`identity key of ${userId}/${deviceId} changed`);
    this.name = "UntrustedIdentity";
    this.userId = userId;
    this.deviceId = deviceId;
    this.identityKey = identityKey;
  }
}

/** A prekey bundle is malformed, uses a weak key, or its signed prekey signature does not verify. */
export class BadBundle extends CryptoError {
  constructor(message) {
    super(message);
    this.name = "BadBundle";
  }
}
