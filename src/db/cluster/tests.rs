//! Leases and fencing on a real PostgreSQL (cluster mode has no SQLite
//! half: it refuses SQLite). Skipped with a note without
//! `WASUP_TEST_DATABASE_URL`.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;
use wasup_actors::model::{DesiredState, SessionRecord};

use super::*;
use crate::db::records::insert_session;
use crate::db::testing::TestDatabase;

fn postgres(test: &str) -> Option<(TestDatabase, Db)> {
    let t = TestDatabase::postgres(&format!("db::cluster::tests::{test}"))?;
    let db = t.open();
    Some((t, db))
}

async fn running_sessions(db: &Db, n: usize) -> Vec<String> {
    let records: Vec<SessionRecord> = (0..n)
        .map(|i| {
            let mut r = SessionRecord::new(Uuid::new_v4(), format!("s{i}"), Utc::now());
            r.desired = DesiredState::Running;
            r
        })
        .collect();
    let ids = records.iter().map(|r| r.id.to_string()).collect();
    db.run(move |c| {
        for r in &records {
            insert_session(c, r)?;
        }
        Ok(())
    })
    .await
    .unwrap();
    ids
}

async fn nodes_up(db: &Db, ids: &[&str]) {
    for id in ids {
        let id = id.to_string();
        db.run(move |c| register_node(c, &id, "http://127.0.0.1:1", 100))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn two_nodes_claiming_at_once_get_each_session_once() {
    let Some((_t, db)) = postgres("two_nodes_claiming_at_once_get_each_session_once") else {
        return;
    };
    let ids = running_sessions(&db, 40).await;
    nodes_up(&db, &["a", "b"]).await;
    let claim = |node: &'static str| {
        let db = db.clone();
        async move {
            db.run(move |c| claim_unowned(c, node, 40, 60_000))
                .await
                .unwrap()
        }
    };
    let (a, b) = tokio::join!(claim("a"), claim("b"));
    let mut all: Vec<String> = a.iter().chain(&b).map(|l| l.session_id.clone()).collect();
    all.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(all, want, "every session claimed exactly once");
    assert!(a.iter().chain(&b).all(|l| l.generation == 1));
    // Nothing is left to claim while the leases live.
    let again = db.run(|c| claim_unowned(c, "b", 40, 60_000)).await.unwrap();
    assert!(again.is_empty());
    let p = db.run(|c| placement(c, 60_000)).await.unwrap();
    assert_eq!((p.running, p.unowned, p.nodes), (40, 0, 2));
}

#[tokio::test]
async fn an_expired_lease_goes_to_a_newer_generation_and_fences_the_old_owner() {
    let Some((_t, db)) =
        postgres("an_expired_lease_goes_to_a_newer_generation_and_fences_the_old_owner")
    else {
        return;
    };
    let ids = running_sessions(&db, 1).await;
    let sid = ids[0].clone();
    nodes_up(&db, &["a", "b"]).await;
    let fence_a = Arc::new(Fence::new("a"));
    let fence_b = Arc::new(Fence::new("b"));
    let (db_a, db_b) = (
        db.clone().with_fence(fence_a.clone()),
        db.clone().with_fence(fence_b.clone()),
    );

    // a claims with a lease that lapses at once.
    let s = sid.clone();
    let g1 = db
        .run(move |c| claim_one(c, "a", &s, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g1, 1);
    fence_a.hold(&sid, g1);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // The renewal no longer returns it.
    let renewed = db.run(|c| renew(c, "a", 60_000)).await.unwrap();
    assert!(renewed.is_empty());
    // b claims it: a newer generation.
    let s = sid.clone();
    let g2 = db
        .run(move |c| claim_one(c, "b", &s, 60_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g2, 2);
    fence_b.hold(&sid, g2);
    let (sa, sb) = (sid.clone(), sid.clone());
    let da = db_a.clone();
    let refused = db_a
        .transaction(move |c| da.check_fence(c, &sa))
        .await
        .unwrap_err();
    assert!(matches!(refused, DbError::Fenced(_)), "{refused}");
    let db2 = db_b.clone();
    db_b.transaction(move |c| db2.check_owner(c, &sb))
        .await
        .unwrap();
    // While b holds it, a cannot claim it.
    let s = sid.clone();
    assert_eq!(
        db.run(move |c| claim_one(c, "a", &s, 60_000))
            .await
            .unwrap(),
        None
    );
    // b releases: the generation stays, the next claim is newer still.
    let s = sid.clone();
    assert!(db.run(move |c| release(c, "b", &s, 2)).await.unwrap());
    let s = sid.clone();
    let g3 = db
        .run(move |c| claim_one(c, "a", &s, 60_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g3, 3);
}

#[tokio::test]
async fn a_node_holding_nothing_may_not_write_a_running_session() {
    let Some((_t, db)) = postgres("a_node_holding_nothing_may_not_write_a_running_session") else {
        return;
    };
    let sid = running_sessions(&db, 1).await.remove(0);
    let db = db.with_fence(Arc::new(Fence::new("a")));
    // Nobody owns it: the lenient check passes, the owner's check does not.
    let (d, s) = (db.clone(), sid.clone());
    db.transaction(move |c| d.check_fence(c, &s)).await.unwrap();
    let (d, s) = (db.clone(), sid.clone());
    let err = db
        .transaction(move |c| d.check_owner(c, &s))
        .await
        .unwrap_err();
    assert!(matches!(err, DbError::Fenced(_)), "{err}");
}
