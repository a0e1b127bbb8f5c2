-- Audio reconstruction jobs: one per reconstruction record, created in the same transaction.
-- A job is runnable once its chat has ended and it is unleased or its lease expired.
CREATE TABLE audio_jobs (
    chat_id           UUID PRIMARY KEY REFERENCES audio_reconstructions(chat_id),
    user_id           UUID NOT NULL,
    attempts          BIGINT NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    created_at        BIGINT NOT NULL
);
CREATE INDEX audio_jobs_by_age ON audio_jobs (created_at);
