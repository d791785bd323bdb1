-- What keeps search and the admins' statistics flat as the messages grow.
--
-- Search ranks the newest matches of the caller, found walking their messages
-- newest first (messages_user_newest_idx) when the words are common, or
-- through the full-text index when they are rare: a word in most of someone's
-- messages no longer means scoring every one of them.
--
-- user_counts holds each user's chats and messages, kept by triggers on chats
-- (whose message_count the statement that adds a message already keeps), so
-- the statistics sum a row per user instead of every chat.
-- depends: 0005.usage

CREATE INDEX messages_user_newest_idx ON messages (user_id, id);
DROP INDEX messages_user_id_idx;
-- A larger sample of the words, so the planner knows a rare one for rare (at the
-- default, any word outside the 100 or so most common looks common enough to
-- cross with every message of the user: 12 ms instead of 1 at a million).
ALTER TABLE messages ALTER COLUMN search_vector SET STATISTICS 1000;

CREATE TABLE user_counts (
    user_id  bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    chats    bigint NOT NULL DEFAULT 0,
    messages bigint NOT NULL DEFAULT 0,
    CONSTRAINT user_counts_pkey PRIMARY KEY (user_id)
);

INSERT INTO user_counts (user_id, chats, messages)
SELECT user_id, count(*), sum(message_count) FROM chats GROUP BY user_id;

-- A chat's arrival, its messages and its deletion, on its user's counts. A
-- deletion that comes with the user's own finds no row left: nothing to do.
CREATE FUNCTION user_counts_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO user_counts AS c (user_id, chats, messages)
        VALUES (NEW.user_id, 1, NEW.message_count)
        ON CONFLICT (user_id) DO UPDATE
        SET chats = c.chats + 1, messages = c.messages + excluded.messages;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE user_counts SET chats = chats - 1, messages = messages - OLD.message_count
        WHERE user_id = OLD.user_id;
    ELSIF NEW.message_count <> OLD.message_count THEN
        UPDATE user_counts SET messages = messages + NEW.message_count - OLD.message_count
        WHERE user_id = NEW.user_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER chats_user_counts AFTER INSERT OR DELETE OR UPDATE OF message_count ON chats
    FOR EACH ROW EXECUTE FUNCTION user_counts_follow();
