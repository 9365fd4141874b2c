UPDATE chat_roles SET permissions = permissions & ~256;
DROP TABLE chat_join_requests;
DROP TABLE chat_invites;
ALTER TABLE chats DROP COLUMN visibility;
