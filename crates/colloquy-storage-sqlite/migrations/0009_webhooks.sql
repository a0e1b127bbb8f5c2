-- Chat webhooks (issue 14): each account's signing key, each chat's subscriptions, and the
-- durable outbox of deliveries, written in the transaction of the chat start, chat end or
-- tool call that causes them.

-- Set when the account is created (`colloquy keys create`), or at first use for older ones.
ALTER TABLE accounts ADD COLUMN webhook_signing_key TEXT;

-- One row per chat that has subscriptions, written with the chat, so that its end (crash
-- recovery included) can enqueue `chat_ended`. `subscriptions` is JSON
-- ([{url, events, server_wide}]).
CREATE TABLE chat_webhooks (
    chat_id            TEXT PRIMARY KEY,
    user_id            TEXT NOT NULL,
    chat_group_id      TEXT NOT NULL,
    start_timestamp    INTEGER NOT NULL,
    config_id          TEXT,
    custom_session_id  TEXT,
    subscriptions      TEXT NOT NULL
);

-- The outbox. `status`: 'pending', 'delivered', 'failed'. A worker leases a due pending
-- row (`lease_owner`, `lease_until`) while it posts it.
CREATE TABLE webhook_deliveries (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL,
    chat_id           TEXT NOT NULL,
    event             TEXT NOT NULL,
    url               TEXT NOT NULL,
    server_wide       INTEGER NOT NULL,
    body              TEXT NOT NULL,
    status            TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER,
    lease_owner       TEXT,
    lease_until       INTEGER,
    last_status_code  INTEGER,
    last_error        TEXT,
    window_start      INTEGER NOT NULL,
    created_at        INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_user ON webhook_deliveries (user_id, created_at, id);
CREATE INDEX webhook_deliveries_by_chat ON webhook_deliveries (chat_id, created_at);
