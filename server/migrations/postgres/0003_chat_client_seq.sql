-- The sender's own number of each chat message (the frame's `seq`), unique per call and sender:
-- a message sent again after its node or process died between storing it and telling the room
-- (or the client) is found, not stored twice. Rows from before have none (NULLs are distinct).
ALTER TABLE chat_messages ADD COLUMN client_seq BIGINT;
CREATE UNIQUE INDEX chat_messages_by_client_seq ON chat_messages(appointment_id, sender_role, client_seq);
