-- Colloquy schema, SQLite flavour. Ids are UUID text; timestamps are epoch milliseconds.

CREATE TABLE accounts (
    id              TEXT PRIMARY KEY,
    name            TEXT,
    data_retention  INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES accounts(id),
    name         TEXT,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    secret_hash  TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);

CREATE TABLE access_tokens (
    token_hash  TEXT PRIMARY KEY,
    api_key_id  TEXT NOT NULL REFERENCES api_keys(id),
    expires_at  INTEGER NOT NULL
);

CREATE TABLE server_instances (
    id            TEXT PRIMARY KEY,
    heartbeat_at  INTEGER NOT NULL
);

CREATE TABLE chat_groups (
    id                          TEXT PRIMARY KEY,
    user_id                     TEXT NOT NULL,
    first_start_timestamp       INTEGER NOT NULL,
    most_recent_start_timestamp INTEGER NOT NULL,
    most_recent_chat_id         TEXT,
    most_recent_config_id       TEXT,
    most_recent_config_version  INTEGER,
    num_chats                   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX chat_groups_by_user ON chat_groups (user_id, first_start_timestamp, id);
CREATE INDEX chat_groups_by_config ON chat_groups (user_id, most_recent_config_id, first_start_timestamp, id);

CREATE TABLE chats (
    id                    TEXT PRIMARY KEY,
    user_id               TEXT NOT NULL,
    chat_group_id         TEXT NOT NULL REFERENCES chat_groups(id),
    status                TEXT NOT NULL,
    start_timestamp       INTEGER NOT NULL,
    end_timestamp         INTEGER,
    last_event_timestamp  INTEGER NOT NULL,
    event_count           INTEGER NOT NULL DEFAULT 0,
    metadata              TEXT,
    config_id             TEXT,
    config_version        INTEGER,
    instance_id           TEXT
);
CREATE INDEX chats_by_user ON chats (user_id, start_timestamp, id);
CREATE INDEX chats_by_user_status ON chats (user_id, status, start_timestamp, id);
CREATE INDEX chats_by_user_config ON chats (user_id, config_id, start_timestamp, id);
CREATE INDEX chats_by_group ON chats (chat_group_id, start_timestamp, id);
CREATE INDEX chats_by_group_status ON chats (chat_group_id, status, start_timestamp, id);
CREATE INDEX chats_active ON chats (instance_id) WHERE status = 'ACTIVE';

CREATE TABLE chat_events (
    id                TEXT NOT NULL,
    chat_id           TEXT NOT NULL REFERENCES chats(id),
    seq               INTEGER NOT NULL,
    chat_group_id     TEXT NOT NULL,
    timestamp         INTEGER NOT NULL,
    role              TEXT NOT NULL,
    type              TEXT NOT NULL,
    message_text      TEXT,
    emotion_features  TEXT,
    metadata          TEXT,
    related_event_id  TEXT
);
CREATE UNIQUE INDEX chat_events_by_chat ON chat_events (chat_id, seq);
CREATE INDEX chat_events_by_group ON chat_events (chat_group_id, timestamp, chat_id, seq);

-- Events are immutable once written.
CREATE TRIGGER chat_events_immutable BEFORE UPDATE ON chat_events
BEGIN
    SELECT RAISE(ABORT, 'chat events are immutable');
END;

CREATE TABLE audio_reconstructions (
    chat_id      TEXT PRIMARY KEY REFERENCES chats(id),
    user_id      TEXT NOT NULL,
    status       TEXT NOT NULL,
    filename     TEXT,
    modified_at  INTEGER NOT NULL,
    error        TEXT
);
