-- Text to speech (colloquy_storage::VoiceStore): generations a client may continue or save
-- as a voice (deleted once expired), and each account's saved voices.
-- (0009 belongs to another change; sqlx applies migrations by version, gaps allowed.)

CREATE TABLE tts_generations (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    settings    TEXT NOT NULL,       -- JSON: engine voice, speed, pitch, ...
    created_on  INTEGER NOT NULL,    -- epoch ms
    expires_on  INTEGER NOT NULL     -- epoch ms
);
CREATE INDEX tts_generations_by_expiry ON tts_generations (expires_on);

CREATE TABLE tts_voices (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    settings    TEXT NOT NULL,
    created_on  INTEGER NOT NULL,
    UNIQUE (user_id, name)
);
