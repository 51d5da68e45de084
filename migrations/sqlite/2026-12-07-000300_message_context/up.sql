-- What a text refers to (WhatsApp's ContextInfo): the contacts it mentions
-- and the message it quotes, with the quoted text. Sealed with the master
-- key like the body (it holds message text); NULL when there is none.
ALTER TABLE messages ADD COLUMN context BLOB;
