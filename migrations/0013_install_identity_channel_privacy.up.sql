-- Which install this database belongs to: an id made by the first process that starts on it.
-- Names this install uses outside the database (its Redis keys and pub/sub channel) carry it,
-- so that two installs sharing one Redis never see each other's events or presence.
CREATE TABLE install_identity (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),   -- one row, whoever inserts it first
    install_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- A channel's subscribers do not see each other: its timeline no longer says who joined, left,
-- was added or removed. Such notices written before go as a deleted message does (the row
-- stays, so every client's seqs still meet), their actor with them.
UPDATE messages SET body = NULL, sender_id = NULL, deleted_at = created_at
WHERE kind = 'system' AND deleted_at IS NULL AND body LIKE '{"action":"member%'
  AND chat_id IN (SELECT id FROM chats WHERE type = 'channel');
