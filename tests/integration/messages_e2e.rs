//! Messages end to end (issue 11): the real binary over HTTP, the real
//! whatsapp-rust client, virtual phones of the simulator (embedded, or its
//! own process where the gateway is killed), every backend.

use std::collections::HashSet;

use crate::common::*;
use crate::receiver::Receiver;
use crate::sim_process::SimProcess;
use serde_json::{json, Value};

/// Pacing off: the tests that are not about pacing should not wait for it.
fn no_pacing() -> Value {
    json!({"sending": {"minDelayMs": 0, "maxDelayMs": 0, "typing": false, "perMinute": 0, "perDay": 0},
           "reconnectBaseDelay": 1000})
}

/// Create, start and link a session through the embedded simulator.
fn link(s: &Server, name: &str, phone: &str, config: Value) -> String {
    let (status, body) = s.call(
        "POST",
        "/api/sessions",
        Some(json!({"name": name, "config": config})),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (status, got) = s.call("POST", &format!("/api/sessions/{id}/start"), None);
    assert_eq!(status, 200, "{got}");
    s.wait_session(&id, 30, |b| b["status"] == "qr_ready");
    let (status, got) = s.call(
        "POST",
        &format!("/api/simulator/sessions/{id}/scan"),
        Some(json!({"phone": phone, "pushName": "Shop"})),
    );
    assert_eq!(status, 200, "{got}\n{}", s.log());
    s.wait_session(&id, 30, |b| b["status"] == "ready");
    id
}

fn hook(s: &Server, session: &str, rx: &Receiver, events: Value) -> String {
    let (status, hook) = s.call(
        "POST",
        &format!("/api/sessions/{session}/webhooks"),
        Some(json!({"url": rx.url(), "events": events})),
    );
    assert_eq!(status, 201, "{hook}");
    hook["secret"].as_str().unwrap().to_string()
}

fn send(s: &Server, session: &str, chat: &str, text: &str) -> String {
    let (status, body) = s.call(
        "POST",
        &format!("/api/sessions/{session}/messages/send-text"),
        Some(json!({"chatId": chat, "text": text})),
    );
    assert_eq!(status, 201, "{body}");
    body["messageId"].as_str().unwrap().to_string()
}

fn message(s: &Server, session: &str, id: &str) -> Value {
    let (status, body) = s.call(
        "GET",
        &format!("/api/sessions/{session}/messages/{id}"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    body
}

fn wait_status(s: &Server, session: &str, id: &str, want: &str) -> Value {
    poll(60, &format!("message {id} {want}"), || {
        let m = message(s, session, id);
        if m["status"] == want {
            Ok(m)
        } else {
            Err(format!("{m}\n{}", s.log()))
        }
    })
}

/// What a virtual phone received (embedded simulator), and its duplicate count.
fn inbox(s: &Server, phone: &str) -> (Vec<Value>, u64) {
    let res = s
        .req(
            "GET",
            &format!("/api/simulator/phones/{phone}/messages"),
            Some(ADMIN_KEY),
        )
        .send()
        .unwrap();
    let dups = res
        .headers()
        .get("x-simulator-duplicates")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("X-Simulator-Duplicates");
    let (status, body) = split(res);
    assert_eq!(status, 200, "{body}");
    (body.as_array().unwrap().clone(), dups)
}

fn wait_inbox(s: &Server, phone: &str, n: usize) -> Vec<Value> {
    poll(60, &format!("{n} messages at {phone}"), || {
        let (got, _) = inbox(s, phone);
        if got.len() >= n {
            Ok(got)
        } else {
            Err(format!("{} so far\n{}", got.len(), s.log()))
        }
    })
}

#[test]
fn a_sent_text_reaches_the_phone_once_and_is_acked_in_order() {
    for db in backends() {
        let s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_WEBHOOK_ALLOW_PRIVATE", "true"),
            ],
        );
        let session = link(&s, "sender", "15552100001", no_pacing());
        let rx = Receiver::ok();
        let secret = hook(&s, &session, &rx, json!(["message.*"]));
        let friend = "15552100002";

        let (status, sent) = s.call(
            "POST",
            &format!("/api/sessions/{session}/messages/send-text"),
            Some(json!({"chatId": format!("{friend}@c.us"), "text": "hello phone"})),
        );
        assert_eq!(status, 201, "{sent}");
        let id = sent["messageId"].as_str().unwrap().to_string();
        assert!(sent["timestamp"].as_i64().unwrap() > 1_700_000_000);

        let got = wait_inbox(&s, friend, 1);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (&got[0]["id"], &got[0]["text"], &got[0]["from"]),
            (&json!(id), &json!("hello phone"), &json!("15552100001")),
            "{}",
            db.label()
        );
        wait_status(&s, &session, &id, "delivered");

        let (status, read) = s.call(
            "POST",
            &format!("/api/simulator/phones/{friend}/read"),
            Some(json!({})),
        );
        assert_eq!((status, &read["read"]), (200, &json!(1)), "{read}");
        let m = wait_status(&s, &session, &id, "read");
        assert_eq!(m["chatId"], format!("{friend}@c.us"));
        assert_eq!(m["body"], "hello phone");
        assert_eq!((&m["direction"], &m["fromMe"]), (&json!("out"), &json!(true)));
        assert!(m["error"].is_null());

        let acks = rx.wait(30, "three acks", |r| r.len() >= 3);
        let statuses: Vec<Value> = acks.iter().map(|r| r.json()["data"]["status"].clone()).collect();
        assert_eq!(statuses, vec![json!("sent"), json!("delivered"), json!("read")]);
        for r in &acks {
            r.assert_signed_by(&secret);
            let b = r.json();
            assert_eq!(b["event"], "message.ack");
            assert_eq!(b["data"]["messageId"], id);
            assert_eq!(b["data"]["chatId"], format!("{friend}@c.us"));
        }
        let (_, dups) = inbox(&s, friend);
        assert_eq!(dups, 0, "{}", s.log());

        // The list has it, newest first, filterable.
        let (status, list) = s.call(
            "GET",
            &format!("/api/sessions/{session}/messages?chatId={friend}@c.us&direction=out&limit=10"),
            None,
        );
        assert_eq!(status, 200, "{list}");
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert_eq!(list[0]["id"], id);
    }
}

