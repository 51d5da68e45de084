DROP TABLE session_events;
DROP TABLE api_keys;
DROP TABLE sessions;
