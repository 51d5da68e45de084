//! Several nodes on one PostgreSQL (simulator build): three nodes and a
//! capacity-0 node on loopback, one `wasup-simulator` process as the shared
//! WhatsApp. Sessions spread across the nodes; any node forwards a command to
//! the owner (`X-Wasup-Node` says which); `kill -9` of a node: a command for
//! its sessions gets 503 `owner_unavailable` until its leases lapse, then the
//! others bring its sessions back `ready` and send the messages it had
//! accepted, each once; a drain moves every session of a node away. PostgreSQL only: skipped with a note without
//! `WASUP_TEST_DATABASE_URL`.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};
use wasup::db::testing::TestDatabase;

use crate::common::*;
use crate::receiver::Receiver;
use crate::sim_process::SimProcess;

const MASTER_KEY: &str = "4242424242424242424242424242424242424242424242424242424242424242";
const TTL_MS: &str = "4000";
/// The phone the sessions write to.
const FRIEND: &str = "628119999001";

fn node(db: &TestDb, sim: &SimProcess, id: &str, capacity: Option<&str>) -> Server {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let url = format!("http://127.0.0.1:{port}");
    let mut env = vec![
        ("WASUP_ADMIN_KEY", ADMIN_KEY),
        ("WASUP_MASTER_KEY", MASTER_KEY),
        ("WASUP_SIMULATOR_URL", sim.ws.as_str()),
        ("WASUP_BIND", bind.as_str()),
        ("WASUP_NODE_URL", url.as_str()),
        ("WASUP_NODE_ID", id),
        ("WASUP_LEASE_TTL_MS", TTL_MS),
        ("WASUP_WEBHOOK_ALLOW_PRIVATE", "true"),
    ];
    if let Some(c) = capacity {
        env.push(("WASUP_NODE_CAPACITY", c));
    }
    Server::start_with(db, &env)
}

