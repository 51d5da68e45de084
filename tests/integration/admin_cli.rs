//! `wasup-admin` (the admin CLI) against the real server, on every backend:
//! its tables, `--json`, exit codes and the server's error messages; under
//! the simulator feature also the terminal QR (decoded back from the drawing),
//! a link through it and a pairing code.

use std::process::Command;

use crate::common::*;
use serde_json::{json, Value};

const CLI: &str = env!("CARGO_BIN_EXE_wasup-admin");

struct Run {
    code: i32,
    out: String,
    err: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.out, self.err
        )
    }
}

/// Run the CLI with `WASUP_URL` = `base` and `WASUP_API_KEY` = `key`.
fn admin_at(base: &str, key: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = Command::new(CLI);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WASUP_URL", base)
        .args(args);
    if let Some(key) = key {
        cmd.env("WASUP_API_KEY", key);
    }
    let out = cmd.output().expect("run wasup-admin");
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        err: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    }
}

fn admin(s: &Server, args: &[&str]) -> Run {
    admin_at(&s.base, Some(ADMIN_KEY), args)
}

/// Run and insist on exit 0.
fn ok(s: &Server, args: &[&str]) -> Run {
    let run = admin(s, args);
    assert_eq!(run.code, 0, "wasup-admin {args:?}: {run}");
    run
}

fn ok_json(s: &Server, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let run = ok(s, &all);
    serde_json::from_str(&run.out).unwrap_or_else(|e| panic!("{e}: {run}"))
}

/// The CLI's error line for the server's error body of the same request.
fn assert_server_error(run: &Run, status: u16, body: &Value) {
    assert_eq!(run.code, 1, "{run}");
    let want = format!(
        "error: {} ({}, HTTP {status})",
        body["message"].as_str().expect("error message"),
        body["code"].as_str().expect("error code")
    );
    assert_eq!(run.err.lines().next(), Some(want.as_str()), "{run}");
    assert!(run.out.is_empty(), "{run}");
}

/// An aligned table as rows of cells, cut at the header's column starts
/// (so a misaligned row shows up as a wrong cell).
fn table(text: &str) -> Vec<Vec<String>> {
    let mut lines = text.lines();
    let header: Vec<char> = lines.next().expect("a header line").chars().collect();
    let mut starts = vec![0];
    for i in 1..header.len() {
        if header[i] != ' ' && header[i - 1] == ' ' && i >= 2 && header[i - 2] == ' ' {
            starts.push(i);
        }
    }
    std::iter::once(header.iter().collect::<String>())
        .chain(lines.map(str::to_string))
        .map(|line| {
            let chars: Vec<char> = line.chars().collect();
            starts
                .iter()
                .enumerate()
                .map(|(n, &from)| {
                    let to = starts.get(n + 1).copied().unwrap_or(chars.len());
                    let cell: String = chars[from.min(chars.len())..to.min(chars.len())]
                        .iter()
                        .collect();
                    cell.trim().to_string()
                })
                .collect()
        })
        .collect()
}

fn row<'a>(rows: &'a [Vec<String>], first: &str) -> &'a Vec<String> {
    rows.iter()
        .find(|r| r[0] == first)
        .unwrap_or_else(|| panic!("no row {first} in {rows:?}"))
}

fn column(rows: &[Vec<String>], name: &str) -> usize {
    rows[0]
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", rows[0]))
}

