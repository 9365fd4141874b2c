-- Full-text search on SQLite: FTS5 indexes over their tables' own rows (external content:
-- the text is not stored twice), kept in step by triggers in the writing transaction.
--
-- Messages: words in any script (unicode61), case and diacritics folded, so "cafe" finds
-- "Café". Only what the server can read is indexed: plaintext bodies, not system messages
-- (JSON about members); encrypted chats have no body. An edit replaces the indexed text and
-- a delete for everyone (body set to NULL) removes it. An external-content index must be
-- told exactly the text it indexed when a row leaves it, so every trigger below uses the
-- same test (body IS NOT NULL AND kind <> 'system').

CREATE VIRTUAL TABLE message_search USING fts5(
    body, content = 'messages', content_rowid = 'rowid', tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER message_search_insert AFTER INSERT ON messages
WHEN new.body IS NOT NULL AND new.kind <> 'system' BEGIN
    INSERT INTO message_search (rowid, body) VALUES (new.rowid, new.body);
END;

CREATE TRIGGER message_search_update AFTER UPDATE OF body ON messages BEGIN
    INSERT INTO message_search (message_search, rowid, body)
        SELECT 'delete', old.rowid, old.body WHERE old.body IS NOT NULL AND old.kind <> 'system';
    INSERT INTO message_search (rowid, body)
        SELECT new.rowid, new.body WHERE new.body IS NOT NULL AND new.kind <> 'system';
END;

CREATE TRIGGER message_search_delete AFTER DELETE ON messages
WHEN old.body IS NOT NULL AND old.kind <> 'system' BEGIN
    INSERT INTO message_search (message_search, rowid, body) VALUES ('delete', old.rowid, old.body);
END;

-- The messages already there (a few seconds per million on a small machine).
INSERT INTO message_search (rowid, body) SELECT rowid, body FROM messages WHERE body IS NOT NULL AND kind <> 'system';

-- Names: trigrams, so any three letters of a username, display name or chat title find it.
CREATE VIRTUAL TABLE user_search USING fts5(
    username, display_name, content = 'users', content_rowid = 'rowid', tokenize = 'trigram'
);

CREATE TRIGGER user_search_insert AFTER INSERT ON users BEGIN
    INSERT INTO user_search (rowid, username, display_name) VALUES (new.rowid, new.username, new.display_name);
END;

CREATE TRIGGER user_search_update AFTER UPDATE OF username, display_name ON users BEGIN
    INSERT INTO user_search (user_search, rowid, username, display_name)
        VALUES ('delete', old.rowid, old.username, old.display_name);
    INSERT INTO user_search (rowid, username, display_name) VALUES (new.rowid, new.username, new.display_name);
END;

CREATE TRIGGER user_search_delete AFTER DELETE ON users BEGIN
    INSERT INTO user_search (user_search, rowid, username, display_name)
        VALUES ('delete', old.rowid, old.username, old.display_name);
END;

INSERT INTO user_search (user_search) VALUES ('rebuild');

CREATE VIRTUAL TABLE chat_search USING fts5(
    title, content = 'chats', content_rowid = 'rowid', tokenize = 'trigram'
);

CREATE TRIGGER chat_search_insert AFTER INSERT ON chats BEGIN
    INSERT INTO chat_search (rowid, title) VALUES (new.rowid, new.title);
END;

CREATE TRIGGER chat_search_update AFTER UPDATE OF title ON chats BEGIN
    INSERT INTO chat_search (chat_search, rowid, title) VALUES ('delete', old.rowid, old.title);
    INSERT INTO chat_search (rowid, title) VALUES (new.rowid, new.title);
END;

CREATE TRIGGER chat_search_delete AFTER DELETE ON chats BEGIN
    INSERT INTO chat_search (chat_search, rowid, title) VALUES ('delete', old.rowid, old.title);
END;

INSERT INTO chat_search (chat_search) VALUES ('rebuild');
