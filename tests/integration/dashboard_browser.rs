//! The dashboard in a real browser: headless Chromium (Debian's package)
//! driven over WebDriver (`webdriver.rs`) against the simulator build, on
//! every backend. Sign in (a wrong key first: the API's error is shown),
//! create a session, start it, the QR image appears and decodes to the
//! session's current raw QR, the simulator's phone scans it, the badge reads
//! `ready` without a reload, stop it, sign out; a viewer key sees no write
//! buttons. Each step saves a screenshot under
//! `target/dashboard-screenshots/` (marked FAILED when it fails).
#![cfg(feature = "simulator")]

use serde_json::{json, Value};

use crate::common::*;
use crate::webdriver::Browser;

fn viewer_key(s: &Server) -> String {
    let (status, key) = s.call(
        "POST",
        "/api/auth/api-keys",
        Some(json!({"name": "watcher", "role": "viewer"})),
    );
    assert_eq!(status, 201, "{key}");
    key["apiKey"].as_str().unwrap().to_string()
}

fn sign_in(b: &Browser, key: &str) {
    let input = b.wait(20, "#api-key");
    b.clear(&input);
    b.type_text(&input, key);
    b.click_on(5, "#sign-in-button");
}

#[test]
fn the_dashboard_links_a_session_in_a_real_browser() {
    let Some(mut b) = Browser::launch("links") else {
        return;
    };
    for db in backends() {
        let label = db.label();
        let s = Server::start(&db);
        let viewer = viewer_key(&s);
        let name = format!("browser-{label}");

        b.step(&format!("{label}-wrong-key"), |b| {
            b.goto(&s.url("/"));
            // A fresh page: nobody signed in (the previous backend signed out).
            sign_in(b, "wsp_not_a_key_at_all_0123456789abcdef");
            let error = b.wait_text(20, "#sign-in-error", |t| !t.is_empty());
            assert!(error.contains("invalid_api_key"), "{error}");
        });

        b.step(&format!("{label}-signed-in"), |b| {
            sign_in(b, ADMIN_KEY);
            b.wait_text(20, "#who", |t| t.contains("admin"));
            b.wait(20, "#overview .stat");
            // Marks this page load: a reload would lose it.
            b.run("window.__sameLoad = true;", json!([]));
        });

        let id = b.step(&format!("{label}-created"), |b| {
            let input = b.wait(10, "#create-name");
            b.type_text(&input, &name);
            b.click_on(5, "#create-button");
            let row = format!("[data-session-row=\"{name}\"]");
            let el = b.wait(20, &row);
            b.attr(&el, "data-session-id").expect("the row names its session")
        });
        let row = format!("[data-session-row=\"{name}\"]");
        let badge = format!("[data-badge=\"{id}\"]");

        b.step(&format!("{label}-started"), |b| {
            b.click_on(10, &format!("{row} button[data-action=\"start\"]"));
            // The badge follows the stream, up to the QR.
            b.wait_text(60, &badge, |t| t == "qr_ready");
        });

        b.step(&format!("{label}-link-qr"), |b| {
            b.click_on(10, &format!("{row} a[href^=\"#/link/\"]"));
            b.wait(30, "#qr");
            // The image shows the session's current QR (it may rotate while
            // we compare: ask again until both agree).
            poll(60, "the QR on the page is the session's current QR", || {
                let img = b.find("#qr").ok_or("no image")?;
                let src = b.attr(&img, "src").ok_or("no src")?;
                let shown = decode_qr_data_url(&src);
                let (status, raw) = s.call("GET", &format!("/api/sessions/{id}/qr?format=raw"), None);
                if status != 200 {
                    return Err(format!("{status} {raw}"));
                }
                if raw["qr"] == Value::String(shown.clone()) {
                    Ok(())
                } else {
                    Err("the page shows another QR".into())
                }
            });
            let expiry = b.wait_text(10, "#qr-expiry", |t| t.starts_with("Expires"));
            assert!(expiry.contains("in "), "{expiry}");
        });

        b.step(&format!("{label}-ready"), |b| {
            let (status, got) = s.call(
                "POST",
                &format!("/api/simulator/sessions/{id}/scan"),
                Some(json!({"phone": "628111222333", "pushName": "Browser Phone"})),
            );
            assert_eq!(status, 200, "{got}");
            b.wait_text(60, &badge, |t| t == "ready");
            b.wait_text(20, "#qr-note", |t| t.contains("628111222333"));
            assert_eq!(
                b.run("return window.__sameLoad === true;", json!([])),
                json!(true),
                "the page was reloaded"
            );
            assert_eq!(b.count("#qr"), 0, "the QR is gone once linked");
        });

        b.step(&format!("{label}-stopped"), |b| {
            b.click_on(10, "a[data-nav=\"sessions\"]");
            b.wait_text(20, &badge, |t| t == "ready");
            b.click_on(10, &format!("{row} button[data-action=\"stop\"]"));
            b.wait_text(60, &badge, |t| t == "disconnected");
            let (_, got) = s.call("GET", &format!("/api/sessions/{id}"), None);
            assert_eq!(got["status"], "disconnected", "{got}");
        });

        b.step(&format!("{label}-signed-out"), |b| {
            b.click_on(10, "#sign-out");
            b.wait(20, "#api-key");
            // The cookie's sign-in is gone on the server too.
            let status = b.run_async(
                "const done = arguments[arguments.length - 1];
                 fetch('/api/sessions').then(r => done(r.status), () => done(0));",
                json!([]),
            );
            assert_eq!(status, json!(401));
        });

        b.step(&format!("{label}-viewer"), |b| {
            sign_in(b, &viewer);
            b.wait_text(20, "#who", |t| t.contains("viewer"));
            b.wait(20, &row);
            assert_eq!(b.count("button[data-action]"), 0, "a viewer sees no write buttons");
            assert_eq!(b.count("#create-button"), 0);
            assert!(!b.displayed(&b.find("#nav-keys").unwrap()), "no API keys page");
        });

        b.step(&format!("{label}-viewer-signed-out"), |b| {
            b.click_on(10, "#sign-out");
            b.wait(20, "#api-key");
        });
    }
}

