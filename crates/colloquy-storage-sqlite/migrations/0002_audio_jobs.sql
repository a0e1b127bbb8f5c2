-- Audio reconstruction jobs: one per reconstruction record, created in the same transaction.
-- A job is runnable once its chat has ended and it is unleased or its lease expired.
CREATE TABLE audio_jobs (
    chat_id           TEXT PRIMARY KEY REFERENCES audio_reconstructions(chat_id),
    user_id           TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    created_at        INTEGER NOT NULL
);
CREATE INDEX audio_jobs_by_age ON audio_jobs (created_at);
