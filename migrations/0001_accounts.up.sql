-- Accounts: users, their devices (every login is one), refresh-token sessions,
-- 2FA recovery codes, invite codes, contacts and blocks.

CREATE TABLE users (
    id {uuid} PRIMARY KEY,
    username TEXT NOT NULL,
    username_key TEXT NOT NULL UNIQUE,          -- lower-cased: uniqueness ignores case
    display_name TEXT NOT NULL DEFAULT '',
    bio TEXT NOT NULL DEFAULT '',
    avatar_media_id {uuid},
    password_hash TEXT NOT NULL,
    is_admin {bool} NOT NULL DEFAULT {false},
    totp_secret {bytes},                        -- encrypted with a key derived from the server secret
    totp_enabled_at BIGINT,                     -- NULL while 2FA is off or only pending
    totp_last_step BIGINT NOT NULL DEFAULT 0,   -- last accepted TOTP time step: no replay
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE user_devices (
    id {uuid} PRIMARY KEY,
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX user_devices_user ON user_devices (user_id);

CREATE TABLE sessions (
    token_hash {bytes} PRIMARY KEY,             -- SHA-256 of the refresh token
    device_id {uuid} NOT NULL REFERENCES user_devices (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT                              -- set when rotated; a second use is theft
);
CREATE INDEX sessions_device ON sessions (device_id);

CREATE TABLE recovery_codes (
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash {bytes} NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE invites (
    code_hash {bytes} PRIMARY KEY,
    created_by {uuid} REFERENCES users (id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    max_uses INTEGER NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE contacts (
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    contact_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, contact_id)
);

CREATE TABLE blocked_users (
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blocked_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, blocked_id)
);
CREATE INDEX blocked_users_blocked ON blocked_users (blocked_id);