#[test]
fn an_inbound_message_is_a_signed_message_received_webhook() {
    for db in backends() {
        let s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_WEBHOOK_ALLOW_PRIVATE", "true"),
            ],
        );
        let session = link(&s, "inbox-bot", "15552100011", no_pacing());
        let rx = Receiver::ok();
        let secret = hook(&s, &session, &rx, json!(["message.received"]));
        let friend = "15552100012";
        let (status, sent) = s.call(
            "POST",
            &format!("/api/simulator/phones/{friend}/messages"),
            Some(json!({"to": "inbox-bot", "text": "is my order ready?"})),
        );
        assert_eq!(status, 201, "{sent}");
        let id = sent["messageId"].as_str().unwrap().to_string();

        let got = rx.wait(60, "message.received", |r| !r.is_empty());
        assert_eq!(got.len(), 1);
        // Verified with the standardwebhooks crate, as a receiver would.
        got[0].assert_signed_by(&secret);
        let b = got[0].json();
        assert_eq!(b["event"], "message.received");
        assert_eq!(b["sessionId"], session);
        let d = &b["data"];
        assert_eq!(d["id"], id);
        assert_eq!(d["from"], format!("{friend}@c.us"));
        assert_eq!(d["to"], "15552100011@c.us");
        assert_eq!(d["chatId"], format!("{friend}@c.us"));
        assert_eq!(d["body"], "is my order ready?");
        assert_eq!(d["type"], "chat");
        assert_eq!((&d["fromMe"], &d["isGroup"]), (&json!(false), &json!(false)));
        assert!(d["author"].is_null());
        assert!(d["timestamp"].as_i64().unwrap() > 1_700_000_000);
        assert!(d["pushName"].is_string(), "{d}");

        // Stored once, listed as inbound.
        let (status, list) = s.call(
            "GET",
            &format!("/api/sessions/{session}/messages?direction=in"),
            None,
        );
        assert_eq!(status, 200, "{list}");
        assert_eq!(list.as_array().unwrap().len(), 1, "{}", db.label());
        assert_eq!(
            (&list[0]["id"], &list[0]["status"], &list[0]["body"]),
            (&json!(id), &json!("received"), &json!("is my order ready?"))
        );
        s.wait_no_pending_deliveries(30);
        assert_eq!(rx.count(), 1, "delivered once");

        // The event stream replays it from the log, body opened, with the
        // webhook filter rules (`message.*`).
        let sse = crate::events_stream::Sse::open(
            &s,
            "?events=message.*&after=evt_00000000000000000000000000000000",
            &[("X-API-Key", ADMIN_KEY)],
        )
        .expect("stream");
        let got = sse.until(30, |m| m.event == "message.received");
        let last = &got.last().unwrap().data;
        assert_eq!(last["data"]["id"], id);
        assert_eq!(last["data"]["body"], "is my order ready?");
        assert!(got.iter().all(|m| m.event.starts_with("message.")));
    }
}

