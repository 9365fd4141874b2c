-- Stories (a photo or video shown to an audience until it expires, who viewed it, the lists
-- that choose an audience) and sticker packs (stickers, who installed which pack).

CREATE TABLE story_lists (
    id {uuid} PRIMARY KEY,
    owner_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('close_friends', 'exclude')),
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX story_lists_owner ON story_lists (owner_id);
CREATE UNIQUE INDEX story_lists_close_friends ON story_lists (owner_id) WHERE kind = 'close_friends';

CREATE TABLE story_list_members (
    list_id {uuid} NOT NULL REFERENCES story_lists (id) ON DELETE CASCADE,
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (list_id, user_id)
);
CREATE INDEX story_list_members_user ON story_list_members (user_id);

CREATE TABLE stories (
    id {uuid} PRIMARY KEY,
    author_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    media_id {uuid} NOT NULL REFERENCES media (id) ON DELETE CASCADE,  -- a story without its file is nothing
    caption TEXT NOT NULL DEFAULT '',
    audience TEXT NOT NULL CHECK (audience IN ('chats', 'contacts', 'close_friends', 'contacts_except')),
    list_id {uuid} REFERENCES story_lists (id),   -- close friends, or the list left out; read live
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL                    -- unseen by everyone from then; the expiry job deletes it
);
CREATE INDEX stories_author ON stories (author_id, created_at);
CREATE INDEX stories_expiry ON stories (expires_at);
CREATE INDEX stories_media ON stories (media_id);
CREATE INDEX stories_list ON stories (list_id) WHERE list_id IS NOT NULL;

CREATE TABLE story_views (
    story_id {uuid} NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    viewer_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    viewed_at BIGINT NOT NULL,
    PRIMARY KEY (story_id, viewer_id)
);
CREATE INDEX story_views_viewer ON story_views (viewer_id);
-- Whose contact am I: the feed reads only the stories of people who could have me in an audience.
CREATE INDEX contacts_contact ON contacts (contact_id);

CREATE TABLE sticker_packs (
    id {uuid} PRIMARY KEY,
    owner_id {uuid} REFERENCES users (id) ON DELETE SET NULL,  -- a published pack outlives its author
    title TEXT NOT NULL,
    slug TEXT NOT NULL UNIQUE,                    -- the share link's short random part
    cover_media_id {uuid} REFERENCES media (id) ON DELETE SET NULL,
    published_at BIGINT,                          -- NULL: a draft only its owner sees
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX sticker_packs_owner ON sticker_packs (owner_id);

CREATE TABLE stickers (
    id {uuid} PRIMARY KEY,                        -- what messages.sticker_id names
    pack_id {uuid} NOT NULL REFERENCES sticker_packs (id) ON DELETE CASCADE,
    media_id {uuid} NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    emoji TEXT NOT NULL,                          -- what the sticker stands for
    position INTEGER NOT NULL,
    removed_at BIGINT,                            -- taken out of a published pack: sent ones still show
    created_at BIGINT NOT NULL
);
CREATE INDEX stickers_pack ON stickers (pack_id, position);
CREATE INDEX stickers_media ON stickers (media_id);

CREATE TABLE user_sticker_packs (
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    pack_id {uuid} NOT NULL REFERENCES sticker_packs (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    installed_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, pack_id)
);
CREATE INDEX user_sticker_packs_pack ON user_sticker_packs (pack_id);

-- Before packs, messages.sticker_id named a media row uploaded with purpose=sticker. Each
-- owner of such images gets one published pack holding them, and each sticker keeps its
-- media id as its own id, so every message sent before goes on naming a sticker. The pack's
-- id is its owner's, its slug comes from it (16 of the random hex digits of a UUIDv7), and
-- the emoji is unknown: empty.
INSERT INTO sticker_packs (id, owner_id, title, slug, cover_media_id, published_at, created_at, updated_at)
SELECT owner_id, owner_id, 'Stickers', substr(replace(CAST(owner_id AS TEXT), '-', ''), 17, 16), NULL,
       MIN(created_at), MIN(created_at), MIN(created_at)
FROM media WHERE purpose = 'sticker' AND kind = 'image' AND status <> 'failed' AND NOT encrypted
GROUP BY owner_id;

INSERT INTO stickers (id, pack_id, media_id, emoji, position, removed_at, created_at)
SELECT id, owner_id, id, '', ROW_NUMBER() OVER (PARTITION BY owner_id ORDER BY created_at, id), NULL, created_at
FROM media WHERE purpose = 'sticker' AND kind = 'image' AND status <> 'failed' AND NOT encrypted;
