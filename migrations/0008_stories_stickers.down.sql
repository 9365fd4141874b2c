-- Sticker messages keep their sticker_id: those sent before 0008 name media rows again.
DROP INDEX contacts_contact;
DROP TABLE user_sticker_packs;
DROP TABLE stickers;
DROP TABLE sticker_packs;
DROP TABLE story_views;
DROP TABLE stories;
DROP TABLE story_list_members;
DROP TABLE story_lists;