/// Replies and mentions both ways: a phone's reply to a session's message
/// arrives with `quotedMessageId`; a session's reply carries the quoted
/// text, its author and the mentions to the phone (read from what the
/// phone decrypted).
#[test]
fn replies_and_mentions_reach_both_sides() {
    for db in backends() {
        let s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_WEBHOOK_ALLOW_PRIVATE", "true"),
            ],
        );
        let me = "15552100081";
        let session = link(&s, "replier", me, no_pacing());
        let rx = Receiver::ok();
        hook(&s, &session, &rx, json!(["message.received"]));
        let friend = "15552100082";

        // The phone replies to a message of the session.
        let hello = send(&s, &session, friend, "hello, how can we help?");
        wait_inbox(&s, friend, 1);
        let (status, sent) = s.call(
            "POST",
            &format!("/api/simulator/phones/{friend}/messages"),
            Some(json!({"to": "replier", "text": "where is my order?", "quotedMessageId": hello})),
        );
        assert_eq!(status, 201, "{sent}");
        let question = sent["messageId"].as_str().unwrap().to_string();
        let got = rx.wait(60, "message.received", |r| !r.is_empty());
        let d = &got[0].json()["data"];
        assert_eq!((&d["id"], &d["quotedMessageId"]), (&json!(question), &json!(hello)), "{d}");
        assert_eq!(d["mentionedIds"], json!([]));
        let stored = message(&s, &session, &question);
        assert_eq!(stored["quotedMessageId"], hello, "{stored}");

        // The session replies to it, mentioning the friend.
        let (status, reply) = s.call(
            "POST",
            &format!("/api/sessions/{session}/messages/send-text"),
            Some(json!({"chatId": format!("{friend}@c.us"), "text": format!("@{friend} on its way"),
                        "quotedMessageId": question, "mentions": [format!("{friend}@c.us")]})),
        );
        assert_eq!(status, 201, "{reply}");
        let reply = reply["messageId"].as_str().unwrap().to_string();
        let got = wait_inbox(&s, friend, 2);
        let r = got.iter().find(|m| m["id"] == reply.as_str()).expect("the reply");
        assert_eq!(r["text"], format!("@{friend} on its way"));
        assert_eq!(r["mentions"], json!([format!("{friend}@s.whatsapp.net")]), "{r}");
        assert_eq!(
            (&r["quotedId"], &r["quotedAuthor"], &r["quotedText"]),
            (&json!(question), &json!(format!("{friend}@s.whatsapp.net")), &json!("where is my order?")),
            "{}",
            db.label()
        );
        let m = wait_status(&s, &session, &reply, "delivered");
        assert_eq!(m["mentionedIds"], json!([format!("{friend}@c.us")]));
        assert_eq!(m["quotedMessageId"], question);

        // Quoting its own message: the account is the quoted author.
        let again = s.call(
            "POST",
            &format!("/api/sessions/{session}/messages/send-text"),
            Some(json!({"chatId": friend, "text": "as I said", "quotedMessageId": hello})),
        );
        assert_eq!(again.0, 201, "{}", again.1);
        let again = again.1["messageId"].as_str().unwrap().to_string();
        let got = wait_inbox(&s, friend, 3);
        let r = got.iter().find(|m| m["id"] == again.as_str()).expect("the second reply");
        assert_eq!(
            (&r["quotedId"], &r["quotedAuthor"], &r["quotedText"]),
            (&json!(hello), &json!(format!("{me}@s.whatsapp.net")), &json!("hello, how can we help?"))
        );
        assert!(r["mentions"].as_array().unwrap().is_empty());

        // What cannot be applied is refused, and nothing is queued.
        let path = format!("/api/sessions/{session}/messages/send-text");
        for (body, code) in [
            (json!({"chatId": friend, "text": "x", "quotedMessageId": "3EB0NOPE"}), "validation_failed"),
            (json!({"chatId": friend, "text": "x", "mentions": ["120363025246125486@g.us"]}), "validation_failed"),
            (json!({"chatId": friend, "text": "x", "mentions": ["nobody"]}), "validation_failed"),
            (json!({"chatId": friend, "text": "x", "mentions": "15552100082"}), "invalid_json"),
        ] {
            let (st, b) = s.call("POST", &path, Some(body.clone()));
            assert_eq!(st, 400, "{body}: {b}");
            if code != "invalid_json" {
                assert_error(st, &b, 400, code);
            }
        }
        let (_, out) = s.call("GET", &format!("/api/sessions/{session}/messages?direction=out"), None);
        assert_eq!(out.as_array().unwrap().len(), 3, "{out}");
    }
}

/// What the account writes on its own phone reaches the session as the
/// phone's copy: a `message.sent` webhook with `fromMe`, stored once.
#[test]
fn a_message_written_on_the_phone_is_a_message_sent_webhook() {
    for db in backends() {
        let s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_WEBHOOK_ALLOW_PRIVATE", "true"),
            ],
        );
        let me = "15552100101";
        let session = link(&s, "phone-owner", me, no_pacing());
        let rx = Receiver::ok();
        let secret = hook(&s, &session, &rx, json!(["message.sent"]));
        let friend = "15552100102";
        let (status, sent) = s.call(
            "POST",
            &format!("/api/simulator/sessions/{session}/phone-messages"),
            Some(json!({"to": friend, "text": "typed on the phone"})),
        );
        assert_eq!(status, 201, "{sent}");
        let id = sent["messageId"].as_str().unwrap().to_string();

        let got = rx.wait(60, "message.sent", |r| !r.is_empty());
        got[0].assert_signed_by(&secret);
        let b = got[0].json();
        assert_eq!(b["event"], "message.sent", "{b}");
        let d = &b["data"];
        assert_eq!(d["id"], id);
        assert_eq!((&d["from"], &d["to"]), (&json!(format!("{me}@c.us")), &json!(format!("{friend}@c.us"))), "{d}");
        assert_eq!(d["chatId"], format!("{friend}@c.us"));
        assert_eq!(d["body"], "typed on the phone");
        assert_eq!((&d["fromMe"], &d["isGroup"]), (&json!(true), &json!(false)));
        assert!(d["pushName"].is_null(), "{d}");

        let m = message(&s, &session, &id);
        assert_eq!(
            (&m["direction"], &m["fromMe"], &m["status"], &m["chatId"]),
            (&json!("in"), &json!(true), &json!("received"), &json!(format!("{friend}@c.us"))),
            "{}",
            db.label()
        );
        s.wait_no_pending_deliveries(30);
        assert_eq!(rx.count(), 1, "delivered once");
    }
}

