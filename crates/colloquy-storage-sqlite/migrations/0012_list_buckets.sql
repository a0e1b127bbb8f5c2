-- Deep pages of the chats and groups lists (issue 17, docs/decisions.md "Deep pages"): how
-- many chats (groups) each account has per bucket of start time, at three levels of span,
-- per status and config ('' for none), kept by triggers in the same transaction as the
-- rows. A bucket at level 2, 1 and 0 is the start time in ms shifted right by 34, 27 and
-- 20 bits (~199 days, ~1.6 days, ~17.5 minutes); colloquy-storage sql/buckets.rs walks
-- down them to the bucket that holds a page. SQLite has one writer, so one row per key.

CREATE TABLE chat_buckets (
    user_id    TEXT NOT NULL,
    level      INTEGER NOT NULL,
    bucket     INTEGER NOT NULL,
    status     TEXT NOT NULL,
    config_id  TEXT NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (user_id, level, bucket, status, config_id)
) WITHOUT ROWID;

CREATE TABLE group_buckets (
    user_id    TEXT NOT NULL,
    level      INTEGER NOT NULL,
    bucket     INTEGER NOT NULL,
    config_id  TEXT NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (user_id, level, bucket, config_id)
) WITHOUT ROWID;

INSERT INTO chat_buckets (user_id, level, bucket, status, config_id, n)
SELECT user_id, l.level, start_timestamp >> l.shift, status, COALESCE(config_id, ''), COUNT(*)
FROM chats, (SELECT 2 AS level, 34 AS shift UNION ALL SELECT 1, 27 UNION ALL SELECT 0, 20) AS l
GROUP BY user_id, l.level, start_timestamp >> l.shift, status, COALESCE(config_id, '');

INSERT INTO group_buckets (user_id, level, bucket, config_id, n)
SELECT user_id, l.level, first_start_timestamp >> l.shift, COALESCE(most_recent_config_id, ''),
       COUNT(*)
FROM chat_groups,
     (SELECT 2 AS level, 34 AS shift UNION ALL SELECT 1, 27 UNION ALL SELECT 0, 20) AS l
GROUP BY user_id, l.level, first_start_timestamp >> l.shift, COALESCE(most_recent_config_id, '');

