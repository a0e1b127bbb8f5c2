-- Full-text search over what was said (GET /v0/evi/chats?search=): a partial GIN index on the
-- words of every USER_MESSAGE and AGENT_MESSAGE. The 'simple' configuration lowercases and
-- keeps every word (no stemming, no stop words), matching the SQLite backend's FTS5 index.
CREATE INDEX chat_events_text_search ON chat_events
    USING gin (to_tsvector('simple', message_text))
    WHERE type IN ('USER_MESSAGE', 'AGENT_MESSAGE');
