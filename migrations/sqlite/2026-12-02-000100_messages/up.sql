-- Messages of a session, both directions (issue 11). The row is the truth of
-- the outbound queue: a message is accepted once this row is committed, and
-- its WhatsApp id (chosen by wasup) never changes, so a resend after a crash
-- is the same message to the recipient. Bodies are sealed with the master key.
CREATE TABLE messages (
    session_id      TEXT   NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    id              TEXT   NOT NULL,          -- the WhatsApp message id
    direction       TEXT   NOT NULL,          -- out | in
    chat_id         TEXT   NOT NULL,          -- JID: @s.whatsapp.net, @g.us, @lid
    sender          TEXT,                     -- author JID (inbound), NULL for ours
    kind            TEXT   NOT NULL,          -- text | other WhatsApp types (inbound)
    body            BLOB  NOT NULL,          -- sealed text
    status          TEXT   NOT NULL,          -- pending | sent | delivered | read | failed | received
    error           TEXT,
    from_me         BIGINT NOT NULL,          -- 0 | 1
    push_name       TEXT,
    idempotency_key TEXT,
    wa_timestamp    BIGINT NOT NULL,          -- ms
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (session_id, id),
    UNIQUE (session_id, idempotency_key)
);
-- The queue head of a session (pending by acceptance order) and the list.
CREATE INDEX messages_queue ON messages (status, session_id, created_at);
CREATE INDEX messages_list ON messages (session_id, created_at);
-- Retention prunes by age.
CREATE INDEX messages_created ON messages (created_at);

-- Message events take their seq from the session's one sequence without
-- touching event_seq (the SessionActor's own counter): a stored event's seq
-- is event_seq + message_events.
ALTER TABLE sessions ADD COLUMN message_events BIGINT NOT NULL DEFAULT 0;
