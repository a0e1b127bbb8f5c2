-- The store now writes a batch's messages into the search index itself, with one INSERT
-- per transaction. Through this per-row trigger, FTS5 flushed its pending terms to disk at
-- the savepoint of every row's insert: one tiny index segment per message, merged again
-- later. See docs/benchmarks.md.
DROP TRIGGER chat_events_index_text;
