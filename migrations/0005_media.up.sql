-- Media: uploaded files, their processing results, and resumable chunked uploads.
-- Bytes live in the blob store (disk or S3), content-addressed: rows name blobs by key,
-- several rows may share one blob, and a blob goes only when no row names it any more.

CREATE TABLE media (
    id {uuid} PRIMARY KEY,
    owner_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL CHECK (purpose IN ('attachment', 'avatar', 'sticker')),
    encrypted {bool} NOT NULL,                   -- client-encrypted: opaque, stored and served, never processed
    kind TEXT NOT NULL CHECK (kind IN ('image', 'video', 'audio', 'file')),
    mime TEXT NOT NULL,                          -- sniffed from the bytes, never taken from the client
    filename TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'ready', 'failed')),
    failure TEXT,                                -- why processing failed, for people
    width INTEGER,
    height INTEGER,
    duration_ms BIGINT,
    info TEXT,                                   -- JSON: codecs, waveform, placeholder
    served_key TEXT,                             -- images: a re-encoded copy without EXIF/GPS, served instead
    served_mime TEXT,
    thumb_small_key TEXT,
    thumb_large_key TEXT,
    thumb_mime TEXT,
    attached_at BIGINT,                          -- first used by a message or avatar: no longer an orphan
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX media_owner ON media (owner_id);
CREATE INDEX media_blob ON media (blob_key);
CREATE INDEX media_unattached ON media (created_at) WHERE attached_at IS NULL;
CREATE INDEX messages_media ON messages (media_id) WHERE media_id IS NOT NULL;

CREATE TABLE media_uploads (
    id {uuid} PRIMARY KEY,
    owner_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL,
    encrypted {bool} NOT NULL,
    filename TEXT NOT NULL,
    size BIGINT NOT NULL,                        -- declared up front: the chunks must add up to it
    chunk_size INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX media_uploads_owner ON media_uploads (owner_id);
CREATE INDEX media_uploads_expiry ON media_uploads (expires_at);