CREATE TRIGGER chats_bucketed AFTER INSERT ON chats
BEGIN
    INSERT INTO chat_buckets (user_id, level, bucket, status, config_id, n)
    VALUES (NEW.user_id, 2, NEW.start_timestamp >> 34, NEW.status, COALESCE(NEW.config_id, ''), 1),
           (NEW.user_id, 1, NEW.start_timestamp >> 27, NEW.status, COALESCE(NEW.config_id, ''), 1),
           (NEW.user_id, 0, NEW.start_timestamp >> 20, NEW.status, COALESCE(NEW.config_id, ''), 1)
    ON CONFLICT (user_id, level, bucket, status, config_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER chats_rebucketed
AFTER UPDATE OF user_id, status, config_id, start_timestamp ON chats
WHEN OLD.user_id IS NOT NEW.user_id OR OLD.status IS NOT NEW.status
     OR OLD.config_id IS NOT NEW.config_id OR OLD.start_timestamp IS NOT NEW.start_timestamp
BEGIN
    INSERT INTO chat_buckets (user_id, level, bucket, status, config_id, n)
    VALUES (OLD.user_id, 2, OLD.start_timestamp >> 34, OLD.status, COALESCE(OLD.config_id, ''), -1),
           (OLD.user_id, 1, OLD.start_timestamp >> 27, OLD.status, COALESCE(OLD.config_id, ''), -1),
           (OLD.user_id, 0, OLD.start_timestamp >> 20, OLD.status, COALESCE(OLD.config_id, ''), -1)
    ON CONFLICT (user_id, level, bucket, status, config_id) DO UPDATE SET n = n - 1;
    INSERT INTO chat_buckets (user_id, level, bucket, status, config_id, n)
    VALUES (NEW.user_id, 2, NEW.start_timestamp >> 34, NEW.status, COALESCE(NEW.config_id, ''), 1),
           (NEW.user_id, 1, NEW.start_timestamp >> 27, NEW.status, COALESCE(NEW.config_id, ''), 1),
           (NEW.user_id, 0, NEW.start_timestamp >> 20, NEW.status, COALESCE(NEW.config_id, ''), 1)
    ON CONFLICT (user_id, level, bucket, status, config_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER chats_unbucketed AFTER DELETE ON chats
BEGIN
    INSERT INTO chat_buckets (user_id, level, bucket, status, config_id, n)
    VALUES (OLD.user_id, 2, OLD.start_timestamp >> 34, OLD.status, COALESCE(OLD.config_id, ''), -1),
           (OLD.user_id, 1, OLD.start_timestamp >> 27, OLD.status, COALESCE(OLD.config_id, ''), -1),
           (OLD.user_id, 0, OLD.start_timestamp >> 20, OLD.status, COALESCE(OLD.config_id, ''), -1)
    ON CONFLICT (user_id, level, bucket, status, config_id) DO UPDATE SET n = n - 1;
END;

CREATE TRIGGER groups_bucketed AFTER INSERT ON chat_groups
BEGIN
    INSERT INTO group_buckets (user_id, level, bucket, config_id, n)
    VALUES (NEW.user_id, 2, NEW.first_start_timestamp >> 34, COALESCE(NEW.most_recent_config_id, ''), 1),
           (NEW.user_id, 1, NEW.first_start_timestamp >> 27, COALESCE(NEW.most_recent_config_id, ''), 1),
           (NEW.user_id, 0, NEW.first_start_timestamp >> 20, COALESCE(NEW.most_recent_config_id, ''), 1)
    ON CONFLICT (user_id, level, bucket, config_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER groups_rebucketed
AFTER UPDATE OF user_id, most_recent_config_id, first_start_timestamp ON chat_groups
WHEN OLD.user_id IS NOT NEW.user_id
     OR OLD.most_recent_config_id IS NOT NEW.most_recent_config_id
     OR OLD.first_start_timestamp IS NOT NEW.first_start_timestamp
BEGIN
    INSERT INTO group_buckets (user_id, level, bucket, config_id, n)
    VALUES (OLD.user_id, 2, OLD.first_start_timestamp >> 34, COALESCE(OLD.most_recent_config_id, ''), -1),
           (OLD.user_id, 1, OLD.first_start_timestamp >> 27, COALESCE(OLD.most_recent_config_id, ''), -1),
           (OLD.user_id, 0, OLD.first_start_timestamp >> 20, COALESCE(OLD.most_recent_config_id, ''), -1)
    ON CONFLICT (user_id, level, bucket, config_id) DO UPDATE SET n = n - 1;
    INSERT INTO group_buckets (user_id, level, bucket, config_id, n)
    VALUES (NEW.user_id, 2, NEW.first_start_timestamp >> 34, COALESCE(NEW.most_recent_config_id, ''), 1),
           (NEW.user_id, 1, NEW.first_start_timestamp >> 27, COALESCE(NEW.most_recent_config_id, ''), 1),
           (NEW.user_id, 0, NEW.first_start_timestamp >> 20, COALESCE(NEW.most_recent_config_id, ''), 1)
    ON CONFLICT (user_id, level, bucket, config_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER groups_unbucketed AFTER DELETE ON chat_groups
BEGIN
    INSERT INTO group_buckets (user_id, level, bucket, config_id, n)
    VALUES (OLD.user_id, 2, OLD.first_start_timestamp >> 34, COALESCE(OLD.most_recent_config_id, ''), -1),
           (OLD.user_id, 1, OLD.first_start_timestamp >> 27, COALESCE(OLD.most_recent_config_id, ''), -1),
           (OLD.user_id, 0, OLD.first_start_timestamp >> 20, COALESCE(OLD.most_recent_config_id, ''), -1)
    ON CONFLICT (user_id, level, bucket, config_id) DO UPDATE SET n = n - 1;
END;
