-- Events of a group are ordered by time, then by insertion order: the rowid, which every
-- SQLite index entry already ends with. The chat id and sequence need not be repeated in the
-- index, which makes every event insert write a smaller index entry.
DROP INDEX chat_events_by_group;
CREATE INDEX chat_events_by_group ON chat_events (chat_group_id, timestamp);
