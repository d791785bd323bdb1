-- Search and statistics as they were: by user_id alone, summing every chat.
DROP TRIGGER IF EXISTS chats_user_counts ON chats;
DROP FUNCTION IF EXISTS user_counts_follow();
DROP TABLE IF EXISTS user_counts;
ALTER TABLE messages ALTER COLUMN search_vector SET STATISTICS -1;
CREATE INDEX IF NOT EXISTS messages_user_id_idx ON messages (user_id);
DROP INDEX IF EXISTS messages_user_newest_idx;
