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
        message_events -> BigInt,
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

// ---- migrations/*/2026-11-22-000300_webhooks

diesel::table! {
    webhooks (id) {
        id -> Text,
        session_id -> Text,
        url -> Text,
        events -> Text,
        secret -> Binary,
        headers -> Binary,
        active -> BigInt,
        max_attempts -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Text,
        webhook_id -> Text,
        session_id -> Text,
        event_id -> Text,
        seq -> BigInt,
        event_name -> Text,
        status -> Text,
        attempts -> BigInt,
        next_attempt_at -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    webhook_attempts (id) {
        id -> Text,
        delivery_id -> Text,
        webhook_id -> Text,
        event_id -> Text,
        event_name -> Text,
        attempt -> BigInt,
        outcome -> Text,
        status_code -> Nullable<BigInt>,
        error -> Nullable<Text>,
        latency_ms -> BigInt,
        at -> BigInt,
    }
}

// ---- migrations/*/2026-12-02-000100_messages

diesel::table! {
    messages (session_id, id) {
        session_id -> Text,
        id -> Text,
        direction -> Text,
        chat_id -> Text,
        sender -> Nullable<Text>,
        kind -> Text,
        body -> Binary,
        status -> Text,
        error -> Nullable<Text>,
        from_me -> BigInt,
        push_name -> Nullable<Text>,
        idempotency_key -> Nullable<Text>,
        wa_timestamp -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
        context -> Nullable<Binary>,
    }
}

diesel::joinable!(messages -> sessions (session_id));

diesel::joinable!(webhooks -> sessions (session_id));
diesel::joinable!(webhook_deliveries -> webhooks (webhook_id));
diesel::joinable!(webhook_attempts -> webhook_deliveries (delivery_id));
diesel::allow_tables_to_appear_in_same_query!(
    sessions,
    api_keys,
    session_events,
    webhooks,
    webhook_deliveries,
    webhook_attempts,
    messages
);

// ---- migrations/*/2026-12-07-000100_session_creators

diesel::table! {
    session_creators (session_id) {
        session_id -> Text,
        api_key_id -> Text,
    }
}
