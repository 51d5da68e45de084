//! The tables of migrations/*/2026-11-22-000100_records, written by hand:
//! one definition serves both backends, so only the SQL types the
//! `MultiConnection` derive supports appear here (Text, BigInt, Binary).
//! Timestamps are milliseconds since the Unix epoch (UTC).

diesel::table! {
    sessions (id) {
        id -> Text,
        name -> Text,
        config -> Text,
        proxy_url -> Nullable<Text>,
        proxy_type -> Nullable<Text>,
        desired -> Text,
        status -> Text,
        last_error -> Nullable<Text>,
        phone -> Nullable<Text>,
        push_name -> Nullable<Text>,
        connected_at -> Nullable<BigInt>,
        last_active -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
        event_seq -> BigInt,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        name -> Text,
        key_prefix -> Text,
        key_hash -> Binary,
        role -> Text,
        allowed_sessions -> Nullable<Text>,
        expires_at -> Nullable<BigInt>,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    session_events (id) {
        id -> Text,
        session_id -> Text,
        seq -> BigInt,
        name -> Text,
        payload -> Binary,
        created_at -> BigInt,
    }
}

// Device credentials and protocol state (src/engine/store.rs); sealed values.
diesel::table! {
    device_state (session_id, kind, k, k2, k3) {
        session_id -> Text,
        kind -> Text,
        k -> Text,
        k2 -> Text,
        k3 -> Text,
        value -> Binary,
        n1 -> BigInt,
        n2 -> Nullable<BigInt>,
    }
}

diesel::joinable!(session_events -> sessions (session_id));
diesel::allow_tables_to_appear_in_same_query!(sessions, api_keys, session_events);
