-- Without these statuses, an answer still streaming broke off (failed) and
-- one its user stopped keeps its text as a finished answer.
DROP INDEX IF EXISTS messages_owner_idx;
DROP INDEX IF EXISTS messages_streaming_user_idx;
DROP INDEX IF EXISTS messages_streaming_chat_key;
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_owner_check;
ALTER TABLE messages DROP COLUMN IF EXISTS owner;
UPDATE messages SET status = 'failed' WHERE status = 'streaming';
UPDATE messages SET status = 'complete' WHERE status = 'stopped';
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_status_check;
ALTER TABLE messages
    ADD CONSTRAINT messages_status_check CHECK (status IN ('complete', 'failed'));
