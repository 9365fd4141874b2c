-- The extensions stay: they may have been there before, and other databases' objects may use them.
DROP INDEX chat_search;
DROP INDEX user_search;
DROP INDEX message_search;
ALTER TABLE messages DROP COLUMN search_document;
DROP TEXT SEARCH CONFIGURATION sup_search;
