-- Which install this database belongs to: an id made by the first process that starts on it.
-- Names this install uses outside the database (its Redis keys and pub/sub channel) carry it,
-- so that two installs sharing one Redis never see each other's events or presence.
CREATE TABLE install_identity (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),   -- one row, whoever inserts it first
    install_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
