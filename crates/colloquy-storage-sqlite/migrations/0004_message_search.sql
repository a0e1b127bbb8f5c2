-- Full-text search over what was said: the text of every USER_MESSAGE and AGENT_MESSAGE,
-- with its chat id, in an FTS5 index (GET /v0/evi/chats?search=). The index keeps its own
-- copy of the text so that it never depends on chat_events' rowids (VACUUM may renumber
-- them). Words are split by the unicode61 tokenizer, case-insensitive, accents kept (as
-- PostgreSQL's 'simple' configuration does).
CREATE VIRTUAL TABLE chat_text USING fts5(
    text,
    chat_id UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 0'
);

INSERT INTO chat_text (text, chat_id)
SELECT message_text, chat_id FROM chat_events
WHERE type IN ('USER_MESSAGE', 'AGENT_MESSAGE') AND message_text IS NOT NULL AND message_text <> '';

CREATE TRIGGER chat_events_index_text AFTER INSERT ON chat_events
WHEN NEW.type IN ('USER_MESSAGE', 'AGENT_MESSAGE') AND NEW.message_text IS NOT NULL AND NEW.message_text <> ''
BEGIN
    INSERT INTO chat_text (text, chat_id) VALUES (NEW.message_text, NEW.chat_id);
END;
