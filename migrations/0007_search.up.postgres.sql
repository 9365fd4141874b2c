-- Full-text search on Postgres: indexes on the tables themselves, so they follow every
-- insert, edit and delete in the writing transaction with no trigger.
--
-- pg_trgm (trigram indexes for names) and unaccent (to fold diacritics, as SQLite's FTS5
-- does) are contrib extensions shipped with Postgres (Debian: postgresql-contrib, part of the
-- server package since 10). Both are "trusted" since Postgres 13: the database's owner may
-- create them without being a superuser. An older server, or a role that does not own the
-- database, needs an administrator to run these two lines first (see docs/operations.md).
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS unaccent;

-- Words in any language: no stemming and no stop words ('simple'), case and diacritics folded.
CREATE TEXT SEARCH CONFIGURATION sup_search (COPY = pg_catalog.simple);
ALTER TEXT SEARCH CONFIGURATION sup_search
    ALTER MAPPING FOR asciiword, word, numword, asciihword, hword, numhword, hword_asciipart, hword_part,
    hword_numpart WITH unaccent, simple;

-- Messages: each one's words, stored (positions stripped: nothing ranks by them) in a column
-- computed by Postgres itself, so it follows every insert, edit and delete; system messages
-- (JSON about members) and encrypted ones (no body) have none. ASCII punctuation becomes spaces
-- first: Postgres's parser would otherwise keep "bob@example.com", URLs and "3.14" as single
-- words, where SQLite's tokenizer (and the query) see "bob", "example"...
--
-- Stored rather than an index on the expression: for a word in most messages the planner walks
-- the newest messages and tests each one, which must not mean parsing each one again; and the
-- column's statistics let it tell such a word from a rare one (an expression index's would do,
-- but adding this column rewrites the table once, and then the index is built from it).
ALTER TABLE messages ADD COLUMN search_document tsvector GENERATED ALWAYS AS (
    CASE WHEN kind <> 'system' THEN
        strip(to_tsvector('sup_search', translate(body, '!"#$%&''()*+,-./:;<=>?@[\]^_`{|}~', '                                ')))
    END
) STORED;
CREATE INDEX message_search ON messages USING GIN (search_document);

-- Names: trigrams, for substrings and for similar spellings (pg_trgm's % operator).
CREATE INDEX user_search ON users USING GIN (username_key gin_trgm_ops, lower(display_name) gin_trgm_ops);
CREATE INDEX chat_search ON chats USING GIN (lower(title) gin_trgm_ops);

-- The planner's statistics of the new column: without them (autovacuum gathers them only after
-- many rows change) it would guess how common a word is, and a common word could take seconds.
ANALYZE messages;
