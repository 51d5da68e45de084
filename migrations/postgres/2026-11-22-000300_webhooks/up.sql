-- Webhooks, the delivery outbox and the attempt log. Logical schema identical
-- on both backends (timestamps: BIGINT ms since the Unix epoch, UTC; booleans:
-- BIGINT 0/1; ids: UUID strings). Deleting a session removes its webhooks,
-- and deleting a webhook removes its deliveries and attempts (ON DELETE CASCADE).

CREATE TABLE webhooks (
    id           TEXT   NOT NULL PRIMARY KEY,
    session_id   TEXT   NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    url          TEXT   NOT NULL,
    events       TEXT   NOT NULL,            -- JSON array: ["*"] or event names
    secret       BYTEA  NOT NULL,            -- "whsec_…" sealed with the master key
    headers      BYTEA  NOT NULL,            -- JSON object of custom headers, sealed
    active       BIGINT NOT NULL DEFAULT 1,  -- 0 | 1
    max_attempts BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX webhooks_session ON webhooks (session_id);

-- The outbox: one row per (event, webhook), written in the same transaction
-- as the state change that caused the event.
CREATE TABLE webhook_deliveries (
    id              TEXT   NOT NULL PRIMARY KEY,
    webhook_id      TEXT   NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    session_id      TEXT   NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    event_id        TEXT   NOT NULL REFERENCES session_events (id) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    event_name      TEXT   NOT NULL,
    status          TEXT   NOT NULL,         -- pending | delivered | dead
    attempts        BIGINT NOT NULL DEFAULT 0, -- attempts since queued (or redriven)
    next_attempt_at BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (webhook_id, event_id)
);
-- The head of each webhook's queue: pending rows by seq.
CREATE INDEX webhook_deliveries_queue ON webhook_deliveries (webhook_id, status, seq);
CREATE INDEX webhook_deliveries_status ON webhook_deliveries (status, updated_at);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
CREATE INDEX webhook_deliveries_session ON webhook_deliveries (session_id);

-- Every attempt, successful or not.
CREATE TABLE webhook_attempts (
    id          TEXT   NOT NULL PRIMARY KEY,
    delivery_id TEXT   NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    webhook_id  TEXT   NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id    TEXT   NOT NULL,
    event_name  TEXT   NOT NULL,
    attempt     BIGINT NOT NULL,
    outcome     TEXT   NOT NULL,             -- delivered | failed | dead
    status_code BIGINT,
    error       TEXT,
    latency_ms  BIGINT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_webhook ON webhook_attempts (webhook_id, at);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id);
CREATE INDEX webhook_attempts_at ON webhook_attempts (at);
