//! The store exercised trait by trait on both backends, and the test
//! databases the engine tests share.

use std::sync::Arc;

use diesel::prelude::*;
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::store::traits::*;

use super::rows::key;
use super::*;
use crate::db::testing::TestDatabase;

/// A fresh database of one backend, opened; removed on drop (through
/// the one test-database helper, `crate::db::testing`).
pub(crate) struct TestDb {
    pub db: Db,
    _database: TestDatabase,
}

fn opened(database: TestDatabase) -> TestDb {
    TestDb {
        db: database.open(),
        _database: database,
    }
}

pub(crate) fn sqlite_db() -> TestDb {
    opened(TestDatabase::sqlite())
}

/// A fresh PostgreSQL database, or None (the helper says the half is
/// skipped) when WASUP_TEST_DATABASE_URL is not set.
pub(crate) fn postgres_db() -> Option<TestDb> {
    TestDatabase::postgres(&crate::db::testing::current_test()).map(opened)
}

fn boxed() -> Arc<SecretBox> {
    Arc::new(SecretBox::new(&[9u8; 32]))
}

async fn raw_values(db: &Db, sid: &str, kind: &'static str) -> Vec<Vec<u8>> {
    let sid = sid.to_string();
    db.run(move |conn| {
        each_backend!(conn, c => ds::device_state
            .filter(ds::session_id.eq(&sid))
            .filter(ds::kind.eq(kind))
            .select(ds::value)
            .load::<Vec<u8>>(c)
            .map_err(DbError::from))
    })
    .await
    .unwrap()
}

