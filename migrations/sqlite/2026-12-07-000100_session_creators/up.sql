-- The API key that created each session (WASUP_MAX_SESSIONS_PER_KEY counts by
-- it). Its own table: sessions has reached the 16 columns of diesel's tables.
-- Sessions created before it have no row.
CREATE TABLE session_creators (
    session_id TEXT NOT NULL PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    api_key_id TEXT NOT NULL
);
