-- Email: each user's verified address, and the single-use tokens SUP mails to verify an
-- address or to reset a password (docs/api.md#email-and-password-reset).

CREATE TABLE user_emails (
    user_id {uuid} PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    address TEXT NOT NULL,                      -- as the user typed it
    address_key TEXT NOT NULL UNIQUE,           -- lower-cased: one account per address
    verified_at BIGINT NOT NULL
);

CREATE TABLE email_tokens (
    token_hash {bytes} PRIMARY KEY,             -- SHA-256 of the token: the table holds none
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL CHECK (purpose IN ('verify', 'reset')),
    address TEXT NOT NULL,                      -- verify: the address to confirm; reset: where it went
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT                              -- single use: set when it is used
);
CREATE INDEX email_tokens_user ON email_tokens (user_id, purpose);
