-- Cluster mode's tables, here only so that both backends keep one logical
-- schema (the parity test in src/db/records/tests.rs): cluster mode refuses
-- SQLite, so these stay empty. See migrations/postgres/2026-12-07-000100_cluster.

CREATE TABLE cluster_nodes (
    id           TEXT    NOT NULL PRIMARY KEY,
    url          TEXT    NOT NULL,
    capacity     BIGINT  NOT NULL,
    draining     BOOLEAN NOT NULL DEFAULT FALSE,
    started_at   BIGINT  NOT NULL,
    heartbeat_at BIGINT  NOT NULL
);

CREATE TABLE session_leases (
    session_id TEXT   NOT NULL PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    node_id    TEXT,
    generation BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX session_leases_node ON session_leases (node_id);
