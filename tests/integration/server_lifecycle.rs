//! The process: first boot, configuration errors, restart on the same data,
//! and the real engine with no route to WhatsApp.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::common::*;
use serde_json::json;

#[test]
fn first_boot_prints_the_admin_key_once_and_saves_it_private() {
    let db = TestDb::Sqlite;
    let mut s = Server::start_with(&db, &[]);
    let printed = printed_key(&s);
    let saved = std::fs::read_to_string(s.data_path("admin.key")).unwrap();
    assert_eq!(saved.trim(), printed);
    let mode = std::fs::metadata(s.data_path("admin.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let master = std::fs::metadata(s.data_path("master.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(master & 0o777, 0o600);
    let (status, got) = s.call_as(&printed, "POST", "/api/auth/validate", None);
    assert_eq!((status, &got["role"]), (200, &json!("admin")));

    s.restart();
    assert!(
        !s.stdout.iter().any(|l| l.contains(&printed)),
        "printed again: {:?}",
        s.stdout
    );
    assert!(!s.log().contains(&printed), "the key appeared in the log");
    assert_eq!(s.call_as(&printed, "GET", "/api/sessions", None).0, 200);
}

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn printed_key(s: &Server) -> String {
    s.stdout
        .iter()
        .find(|l| l.starts_with("wsp_"))
        .cloned()
        .expect("key printed on first boot")
}

/// The data dir and everything the first boot writes in it (keys, the
/// SQLite file and its -wal/-shm) are the owner's alone.
#[test]
fn first_boot_makes_the_data_dir_and_database_private() {
    let s = Server::start_with(&TestDb::Sqlite, &[]);
    assert_eq!(mode_of(&s.data_dir), 0o700, "data dir");
    for name in [
        "admin.key",
        "master.key",
        "wasup.db",
        "wasup.db-wal",
        "wasup.db-shm",
    ] {
        let path = s.data_path(name);
        if name == "wasup.db" || path.exists() {
            assert_eq!(mode_of(&path), 0o600, "{name}");
        }
    }
}

/// A stale admin.key that is a symlink is replaced, not written through:
/// its target stays as it was, and the new key reaches the operator on
/// stdout and in a real admin.key file.
#[test]
fn first_boot_does_not_write_through_an_admin_key_symlink() {
    let mut s = Server::start_with(&TestDb::Sqlite, &[]);
    s.stop();
    // A fresh database on the same data dir: the next start is a first boot.
    for name in ["wasup.db", "wasup.db-wal", "wasup.db-shm"] {
        let _ = std::fs::remove_file(s.data_path(name));
    }
    let target = s.data_dir.with_extension("target");
    std::fs::write(&target, "not yours\n").unwrap();
    std::fs::remove_file(s.data_path("admin.key")).unwrap();
    std::os::unix::fs::symlink(&target, s.data_path("admin.key")).unwrap();

    s.restart_stopped();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "not yours\n");
    let printed = printed_key(&s);
    let key_file = s.data_path("admin.key");
    assert!(std::fs::symlink_metadata(&key_file).unwrap().is_file());
    assert_eq!(mode_of(&key_file), 0o600);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), printed);
    let (status, got) = s.call_as(&printed, "POST", "/api/auth/validate", None);
    assert_eq!((status, &got["role"]), (200, &json!("admin")));
}

#[test]
fn bad_settings_stop_the_start_with_one_line_and_exit_2() {
    for (var, value) in [
        ("WASUP_BIND", "not-an-address"),
        ("WASUP_MASTER_KEY", "too-short"),
        ("WASUP_WA_VERSION", "two.three"),
        ("WASUP_DATABASE_URL", "mysql://localhost/x"),
        ("WASUP_CONNECT_TIMEOUT", "0"),
        // 31 characters: one short of the minimum.
        ("WASUP_ADMIN_KEY", "wsp_0123456789abcdefghijklmnopq"),
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
    }
}

#[test]
fn restart_keeps_sessions_keys_and_desired_state() {
    for db in backends() {
        let mut s = Server::start(&db);
        let running = s.create_session("keeps-running");
        let stopped = s.create_session("stays-stopped");
        let (_, key) = s.call(
            "POST",
            "/api/auth/api-keys",
            Some(json!({"name": "kept", "role": "viewer"})),
        );
        let key = key["apiKey"].as_str().unwrap().to_string();
        s.call("POST", &format!("/api/sessions/{running}/start"), None);
        s.call("POST", &format!("/api/sessions/{stopped}/start"), None);
        s.call("POST", &format!("/api/sessions/{stopped}/stop"), None);

        s.restart();
        let (status, list) = s.call_as(&key, "GET", "/api/sessions", None);
        assert_eq!(status, 200, "{}", db.label());
        assert_eq!(list.as_array().unwrap().len(), 2);
        // The running one is brought back (it cannot reach WhatsApp here, so
        // it is somewhere in its start/retry cycle); the stopped one is not.
        let got = s.wait_session(&running, 10, |b| b["status"] != "created");
        assert_ne!(got["status"], "created");
        // The boot restore has run (the running one left `created`); the
        // stopped one was not part of it and has no retry scheduled.
        let (_, got) = s.call("GET", &format!("/api/sessions/{stopped}"), None);
        assert_eq!(
            got["status"], "disconnected",
            "a stopped session stays stopped: {got}"
        );
        assert!(got["nextRetryAt"].is_null(), "{got}");
    }
}

/// Production build only: a simulator build never dials WhatsApp. The only
/// route to WhatsApp is a proxy that refuses connections, and the version is
/// pinned, so the outcome is the same with or without Internet access.
#[cfg(not(feature = "simulator"))]
#[test]
fn real_engine_without_route_to_whatsapp_ends_failed_with_the_cause() {
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", refused.local_addr().unwrap());
    drop(refused);
    for db in backends() {
        let s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_WA_VERSION", "2.3000.1027000000"),
                // The refusing proxy is on loopback.
                ("WASUP_PROXY_ALLOW_PRIVATE", "true"),
            ],
        );
        let (status, body) = s.call(
            "POST",
            "/api/sessions",
            Some(json!({"name": "no-route", "proxyUrl": proxy,
                        "config": {"maxReconnectAttempts": 1, "reconnectBaseDelay": 1000}})),
        );
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap();
        let (status, got) = s.call("POST", &format!("/api/sessions/{id}/start"), None);
        assert_eq!((status, &got["status"]), (200, &json!("initializing")));
        // First attempt fails → disconnected with a retry scheduled.
        let got = s.wait_session(id, 30, |b| {
            b["status"] == "disconnected" || b["status"] == "failed"
        });
        if got["status"] == "disconnected" {
            assert!(got["nextRetryAt"].is_string(), "{got}");
        }
        let got = s.wait_session(id, 60, |b| b["status"] == "failed");
        let err = got["lastError"].as_str().unwrap();
        assert!(
            err.starts_with("Reconnection failed after 1 attempts: "),
            "{err}"
        );
        assert!(
            err.len() > "Reconnection failed after 1 attempts: ".len() + 5,
            "cause named: {err}"
        );
        // failed is never retried automatically: no retry is scheduled.
        assert!(got["nextRetryAt"].is_null(), "{got}");
    }
}