/// More chats than the client keeps receive lanes for (`CHAT_LANES`, 8):
/// lanes of idle chats are dropped and rebuilt, and nothing is lost or
/// stored twice on the way. One backend: this is about the engine.
#[test]
fn messages_from_more_chats_than_lanes_all_arrive_once() {
    let s = Server::start_with(&TestDb::Sqlite, &[("WASUP_ADMIN_KEY", ADMIN_KEY)]);
    let session = link(&s, "many-chats", "15552100111", no_pacing());
    let friends: Vec<String> = (0..12).map(|i| format!("155521002{i:02}")).collect();
    let mut ids = Vec::new();
    for round in ["first", "second"] {
        for f in &friends {
            let (status, sent) = s.call(
                "POST",
                &format!("/api/simulator/phones/{f}/messages"),
                Some(json!({"to": "many-chats", "text": format!("{round} from {f}")})),
            );
            assert_eq!(status, 201, "{sent}");
            ids.push(sent["messageId"].as_str().unwrap().to_string());
        }
    }
    let stored = poll(60, "24 inbound messages", || {
        let (_, list) = s.call(
            "GET",
            &format!("/api/sessions/{session}/messages?direction=in&limit=100"),
            None,
        );
        let list = list.as_array().cloned().unwrap_or_default();
        if list.len() >= ids.len() {
            Ok(list)
        } else {
            Err(format!("{} so far\n{}", list.len(), s.log()))
        }
    });
    assert_eq!(stored.len(), 24, "each once");
    let got: HashSet<&str> = stored.iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<HashSet<_>>());
    for f in &friends {
        let bodies: HashSet<&str> = stored
            .iter()
            .filter(|m| m["chatId"] == format!("{f}@c.us"))
            .filter_map(|m| m["body"].as_str())
            .collect();
        assert_eq!(bodies.len(), 2, "{f}: {bodies:?}");
    }
}

fn calls(s: &Server, phone: &str) -> Vec<Value> {
    let (status, body) = s.call("GET", &format!("/api/simulator/phones/{phone}/calls"), None);
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

fn place_call(s: &Server, phone: &str, to: &str) -> String {
    let (status, body) = s.call(
        "POST",
        &format!("/api/simulator/phones/{phone}/calls"),
        Some(json!({"to": to})),
    );
    assert_eq!(status, 201, "{body}");
    body["callId"].as_str().unwrap().to_string()
}

fn wait_rejected(s: &Server, phone: &str, call: &str) {
    poll(60, &format!("call {call} rejected"), || {
        let all = calls(s, phone);
        match all.iter().find(|c| c["callId"] == call) {
            Some(c) if c["rejectedByDevice"].is_u64() => Ok(()),
            other => Err(format!("{other:?}\n{}", s.log())),
        }
    })
}

/// `autoRejectCalls` (OpenWA's name), read live: with it on, a phone's call
/// is declined by the session's device; switched off on the live session,
/// the next call rings on. Ordered by what the session stored, not by time.
#[test]
fn auto_reject_calls_declines_calls_while_it_is_on() {
    for db in backends() {
        let s = Server::start_with(&db, &[("WASUP_ADMIN_KEY", ADMIN_KEY)]);
        let mut config = no_pacing();
        config["autoRejectCalls"] = json!(true);
        let session = link(&s, "no-calls", "15552100091", config);
        let friend = "15552100092";

        let first = place_call(&s, friend, "no-calls");
        wait_rejected(&s, friend, &first);

        let (status, got) = s.call(
            "PATCH",
            &format!("/api/sessions/{session}/config"),
            Some(json!({"autoRejectCalls": false})),
        );
        assert_eq!((status, &got["reconnectRequired"]), (200, &json!(false)), "{got}");
        let second = place_call(&s, friend, "no-calls");
        // A message after the call: once it is stored, the session has
        // seen the call (one connection, events in order).
        let (status, sent) = s.call(
            "POST",
            &format!("/api/simulator/phones/{friend}/messages"),
            Some(json!({"to": "no-calls", "text": "did you see my call?"})),
        );
        assert_eq!(status, 201, "{sent}");
        let after = sent["messageId"].as_str().unwrap().to_string();
        poll(60, "the message after the call", || {
            let (status, m) = s.call("GET", &format!("/api/sessions/{session}/messages/{after}"), None);
            if status == 200 { Ok(m) } else { Err(format!("{m}")) }
        });
        // On again: the third call is declined, the second was not.
        let (status, got) = s.call(
            "PATCH",
            &format!("/api/sessions/{session}/config"),
            Some(json!({"autoRejectCalls": null})),
        );
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["autoRejectCalls"], false, "null restores the default: {got}");
        let (status, got) = s.call(
            "PATCH",
            &format!("/api/sessions/{session}/config"),
            Some(json!({"autoRejectCalls": true})),
        );
        assert_eq!(status, 200, "{got}");
        let third = place_call(&s, friend, "no-calls");
        wait_rejected(&s, friend, &third);
        let all = calls(&s, friend);
        let second = all.iter().find(|c| c["callId"] == second.as_str()).unwrap();
        assert!(second["rejectedByDevice"].is_null(), "{second}\n{}", db.label());
        assert_eq!(all.len(), 3);
        assert_eq!(s.call("GET", &format!("/api/sessions/{session}"), None).1["status"], "ready");
    }
}

