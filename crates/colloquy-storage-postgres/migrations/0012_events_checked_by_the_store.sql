-- Ingest (issue 17, docs/decisions.md "Ingest"): an event's chat is checked by the store,
-- not by a foreign key. The key's check ran once per inserted row (a lookup and a row lock
-- on the chat, ~8 µs of the database's CPU per event on the benchmark machine), although
-- every batch that appends events already holds its chats' rows, locked and checked ACTIVE,
-- in the same transaction (writes.rs), and erasure deletes a chat's events before the chat.
-- Dropping a constraint reads no rows: the lock it takes is held for an instant.
ALTER TABLE chat_events DROP CONSTRAINT chat_events_chat_id_fkey;
