-- Accounts (SQLite variant: ids are TEXT, bytes are BLOB, booleans are INTEGER).

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    username_key TEXT NOT NULL UNIQUE,          -- lower-cased: uniqueness ignores case
    display_name TEXT NOT NULL DEFAULT '',
    bio TEXT NOT NULL DEFAULT '',
    avatar_media_id TEXT,
    password_hash TEXT NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0,
    totp_secret BLOB,                          -- encrypted with a key derived from the server secret
    totp_enabled_at BIGINT,                     -- NULL while 2FA is off or only pending
    totp_last_step BIGINT NOT NULL DEFAULT 0,   -- last accepted TOTP time step: no replay
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE user_devices (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX user_devices_user ON user_devices (user_id);

CREATE TABLE sessions (
    token_hash BLOB PRIMARY KEY,               -- SHA-256 of the refresh token
    device_id TEXT NOT NULL REFERENCES user_devices (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT                              -- set when rotated; a second use is theft
);
CREATE INDEX sessions_device ON sessions (device_id);

CREATE TABLE recovery_codes (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash BLOB NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE invites (
    code_hash BLOB PRIMARY KEY,
    created_by TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    max_uses INTEGER NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE contacts (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    contact_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, contact_id)
);

CREATE TABLE blocked_users (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blocked_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, blocked_id)
);
CREATE INDEX blocked_users_blocked ON blocked_users (blocked_id);
