-- Records of the gateway: sessions, API keys and the session event log (the
-- outbox the webhook deliveries are fed from). Logical schema identical to
-- migrations/sqlite/2026-11-22-000100_records: timestamps are BIGINT
-- milliseconds since the Unix epoch (UTC), ids are UUID strings, JSON is TEXT.

CREATE TABLE sessions (
    id           TEXT    NOT NULL PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    config       TEXT    NOT NULL,          -- SessionConfig as JSON
    proxy_url    TEXT,
    proxy_type   TEXT,                      -- http | https | socks5
    desired      TEXT    NOT NULL,          -- running | stopped
    status       TEXT    NOT NULL,          -- lowercase wire status
    last_error   TEXT,
    phone        TEXT,
    push_name    TEXT,
    connected_at BIGINT,
    last_active  BIGINT,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL,
    event_seq    BIGINT  NOT NULL DEFAULT 0 -- seq of the session's last event
);

CREATE TABLE api_keys (
    id               TEXT   NOT NULL PRIMARY KEY,
    name             TEXT   NOT NULL,
    key_prefix       TEXT   NOT NULL,
    key_hash         BYTEA  NOT NULL UNIQUE, -- SHA-256 of the secret
    role             TEXT   NOT NULL,        -- viewer | operator | admin
    allowed_sessions TEXT,                   -- JSON array of session ids; NULL = all
    expires_at       BIGINT,
    created_at       BIGINT NOT NULL,
    revoked_at       BIGINT
);

CREATE TABLE session_events (
    id         TEXT   NOT NULL PRIMARY KEY,  -- "evt_…"
    session_id TEXT   NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    name       TEXT   NOT NULL,              -- "session.status", …
    payload    BYTEA  NOT NULL,              -- prost-encoded wasup.v1.SessionEvent
    created_at BIGINT NOT NULL,
    UNIQUE (session_id, seq)                 -- also serves lookups and the cascade
);
