-- New messages reach the search index from the server, once per transaction for all of them
-- (sup/db/messages.py), no longer through a trigger per insert: FTS5 writes its pending terms
-- out at the end of every statement that touches it, which cost a tenth of a send. Edits and
-- deletes keep their triggers.
DROP TRIGGER message_search_insert;