/// node id → the session ids it owns, as `s` lists them.
fn owners(s: &Server) -> HashMap<String, Vec<String>> {
    let (status, body) = s.call("GET", "/api/cluster/nodes", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mode"], "cluster", "{body}");
    body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let ids = n["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            (n["id"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

fn owner_of(s: &Server, id: &str) -> Option<String> {
    owners(s)
        .into_iter()
        .find(|(_, ids)| ids.iter().any(|i| i == id))
        .map(|(n, _)| n)
}

/// Wait until every session is `ready` and owned by one of `nodes`.
fn wait_all_ready_on(s: &Server, ids: &[String], nodes: &[&str], secs: u64) {
    poll(secs, "every session ready on the live nodes", || {
        let owned = owners(s);
        for id in ids {
            let (_, view) = s.call("GET", &format!("/api/sessions/{id}"), None);
            if view["status"] != "ready" {
                return Err(format!("{id}: {view}"));
            }
            let on = owned
                .iter()
                .find(|(_, ids)| ids.contains(id))
                .map(|(n, _)| n.as_str());
            if !on.is_some_and(|n| nodes.contains(&n)) {
                return Err(format!("{id} owned by {on:?}"));
            }
        }
        Ok(())
    });
}

fn link(s: &Server, sim: &SimProcess, id: &str, phone: &str) {
    s.wait_session(id, 60, |b| b["status"] == "qr_ready");
    let qr = poll(30, "a QR from the owner", || {
        let (status, got) = s.call("GET", &format!("/api/sessions/{id}/qr?format=raw"), None);
        match (status, got["qr"].as_str()) {
            (200, Some(qr)) => Ok(qr.to_string()),
            _ => Err(format!("{status} {got}")),
        }
    });
    let res = reqwest::blocking::Client::new()
        .post(format!("{}/scan", sim.control))
        .json(&json!({"qr": qr, "phone": phone, "push_name": "Cluster"}))
        .send()
        .unwrap();
    assert!(res.status().is_success(), "scan: {}", res.text().unwrap_or_default());
}

#[test]
fn sessions_spread_forward_fail_over_and_drain_across_nodes() {
    let Some(pg) = TestDatabase::postgres(&wasup::db::testing::current_test()) else {
        return;
    };
    let db = TestDb::Postgres(pg);
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(&dir.path().join("sim"));
    // The first node creates the admin key; the others find it.
    let a = node(&db, &sim, "node-a", None);
    let mut b = node(&db, &sim, "node-b", None);
    let c = node(&db, &sim, "node-c", None);
    let zero = node(&db, &sim, "node-zero", Some("0"));
    let nodes = [("node-a", &a), ("node-b", &b), ("node-c", &c), ("node-zero", &zero)];

    // Sessions created and started through one node spread over the nodes
    // with room.
    let ids: Vec<String> = (0..9).map(|i| a.create_session(&format!("clu-{i}"))).collect();
    let rx = Receiver::ok();
    for id in &ids {
        let (status, got) = a.call(
            "POST",
            &format!("/api/sessions/{id}/webhooks"),
            Some(json!({"url": rx.url()})),
        );
        assert_eq!(status, 201, "{got}");
    }
    for id in &ids {
        let (status, got) = a.call("POST", &format!("/api/sessions/{id}/start"), None);
        assert_eq!(status, 200, "{got}");
    }
    for (i, id) in ids.iter().enumerate() {
        link(&a, &sim, id, &format!("6281100000{i:02}"));
    }
    wait_all_ready_on(&a, &ids, &["node-a", "node-b", "node-c"], 90);
    let owned = owners(&c);
    for n in ["node-a", "node-b", "node-c"] {
        assert!(
            owned.get(n).is_some_and(|s| !s.is_empty()),
            "{n} owns sessions: {owned:?}"
        );
    }
    assert_eq!(owned.get("node-zero").map(Vec::len), Some(0), "{owned:?}");
    let total: usize = owned.values().map(Vec::len).sum();
    assert_eq!(total, ids.len(), "each session owned once: {owned:?}");

    // Any node acts on the owner: a QR request for a linked session,
    // sent to every node, is answered by the owner.
    let probe = &ids[0];
    let owner = owner_of(&a, probe).unwrap();
    for (name, s) in nodes {
        let res = s
            .req("GET", &format!("/api/sessions/{probe}/qr"), Some(ADMIN_KEY))
            .send()
            .unwrap();
        let served = res.headers()["x-wasup-node"].to_str().unwrap().to_string();
        let (status, body) = split(res);
        assert_error(status, &body, 400, "qr_not_available");
        assert_eq!(served, owner, "asked {name}");
    }

    // kill -9 node-b: until its leases lapse a command for its sessions is
    // 503 owner_unavailable; then the others bring them back ready.
    let victims: Vec<String> = owners(&a).remove("node-b").unwrap();
    assert!(!victims.is_empty());
    // Messages accepted for node-b's sessions, paced so that most are still
    // queued when it dies: the survivors send them, each once, under its id.
    let mut accepted = HashSet::new();
    for id in &victims {
        let (status, got) = a.call(
            "PATCH",
            &format!("/api/sessions/{id}/config"),
            Some(json!({"sending": {"minDelayMs": 400, "maxDelayMs": 400, "typing": false}})),
        );
        assert_eq!(status, 200, "{got}");
        for n in 0..3 {
            let (status, got) = a.call(
                "POST",
                &format!("/api/sessions/{id}/messages/send-text"),
                Some(json!({"chatId": format!("{FRIEND}@c.us"), "text": format!("{id} #{n}")})),
            );
            assert_eq!(status, 201, "{got}");
            accepted.insert(got["messageId"].as_str().unwrap().to_string());
        }
    }
    unsafe { libc::kill(b.pid().unwrap() as i32, libc::SIGKILL) };
    let killed_at = chrono::Utc::now();
    let res = a
        .req("POST", &format!("/api/sessions/{}/stop", victims[0]), Some(ADMIN_KEY))
        .send()
        .unwrap();
    let retry = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let (status, body) = split(res);
    assert_error(status, &body, 503, "owner_unavailable");
    assert!(retry.is_some_and(|r| r.parse::<u64>().unwrap() > 0));
    wait_all_ready_on(&a, &ids, &["node-a", "node-c"], 90);
    let owned = owners(&a);
    assert_eq!(owned.get("node-zero").map(Vec::len), Some(0), "{owned:?}");
    b.stop();
    // Every accepted message reaches the phone, once per id (a message on
    // the wire when node-b died may be sent again under the same id: the
    // phone keeps one).
    let received = poll(120, "every accepted message at the phone", || {
        let inbox: Value = reqwest::blocking::get(format!("{}/phones/{FRIEND}/inbox", sim.control))
            .map_err(|e| e.to_string())?
            .json()
            .map_err(|e| e.to_string())?;
        let got: Vec<String> = inbox["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect();
        if accepted.iter().all(|id| got.contains(id)) {
            Ok(got)
        } else {
            Err(format!("{} of {} arrived", got.len(), accepted.len()))
        }
    });
    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "one copy per id: {received:?}");
    assert_eq!(unique.len(), accepted.len(), "only what was accepted: {received:?}");

    // Drain node-c: every session moves to node-a and is ready again.
    let moved = owners(&a).remove("node-c").unwrap_or_default();
    a.wait_no_pending_deliveries(120);
    let before_drain = rx.bodies().len();
    let (status, got) = a.call("POST", "/api/cluster/nodes/node-c/drain", None);
    assert_eq!(status, 202, "{got}");
    wait_all_ready_on(&a, &ids, &["node-a"], 90);
    // No gap longer than one reconnect: a moved session comes back `ready`
    // once, from its stored credentials (no QR, no failure on the way).
    a.wait_no_pending_deliveries(120);
    for id in &moved {
        let after: Vec<Value> = rx.bodies()[before_drain..]
            .iter()
            .filter(|b| b["sessionId"] == id.as_str())
            .cloned()
            .collect();
        let statuses: Vec<&str> = after
            .iter()
            .filter(|b| b["event"] == "session.status")
            .filter_map(|b| b["data"]["status"].as_str())
            .collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == "ready").count(),
            1,
            "{id} after the drain: {statuses:?}"
        );
        assert!(
            !statuses.iter().any(|s| *s == "qr_ready" || *s == "failed"),
            "{id} after the drain: {statuses:?}"
        );
    }
    let (_, listed) = c.call("GET", "/api/cluster/nodes", None);
    let drained = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "node-c")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(drained["draining"], true, "{listed}");
    assert_eq!(drained["sessionCount"], 0, "{listed}");

    // Every accepted event was delivered, once per id, in seq order per
    // session (deliveries are claimed by one node each). The one exception
    // is at-least-once itself: an event node-b was delivering when it was
    // killed (sent, not yet marked) goes out again from its new owner.
    a.wait_no_pending_deliveries(120);
    let bodies = rx.bodies();
    let mut event_ids = HashSet::new();
    let mut seqs: HashMap<String, Vec<u64>> = HashMap::new();
    for body in &bodies {
        if !event_ids.insert(body["id"].as_str().unwrap().to_string()) {
            let session = body["sessionId"].as_str().unwrap();
            let made_at: chrono::DateTime<chrono::Utc> =
                body["timestamp"].as_str().unwrap().parse().unwrap();
            assert!(
                victims.iter().any(|v| v == session) && made_at <= killed_at,
                "twice, and not an event of the killed node: {body}"
            );
            continue;
        }
        seqs.entry(body["sessionId"].as_str().unwrap().to_string())
            .or_default()
            .push(body["seq"].as_u64().unwrap());
    }
    for id in &ids {
        let mut got = seqs.remove(id).unwrap_or_default();
        got.sort_unstable();
        let want: Vec<u64> = (1..=got.len() as u64).collect();
        assert!(got.len() > 3 && got == want, "{id}: seqs {got:?}");
    }
    // The shared simulator never saw two connections of one device at once.
    let overlaps: Value = reqwest::blocking::get(format!("{}/overlaps", sim.control))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(overlaps["total"], 0, "{overlaps}");
}

