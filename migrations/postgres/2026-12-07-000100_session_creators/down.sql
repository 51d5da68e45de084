DROP TABLE session_creators;
