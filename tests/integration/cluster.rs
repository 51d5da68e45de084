//! Cluster settings and the data-dir lock, on the real binary: cluster
//! settings on SQLite are refused with one line (exit 2), and a second
//! process on a data dir in use refuses to start. The multi-node tests are
//! in `cluster_failover` (simulator build, PostgreSQL).

use std::process::Command;

use crate::common::*;

#[test]
fn cluster_settings_on_sqlite_are_refused_with_one_line_and_exit_2() {
    for (var, value) in [
        ("WASUP_NODE_URL", "http://127.0.0.1:2785"),
        ("WASUP_NODE_ID", "node-a"),
        ("WASUP_NODE_CAPACITY", "10"),
        ("WASUP_LEASE_TTL_MS", "3000"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wasup"))
            .env_clear()
            .env("WASUP_DATA_DIR", dir.path())
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{var}: {err}");
        assert!(err.contains(var), "{var} not named: {err}");
        assert!(err.contains("PostgreSQL"), "{var}: {err}");
    }
}

#[test]
fn a_second_process_on_the_same_data_dir_refuses_to_start() {
    let s = Server::start(&TestDb::Sqlite);
    let out = Command::new(env!("CARGO_BIN_EXE_wasup"))
        .env_clear()
        .env("WASUP_DATA_DIR", &s.data_dir)
        .env("WASUP_BIND", "127.0.0.1:0")
        .env("WASUP_ADMIN_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("in use by another wasup process") && last.contains("wasup.lock"),
        "{err}"
    );
    // The first one serves on.
    let (status, _) = s.call("GET", "/api/sessions", None);
    assert_eq!(status, 200);
}

#[test]
fn a_single_node_lists_itself_and_refuses_to_drain() {
    let s = Server::start(&TestDb::Sqlite);
    let res = s
        .req("GET", "/api/cluster/nodes", Some(ADMIN_KEY))
        .send()
        .unwrap();
    let node = res
        .headers()
        .get("x-wasup-node")
        .expect("X-Wasup-Node on every answer")
        .to_str()
        .unwrap()
        .to_string();
    let (status, body) = split(res);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mode"], "single");
    assert_eq!(body["node"], node.as_str());
    assert_eq!(body["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(body["nodes"][0]["id"], node.as_str());
    let (status, body) = s.call("POST", &format!("/api/cluster/nodes/{node}/drain"), None);
    assert_error(status, &body, 400, "validation_failed");
    let (status, body) = s.call("POST", "/api/cluster/nodes/elsewhere/drain", None);
    assert_error(status, &body, 404, "node_not_found");
}
