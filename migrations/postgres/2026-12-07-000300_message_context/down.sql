ALTER TABLE messages DROP COLUMN context;