/// Every page at 1280 and 390 px, for a person to look at (the screenshots),
/// the keyboard (the sign-in form works with Enter alone), and linking by
/// pairing code: the 8-character code is shown, the phone enters it, the
/// badge reads `ready`.
#[test]
fn every_page_renders_at_desktop_and_phone_widths() {
    let Some(mut b) = Browser::launch("pages") else {
        return;
    };
    let s = Server::start_with(
        &TestDb::Sqlite,
        &[
            ("WASUP_ADMIN_KEY", ADMIN_KEY),
            ("WASUP_WEBHOOK_ALLOW_PRIVATE", "true"),
        ],
    );
    let id = s.create_session("page-bot");
    // A webhook whose receiver is down and that tries once: the session's
    // first events become dead letters, which the detail page offers to redrive.
    let (status, hook) = s.call(
        "POST",
        &format!("/api/sessions/{id}/webhooks"),
        Some(json!({"url": "http://127.0.0.1:9/hook", "maxAttempts": 1})),
    );
    assert_eq!(status, 201, "{hook}");
    let wid = hook["id"].as_str().unwrap().to_string();
    let (status, _) = s.call("POST", &format!("/api/sessions/{id}/start"), None);
    assert_eq!(status, 200);
    s.wait_session(&id, 60, |v| v["status"] == "qr_ready");
    poll(60, "a dead letter", || {
        let (_, dead) = s.call(
            "GET",
            &format!("/api/sessions/{id}/webhooks/{wid}/deliveries?status=dead"),
            None,
        );
        if dead.as_array().is_some_and(|a| !a.is_empty()) {
            Ok(())
        } else {
            Err(dead.to_string())
        }
    });
    b.goto(&s.url("/"));
    b.step("sign-in-keyboard", |b| {
        let input = b.wait(20, "#api-key");
        b.type_text(&input, &format!("{ADMIN_KEY}\u{E007}"));
        b.wait_text(20, "#who", |t| t.contains("admin"));
    });
    for (width, height) in [(1280, 900), (390, 844)] {
        b.set_size(width, height);
        b.step(&format!("sessions-{width}"), |b| {
            b.goto(&s.url("/#/sessions"));
            b.wait(20, "[data-session-row=\"page-bot\"]");
        });
        b.step(&format!("link-{width}"), |b| {
            b.goto(&s.url(&format!("/#/link/{id}")));
            b.wait(30, "#qr");
        });
        b.step(&format!("detail-{width}"), |b| {
            b.goto(&s.url(&format!("/#/session/{id}")));
            b.wait_text(30, "#timeline", |t| t.contains("qr_ready"));
            b.wait(10, &format!("[data-webhook=\"{wid}\"]"));
            if width == 1280 {
                b.click_on(20, "button[data-redrive]");
                b.wait_text(20, "#live", |t| t.contains("Queued again"));
            }
        });
        b.step(&format!("keys-{width}"), |b| {
            b.goto(&s.url("/#/keys"));
            let name = b.wait(20, "#key-name");
            b.type_text(&name, &format!("made-{width}"));
            b.click_on(5, "#key-create");
            let secret = b.wait_text(20, "#key-secret", |t| t.starts_with("wsp_"));
            assert_eq!(s.call_as(&secret, "GET", "/api/sessions", None).0, 200);
        });
    }
    b.set_size(1280, 900);
    b.step("pairing-code", |b| {
        b.goto(&s.url(&format!("/#/link/{id}")));
        let phone = b.wait(20, "#pair-phone");
        b.type_text(&phone, "628444555666");
        b.click_on(5, "#pair-submit");
        let code = b.wait_text(30, "#pairing-code", |t| t.len() == 8);
        // The phone enters the code shown: the page follows to ready.
        let (status, got) = s.call(
            "POST",
            "/api/simulator/phones/628444555666/enter-code",
            Some(json!({"code": code})),
        );
        assert_eq!(status, 200, "{got}");
        b.wait_text(60, &format!("[data-badge=\"{id}\"]"), |t| t == "ready");
        b.wait_text(20, "#qr-note", |t| t.contains("628444555666"));
    });
}
