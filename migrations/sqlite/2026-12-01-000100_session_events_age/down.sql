DROP INDEX session_events_created;
