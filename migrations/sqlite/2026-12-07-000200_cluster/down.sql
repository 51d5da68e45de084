DROP TABLE session_leases;
DROP TABLE cluster_nodes;
