-- Cluster mode (src/cluster, src/db/cluster.rs): the nodes and one lease per
-- session a node owns. PostgreSQL only (cluster mode refuses SQLite), so
-- migrations/sqlite has an empty twin (schema parity). Times are BIGINT milliseconds of the
-- DATABASE's clock (every comparison happens in SQL, so node clocks never
-- have to agree).

CREATE TABLE cluster_nodes (
    id           TEXT    NOT NULL PRIMARY KEY,
    url          TEXT    NOT NULL,            -- how other nodes reach it
    capacity     BIGINT  NOT NULL,            -- sessions it may run
    draining     BOOLEAN NOT NULL DEFAULT FALSE,
    started_at   BIGINT  NOT NULL,
    heartbeat_at BIGINT  NOT NULL
);

CREATE TABLE session_leases (
    session_id TEXT   NOT NULL PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    node_id    TEXT,                          -- NULL: released
    generation BIGINT NOT NULL,               -- the fencing token: +1 on every claim, never reset
    expires_at BIGINT NOT NULL
);

CREATE INDEX session_leases_node ON session_leases (node_id);