/// A metric's value as `s` reports it (0 when absent).
fn metric(s: &Server, line_start: &str) -> f64 {
    // A pooled connection opened before a pause can be closed by the node's
    // keep-alive timer the moment it resumes (IncompleteMessage): ask again,
    // which takes a new connection.
    let text = (0..3)
        .find_map(|_| s.req("GET", "/metrics", None).send().ok()?.text().ok())
        .expect("GET /metrics answered");
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_paused_node_fences_itself_and_writes_nothing_after_it_resumes() {
    let Some(pg) = TestDatabase::postgres(&wasup::db::testing::current_test()) else {
        return;
    };
    let db = TestDb::Postgres(pg);
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(&dir.path().join("sim"));
    let a = node(&db, &sim, "node-a", None);
    let b = node(&db, &sim, "node-b", None);
    let ids: Vec<String> = (0..4).map(|i| a.create_session(&format!("stp-{i}"))).collect();
    let rx = Receiver::ok();
    for id in &ids {
        let (status, got) = a.call(
            "POST",
            &format!("/api/sessions/{id}/webhooks"),
            Some(json!({"url": rx.url()})),
        );
        assert_eq!(status, 201, "{got}");
        let (status, got) = a.call("POST", &format!("/api/sessions/{id}/start"), None);
        assert_eq!(status, 200, "{got}");
    }
    for (i, id) in ids.iter().enumerate() {
        link(&a, &sim, id, &format!("6282200000{i:02}"));
    }
    wait_all_ready_on(&a, &ids, &["node-a", "node-b"], 90);
    let paused: Vec<String> = owners(&b).remove("node-a").unwrap_or_default();
    assert!(!paused.is_empty(), "node-a owns sessions");

    // kill -STOP node-a past its lease TTL: node-b takes its sessions.
    let pid = a.pid().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    wait_all_ready_on(&b, &ids, &["node-b"], 90);
    // kill -CONT: node-a finds its leases gone and stops its engines; its
    // writes are refused by the generation check, so node-b's state stands.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    poll(60, "node-a stopped its engines", || {
        let running = metric(&a, "wasup_engines_running ");
        let fenced = metric(&a, "wasup_cluster_self_fenced_total{node=\"node-a\"} ")
            + metric(&a, "wasup_cluster_leases_lost_total{node=\"node-a\"} ");
        match running == 0.0 && fenced >= 1.0 {
            true => Ok(()),
            false => Err(format!("engines {running}, fenced {fenced}")),
        }
    });
    assert_eq!(metric(&a, "wasup_cluster_sessions_owned{node=\"node-a\"} "), 0.0);
    wait_all_ready_on(&b, &ids, &["node-b"], 30);
    // node-a answers reads from its registry, refreshed from the database
    // (`src/cluster/forward.rs`): right after the pause it may still show
    // an older row of node-b's, so its view is polled until it shows
    // node-b's state.
    for id in &paused {
        poll(30, "node-a shows node-b's state", || {
            let (_, view) = a.call("GET", &format!("/api/sessions/{id}"), None);
            match view["status"] == "ready" {
                true => Ok(()),
                false => Err(format!("{view}")),
            }
        });
    }

    // Nothing node-a did after its pause reached the log: every event
    // delivered once, seqs without a gap or a repeat.
    b.wait_no_pending_deliveries(120);
    let mut event_ids = HashSet::new();
    let mut seqs: HashMap<String, Vec<u64>> = HashMap::new();
    for body in rx.bodies() {
        assert!(event_ids.insert(body["id"].as_str().unwrap().to_string()), "twice: {body}");
        seqs.entry(body["sessionId"].as_str().unwrap().to_string())
            .or_default()
            .push(body["seq"].as_u64().unwrap());
    }
    for id in &ids {
        let mut got = seqs.remove(id).unwrap_or_default();
        got.sort_unstable();
        let want: Vec<u64> = (1..=got.len() as u64).collect();
        assert!(got == want, "{id}: seqs {got:?}");
    }

    // SIGTERM drains: node-b hands every session over before it exits, and
    // node-a (running again) brings them back ready.
    let mut b = b;
    assert_eq!(b.stop(), Some(0), "clean exit on SIGTERM");
    wait_all_ready_on(&a, &ids, &["node-a"], 90);
}
