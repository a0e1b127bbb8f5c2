-- Totals of the list endpoints without counting rows (issue 17, docs/decisions.md
-- "Lists at a million chats"): the chats of each account, status and config, and the
-- groups of each account and most recent config ('' for none), kept by triggers in the
-- same transaction as the rows they count.
--
-- Writers only ever INSERT change rows (+1 / -1): concurrent transactions never wait on
-- one counter row and cannot deadlock on two. Reads add the rows up and fold an account's
-- rows into one per key once there are many (colloquy-storage-postgres reads.rs).

CREATE TABLE chat_counts (
    user_id    UUID NOT NULL,
    status     TEXT NOT NULL,
    config_id  TEXT NOT NULL,
    n          BIGINT NOT NULL
);
CREATE INDEX chat_counts_by_key ON chat_counts (user_id, status, config_id) INCLUDE (n);

CREATE TABLE group_counts (
    user_id    UUID NOT NULL,
    config_id  TEXT NOT NULL,
    n          BIGINT NOT NULL
);
CREATE INDEX group_counts_by_key ON group_counts (user_id, config_id) INCLUDE (n);

CREATE FUNCTION colloquy_count_chats() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO chat_counts VALUES (OLD.user_id, OLD.status, COALESCE(OLD.config_id, ''), -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO chat_counts VALUES (NEW.user_id, NEW.status, COALESCE(NEW.config_id, ''), 1);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION colloquy_count_groups() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO group_counts VALUES (OLD.user_id, COALESCE(OLD.most_recent_config_id, ''), -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO group_counts VALUES (NEW.user_id, COALESCE(NEW.most_recent_config_id, ''), 1);
    END IF;
    RETURN NULL;
END $$;

-- The triggers and the first totals in one short step: the triggers exist before the
-- totals are read, and the lock (SHARE ROW EXCLUSIVE, which blocks writes to chats and
-- chat_groups, not reads) is held only while the totals are added up.
LOCK TABLE chats, chat_groups IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER chats_counted AFTER INSERT OR DELETE ON chats
    FOR EACH ROW EXECUTE FUNCTION colloquy_count_chats();
CREATE TRIGGER chats_recounted AFTER UPDATE OF user_id, status, config_id ON chats
    FOR EACH ROW
    WHEN (OLD.user_id IS DISTINCT FROM NEW.user_id OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.config_id IS DISTINCT FROM NEW.config_id)
    EXECUTE FUNCTION colloquy_count_chats();

CREATE TRIGGER groups_counted AFTER INSERT OR DELETE ON chat_groups
    FOR EACH ROW EXECUTE FUNCTION colloquy_count_groups();
CREATE TRIGGER groups_recounted AFTER UPDATE OF user_id, most_recent_config_id ON chat_groups
    FOR EACH ROW
    WHEN (OLD.user_id IS DISTINCT FROM NEW.user_id
          OR OLD.most_recent_config_id IS DISTINCT FROM NEW.most_recent_config_id)
    EXECUTE FUNCTION colloquy_count_groups();

INSERT INTO chat_counts (user_id, status, config_id, n)
SELECT user_id, status, COALESCE(config_id, ''), COUNT(*) FROM chats
GROUP BY user_id, status, COALESCE(config_id, '');

INSERT INTO group_counts (user_id, config_id, n)
SELECT user_id, COALESCE(most_recent_config_id, ''), COUNT(*) FROM chat_groups
GROUP BY user_id, COALESCE(most_recent_config_id, '');
