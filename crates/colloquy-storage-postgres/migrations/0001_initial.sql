-- Colloquy schema, PostgreSQL flavour. Ids are UUIDs; timestamps are epoch milliseconds.

CREATE TABLE accounts (
    id              UUID PRIMARY KEY,
    name            TEXT,
    data_retention  BOOLEAN NOT NULL,
    created_at      BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           UUID PRIMARY KEY,
    user_id      UUID NOT NULL REFERENCES accounts(id),
    name         TEXT,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    secret_hash  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);

CREATE TABLE access_tokens (
    token_hash  TEXT PRIMARY KEY,
    api_key_id  UUID NOT NULL REFERENCES api_keys(id),
    expires_at  BIGINT NOT NULL
);

CREATE TABLE server_instances (
    id            UUID PRIMARY KEY,
    heartbeat_at  BIGINT NOT NULL
);

CREATE TABLE chat_groups (
    id                          UUID PRIMARY KEY,
    user_id                     UUID NOT NULL,
    first_start_timestamp       BIGINT NOT NULL,
    most_recent_start_timestamp BIGINT NOT NULL,
    most_recent_chat_id         UUID,
    most_recent_config_id       TEXT,
    most_recent_config_version  BIGINT,
    num_chats                   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX chat_groups_by_user ON chat_groups (user_id, first_start_timestamp, id);
CREATE INDEX chat_groups_by_config ON chat_groups (user_id, most_recent_config_id, first_start_timestamp, id);

CREATE TABLE chats (
    id                    UUID PRIMARY KEY,
    user_id               UUID NOT NULL,
    chat_group_id         UUID NOT NULL REFERENCES chat_groups(id),
    status                TEXT NOT NULL,
    start_timestamp       BIGINT NOT NULL,
    end_timestamp         BIGINT,
    last_event_timestamp  BIGINT NOT NULL,
    event_count           BIGINT NOT NULL DEFAULT 0,
    metadata              TEXT,
    config_id             TEXT,
    config_version        BIGINT,
    instance_id           UUID
);
CREATE INDEX chats_by_user ON chats (user_id, start_timestamp, id);
CREATE INDEX chats_by_user_status ON chats (user_id, status, start_timestamp, id);
CREATE INDEX chats_by_user_config ON chats (user_id, config_id, start_timestamp, id);
CREATE INDEX chats_by_group ON chats (chat_group_id, start_timestamp, id);
CREATE INDEX chats_by_group_status ON chats (chat_group_id, status, start_timestamp, id);
CREATE INDEX chats_active ON chats (instance_id) WHERE status = 'ACTIVE';

CREATE TABLE chat_events (
    id                UUID NOT NULL,
    chat_id           UUID NOT NULL REFERENCES chats(id),
    seq               BIGINT NOT NULL,
    chat_group_id     UUID NOT NULL,
    timestamp         BIGINT NOT NULL,
    role              TEXT NOT NULL,
    type              TEXT NOT NULL,
    message_text      TEXT,
    emotion_features  TEXT,
    metadata          TEXT,
    related_event_id  UUID
);
CREATE UNIQUE INDEX chat_events_by_chat ON chat_events (chat_id, seq);
CREATE INDEX chat_events_by_group ON chat_events (chat_group_id, timestamp, chat_id, seq);

-- Events are immutable once written.
CREATE FUNCTION chat_events_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'chat events are immutable';
END;
$$;

CREATE TRIGGER chat_events_immutable BEFORE UPDATE ON chat_events
    FOR EACH ROW EXECUTE FUNCTION chat_events_immutable();

CREATE TABLE audio_reconstructions (
    chat_id      UUID PRIMARY KEY REFERENCES chats(id),
    user_id      UUID NOT NULL,
    status       TEXT NOT NULL,
    filename     TEXT,
    modified_at  BIGINT NOT NULL,
    error        TEXT
);
