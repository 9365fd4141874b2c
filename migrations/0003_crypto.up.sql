-- The E2E key directory: per device an identity key, signed prekeys and one-time prekeys,
-- and each group sender's current sender key with its pairwise-encrypted distributions.
-- Everything here is public key material or ciphertext: the server holds no private keys.

CREATE TABLE device_keys (
    device_id {uuid} PRIMARY KEY REFERENCES user_devices (id) ON DELETE CASCADE,
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    identity_key {bytes} NOT NULL,               -- Ed25519 public key
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX device_keys_user ON device_keys (user_id);

CREATE TABLE signed_prekeys (
    device_id {uuid} NOT NULL REFERENCES device_keys (device_id) ON DELETE CASCADE,
    key_id BIGINT NOT NULL,
    public_key {bytes} NOT NULL,                 -- X25519 public key
    signature {bytes} NOT NULL,                  -- Ed25519 by the identity key, verified on upload
    created_at BIGINT NOT NULL,
    superseded_at BIGINT,                        -- NULL for the current one; old ones kept for a grace period
    PRIMARY KEY (device_id, key_id)
);

CREATE TABLE one_time_prekeys (
    device_id {uuid} NOT NULL REFERENCES device_keys (device_id) ON DELETE CASCADE,
    key_id BIGINT NOT NULL,
    public_key {bytes} NOT NULL,                 -- handed out at most once: deleted as it is handed out
    PRIMARY KEY (device_id, key_id)
);

CREATE TABLE sender_keys (
    chat_id {uuid} NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    device_id {uuid} NOT NULL REFERENCES user_devices (id) ON DELETE CASCADE,
    distribution_id TEXT NOT NULL,               -- the sender's current key; wiped when a member leaves
    created_at BIGINT NOT NULL,
    PRIMARY KEY (chat_id, device_id)
);

CREATE TABLE sender_key_distributions (
    chat_id {uuid} NOT NULL,
    sender_device_id {uuid} NOT NULL,
    recipient_device_id {uuid} NOT NULL REFERENCES user_devices (id) ON DELETE CASCADE,
    distribution_id TEXT NOT NULL,
    ciphertext {bytes} NOT NULL,                 -- pairwise encrypted to the recipient device
    created_at BIGINT NOT NULL,
    PRIMARY KEY (chat_id, sender_device_id, recipient_device_id),
    FOREIGN KEY (chat_id, sender_device_id) REFERENCES sender_keys (chat_id, device_id) ON DELETE CASCADE
);
CREATE INDEX sender_key_distributions_recipient ON sender_key_distributions (recipient_device_id, chat_id);