#[test]
fn a_send_during_an_outage_waits_and_goes_out_after_the_reconnect() {
    for db in backends() {
        let s = Server::start(&db);
        let session = link(&s, "patient", "15552100021", no_pacing());
        let friend = "15552100022";
        let (status, body) = s.call(
            "POST",
            &format!("/api/simulator/sessions/{session}/faults"),
            Some(json!({"kind": "outage", "durationMs": 4000})),
        );
        assert_eq!(status, 200, "{body}");
        s.wait_session(&session, 30, |b| b["status"] != "ready");

        // Accepted while disconnected; one is cancelled before it can go.
        let kept = send(&s, &session, friend, "sent after the outage");
        let dropped = send(&s, &session, friend, "never sent");
        assert_eq!(message(&s, &session, &kept)["status"], "pending");
        // Another phone writes while the session is away: drained at the
        // login. (Another one: a phone that wrote to a session first cannot
        // yet decrypt that session's reply in the simulator.)
        let (status, body) = s.call(
            "POST",
            "/api/simulator/phones/15552100023/messages",
            Some(json!({"to": session, "text": "while you were away"})),
        );
        assert_eq!(status, 201, "{body}");
        let offline = body["messageId"].as_str().unwrap().to_string();
        let (status, _) = s.call(
            "DELETE",
            &format!("/api/sessions/{session}/messages/{dropped}"),
            None,
        );
        assert_eq!(status, 204);
        let (status, body) = s.call(
            "GET",
            &format!("/api/sessions/{session}/messages/{dropped}"),
            None,
        );
        assert_error(status, &body, 404, "message_not_found");

        s.wait_session(&session, 60, |b| b["status"] == "ready");
        wait_status(&s, &session, &kept, "delivered");
        let got = wait_inbox(&s, friend, 1);
        assert_eq!(got.len(), 1, "{}: {got:?}", db.label());
        assert_eq!(got[0]["id"], kept);
        // Too late to cancel now.
        let (status, body) = s.call(
            "DELETE",
            &format!("/api/sessions/{session}/messages/{kept}"),
            None,
        );
        assert_error(status, &body, 409, "message_not_pending");
        let inbound = poll(60, "the drained inbound message", || {
            let (_, list) = s.call(
                "GET",
                &format!("/api/sessions/{session}/messages?direction=in"),
                None,
            );
            match list.as_array().map(Vec::len) {
                Some(1) => Ok(list),
                _ => Err(list.to_string()),
            }
        });
        assert_eq!(
            (&inbound[0]["id"], &inbound[0]["body"]),
            (&json!(offline), &json!("while you were away"))
        );
    }
}

#[test]
fn a_message_waiting_past_queue_ttl_fails_with_the_reason() {
    for db in backends() {
        let s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_WEBHOOK_ALLOW_PRIVATE", "true"),
            ],
        );
        let config = json!({"sending": {"minDelayMs": 0, "maxDelayMs": 0, "typing": false,
                                        "queueTtlSeconds": 1},
                            "reconnectBaseDelay": 1000});
        let session = link(&s, "impatient", "15552100101", config);
        let rx = Receiver::ok();
        let secret = hook(&s, &session, &rx, json!(["message.*"]));
        let (status, body) = s.call(
            "POST",
            &format!("/api/simulator/sessions/{session}/faults"),
            Some(json!({"kind": "outage", "durationMs": 5000})),
        );
        assert_eq!(status, 200, "{body}");
        s.wait_session(&session, 30, |b| b["status"] != "ready");
        let id = send(&s, &session, "15552100102", "too late");
        let m = wait_status(&s, &session, &id, "failed");
        assert!(
            m["error"].as_str().unwrap().contains("queueTtlSeconds"),
            "{}: {m}",
            db.label()
        );
        let got = rx.wait(30, "message.failed", |r| !r.is_empty());
        got[0].assert_signed_by(&secret);
        assert_eq!(got[0].json()["event"], "message.failed");
        assert_eq!(got[0].json()["data"]["messageId"], id);
        // Never sent, even once the session is back.
        s.wait_session(&session, 60, |b| b["status"] == "ready");
        assert_eq!(message(&s, &session, &id)["status"], "failed");
        assert!(inbox(&s, "15552100102").0.is_empty());
    }
}

