-- Answers the server writes while they stream: an assistant message is stored
-- 'streaming' as soon as it starts, its text saved as it grows, and ends
-- 'complete', 'failed' or (its user stopped it) 'stopped'. ``owner`` names the
-- live process writing it (the key of the advisory lock that process holds
-- for its lifetime), until that process stores the end.
-- depends: 0003.message-tree

ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages
    ADD CONSTRAINT messages_status_check
    CHECK (status IN ('complete', 'failed', 'stopped', 'streaming'));

ALTER TABLE messages ADD COLUMN owner integer;
ALTER TABLE messages ADD CONSTRAINT messages_owner_check CHECK (owner > 0);

-- One answer at a time per chat, exactly, across every process: a second
-- streaming answer in a chat violates this (the adapters turn it into
-- AnswerInProgressError by this name).
CREATE UNIQUE INDEX messages_streaming_chat_key ON messages (chat_id) WHERE status = 'streaming';
-- The answers a user has running, counted against their cap.
CREATE INDEX messages_streaming_user_idx ON messages (user_id) WHERE status = 'streaming';
-- The sweep for answers whose process died: only the few rows with an owner.
CREATE INDEX messages_owner_idx ON messages (owner) WHERE owner IS NOT NULL;
