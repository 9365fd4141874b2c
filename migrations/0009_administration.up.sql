-- Administration: accounts an admin deactivated, accounts deleted (the row stays, emptied, so
-- that the messages it sent keep their sender and chats converge), the audit log of what
-- admins did, and the data exports users ask for.

ALTER TABLE users ADD COLUMN deactivated_at BIGINT;   -- set: no login, every device logged out
ALTER TABLE users ADD COLUMN deleted_at BIGINT;       -- set: the account is gone; the row is a tombstone

CREATE TABLE audit_log (
    id {uuid} PRIMARY KEY,                            -- UUIDv7: sorts by time
    actor_id {uuid} REFERENCES users (id) ON DELETE SET NULL,  -- NULL: the command line
    action TEXT NOT NULL,                             -- e.g. user.deactivated, invite.created
    target_id TEXT,                                   -- a user id, or an invite's id
    details TEXT NOT NULL,                            -- JSON object
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_log_target ON audit_log (target_id, id);
CREATE INDEX audit_log_action ON audit_log (action, id);

CREATE TABLE account_exports (
    id {uuid} PRIMARY KEY,
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'ready', 'failed')),
    blob_key TEXT,                                    -- the zip, in the blob store, once ready
    size BIGINT,
    failure TEXT,
    created_at BIGINT NOT NULL,
    ready_at BIGINT,
    expires_at BIGINT                                 -- the zip is deleted then
);
CREATE INDEX account_exports_user ON account_exports (user_id, created_at);
CREATE INDEX account_exports_expiry ON account_exports (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX account_exports_blob ON account_exports (blob_key) WHERE blob_key IS NOT NULL;