#[test]
fn pacing_spaces_the_phones_receive_times() {
    for db in backends() {
        let s = Server::start(&db);
        let config = json!({"sending": {"minDelayMs": 400, "maxDelayMs": 600, "typing": false,
                                        "perMinute": 0, "perDay": 0}});
        let session = link(&s, "paced", "15552100031", config);
        let friend = "15552100032";
        for i in 0..4 {
            send(&s, &session, friend, &format!("paced {i}"));
        }
        let got = wait_inbox(&s, friend, 4);
        let times: Vec<u64> = got
            .iter()
            .map(|m| m["receivedAtMs"].as_u64().unwrap())
            .collect();
        let texts: Vec<&str> = got.iter().map(|m| m["text"].as_str().unwrap()).collect();
        assert_eq!(texts, vec!["paced 0", "paced 1", "paced 2", "paced 3"], "in order");
        for w in times.windows(2) {
            assert!(
                w[1] - w[0] >= 400,
                "{}: received {} ms apart (minDelayMs 400): {times:?}",
                db.label(),
                w[1] - w[0]
            );
        }
    }
}

/// With rate windows on, a session whose queue ran empty keeps its send
/// history; a message accepted afterwards still goes out at once (it was
/// held back for an hour before).
#[test]
fn a_message_after_the_queue_ran_empty_goes_out_at_once() {
    for db in backends() {
        let s = Server::start(&db);
        let config = json!({"sending": {"minDelayMs": 0, "maxDelayMs": 0, "typing": false,
                                        "perMinute": 20, "perDay": 1000}});
        let session = link(&s, "windows", "15552100041", config);
        let friend = "15552100042";
        send(&s, &session, friend, "first");
        wait_inbox(&s, friend, 1);
        // Let the lane find its queue empty (its turns run every 50 ms).
        std::thread::sleep(std::time::Duration::from_millis(500));
        send(&s, &session, friend, "second");
        let got = wait_inbox(&s, friend, 2);
        let texts: Vec<&str> = got.iter().map(|m| m["text"].as_str().unwrap()).collect();
        assert_eq!(texts, vec!["first", "second"], "{}", db.label());
    }
}

#[test]
fn an_idempotency_key_replays_the_first_answer_and_sends_once() {
    for db in backends() {
        let s = Server::start(&db);
        let session = link(&s, "once", "15552100041", no_pacing());
        let friend = "15552100042";
        let post = |text: &str| {
            let res = s
                .req(
                    "POST",
                    &format!("/api/sessions/{session}/messages/send-text"),
                    Some(ADMIN_KEY),
                )
                .header("Idempotency-Key", "order-1234-confirmation")
                .json(&json!({"chatId": friend, "text": text}))
                .send()
                .unwrap();
            split(res)
        };
        let (s1, first) = post("your order shipped");
        let (s2, second) = post("your order shipped (retry)");
        assert_eq!((s1, s2), (201, 201), "{first} {second}");
        assert_eq!(first, second, "{}", db.label());
        let id = first["messageId"].as_str().unwrap();
        wait_status(&s, &session, id, "delivered");
        let (got, dups) = inbox(&s, friend);
        assert_eq!(got.len(), 1);
        assert_eq!((&got[0]["text"], dups), (&json!("your order shipped"), 0));
        // A third retry after the send: still the first answer.
        let (s3, third) = post("again");
        assert_eq!((s3, &third), (201, &first));
    }
}

#[test]
fn an_unregistered_number_ends_failed_with_a_reason() {
    for db in backends() {
        let s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_WEBHOOK_ALLOW_PRIVATE", "true"),
            ],
        );
        let session = link(&s, "to-nobody", "15552100051", no_pacing());
        let rx = Receiver::ok();
        let secret = hook(&s, &session, &rx, json!(["message.failed"]));
        let gone = "15552100052";
        let (status, body) = s.call(
            "POST",
            &format!("/api/simulator/phones/{gone}/registered"),
            Some(json!({"registered": false})),
        );
        assert_eq!(status, 200, "{body}");
        let id = send(&s, &session, &format!("{gone}@c.us"), "anyone there?");
        let m = wait_status(&s, &session, &id, "failed");
        assert!(
            m["error"].as_str().unwrap().contains("not on WhatsApp")
                || m["error"].as_str().unwrap().contains("could not send"),
            "{}: {m}",
            db.label()
        );
        let got = rx.wait(30, "message.failed", |r| !r.is_empty());
        got[0].assert_signed_by(&secret);
        let b = got[0].json();
        assert_eq!(b["event"], "message.failed");
        assert_eq!(b["data"]["messageId"], id);
        assert_eq!(b["data"]["error"], m["error"]);
        assert!(inbox(&s, gone).0.is_empty());
    }
}

// `is_on_whatsapp` asks usync by `<contact>` number; the simulator answers
// a virtual phone `in` and an unregistered number `out`.
#[test]
fn check_number_says_whether_a_number_is_on_whatsapp() {
    for db in backends() {
        let s = Server::start(&db);
        let session = link(&s, "checker", "15552100061", no_pacing());
        let (status, body) = s.call(
            "POST",
            "/api/simulator/phones/15552100063/registered",
            Some(json!({"registered": false})),
        );
        assert_eq!(status, 200, "{body}");
        let check = |n: &str| {
            s.call(
                "GET",
                &format!("/api/sessions/{session}/contacts/check/{n}"),
                None,
            )
        };
        let (status, yes) = check("+1 555-210-0062");
        assert_eq!(status, 200, "{yes}");
        assert_eq!(
            yes,
            json!({"number": "15552100062", "exists": true, "whatsappId": "15552100062@c.us"}),
            "{}",
            db.label()
        );
        let (status, no) = check("15552100063");
        assert_eq!(status, 200, "{no}");
        assert_eq!(
            no,
            json!({"number": "15552100063", "exists": false, "whatsappId": null})
        );
    }
}

