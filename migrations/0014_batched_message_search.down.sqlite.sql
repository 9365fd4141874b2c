CREATE TRIGGER message_search_insert AFTER INSERT ON messages
WHEN new.body IS NOT NULL AND new.kind <> 'system' BEGIN
    INSERT INTO message_search (rowid, body) VALUES (new.rowid, new.body);
END;
