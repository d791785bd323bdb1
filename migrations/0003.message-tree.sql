-- Messages form a tree: each follows its parent (NULL for a chat's first
-- message), and a chat points at the leaf of its active branch. Existing chats
-- become single branches: each message follows the one before it, and the
-- newest is the current leaf.
-- depends: 0002.ended-sessions

ALTER TABLE messages ADD COLUMN parent_id bigint;
ALTER TABLE chats ADD COLUMN current_message_id bigint;

UPDATE messages
SET parent_id = ordered.previous_id
FROM (
    SELECT id, lag(id) OVER (PARTITION BY chat_id ORDER BY id) AS previous_id
    FROM messages
) AS ordered
WHERE messages.id = ordered.id AND ordered.previous_id IS NOT NULL;

UPDATE chats
SET current_message_id = newest.id
FROM (SELECT chat_id, max(id) AS id FROM messages GROUP BY chat_id) AS newest
WHERE chats.id = newest.chat_id;

-- A parent is a message; deleting a chat deletes its whole tree.
ALTER TABLE messages
    ADD CONSTRAINT messages_parent_id_fkey
    FOREIGN KEY (parent_id) REFERENCES messages (id) ON DELETE CASCADE;
ALTER TABLE chats
    ADD CONSTRAINT chats_current_message_id_fkey
    FOREIGN KEY (current_message_id) REFERENCES messages (id) ON DELETE SET NULL;

-- Siblings (the children of one parent, oldest first) and the newest child on
-- a branch switch: an index range per step, in a chat of any size. A branch
-- walk from the leaf goes up by primary key.
CREATE INDEX messages_chat_parent_idx ON messages (chat_id, parent_id, id);
-- The foreign key from chats, checked when a message is deleted.
CREATE INDEX chats_current_message_id_idx ON chats (current_message_id);
