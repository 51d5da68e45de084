DROP TABLE messages;
ALTER TABLE sessions DROP COLUMN message_events;
