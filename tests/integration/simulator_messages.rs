//! Messages: a simulated contact writes to a linked client (live and while
//! it is offline); what the client sends is acked and recorded.

use std::time::Duration;

use crate::simulator_support::*;
use wasup::simulator::{FaultKind, Simulator, Target};
use whatsapp_rust::types::events::Event;
use whatsapp_rust::types::presence::ReceiptType;

/// Text messages of an event; the phone's own protocol messages (its
/// app-state key share) are skipped.
fn texts(e: &Event) -> Option<Vec<(String, String)>> {
    match e {
        Event::Messages(b) => {
            let v: Vec<(String, String)> = b
                .messages
                .iter()
                .filter_map(|m| {
                    Some((
                        m.info.source.sender.user.to_string(),
                        m.message.conversation.clone()?,
                    ))
                })
                .collect();
            (!v.is_empty()).then_some(v)
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_text_live_and_after_an_outage() {
    init_log();
    let sim = Simulator::new();
    let me = "15551280001";
    let friend = "15551289999";
    let (mut c, d) = linked_client(&sim, me, "Gil").await;

    sim.send_text(friend, me, "hello from the simulator")
        .unwrap();
    let got = c.wait_for(20, texts).await;
    assert_eq!(
        got,
        vec![(friend.to_string(), "hello from the simulator".to_string())]
    );

    // Sent while the device is away: delivered at its next login.
    sim.fault(
        Target::device(me, d.device),
        FaultKind::Outage(Duration::from_secs(2)),
    )
    .unwrap();
    c.wait_for(10, |e| matches!(e, Event::Disconnected(_)).then_some(()))
        .await;
    sim.send_text(friend, me, "while you were away").unwrap();
    let got = c.wait_for(60, texts).await;
    assert_eq!(got[0].1, "while you were away");
    c.shutdown().await;
}

/// A phone keeps writing on the Signal session its first message started,
/// as a real one does: later messages spend no one-time prekey (and the
/// client archives no session state per message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_writes_every_message_on_one_session() {
    init_log();
    let sim = Simulator::new();
    let me = "15551280004";
    let friend = "15551289996";
    let (mut c, d) = linked_client(&sim, me, "Jo").await;

    sim.send_text(friend, me, "first").unwrap();
    assert_eq!(c.wait_for(20, texts).await[0].1, "first");
    let left = sim.pre_keys_left(me, d.device).expect("a bundle");
    let mut got = Vec::new();
    for n in 0..5 {
        sim.send_text(friend, me, &format!("again {n}")).unwrap();
    }
    while got.len() < 5 {
        got.extend(c.wait_for(20, texts).await.into_iter().map(|(_, t)| t));
    }
    let want: Vec<String> = (0..5).map(|n| format!("again {n}")).collect();
    assert_eq!(got, want);
    assert_eq!(sim.pre_keys_left(me, d.device), Some(left), "no prekey spent");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_text_is_acked_and_recorded() {
    init_log();
    let sim = Simulator::new();
    let me = "15551280002";
    let friend = "15551289998";
    let (mut c, _d) = linked_client(&sim, me, "Hal").await;
    // The friend exists as a virtual phone.
    sim.send_text(friend, me, "hi").unwrap();
    c.wait_for(20, texts).await;

    let to: whatsapp_rust::Jid = format!("{friend}@s.whatsapp.net").parse().unwrap();
    let msg = whatsapp_rust::waproto::whatsapp::Message {
        conversation: Some("hi from client".into()),
        ..Default::default()
    };
    let id = tokio::time::timeout(Duration::from_secs(30), c.client.send_message(to, msg))
        .await
        .expect("send in time")
        .expect("send ok");
    let mut found = false;
    for _ in 0..50 {
        if sim.sent_messages().iter().any(|s| s.id == id.message_id) {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "recorded: {:?}", sim.sent_messages());
    c.shutdown().await;
}

/// Receipts of `typ` for message ids, as the client reports them.
fn receipt_ids(e: &Event, typ: ReceiptType) -> Option<Vec<String>> {
    match e {
        Event::Receipt(r) if r.r#type == typ => {
            Some(r.message_ids.iter().map(|m| m.to_string()).collect())
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_text_is_decrypted_once_and_receipted() {
    init_log();
    let sim = Simulator::new();
    let me = "15551280003";
    // Never seen before: a virtual phone created on demand.
    let friend = "15551289997";
    let (mut c, _d) = linked_client(&sim, me, "Ida").await;

    let to: whatsapp_rust::Jid = format!("{friend}@s.whatsapp.net").parse().unwrap();
    let msg = whatsapp_rust::waproto::whatsapp::Message {
        conversation: Some("hi phone".into()),
        ..Default::default()
    };
    let id = tokio::time::timeout(Duration::from_secs(30), c.client.send_message(to, msg))
        .await
        .expect("send in time")
        .expect("send ok")
        .message_id;

    let delivered = c
        .wait_for(20, |e| receipt_ids(e, ReceiptType::Delivered))
        .await;
    assert_eq!(delivered, vec![id.clone()]);
    let got = sim.phone_messages(friend);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].id.as_str(), got[0].text.as_str(), got[0].from.as_str()),
        (id.as_str(), "hi phone", me)
    );
    assert!(!got[0].read);
    assert_eq!(sim.duplicate_deliveries(friend), 0);

    assert_eq!(sim.read(friend, None).unwrap(), 1);
    let read = c.wait_for(20, |e| receipt_ids(e, ReceiptType::Read)).await;
    assert_eq!(read, vec![id]);
    assert!(sim.phone_messages(friend)[0].read);
    assert_eq!(sim.read(friend, None).unwrap(), 0);
    c.shutdown().await;
}

// `is_on_whatsapp` asks by number (`<user><contact>+PHONE</contact></user>`,
// no `jid`); the simulator answers each with its jid and `<contact type>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_on_whatsapp_and_a_send_to_an_unregistered_number() {
    init_log();
    let sim = Simulator::new();
    let me = "15551280004";
    let known = "15551289996";
    let gone = "15551289995";
    let (mut c, _d) = linked_client(&sim, me, "Jo").await;
    sim.set_registered(gone, false).unwrap();

    let jid = |p: &str| -> whatsapp_rust::Jid { format!("{p}@s.whatsapp.net").parse().unwrap() };
    let res = c
        .client
        .contacts()
        .is_on_whatsapp(&[jid(known), jid(gone)])
        .await
        .expect("usync answers");
    let reg = |p: &str| res.iter().find(|r| r.jid.user == p).map(|r| r.is_registered);
    assert_eq!(reg(known), Some(true));
    assert_eq!(reg(gone), Some(false));

    let msg = whatsapp_rust::waproto::whatsapp::Message {
        conversation: Some("anyone there?".into()),
        ..Default::default()
    };
    let sent = tokio::time::timeout(Duration::from_secs(30), c.client.send_message(jid(gone), msg))
        .await
        .expect("send ends in time");
    log::info!("send to an unregistered number: {:?}", sent.as_ref().map(|s| &s.message_id));
    assert!(sim.phone_messages(gone).is_empty());
    c.shutdown().await;
}

/// Texts of an event with their `is_offline` flag.
fn texts_offline(e: &Event) -> Option<Vec<(String, bool)>> {
    match e {
        Event::Messages(b) => {
            let v: Vec<(String, bool)> = b
                .messages
                .iter()
                .filter_map(|m| Some((m.message.conversation.clone()?, m.info.is_offline)))
                .collect();
            (!v.is_empty()).then_some(v)
        }
        _ => None,
    }
}

/// A phone writing while the device is away (the `drop` and `outage`
/// faults): the server holds the messages and delivers each once at the
/// next login, marked offline, then ends the offline delivery with its count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_away_arrive_once_as_offline_messages() {
    init_log();
    let sim = Simulator::new();
    let me = "15551280005";
    let friend = "15551289994";
    let (mut c, d) = linked_client(&sim, me, "Kim").await;
    sim.send_text(friend, me, "before").unwrap();
    assert_eq!(
        c.wait_for(20, texts_offline).await,
        vec![("before".to_string(), false)]
    );

    // Outage: two messages wait for the reconnect.
    sim.fault(
        Target::device(me, d.device),
        FaultKind::Outage(Duration::from_secs(2)),
    )
    .unwrap();
    c.wait_for(10, |e| matches!(e, Event::Disconnected(_)).then_some(()))
        .await;
    sim.send_text(friend, me, "away 1").unwrap();
    sim.send_text(friend, me, "away 2").unwrap();
    // The client decrypts messages in a per-chat worker and handles the
    // end marker on its read loop, so the completion may come before the
    // last message's event: collect both in one wait.
    let mut got = Vec::new();
    let mut count = None;
    while got.len() < 2 || count.is_none() {
        match c
            .wait_for(60, |e| match e {
                Event::OfflineSyncCompleted(o) => Some(Err(o.count)),
                other => texts_offline(other).map(Ok),
            })
            .await
        {
            Ok(texts) => got.extend(texts),
            Err(n) => count = Some(n),
        }
    }
    assert_eq!(
        got,
        vec![
            ("away 1".to_string(), true),
            ("away 2".to_string(), true)
        ]
    );
    assert_eq!(count, Some(2));

    // Drop: the connection closes; what is sent meanwhile is not lost.
    sim.fault(Target::device(me, d.device), FaultKind::Drop)
        .unwrap();
    c.wait_for(10, |e| matches!(e, Event::Disconnected(_)).then_some(()))
        .await;
    sim.send_text(friend, me, "after the drop").unwrap();
    let got = c.wait_for(60, texts_offline).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "after the drop");
    c.shutdown().await;
}
