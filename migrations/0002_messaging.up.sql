-- Messaging: chats with roles and members, messages (plaintext or opaque ciphertext),
-- per-device ciphertexts, reactions, pins, and each device's durable event stream.

CREATE TABLE chats (
    id {uuid} PRIMARY KEY,
    type TEXT NOT NULL CHECK (type IN ('direct', 'group', 'channel')),
    title TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    avatar_media_id {uuid},
    encrypted {bool} NOT NULL,
    direct_key TEXT UNIQUE,                      -- "<lower user id>:<higher user id>": one direct chat per pair
    created_by {uuid} REFERENCES users (id) ON DELETE SET NULL,
    last_seq BIGINT NOT NULL DEFAULT 0,          -- per-chat message counter, bumped under the row lock
    last_message_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE chat_roles (
    id {uuid} PRIMARY KEY,
    chat_id {uuid} NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('owner', 'admin', 'member', 'custom')),
    name TEXT NOT NULL,
    permissions INTEGER NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX chat_roles_chat ON chat_roles (chat_id);

CREATE TABLE chat_members (
    chat_id {uuid} NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id {uuid} NOT NULL REFERENCES chat_roles (id),
    joined_at BIGINT NOT NULL,
    last_read_seq BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (chat_id, user_id)
);
CREATE INDEX chat_members_user ON chat_members (user_id);

CREATE TABLE messages (
    id {uuid} PRIMARY KEY,
    chat_id {uuid} NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    sender_id {uuid} REFERENCES users (id) ON DELETE SET NULL,
    sender_device_id {uuid},
    client_id TEXT NOT NULL,
    content_hash {bytes} NOT NULL,               -- what the client sent: a retry must match it
    kind TEXT NOT NULL,
    body TEXT,                                   -- plaintext (channels, system messages)
    ciphertext {bytes},                          -- one group ciphertext (sender keys), opaque
    media_id {uuid},
    sticker_id {uuid},
    reply_to {uuid},
    forwarded_from TEXT,                         -- JSON: where a forward came from
    edited_at BIGINT,
    deleted_at BIGINT,                           -- deleted for everyone: a tombstone remains
    created_at BIGINT NOT NULL,
    UNIQUE (chat_id, seq),
    UNIQUE (sender_id, client_id)
);

CREATE TABLE message_recipients (
    message_id {uuid} NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    device_id {uuid} NOT NULL,
    ciphertext {bytes} NOT NULL,
    PRIMARY KEY (message_id, device_id)
);

CREATE TABLE message_reactions (
    message_id {uuid} NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    emoji TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, user_id, emoji)
);

CREATE TABLE message_hidden (                    -- "delete for me"
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    message_id {uuid} NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, message_id)
);

CREATE TABLE chat_pins (
    chat_id {uuid} NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    message_id {uuid} NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    pinned_by {uuid} REFERENCES users (id) ON DELETE SET NULL,
    pinned_at BIGINT NOT NULL,
    PRIMARY KEY (chat_id, message_id)
);

-- Each device's stream: seq is gap-free per device and assigned under the device row's
-- lock, so a reader never sees seq N+1 before N has committed.
ALTER TABLE user_devices ADD COLUMN last_event_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE user_devices ADD COLUMN acked_event_seq BIGINT NOT NULL DEFAULT 0;

CREATE TABLE device_events (
    device_id {uuid} NOT NULL REFERENCES user_devices (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    payload {bytes} NOT NULL,                    -- the event as sent on the WebSocket (JSON)
    created_at BIGINT NOT NULL,
    PRIMARY KEY (device_id, seq)
);

ALTER TABLE users ADD COLUMN presence_visibility TEXT NOT NULL DEFAULT 'everyone';
ALTER TABLE users ADD COLUMN last_seen_at BIGINT;