/// `label value` lines (create, keys create) as a lookup.
fn field(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(label)
                .filter(|rest| rest.starts_with("  "))
                .map(|rest| rest.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no '{label}' line in:\n{text}"))
}

#[test]
fn sessions_keys_and_errors_through_the_cli() {
    for db in backends() {
        let s = Server::start(&db);
        let label = db.label();

        // No key: the server's message and a hint where the key goes.
        let run = admin_at(&s.base, None, &["list"]);
        let (status, body) = split(s.req("GET", "/api/sessions", None).send().unwrap());
        assert_server_error(&run, status, &body);
        assert!(run.err.contains("missing_api_key, HTTP 401"), "{run}");
        assert!(run.err.contains("WASUP_API_KEY"), "{label}: {run}");

        // Nothing listening there: one clear line, exit 1.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let run = admin_at(&closed, Some(ADMIN_KEY), &["list"]);
        assert_eq!(run.code, 1, "{run}");
        assert!(
            run.err.starts_with("error: cannot reach wasup at "),
            "{run}"
        );
        assert_eq!(run.err.lines().count(), 1, "{run}");
        // --url and --api-key win over the environment; /api is optional.
        let api = format!("{}/api/", s.base);
        let run = admin_at(
            &closed,
            Some("wsp_wrong_key_0000"),
            &["--url", &api, "--api-key", ADMIN_KEY, "list"],
        );
        assert_eq!((run.code, run.out.as_str()), (0, "no sessions\n"), "{run}");
        // Usage errors are clap's: exit 2.
        assert_eq!(admin(&s, &["frobnicate"]).code, 2);
        assert_eq!(admin(&s, &["start"]).code, 2);
        assert_eq!(
            admin(&s, &["keys", "create", "k", "--role", "root"]).code,
            2
        );

        // create / list / overview.
        let run = ok(&s, &["create", "cli-bot"]);
        assert_eq!(
            run.out.lines().next(),
            Some("created session cli-bot"),
            "{run}"
        );
        let id = field(&run.out, "id");
        assert_eq!(field(&run.out, "status"), "created");
        let (status, body) = s.call("POST", "/api/sessions", Some(json!({"name": "x"})));
        assert_server_error(&admin(&s, &["create", "x"]), status, &body);
        let created = ok_json(&s, &["create", "cli-two"]);
        assert_eq!(created["status"], "created");
        assert!(created["config"].is_object(), "create shape: {created}");
        let two = created["id"].as_str().unwrap().to_string();

        let rows = table(&ok(&s, &["list"]).out);
        assert_eq!(
            rows[0],
            [
                "ID",
                "NAME",
                "STATUS",
                "PHONE",
                "PUSH NAME",
                "LAST ACTIVE",
                "NOTE"
            ]
        );
        assert_eq!(rows.len(), 3, "{rows:?}");
        let r = row(&rows, &id);
        let (name, status, phone) = (
            column(&rows, "NAME"),
            column(&rows, "STATUS"),
            column(&rows, "PHONE"),
        );
        assert_eq!(
            (r[name].as_str(), r[status].as_str(), r[phone].as_str()),
            ("cli-bot", "created", "-")
        );
        assert_eq!(rows[1][0], two, "newest first: {rows:?}");
        let (_, listed) = s.call("GET", "/api/sessions", None);
        assert_eq!(
            ok_json(&s, &["list"]),
            listed,
            "--json is the server's body"
        );

        let rows = table(&ok(&s, &["overview"]).out);
        assert_eq!(rows[0], ["METRIC", "VALUE"]);
        assert_eq!(row(&rows, "sessions")[1], "2");
        assert_eq!(row(&rows, "running engines")[1], "0");
        assert_eq!(row(&rows, "status created")[1], "2");
        for metric in [
            "memory heap used (MiB)",
            "memory heap total (MiB)",
            "memory rss (MiB)",
        ] {
            assert!(row(&rows, metric)[1].parse::<u64>().is_ok(), "{rows:?}");
        }
        let overview = ok_json(&s, &["overview"]);
        assert_eq!(overview["total"], 2);
        assert_eq!(overview["byStatus"], json!({"created": 2}));
        assert!(
            overview["memoryUsage"]["rss"].as_u64() > Some(0),
            "{overview}"
        );

        // Commands on a session that never ran (no engine, no WhatsApp).
        let run = ok(&s, &["stop", "cli-bot"]);
        assert_eq!(run.out, format!("cli-bot ({id}): disconnected\n"));
        let got = ok_json(&s, &["logout", &id]);
        assert_eq!(
            (&got["id"], &got["status"]),
            (&json!(id), &json!("disconnected"))
        );

        // A name or id that matches nothing: the server's 404, exit 1.
        for args in [
            vec!["start", "ghost"],
            vec!["stop", "ghost"],
            vec!["restart", "ghost"],
            vec!["logout", "ghost"],
            vec!["delete", "ghost"],
            vec!["qr", "ghost"],
            vec!["pair", "ghost", "628123456789"],
            vec!["--json", "stop", "ghost"],
        ] {
            let run = admin(&s, &args);
            let (status, body) = s.call("GET", "/api/sessions/ghost", None);
            assert_error(status, &body, 404, "session_not_found");
            assert_server_error(&run, status, &body);
        }
        // No QR on a session that is not started: the server says why.
        let run = admin(&s, &["qr", "cli-bot"]);
        let (status, body) = s.call("GET", "/api/sessions/cli-bot/qr?format=raw", None);
        assert_error(status, &body, 400, "qr_not_available");
        assert_server_error(&run, status, &body);

        // Keys: create (secret once), list (never the secret), use, revoke.
        let run = ok(
            &s,
            &[
                "keys",
                "create",
                "cli-viewer",
                "--role",
                "viewer",
                "--session",
                "cli-bot",
                "--expires-in",
                "30d",
            ],
        );
        let secret = field(&run.out, "api key");
        let key_id = field(&run.out, "id");
        assert!(secret.starts_with("wsp_"), "{run}");
        assert_eq!(field(&run.out, "prefix"), secret[..12]);
        assert_eq!(field(&run.out, "role"), "viewer");
        assert_eq!(field(&run.out, "sessions"), id, "the name became its id");
        assert!(run.err.contains("never shows it again"), "{run}");
        let (_, key) = s.call("GET", &format!("/api/auth/api-keys/{key_id}"), None);
        let expires = chrono::DateTime::parse_from_rfc3339(key["expiresAt"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc);
        let in_days = (expires - chrono::Utc::now()).num_hours();
        assert!((29 * 24..=30 * 24).contains(&in_days), "{key}");

        let created = ok_json(
            &s,
            &[
                "keys",
                "create",
                "cli-admin",
                "--role",
                "admin",
                "--expires-at",
                "2099-01-01T00:00:00.000Z",
            ],
        );
        assert!(created["apiKey"].as_str().unwrap().starts_with("wsp_"));
        assert_eq!(created["expiresAt"], "2099-01-01T00:00:00.000Z");
        assert!(created["allowedSessions"].is_null());

        let run = ok(&s, &["keys", "list"]);
        assert!(!run.out.contains(&secret), "the secret is never listed");
        let rows = table(&run.out);
        assert_eq!(
            rows[0],
            ["ID", "NAME", "PREFIX", "ROLE", "SESSIONS", "EXPIRES", "CREATED", "REVOKED"]
        );
        let r = row(&rows, &key_id);
        assert_eq!(
            (
                r[1].as_str(),
                r[2].as_str(),
                r[3].as_str(),
                r[4].as_str(),
                r[7].as_str()
            ),
            ("cli-viewer", &secret[..12], "viewer", id.as_str(), "-")
        );
        assert_eq!(row(&rows, created["id"].as_str().unwrap())[4], "all");
        let (_, keys) = s.call("GET", "/api/auth/api-keys", None);
        assert_eq!(ok_json(&s, &["keys", "list"]), keys);

        // The new key works through the CLI, within its role and scope.
        let run = admin_at(&s.base, Some(&secret), &["list"]);
        assert_eq!(run.code, 0, "{run}");
        assert_eq!(table(&run.out).len(), 2, "scoped to one session: {run}");
        let run = admin_at(&s.base, Some(&secret), &["create", "nope-bot"]);
        let (status, body) = s.call_as(
            &secret,
            "POST",
            "/api/sessions",
            Some(json!({"name": "nope-bot"})),
        );
        assert_error(status, &body, 403, "insufficient_role");
        assert_server_error(&run, status, &body);

        let run = ok(&s, &["keys", "revoke", &key_id]);
        assert_eq!(run.out, format!("revoked API key {key_id}\n"));
        let run = admin_at(&s.base, Some(&secret), &["list"]);
        let (status, body) = s.call_as(&secret, "GET", "/api/sessions", None);
        assert_error(status, &body, 401, "api_key_revoked");
        assert_server_error(&run, status, &body);
        let rows = table(&ok(&s, &["keys", "list"]).out);
        assert_ne!(row(&rows, &key_id)[7], "-", "revoked at: {rows:?}");
        let (status, body) = s.call("DELETE", "/api/auth/api-keys/not-a-key", None);
        assert_server_error(&admin(&s, &["keys", "revoke", "not-a-key"]), status, &body);

        // delete: 204, so --json prints nothing.
        let run = ok(&s, &["delete", "cli-bot"]);
        assert_eq!(run.out, "deleted session cli-bot\n");
        let run = ok(&s, &["--json", "delete", &two]);
        assert_eq!(run.out, "");
        assert_eq!(ok(&s, &["list"]).out, "no sessions\n");
        assert_eq!(ok_json(&s, &["list"]), json!([]));
    }
}

/// `scripts/wasup-admin` runs the `wasup-admin` it finds on PATH.
#[test]
fn the_wrapper_script_runs_the_installed_binary() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(CLI, dir.path().join("wasup-admin")).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/wasup-admin");
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(script)
        .env("PATH", path)
        .env("WASUP_URL", "http://127.0.0.1:1")
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        concat!("wasup-admin ", env!("CARGO_PKG_VERSION"), "\n")
    );
    let out = Command::new(script)
        .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
        .env("WASUP_URL", "http://127.0.0.1:1")
        .args(["list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("error: cannot reach wasup at http://127.0.0.1:1"),
        "{out:?}"
    );
}

/// The modules a half-block drawing shows: true = light. Each character is
/// two modules stacked (█ both light, ▀ top, ▄ bottom, space none).
#[cfg(feature = "simulator")]
fn modules(drawing: &[&str]) -> Vec<Vec<bool>> {
    let mut grid = Vec::new();
    for line in drawing {
        let (top, bottom): (Vec<bool>, Vec<bool>) = line
            .chars()
            .map(|c| match c {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                ' ' => (false, false),
                other => panic!("unexpected character {other:?} in the drawing"),
            })
            .unzip();
        grid.push(top);
        grid.push(bottom);
    }
    grid
}

/// What a QR reader sees in the drawing (4 pixels per module).
#[cfg(feature = "simulator")]
fn decode_drawing(grid: &[Vec<bool>]) -> String {
    let scale = 4;
    let (w, h) = (grid[0].len() * scale, grid.len() * scale);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
        if grid[y / scale][x / scale] {
            255
        } else {
            0
        }
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the drawing");
    grids[0].decode().expect("the drawing decodes").1
}

#[cfg(feature = "simulator")]
fn raw_qr(s: &Server, id: &str) -> String {
    let (status, body) = s.call("GET", &format!("/api/sessions/{id}/qr?format=raw"), None);
    assert_eq!(status, 200, "{body}");
    body["qr"].as_str().unwrap().to_string()
}

#[cfg(feature = "simulator")]
#[test]
fn qr_link_pairing_code_and_lifecycle_through_the_cli() {
    use qrcode::{Color, EcLevel, QrCode};

    for db in backends() {
        let s = Server::start(&db);
        let id = field(&ok(&s, &["create", "qr-cli"]).out, "id");
        let run = ok(&s, &["start", "qr-cli"]);
        assert_eq!(run.out, format!("qr-cli ({id}): initializing\n"));
        let run = admin(&s, &["start", "qr-cli"]);
        assert_eq!(run.code, 1, "{run}");
        assert!(
            run.err.contains("(session_already_started, HTTP 400)"),
            "{run}"
        );

        // The drawing: what the server's raw QR looks like, module for module.
        let before = {
            s.wait_session(&id, 30, |b| b["status"] == "qr_ready");
            raw_qr(&s, &id)
        };
        let run = ok(&s, &["qr", "qr-cli", "--wait", "30"]);
        let after = raw_qr(&s, &id);
        assert!(!run.out.contains('\x1b'), "no colour codes into a pipe");
        let drawing: Vec<&str> = run.out.lines().take_while(|l| !l.is_empty()).collect();
        assert!(run.out.contains("Link a device"), "{run}");
        let grid = modules(&drawing);
        let text = decode_drawing(&grid);
        assert!(text == before || text == after, "{text} vs {before}");
        let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L).unwrap();
        let (width, quiet) = (code.width(), 4);
        let side = width + 2 * quiet;
        assert!(drawing.iter().all(|l| l.chars().count() == side));
        assert_eq!(drawing.len(), side.div_ceil(2));
        for (y, row) in grid.iter().enumerate() {
            for (x, &light) in row.iter().enumerate() {
                let inside =
                    (quiet..quiet + width).contains(&x) && (quiet..quiet + width).contains(&y);
                let want =
                    !inside || code.to_colors()[(y - quiet) * width + (x - quiet)] == Color::Light;
                assert_eq!(light, want, "module ({x},{y})");
            }
        }
        let got = ok_json(&s, &["qr", &id]);
        assert_eq!(got["status"], "qr_ready");
        assert!(got["qr"].as_str().unwrap().starts_with("2@"), "{got}");
        assert!(got["expiresAt"].is_string(), "{got}");

        // Link it (the phone scans): list shows it ready with its phone.
        let (status, body) = s.call(
            "POST",
            &format!("/api/simulator/sessions/{id}/scan"),
            Some(json!({"phone": "628123450001", "pushName": "Cli Phone"})),
        );
        assert_eq!(status, 200, "{body}");
        s.wait_session(&id, 30, |b| b["status"] == "ready");
        let rows = table(&ok(&s, &["list"]).out);
        let r = row(&rows, &id);
        let (st, ph, pn) = (
            column(&rows, "STATUS"),
            column(&rows, "PHONE"),
            column(&rows, "PUSH NAME"),
        );
        assert_eq!(
            (r[st].as_str(), r[ph].as_str(), r[pn].as_str()),
            ("ready", "628123450001", "Cli Phone")
        );
        assert_eq!(
            row(&table(&ok(&s, &["overview"]).out), "status ready")[1],
            "1"
        );
        // No QR once linked: the server's message, exit 1.
        let run = admin(&s, &["qr", "qr-cli", "--wait", "5"]);
        let (status, body) = s.call("GET", &format!("/api/sessions/{id}/qr?format=raw"), None);
        assert_error(status, &body, 400, "qr_not_available");
        assert_server_error(&run, status, &body);
        assert!(run.err.contains("already linked"), "{run}");

        // A pairing code for a second session (entering it on a phone is
        // e2e_link's business, and slow in debug builds).
        let pid = field(&ok(&s, &["create", "pair-cli"]).out, "id");
        ok(&s, &["start", &pid]);
        s.wait_session(&pid, 30, |b| b["status"] == "qr_ready");
        let run = ok(&s, &["pair", "pair-cli", "628123450002"]);
        let code = run.out.trim_end().to_string();
        assert_eq!(run.out, format!("{code}\n"), "the code alone on stdout");
        assert_eq!(code.len(), 8, "{run}");
        assert!(
            code.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
            "{run}"
        );
        let run = admin(&s, &["pair", "pair-cli", "12"]);
        let (status, body) = s.call(
            "POST",
            "/api/sessions/pair-cli/pairing-code",
            Some(json!({"phoneNumber": "12"})),
        );
        assert_server_error(&run, status, &body);

        // restart (back to ready on its stored link), stop, logout, delete.
        let got = ok_json(&s, &["restart", "qr-cli"]);
        assert_eq!(got["id"], id);
        s.wait_session(&id, 30, |b| b["status"] == "ready");
        assert_eq!(
            ok(&s, &["stop", "qr-cli"]).out,
            format!("qr-cli ({id}): disconnected\n")
        );
        ok(&s, &["start", "qr-cli"]);
        s.wait_session(&id, 30, |b| b["status"] == "ready");
        assert_eq!(
            ok(&s, &["logout", "qr-cli"]).out,
            format!("qr-cli ({id}): disconnected\n")
        );
        let rows = table(&ok(&s, &["list"]).out);
        let r = row(&rows, &id);
        assert_eq!((r[st].as_str(), r[ph].as_str()), ("disconnected", "-"));
        ok(&s, &["delete", "qr-cli"]);
        ok(&s, &["delete", "pair-cli"]);
        assert_eq!(ok_json(&s, &["list"]), json!([]));
    }
}