async fn count_rows(db: &Db, sid: &str) -> i64 {
    let sid = sid.to_string();
    db.run(move |conn| {
        each_backend!(conn, c => ds::device_state
            .filter(ds::session_id.eq(&sid))
            .count()
            .get_result::<i64>(c)
            .map_err(DbError::from))
    })
    .await
    .unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn exercise(t: &TestDb) {
    let db = &t.db;
    let s = DeviceDb::new(db.clone(), boxed(), "s1");

    // --- device
    assert!(!DeviceStore::exists(&s).await.unwrap());
    assert!(s.load().await.unwrap().is_none());
    assert_eq!(s.create().await.unwrap(), 1);
    assert!(DeviceStore::exists(&s).await.unwrap());
    let created = s.load().await.unwrap().unwrap();
    s.create().await.unwrap(); // keeps the existing device
    let mut dev = s.load().await.unwrap().unwrap();
    assert_eq!(dev.registration_id, created.registration_id);
    dev.push_name = "Alice".into();
    dev.next_pre_key_id = 77;
    s.save(&dev).await.unwrap();
    let back = s.load().await.unwrap().unwrap();
    assert_eq!(back.push_name, "Alice");
    assert_eq!(back.next_pre_key_id, 77);
    assert_eq!(
        back.identity_key.private_key.serialize(),
        dev.identity_key.private_key.serialize()
    );
    assert_eq!(back.adv_secret_key, dev.adv_secret_key);
    assert!(back.device_props.os.is_some(), "device props restored");
    let raw = raw_values(db, "s1", DEVICE).await;
    assert_eq!(raw.len(), 1);
    assert!(!contains(&raw[0], &dev.adv_secret_key));
    assert!(!contains(&raw[0], b"Alice"));
    assert!(!contains(&raw[0], b"registration_id"));

    // --- identities and sessions
    s.put_identity("123@s.whatsapp.net", [1u8; 32])
        .await
        .unwrap();
    s.put_identities_batch(&[("456:2@lid".into(), [2u8; 32])])
        .await
        .unwrap();
    assert_eq!(
        s.load_identity("123@s.whatsapp.net").await.unwrap(),
        Some([1u8; 32])
    );
    assert_eq!(s.load_identity("456:2@lid").await.unwrap(), Some([2u8; 32]));
    s.put_identity("123@s.whatsapp.net", [3u8; 32])
        .await
        .unwrap();
    assert_eq!(
        s.load_identity("123@s.whatsapp.net").await.unwrap(),
        Some([3u8; 32])
    );
    s.delete_identity("123@s.whatsapp.net").await.unwrap();
    assert_eq!(s.load_identity("123@s.whatsapp.net").await.unwrap(), None);

    let secret_session = b"SIGNAL-SESSION-PLAINTEXT-RECORD";
    s.put_session("789:1@s.whatsapp.net", secret_session)
        .await
        .unwrap();
    s.put_sessions_batch(&[
        (
            "789:1@s.whatsapp.net".into(),
            Bytes::from_static(b"updated"),
        ),
        ("790@s.whatsapp.net".into(), Bytes::from_static(b"other")),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.get_session("789:1@s.whatsapp.net")
            .await
            .unwrap()
            .unwrap(),
        Bytes::from_static(b"updated")
    );
    assert!(s.has_session("790@s.whatsapp.net").await.unwrap());
    assert!(!s.has_session("791@s.whatsapp.net").await.unwrap());
    assert!(s.has_signal_state_for_user("789").await.unwrap());
    assert!(s.has_signal_state_for_user("456").await.unwrap());
    assert!(!s.has_signal_state_for_user("78").await.unwrap());
    s.put_session("secret@x", secret_session).await.unwrap();
    for v in raw_values(db, "s1", SESSION).await {
        assert!(!contains(&v, secret_session) && !contains(&v, b"updated"));
    }
    s.delete_session("790@s.whatsapp.net").await.unwrap();
    assert!(s.get_session("790@s.whatsapp.net").await.unwrap().is_none());
    // Kept in memory (`hot`) and written through: a store with nothing in
    // memory reads the same from the database.
    assert!(s.hot_len() > 0, "sessions and identities read are kept");
    let fresh = DeviceDb::new(db.clone(), boxed(), "s1");
    for address in [
        "789:1@s.whatsapp.net",
        "790@s.whatsapp.net",
        "791@s.whatsapp.net",
    ] {
        assert_eq!(
            fresh.get_session(address).await.unwrap(),
            s.get_session(address).await.unwrap(),
            "{address}"
        );
    }
    assert_eq!(
        fresh.load_identity("456:2@lid").await.unwrap(),
        Some([2u8; 32])
    );

    // --- prekeys
    assert_eq!(s.get_max_prekey_id().await.unwrap(), 0);
    s.store_prekey(5, b"pk5", false).await.unwrap();
    s.store_prekeys_batch(
        &[
            (6, Bytes::from_static(b"pk6")),
            (12, Bytes::from_static(b"pk12")),
        ],
        false,
    )
    .await
    .unwrap();
    assert_eq!(s.get_max_prekey_id().await.unwrap(), 12);
    assert_eq!(&s.load_prekey(6).await.unwrap().unwrap()[..], b"pk6");
    let batch = s.load_prekeys_batch(&[12, 99, 5]).await.unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[0].0, 12);
    assert_eq!(&batch[1].1[..], b"pk5");
    s.remove_prekey(6).await.unwrap();
    s.mark_prekeys_uploaded(&[5, 6]).await.unwrap();
    assert!(s.load_prekey(6).await.unwrap().is_none(), "not resurrected");
    assert!(s.load_prekey(5).await.unwrap().is_some());

    s.store_signed_prekey(1, b"spk1").await.unwrap();
    s.store_signed_prekey(2, b"spk2").await.unwrap();
    assert_eq!(s.load_signed_prekey(2).await.unwrap().unwrap(), b"spk2");
    let mut all = s.load_all_signed_prekeys().await.unwrap();
    all.sort();
    assert_eq!(all, vec![(1, b"spk1".to_vec()), (2, b"spk2".to_vec())]);
    s.remove_signed_prekey(1).await.unwrap();
    assert!(s.load_signed_prekey(1).await.unwrap().is_none());

    // --- sender keys
    s.put_sender_key("g@g.us:a", b"SENDERKEY").await.unwrap();
    s.put_sender_keys_batch(&[("g@g.us:b".into(), Bytes::from_static(b"sk-b"))])
        .await
        .unwrap();
    assert_eq!(
        s.get_sender_key("g@g.us:a").await.unwrap().unwrap(),
        b"SENDERKEY"
    );
    for v in raw_values(db, "s1", SENDER_KEY).await {
        assert!(!contains(&v, b"SENDERKEY"));
    }
    s.delete_sender_key("g@g.us:a").await.unwrap();
    assert!(s.get_sender_key("g@g.us:a").await.unwrap().is_none());

    // --- app state
    assert!(s.get_latest_sync_key_id().await.unwrap().is_none());
    let ask = AppStateSyncKey {
        key_data: vec![0xAB; 32],
        fingerprint: vec![1, 2],
        timestamp: 42,
    };
    s.set_sync_key(b"kid1", ask.clone()).await.unwrap();
    s.set_sync_key(b"kid2", ask.clone()).await.unwrap();
    assert_eq!(
        s.get_sync_key(b"kid1").await.unwrap().unwrap().key_data,
        vec![0xAB; 32]
    );
    assert_eq!(s.get_latest_sync_key_id().await.unwrap().unwrap(), b"kid2");
    for v in raw_values(db, "s1", SYNC_KEY).await {
        assert!(!contains(&v, &[0xAB; 32]));
    }
    assert_eq!(s.get_version("regular").await.unwrap().version, 0);
    let hs = HashState {
        version: 9,
        ..Default::default()
    };
    s.set_version("regular", hs).await.unwrap();
    assert_eq!(s.get_version("regular").await.unwrap().version, 9);
    use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
    let m = |i: u8, v: u8| AppStateMutationMAC {
        index_mac: vec![i; 32],
        value_mac: vec![v; 32],
    };
    s.put_mutation_macs("regular", 9, &[m(1, 10), m(2, 20)])
        .await
        .unwrap();
    s.put_mutation_macs("other", 1, &[m(1, 30)]).await.unwrap();
    assert_eq!(
        s.get_mutation_mac("regular", &[1; 32])
            .await
            .unwrap()
            .unwrap(),
        vec![10; 32]
    );
    let got = s
        .get_mutation_macs("regular", &[[1; 32], [2; 32], [3; 32]])
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[&[2; 32]], vec![20; 32]);
    s.delete_mutation_macs("regular", &[vec![1; 32]])
        .await
        .unwrap();
    assert!(s
        .get_mutation_mac("regular", &[1; 32])
        .await
        .unwrap()
        .is_none());
    s.clear_mutation_macs("regular").await.unwrap();
    assert!(s
        .get_mutation_mac("regular", &[2; 32])
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get_mutation_mac("other", &[1; 32])
        .await
        .unwrap()
        .is_some());

    // --- sender key devices
    s.set_sender_key_status("g1", &[("d1", true), ("d2", false)])
        .await
        .unwrap();
    s.set_sender_key_status("g2", &[("d1", true)])
        .await
        .unwrap();
    let mut g1 = s.get_sender_key_devices("g1").await.unwrap();
    g1.sort();
    assert_eq!(g1, vec![("d1".into(), true), ("d2".into(), false)]);
    s.set_sender_key_status("g1", &[("d2", true)])
        .await
        .unwrap();
    s.delete_sender_key_device_rows(&["d1"]).await.unwrap();
    assert_eq!(
        s.get_sender_key_devices("g1").await.unwrap(),
        vec![("d2".into(), true)]
    );
    assert!(s.get_sender_key_devices("g2").await.unwrap().is_empty());
    s.clear_sender_key_devices("g1").await.unwrap();
    assert!(s.get_sender_key_devices("g1").await.unwrap().is_empty());
    s.set_sender_key_status("g3", &[("d3", true)])
        .await
        .unwrap();
    s.clear_all_sender_key_devices().await.unwrap();
    assert!(s.get_sender_key_devices("g3").await.unwrap().is_empty());

    // --- LID mappings
    let lm = |lid: &str, pn: &str| LidPnMappingEntry {
        lid: lid.into(),
        phone_number: pn.into(),
        created_at: 1,
        updated_at: 2,
        learning_source: "usync".into(),
    };
    s.put_lid_mapping(&lm("100", "555")).await.unwrap();
    s.put_lid_mappings(&[lm("200", "666"), lm("300", "777")])
        .await
        .unwrap();
    assert_eq!(
        s.get_lid_mapping("100")
            .await
            .unwrap()
            .unwrap()
            .phone_number,
        "555"
    );
    assert_eq!(s.get_pn_mapping("666").await.unwrap().unwrap().lid, "200");
    // Remap LID 100 to another number: the old number no longer resolves.
    s.put_lid_mapping(&lm("100", "888")).await.unwrap();
    assert!(s.get_pn_mapping("555").await.unwrap().is_none());
    assert_eq!(s.get_pn_mapping("888").await.unwrap().unwrap().lid, "100");
    // Two LIDs for one number: the latest wins.
    s.put_lid_mapping(&lm("400", "888")).await.unwrap();
    assert_eq!(s.get_pn_mapping("888").await.unwrap().unwrap().lid, "400");
    assert_eq!(s.get_all_lid_mappings().await.unwrap().len(), 4);

    // --- base keys
    s.save_base_key("a@x", "m1", b"base").await.unwrap();
    assert!(s.has_same_base_key("a@x", "m1", b"base").await.unwrap());
    assert!(!s.has_same_base_key("a@x", "m1", b"other").await.unwrap());
    s.delete_base_key("a@x", "m1").await.unwrap();
    assert!(!s.has_same_base_key("a@x", "m1", b"base").await.unwrap());

    // --- device lists and group metadata
    let dl = DeviceListRecord {
        user: "555".into(),
        devices: vec![DeviceInfo::new(0, None), DeviceInfo::new(3, Some(1))],
        timestamp: 10,
        phash: Some("h".into()),
        raw_id: Some(7),
    };
    s.update_device_list(dl).await.unwrap();
    let back = s.get_devices("555").await.unwrap().unwrap();
    assert_eq!(back.devices.len(), 2);
    assert_eq!(back.raw_id, Some(7));
    s.delete_devices("555").await.unwrap();
    assert!(s.get_devices("555").await.unwrap().is_none());
    s.put_group_metadata("g@g.us", b"meta").await.unwrap();
    assert_eq!(
        s.get_group_metadata("g@g.us").await.unwrap().unwrap(),
        b"meta"
    );
    s.delete_group_metadata("g@g.us").await.unwrap();
    assert!(s.get_group_metadata("g@g.us").await.unwrap().is_none());

    // --- tc tokens
    s.touch_tc_token_sender_timestamp("j1", 100).await.unwrap();
    let e = s.get_tc_token("j1").await.unwrap().unwrap();
    assert!(e.token.is_empty());
    assert_eq!(e.sender_timestamp, Some(100));
    s.store_received_tc_token("j1", b"tok", 50).await.unwrap();
    let e = s.get_tc_token("j1").await.unwrap().unwrap();
    assert_eq!((e.token.as_slice(), e.token_timestamp), (&b"tok"[..], 50));
    assert_eq!(e.sender_timestamp, Some(100));
    s.store_received_tc_token("j1", b"old", 40).await.unwrap(); // stale: ignored
    assert_eq!(s.get_tc_token("j1").await.unwrap().unwrap().token, b"tok");
    s.touch_tc_token_sender_timestamp("j1", 90).await.unwrap(); // never regresses
    assert_eq!(
        s.get_tc_token("j1")
            .await
            .unwrap()
            .unwrap()
            .sender_timestamp,
        Some(100)
    );
    s.put_tc_token(
        "j2",
        &TcTokenEntry {
            token: b"t2".to_vec(),
            token_timestamp: 10,
            sender_timestamp: None,
        },
    )
    .await
    .unwrap();
    let mut jids = s.get_all_tc_token_jids().await.unwrap();
    jids.sort();
    assert_eq!(jids, vec!["j1", "j2"]);
    assert_eq!(s.delete_expired_tc_tokens(20, 20).await.unwrap(), 1);
    assert!(s.get_tc_token("j2").await.unwrap().is_none());
    s.delete_tc_token("j1").await.unwrap();
    assert!(s.get_tc_token("j1").await.unwrap().is_none());

    // --- sent messages
    s.store_sent_message("c@x", "id1", b"payload")
        .await
        .unwrap();
    assert_eq!(
        s.take_sent_message("c@x", "id1").await.unwrap().unwrap(),
        b"payload"
    );
    assert!(s.take_sent_message("c@x", "id1").await.unwrap().is_none());
    s.store_sent_message("c@x", "id2", b"p2").await.unwrap();
    assert_eq!(s.delete_expired_sent_messages(0).await.unwrap(), 0);
    assert_eq!(s.delete_expired_sent_messages(i64::MAX).await.unwrap(), 1);

    // --- pending inbound
    s.store_pending_inbound("c", "s", "i", b"msg")
        .await
        .unwrap();
    assert_eq!(
        s.get_pending_inbound("c", "s", "i").await.unwrap().unwrap(),
        b"msg"
    );
    s.delete_pending_inbound("c", "s", "i").await.unwrap();
    assert!(s
        .get_pending_inbound("c", "s", "i")
        .await
        .unwrap()
        .is_none());
    s.store_pending_inbound_batch(&[PendingInboundRow {
        chat: "c",
        sender: "s",
        id: "j",
        message: b"m2",
    }])
    .await
    .unwrap();
    assert_eq!(s.delete_expired_pending_inbound(i64::MAX).await.unwrap(), 1);

    // --- message secrets
    let ms = |id: &str, exp: i64, ts: i64| MsgSecretEntry {
        chat: "chat".into(),
        sender: "snd".into(),
        msg_id: id.into(),
        secret: [5u8; 32],
        expires_at: exp,
        message_ts: ts,
    };
    assert_eq!(
        s.put_msg_secrets(vec![ms("m1", 100, 7), ms("m2", 0, 0), ms("m3", 50, 0)])
            .await
            .unwrap(),
        3
    );
    s.put_msg_secrets(vec![ms("m1", 80, 0)]).await.unwrap(); // keeps 100 and 7
    assert_eq!(
        s.get_msg_secret_with_ts("chat", "snd", "m1").await.unwrap(),
        Some((vec![5u8; 32], 7))
    );
    s.put_msg_secret("chat", "snd", "m4", &[6u8; 32])
        .await
        .unwrap();
    assert_eq!(
        s.get_msg_secret("chat", "snd", "m4")
            .await
            .unwrap()
            .unwrap(),
        vec![6u8; 32]
    );
    // m3 (50) and m1 (100) expire at 100; m2 and m4 never.
    assert_eq!(s.delete_expired_msg_secrets(100).await.unwrap(), 2);
    assert!(s
        .get_msg_secret("chat", "snd", "m1")
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get_msg_secret("chat", "snd", "m2")
        .await
        .unwrap()
        .is_some());

    // --- a row moved to another session does not open
    let other = DeviceDb::new(db.clone(), boxed(), "s2");
    other
        .put_session("789:1@s.whatsapp.net", b"s2-session")
        .await
        .unwrap();
    let sealed_s1 = s
        .get(key(SESSION, "789:1@s.whatsapp.net"))
        .await
        .unwrap()
        .unwrap();
    let mut moved = sealed_s1.clone();
    moved.session_id = "s2".into();
    assert!(other.open(&moved).is_err());

    // --- forget wipes one session only
    assert!(count_rows(db, "s1").await > 0);
    let n2 = count_rows(db, "s2").await;
    forget_session(db, "s1").await.unwrap();
    assert_eq!(count_rows(db, "s1").await, 0);
    assert_eq!(count_rows(db, "s2").await, n2);
    assert!(!DeviceStore::exists(&s).await.unwrap());
    assert_eq!(
        &other
            .get_session("789:1@s.whatsapp.net")
            .await
            .unwrap()
            .unwrap()[..],
        b"s2-session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_store_sqlite() {
    exercise(&sqlite_db()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_store_postgres() {
    if let Some(t) = postgres_db() {
        exercise(&t).await;
    }
}
