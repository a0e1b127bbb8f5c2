-- Deep pages of the chats and groups lists (issue 17, docs/decisions.md "Deep pages"): how
-- many chats (groups) each account has per bucket of start time, at three levels of span,
-- per status and config ('' for none), kept by triggers in the same transaction as the
-- rows. A bucket at level 2, 1 and 0 is the start time in ms shifted right by 34, 27 and
-- 20 bits (~199 days, ~1.6 days, ~17.5 minutes); colloquy-storage sql/buckets.rs walks
-- down them to the bucket that holds a page.
--
-- As with chat_counts (0011), writers only ever INSERT change rows (+1 / -1), so that
-- concurrent transactions never wait on one row nor deadlock on two; a read that adds up
-- many rows of a range folds them into one per key (colloquy-storage-postgres reads.rs).

CREATE TABLE chat_buckets (
    user_id    UUID NOT NULL,
    level      SMALLINT NOT NULL,
    bucket     BIGINT NOT NULL,
    status     TEXT NOT NULL,
    config_id  TEXT NOT NULL,
    n          BIGINT NOT NULL
);
CREATE INDEX chat_buckets_by_key ON chat_buckets (user_id, level, bucket, status, config_id)
    INCLUDE (n);

CREATE TABLE group_buckets (
    user_id    UUID NOT NULL,
    level      SMALLINT NOT NULL,
    bucket     BIGINT NOT NULL,
    config_id  TEXT NOT NULL,
    n          BIGINT NOT NULL
);
CREATE INDEX group_buckets_by_key ON group_buckets (user_id, level, bucket, config_id)
    INCLUDE (n);

CREATE FUNCTION colloquy_bucket_chats() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO chat_buckets VALUES
            (OLD.user_id, 2, OLD.start_timestamp >> 34, OLD.status, COALESCE(OLD.config_id, ''), -1),
            (OLD.user_id, 1, OLD.start_timestamp >> 27, OLD.status, COALESCE(OLD.config_id, ''), -1),
            (OLD.user_id, 0, OLD.start_timestamp >> 20, OLD.status, COALESCE(OLD.config_id, ''), -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO chat_buckets VALUES
            (NEW.user_id, 2, NEW.start_timestamp >> 34, NEW.status, COALESCE(NEW.config_id, ''), 1),
            (NEW.user_id, 1, NEW.start_timestamp >> 27, NEW.status, COALESCE(NEW.config_id, ''), 1),
            (NEW.user_id, 0, NEW.start_timestamp >> 20, NEW.status, COALESCE(NEW.config_id, ''), 1);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION colloquy_bucket_groups() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO group_buckets VALUES
            (OLD.user_id, 2, OLD.first_start_timestamp >> 34, COALESCE(OLD.most_recent_config_id, ''), -1),
            (OLD.user_id, 1, OLD.first_start_timestamp >> 27, COALESCE(OLD.most_recent_config_id, ''), -1),
            (OLD.user_id, 0, OLD.first_start_timestamp >> 20, COALESCE(OLD.most_recent_config_id, ''), -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO group_buckets VALUES
            (NEW.user_id, 2, NEW.first_start_timestamp >> 34, COALESCE(NEW.most_recent_config_id, ''), 1),
            (NEW.user_id, 1, NEW.first_start_timestamp >> 27, COALESCE(NEW.most_recent_config_id, ''), 1),
            (NEW.user_id, 0, NEW.first_start_timestamp >> 20, COALESCE(NEW.most_recent_config_id, ''), 1);
    END IF;
    RETURN NULL;
END $$;

-- The triggers and the first counts in one short step: the triggers exist before the
-- counts are read, and the lock (SHARE ROW EXCLUSIVE, which blocks writes to chats and
-- chat_groups, not reads) is held only while they are added up.
LOCK TABLE chats, chat_groups IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER chats_bucketed AFTER INSERT OR DELETE ON chats
    FOR EACH ROW EXECUTE FUNCTION colloquy_bucket_chats();
CREATE TRIGGER chats_rebucketed AFTER UPDATE OF user_id, status, config_id, start_timestamp ON chats
    FOR EACH ROW
    WHEN (OLD.user_id IS DISTINCT FROM NEW.user_id OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.config_id IS DISTINCT FROM NEW.config_id
          OR OLD.start_timestamp IS DISTINCT FROM NEW.start_timestamp)
    EXECUTE FUNCTION colloquy_bucket_chats();

CREATE TRIGGER groups_bucketed AFTER INSERT OR DELETE ON chat_groups
    FOR EACH ROW EXECUTE FUNCTION colloquy_bucket_groups();
CREATE TRIGGER groups_rebucketed
    AFTER UPDATE OF user_id, most_recent_config_id, first_start_timestamp ON chat_groups
    FOR EACH ROW
    WHEN (OLD.user_id IS DISTINCT FROM NEW.user_id
          OR OLD.most_recent_config_id IS DISTINCT FROM NEW.most_recent_config_id
          OR OLD.first_start_timestamp IS DISTINCT FROM NEW.first_start_timestamp)
    EXECUTE FUNCTION colloquy_bucket_groups();

INSERT INTO chat_buckets (user_id, level, bucket, status, config_id, n)
SELECT user_id, l.level, start_timestamp >> l.shift, status, COALESCE(config_id, ''), COUNT(*)
FROM chats, (VALUES (2::SMALLINT, 34), (1, 27), (0, 20)) AS l (level, shift)
GROUP BY user_id, l.level, start_timestamp >> l.shift, status, COALESCE(config_id, '');

INSERT INTO group_buckets (user_id, level, bucket, config_id, n)
SELECT user_id, l.level, first_start_timestamp >> l.shift, COALESCE(most_recent_config_id, ''),
       COUNT(*)
FROM chat_groups, (VALUES (2::SMALLINT, 34), (1, 27), (0, 20)) AS l (level, shift)
GROUP BY user_id, l.level, first_start_timestamp >> l.shift, COALESCE(most_recent_config_id, '');
