-- Device credentials and protocol state of every session (wacore's storage
-- traits), one generic row per item. `value` is always sealed with the master
-- key (src/crypto.rs). Keyed by session_id; the foreign key to sessions(id)
-- with ON DELETE CASCADE is added when the records migration is present.
CREATE TABLE device_state (
    session_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    k TEXT NOT NULL,
    k2 TEXT NOT NULL DEFAULT '',
    k3 TEXT NOT NULL DEFAULT '',
    value BLOB NOT NULL,
    n1 BIGINT NOT NULL DEFAULT 0,
    n2 BIGINT,
    PRIMARY KEY (session_id, kind, k, k2, k3)
);
CREATE INDEX device_state_k2 ON device_state (session_id, kind, k2);