#[test]
fn every_refusal_is_a_clean_4xx() {
    for db in backends() {
        let s = Server::start(&db);
        let session = link(&s, "strict", "15552100071", no_pacing());
        let path = format!("/api/sessions/{session}/messages/send-text");
        let post = |body: Value| s.call("POST", &path, Some(body));

        let (st, b) = post(json!({"chatId": "not-a-chat", "text": "x"}));
        assert_error(st, &b, 400, "invalid_chat_id");
        let (st, b) = post(json!({"chatId": "123@c.us", "text": "x"}));
        assert_error(st, &b, 400, "invalid_chat_id");
        let (st, b) = post(json!({"chatId": "15552100072@c.us", "text": ""}));
        assert_error(st, &b, 400, "validation_failed");
        let (st, b) = post(json!({"chatId": "15552100072@c.us", "text": "x".repeat(4097)}));
        assert_error(st, &b, 400, "validation_failed");
        let (st, b) = post(json!({"chatId": "15552100072@c.us"}));
        assert_eq!(st, 400, "{b}");
        let (st, b) = post(json!({"chatId": "15552100072@c.us", "text": "x", "colour": 1}));
        assert_error(st, &b, 400, "unknown_field");
        let res = s
            .req("POST", &path, Some(ADMIN_KEY))
            .header("Idempotency-Key", "k".repeat(201))
            .json(&json!({"chatId": "15552100072", "text": "x"}))
            .send()
            .unwrap();
        let (st, b) = split(res);
        assert_error(st, &b, 400, "validation_failed");

        let (st, b) = s.call(
            "POST",
            "/api/sessions/ghost/messages/send-text",
            Some(json!({"chatId": "15552100072", "text": "x"})),
        );
        assert_error(st, &b, 404, "session_not_found");
        let (st, b) = s.call(
            "GET",
            &format!("/api/sessions/{session}/messages/3EB0NOPE"),
            None,
        );
        assert_error(st, &b, 404, "message_not_found");
        let (st, b) = s.call(
            "DELETE",
            &format!("/api/sessions/{session}/messages/3EB0NOPE"),
            None,
        );
        assert_error(st, &b, 404, "message_not_found");
        for q in ["limit=0", "limit=501", "limit=x", "direction=up", "chatId=nope", "page=2"] {
            let (st, b) = s.call(
                "GET",
                &format!("/api/sessions/{session}/messages?{q}"),
                None,
            );
            assert_eq!(st, 400, "{q}: {b}");
        }
        let (st, b) = s.call(
            "GET",
            &format!("/api/sessions/{session}/contacts/check/12ab"),
            None,
        );
        assert_error(st, &b, 400, "validation_failed");

        // A session that is not linked refuses, naming its status.
        let idle = s.create_session("idle");
        let (st, b) = s.call(
            "POST",
            &format!("/api/sessions/{idle}/messages/send-text"),
            Some(json!({"chatId": "15552100072", "text": "x"})),
        );
        assert_error(st, &b, 409, "session_not_ready");
        assert!(b["message"].as_str().unwrap().contains("created"), "{b}");
        let (st, b) = s.call(
            "GET",
            &format!("/api/sessions/{idle}/contacts/check/15552100072"),
            None,
        );
        assert_error(st, &b, 409, "session_not_ready");

        // Roles and scopes.
        let key = |role: &str, sessions: Value| {
            let (st, k) = s.call(
                "POST",
                "/api/auth/api-keys",
                Some(if sessions.is_null() {
                    json!({"name": format!("{role}-key"), "role": role})
                } else {
                    json!({"name": format!("{role}-key"), "role": role, "allowedSessions": sessions})
                }),
            );
            assert_eq!(st, 201, "{k}");
            k["apiKey"].as_str().unwrap().to_string()
        };
        let viewer = key("viewer", Value::Null);
        let (st, b) = s.call_as(
            &viewer,
            "POST",
            &path,
            Some(json!({"chatId": "15552100072", "text": "x"})),
        );
        assert_error(st, &b, 403, "insufficient_role");
        let (st, _) = s.call_as(&viewer, "GET", &format!("/api/sessions/{session}/messages"), None);
        assert_eq!(st, 200, "a viewer reads");
        let elsewhere = key("operator", json!([idle]));
        let (st, b) = s.call_as(
            &elsewhere,
            "POST",
            &path,
            Some(json!({"chatId": "15552100072", "text": "x"})),
        );
        assert_error(st, &b, 401, "session_not_in_scope");
        let (st, b) = s.call_as(
            &elsewhere,
            "GET",
            &format!("/api/sessions/{session}/messages"),
            None,
        );
        assert_error(st, &b, 401, "session_not_in_scope");
        // Nothing of the above was stored.
        let (st, list) = s.call("GET", &format!("/api/sessions/{session}/messages"), None);
        assert_eq!((st, list), (200, json!([])));
    }
}

