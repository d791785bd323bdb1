DROP INDEX IF EXISTS chats_current_message_id_idx;
DROP INDEX IF EXISTS messages_chat_parent_idx;
ALTER TABLE chats DROP CONSTRAINT IF EXISTS chats_current_message_id_fkey;
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_parent_id_fkey;
ALTER TABLE chats DROP COLUMN IF EXISTS current_message_id;
ALTER TABLE messages DROP COLUMN IF EXISTS parent_id;
