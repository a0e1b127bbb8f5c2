-- Totals of the list endpoints without counting rows (issue 17, docs/decisions.md
-- "Lists at a million chats"): the chats of each account, status and config, and the
-- groups of each account and most recent config ('' for none), kept by triggers in the
-- same transaction as the rows they count. SQLite has one writer, so one row per key.

CREATE TABLE chat_counts (
    user_id    TEXT NOT NULL,
    status     TEXT NOT NULL,
    config_id  TEXT NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (user_id, status, config_id)
) WITHOUT ROWID;

CREATE TABLE group_counts (
    user_id    TEXT NOT NULL,
    config_id  TEXT NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (user_id, config_id)
) WITHOUT ROWID;

INSERT INTO chat_counts (user_id, status, config_id, n)
SELECT user_id, status, COALESCE(config_id, ''), COUNT(*) FROM chats
GROUP BY user_id, status, COALESCE(config_id, '');

INSERT INTO group_counts (user_id, config_id, n)
SELECT user_id, COALESCE(most_recent_config_id, ''), COUNT(*) FROM chat_groups
GROUP BY user_id, COALESCE(most_recent_config_id, '');

CREATE TRIGGER chats_counted AFTER INSERT ON chats
BEGIN
    INSERT INTO chat_counts (user_id, status, config_id, n)
    VALUES (NEW.user_id, NEW.status, COALESCE(NEW.config_id, ''), 1)
    ON CONFLICT (user_id, status, config_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER chats_recounted AFTER UPDATE OF user_id, status, config_id ON chats
WHEN OLD.user_id IS NOT NEW.user_id OR OLD.status IS NOT NEW.status
     OR OLD.config_id IS NOT NEW.config_id
BEGIN
    UPDATE chat_counts SET n = n - 1
    WHERE user_id = OLD.user_id AND status = OLD.status
      AND config_id = COALESCE(OLD.config_id, '');
    INSERT INTO chat_counts (user_id, status, config_id, n)
    VALUES (NEW.user_id, NEW.status, COALESCE(NEW.config_id, ''), 1)
    ON CONFLICT (user_id, status, config_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER chats_uncounted AFTER DELETE ON chats
BEGIN
    UPDATE chat_counts SET n = n - 1
    WHERE user_id = OLD.user_id AND status = OLD.status
      AND config_id = COALESCE(OLD.config_id, '');
END;

CREATE TRIGGER groups_counted AFTER INSERT ON chat_groups
BEGIN
    INSERT INTO group_counts (user_id, config_id, n)
    VALUES (NEW.user_id, COALESCE(NEW.most_recent_config_id, ''), 1)
    ON CONFLICT (user_id, config_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER groups_recounted AFTER UPDATE OF user_id, most_recent_config_id ON chat_groups
WHEN OLD.user_id IS NOT NEW.user_id
     OR OLD.most_recent_config_id IS NOT NEW.most_recent_config_id
BEGIN
    UPDATE group_counts SET n = n - 1
    WHERE user_id = OLD.user_id AND config_id = COALESCE(OLD.most_recent_config_id, '');
    INSERT INTO group_counts (user_id, config_id, n)
    VALUES (NEW.user_id, COALESCE(NEW.most_recent_config_id, ''), 1)
    ON CONFLICT (user_id, config_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER groups_uncounted AFTER DELETE ON chat_groups
BEGIN
    UPDATE group_counts SET n = n - 1
    WHERE user_id = OLD.user_id AND config_id = COALESCE(OLD.most_recent_config_id, '');
END;