/// OpenWA's `send-text` call, replayed byte for byte as its clients send it
/// (OpenWA 0.24's OpenAPI document, as quoted by public client code:
/// `POST /api/sessions/{sessionId}/messages/send-text`, header `X-API-Key`,
/// JSON `{chatId, text}` with `chatId` = `<digits>@c.us`, the session named
/// in the path → 201 `{messageId, timestamp}`), reading exactly the fields
/// they read. No SDK package was found on the npm registry to run unchanged.
#[test]
fn the_openwa_sdk_send_text_request_works_unchanged() {
    let db = TestDb::Sqlite;
    let s = Server::start(&db);
    link(&s, "sdk-bot", "15552100081", no_pacing());
    let res = reqwest::blocking::Client::new()
        .post(s.url("/api/sessions/sdk-bot/messages/send-text"))
        .header("X-API-Key", ADMIN_KEY)
        .header("Content-Type", "application/json")
        .body(r#"{"chatId":"15552100082@c.us","text":"Hello from the SDK"}"#)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let body: Value = res.json().unwrap();
    let id = body["messageId"].as_str().expect("messageId");
    assert!(body["timestamp"].as_i64().expect("timestamp in seconds") > 1_700_000_000);
    assert!(body["timestamp"].as_i64().unwrap() < 10_000_000_000, "seconds, not ms");
    let got = wait_inbox(&s, "15552100082", 1);
    assert_eq!((&got[0]["id"], &got[0]["text"]), (&json!(id), &json!("Hello from the SDK")));
}

// ------------------------------------------------------------ kill -9

fn control(sim: &SimProcess, method: &str, path: &str, body: Option<Value>) -> Value {
    let http = reqwest::blocking::Client::new();
    let url = format!("{}{path}", sim.control);
    let rb = match method {
        "GET" => http.get(url),
        _ => http.post(url),
    };
    let rb = match body {
        Some(b) => rb.json(&b),
        None => rb,
    };
    let res = rb.send().unwrap();
    assert!(res.status().is_success(), "{path}: {}", res.status());
    res.json().unwrap()
}

#[test]
fn accepted_messages_survive_kill_9_and_reach_the_phone_once() {
    const N: usize = 200;
    for db in backends() {
        let simdir = tempfile::tempdir().unwrap();
        let sim = SimProcess::start(simdir.path());
        let mut s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_SIMULATOR_URL", &sim.ws),
                ("WASUP_WA_VERSION", "2.3000.1027000000"),
            ],
        );
        let (status, body) = s.call(
            "POST",
            "/api/sessions",
            Some(json!({"name": "durable", "config": no_pacing()})),
        );
        assert_eq!(status, 201, "{body}");
        let session = body["id"].as_str().unwrap().to_string();
        s.call("POST", &format!("/api/sessions/{session}/start"), None);
        s.wait_session(&session, 30, |b| b["status"] == "qr_ready");
        let (_, qr) = s.call("GET", &format!("/api/sessions/{session}/qr?format=raw"), None);
        control(
            &sim,
            "POST",
            "/scan",
            Some(json!({"qr": qr["qr"], "phone": "15552100091", "push_name": "Durable"})),
        );
        s.wait_session(&session, 60, |b| b["status"] == "ready");

        let friend = "15552100092";
        let ids: Vec<String> = (0..N)
            .map(|i| send(&s, &session, friend, &format!("batch {i}")))
            .collect();
        let received = |sim: &SimProcess| {
            let inbox = control(sim, "GET", &format!("/phones/{friend}/inbox"), None);
            (
                inbox["messages"].as_array().unwrap().clone(),
                inbox["duplicates"].as_u64().unwrap(),
            )
        };
        // Mid-queue: some went out, most did not.
        poll(60, "the first sends", || {
            let n = received(&sim).0.len();
            if n >= 5 {
                Ok(())
            } else {
                Err(format!("{n}"))
            }
        });
        let pid = s.pid().unwrap();
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let before = received(&sim).0.len();
        assert!(before < N, "{}: the kill came too late to test anything", db.label());
        s.reap_killed();
        s.restart_stopped();

        let got = poll(180, "every message at the phone", || {
            let (got, _) = received(&sim);
            if got.len() >= N {
                Ok(got)
            } else {
                Err(format!("{} of {N}\n{}", got.len(), s.log()))
            }
        });
        let want: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let have: HashSet<&str> = got.iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(have, want, "{}: every accepted id, no other", db.label());
        assert_eq!(got.len(), N, "one entry per id");
        // A send in flight at the kill (on the wire, not yet recorded) is
        // sent again under the same id: the phone keeps one, and at most
        // that one is a repeat delivery.
        let (_, dups) = received(&sim);
        assert!(dups <= 1, "{}: {dups} repeated deliveries", db.label());
        // In acceptance order.
        let order: Vec<&str> = got.iter().map(|m| m["id"].as_str().unwrap()).collect();
        let expected: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(order, expected);
        // Every one left the queue (a receipt lost with the killed
        // process may keep one at "sent").
        let (_, list) = s.call(
            "GET",
            &format!("/api/sessions/{session}/messages?limit=500"),
            None,
        );
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), N);
        for m in list {
            assert!(
                matches!(m["status"].as_str(), Some("sent" | "delivered" | "read")),
                "{m}"
            );
        }
    }
}
