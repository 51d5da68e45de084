//! Cluster mode's supervisor hooks against the fakes: a node starts only
//! the sessions it claimed (no boot restore), and a fenced session's engine
//! stops at once with nothing more written and no restart.

use std::time::Duration;

use crate::common::*;
use wasup_actors::supervisor::cluster::{ActiveSessions, Fence, StartOwned};
use wasup_actors::*;

fn cluster_options() -> SupervisorOptions {
    SupervisorOptions {
        restore_at_boot: false,
        ..fast_options()
    }
}

#[actix::test]
async fn claimed_sessions_start_and_a_fenced_one_stops_without_a_write_or_a_restart() {
    let mut rec = record("owned-here", 5, 5);
    rec.desired = DesiredState::Running;
    rec.status = SessionStatus::Ready;
    let (h, id) = boot_one(
        rec,
        vec![Script::Events(vec![(ms(2), connected("628"))])],
        cluster_options(),
    )
    .await;
    // No boot restore in cluster mode: nothing starts until claimed.
    tokio::time::sleep(ms(50)).await;
    assert_eq!(h.engine.starts_of(id), 0);
    assert!(h
        .gw
        .supervisor
        .send(ActiveSessions)
        .await
        .unwrap()
        .is_empty());

    h.gw.supervisor.send(StartOwned(vec![id])).await.unwrap();
    h.wait_status(id, SessionStatus::Ready).await;
    wait_until("the engine to be connected", || {
        h.gw.registry.get(id).is_some_and(|v| v.engine_alive)
    })
    .await;
    assert!(h
        .gw
        .supervisor
        .send(ActiveSessions)
        .await
        .unwrap()
        .contains(&id));
    // A save the session began before the fence may still land: count
    // from a quiet moment (no save for 100 ms).
    let mut saves = h.store.saves.lock().len();
    loop {
        tokio::time::sleep(ms(100)).await;
        let now = h.store.saves.lock().len();
        if now == saves {
            break;
        }
        saves = now;
    }

    h.gw.supervisor.send(Fence(vec![id])).await.unwrap();
    let mut left = 2500;
    while !h
        .gw
        .supervisor
        .send(ActiveSessions)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(left > 0, "the fenced session's actor did not end");
        left -= 1;
        tokio::time::sleep(ms(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.store.saves.lock().len(),
        saves,
        "a fenced session writes nothing"
    );
    assert_eq!(h.engine.starts_of(id), 1, "and is not restarted");
    assert_eq!(h.stats().await.pending_retries, 0);
}
