-- Chats people can join: a chat is private (members add people, or share an invite link) or
-- public (found by search, joined by anyone); invite links with an optional expiry, use limit
-- and approval; join requests waiting for that approval. Full-text search is in the
-- dialect files next to this one (FTS5 on SQLite, tsvector and pg_trgm on Postgres).

ALTER TABLE chats ADD COLUMN visibility TEXT NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'public'));

CREATE TABLE chat_invites (
    id {uuid} PRIMARY KEY,
    chat_id {uuid} NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    code TEXT NOT NULL UNIQUE,                   -- the secret part of the link; admins list it to share again
    name TEXT NOT NULL DEFAULT '',               -- a label for admins ("for the newsletter")
    created_by {uuid} REFERENCES users (id) ON DELETE SET NULL,
    requires_approval {bool} NOT NULL DEFAULT {false},
    expires_at BIGINT,
    max_uses INTEGER,
    uses INTEGER NOT NULL DEFAULT 0,             -- joins through it (approved requests included)
    revoked_at BIGINT,                           -- kept after revoking, so a late user hears "revoked"
    created_at BIGINT NOT NULL
);
CREATE INDEX chat_invites_chat ON chat_invites (chat_id);

CREATE TABLE chat_join_requests (                -- waiting for an admin; approved or declined, the row goes
    chat_id {uuid} NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    invite_id {uuid} REFERENCES chat_invites (id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (chat_id, user_id)
);

-- The new invite_users permission (256): admins held every permission but manage_roles.
UPDATE chat_roles SET permissions = permissions | 256 WHERE kind = 'admin';
