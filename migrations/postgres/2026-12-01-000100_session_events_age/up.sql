-- Retention prunes the event log by age (webhook retention, see src/db/webhooks.rs).
CREATE INDEX session_events_created ON session_events (created_at);
