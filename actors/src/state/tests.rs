//! The state machine's tests: a transition table, then one test per rule.

use super::*;
use chrono::TimeZone;
use rand::rngs::StdRng;
use rand::SeedableRng;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 25, 9, 0, 0).unwrap()
}

fn state(status: SessionStatus) -> SessionState {
    let mut s = SessionState::from_record(&SessionRecord::new(Uuid::nil(), "s".into(), t0()));
    s.status = status;
    if is_running_status(status) {
        s.desired = DesiredState::Running;
    }
    s
}

fn policy() -> BackoffPolicy {
    BackoffPolicy::default()
}

fn run(s: &mut SessionState, input: Input, now: DateTime<Utc>) -> Transition {
    run_under(s, input, now, &policy(), &mut StdRng::seed_from_u64(1))
}

/// One step under a given policy and rng (a sequence of steps shares them).
fn run_under(
    s: &mut SessionState,
    input: Input,
    now: DateTime<Utc>,
    policy: &BackoffPolicy,
    rng: &mut StdRng,
) -> Transition {
    step(s, input, &mut StepContext { now, policy, rng })
}

fn status_ev(to: SessionStatus, from: SessionStatus, err: Option<&str>) -> Data {
    Data::Status(StatusChanged {
        status: to.as_str().into(),
        previous_status: from.as_str().into(),
        last_error: err.map(str::to_string),
    })
}

fn disc(reason: &str, at: Option<DateTime<Utc>>) -> Data {
    Data::Disconnected(crate::events::Disconnected {
        reason: reason.into(),
        will_retry: at.is_some(),
        next_retry_at_ms: at.map(ms),
    })
}

fn connected(phone: &str) -> Input {
    Input::Engine(EngineEvent::Connected {
        phone: phone.into(),
        push_name: Some("Bot".into()),
    })
}

use SessionStatus::*;

/// (from status, input, expected status, expected last_error, expected action)
#[test]
fn transition_table() {
    use Action::{ForgetAndGiveUp, GiveUp, Nothing, StartEngine};
    use EngineEvent as E;
    use SessionCommand::*;
    let (cmd, ev) = (Input::Command, Input::Engine);
    let drop = |r: &str| ev(E::Disconnected { reason: r.into() });
    let ban = ev(E::TemporaryBan {
        code: 402,
        expires_in: Duration::from_secs(3600),
    });
    let cases: Vec<(SessionStatus, Input, SessionStatus, Option<&str>, Action)> = vec![
        (Created, cmd(Start), Initializing, None, StartEngine),
        (Disconnected, cmd(Start), Initializing, None, StartEngine),
        (Failed, cmd(Start), Initializing, None, StartEngine),
        (Ready, cmd(Start), Initializing, None, StartEngine),
        (Ready, cmd(Stop), Disconnected, None, Nothing),
        (Created, cmd(Stop), Disconnected, None, Nothing),
        (Failed, cmd(Stop), Disconnected, None, Nothing),
        (QrReady, cmd(ForceKill), Disconnected, None, Nothing),
        (Ready, cmd(Logout), Disconnected, None, Nothing),
        (Ready, Input::Shutdown, Disconnected, None, Nothing),
        (
            Initializing,
            ev(E::QrExhausted),
            Failed,
            Some(QR_EXHAUSTED_ERROR),
            GiveUp,
        ),
        (
            QrReady,
            ev(E::QrExhausted),
            Failed,
            Some(QR_EXHAUSTED_ERROR),
            GiveUp,
        ),
        (
            Ready,
            ev(E::LoggedOut {
                reason: "401".into(),
            }),
            Failed,
            Some(LOGGED_OUT_ERROR),
            ForgetAndGiveUp,
        ),
        (Ready, ev(E::Replaced), Failed, Some(REPLACED_ERROR), GiveUp),
        (Ready, ev(E::Outdated), Failed, Some(OUTDATED_ERROR), GiveUp),
        (
            Ready,
            ban,
            Failed,
            Some("temporarily banned by WhatsApp (code 402) until 2026-06-25T10:00:00.000Z"),
            GiveUp,
        ),
        (
            Ready,
            drop("x"),
            Disconnected,
            None,
            Action::RestartAfter(Duration::from_secs(5)),
        ),
        // Late events of a session that is not running change nothing.
        (Disconnected, drop("x"), Disconnected, None, Nothing),
        (Failed, connected("1"), Failed, None, Nothing),
        (Created, ev(E::QrExhausted), Created, None, Nothing),
        (Ready, Input::RetryDue, Ready, None, Nothing),
        (Ready, cmd(Restart), Initializing, None, StartEngine),
        (Ready, cmd(Delete), Disconnected, None, Nothing),
        // Becoming ready starts the watch for a stable uptime.
        (
            Initializing,
            connected("1"),
            Ready,
            None,
            Action::CheckStableAfter(Duration::from_secs(300)),
        ),
        // A flush decides nothing: no change, no event, no action.
        (Ready, Input::Flush, Ready, None, Nothing),
        (Failed, Input::Flush, Failed, None, Nothing),
    ];
    for (i, (from, input, to, err, action)) in cases.into_iter().enumerate() {
        let mut s = state(from);
        if from == Failed {
            s.last_error = Some("old".into());
        }
        let expect_err = if from == Failed && to == Failed {
            Some("old".to_string())
        } else {
            err.map(str::to_string)
        };
        let t = run(&mut s, input.clone(), t0());
        assert_eq!(s.status, to, "case {i}: {input:?}");
        assert_eq!(s.last_error, expect_err, "case {i}: {input:?}");
        // The delay carries jitter: compare restart delays within ±20 %.
        match (&t.action, &action) {
            (Action::RestartAfter(got), Action::RestartAfter(want)) => {
                assert!(
                    got.as_secs_f64() >= want.as_secs_f64() * 0.8
                        && got.as_secs_f64() <= want.as_secs_f64() * 1.2,
                    "case {i}"
                )
            }
            _ => assert_eq!(t.action, action, "case {i}: {input:?}"),
        }
        if from == to && from != Failed {
            assert!(
                t.events.is_empty() || matches!(input, Input::Command(SessionCommand::Start)),
                "case {i}: no change, no events: {:?}",
                t.events
            );
        }
    }
}

#[test]
fn full_link_emits_status_qr_authenticated_in_order() {
    let mut s = state(Created);
    let t = run(&mut s, Input::Command(SessionCommand::Start), t0());
    assert_eq!(t.events, vec![status_ev(Initializing, Created, None)]);
    assert_eq!(s.desired, DesiredState::Running);

    let qr = |c: &str| {
        Input::Engine(EngineEvent::Qr {
            code: c.into(),
            timeout: Duration::from_secs(60),
        })
    };
    let t = run(&mut s, qr("A"), t0());
    let exp = t0() + chrono::Duration::seconds(60);
    assert_eq!(
        t.events,
        vec![
            status_ev(QrReady, Initializing, None),
            Data::Qr(QrRotated {
                qr: "A".into(),
                expires_at_ms: ms(exp),
                expired: false,
            })
        ]
    );
    assert_eq!(
        s.qr,
        Some(QrCode {
            text: "A".into(),
            expires_at: exp
        })
    );

    // A rotation keeps qr_ready and emits only a qr event.
    let t = run(&mut s, qr("B"), t0());
    assert_eq!(
        t.events,
        vec![Data::Qr(QrRotated {
            qr: "B".into(),
            expires_at_ms: ms(exp),
            expired: false,
        })]
    );
    assert_eq!(s.status, QrReady);
    assert_eq!(s.qr.as_ref().unwrap().text, "B");

    let t = run(
        &mut s,
        Input::Engine(EngineEvent::PairSuccess {
            phone: "628".into(),
            push_name: Some("Bot".into()),
        }),
        t0(),
    );
    assert_eq!(
        t.events,
        vec![
            status_ev(Authenticating, QrReady, None),
            Data::Authenticated(Authenticated {
                phone: "628".into(),
                push_name: Some("Bot".into())
            })
        ]
    );
    assert_eq!(s.qr, None);

    let t1 = t0() + chrono::Duration::seconds(3);
    let t = run(&mut s, connected("628"), t1);
    // Already authenticated by PairSuccess: only the status changes.
    assert_eq!(t.events, vec![status_ev(Ready, Authenticating, None)]);
    assert_eq!(s.connected_at, Some(t1));
    assert_eq!(s.last_active, Some(t1));
    assert_eq!(s.phone.as_deref(), Some("628"));
    assert_eq!(s.push_name.as_deref(), Some("Bot"));

    // Connected again while ready: no change, no event.
    let t = run(&mut s, connected("628"), t1);
    assert!(t.events.is_empty());
}

#[test]
fn reconnect_with_stored_credentials_authenticates_only_when_new() {
    let mut s = state(Initializing);
    let t = run(&mut s, connected("628"), t0());
    assert_eq!(
        t.events.len(),
        2,
        "first link seen at Connected: status + authenticated"
    );
    let mut s = state(Initializing);
    s.phone = Some("628".into());
    let t = run(&mut s, connected("628"), t0());
    assert_eq!(t.events, vec![status_ev(Ready, Initializing, None)]);
}

#[test]
fn drops_are_retried_until_the_budget_is_exhausted() {
    let p = BackoffPolicy {
        max_attempts: 3,
        ..policy()
    };
    let mut rng = StdRng::seed_from_u64(3);
    let mut s = state(Ready);
    let now = t0();
    let mut delays = vec![];
    for attempt in 0..3u32 {
        let t = run_under(
            &mut s,
            Input::Engine(EngineEvent::Disconnected {
                reason: "stream closed".into(),
            }),
            now,
            &p,
            &mut rng,
        );
        let Action::RestartAfter(d) = t.action else {
            panic!("attempt {attempt}: {:?}", t.action)
        };
        delays.push(d);
        let nominal = 5.0 * 2f64.powi(attempt as i32);
        assert!(d.as_secs_f64() >= nominal * 0.8 && d.as_secs_f64() <= nominal * 1.2);
        assert_eq!(s.restarts, attempt + 1);
        let at = now + chrono::Duration::from_std(d).unwrap();
        assert_eq!(s.next_retry_at, Some(at));
        assert_eq!(s.status, Disconnected);
        assert_eq!(s.last_error, None);
        assert_eq!(t.events.last(), Some(&disc("stream closed", Some(at))));
        // The retry fires: initializing again, budget kept.
        let t = run_under(&mut s, Input::RetryDue, now, &p, &mut rng);
        assert_eq!(t.action, Action::StartEngine);
        assert_eq!(t.events, vec![status_ev(Initializing, Disconnected, None)]);
        assert_eq!(s.next_retry_at, None);
        assert_eq!(s.restarts, attempt + 1);
    }
    let t = run_under(
        &mut s,
        Input::Engine(EngineEvent::ConnectFailed {
            reason: "timeout".into(),
        }),
        now,
        &p,
        &mut rng,
    );
    let err = "Reconnection failed after 3 attempts: timeout";
    assert_eq!(t.action, Action::GiveUp);
    assert_eq!(s.status, Failed);
    assert_eq!(s.last_error.as_deref(), Some(err));
    assert_eq!(
        t.events,
        vec![status_ev(Failed, Initializing, Some(err)), disc(err, None)]
    );
    // A person starts it again: budget and error reset.
    run(&mut s, Input::Command(SessionCommand::Start), now);
    assert_eq!(
        (s.status, s.restarts, s.last_error.clone()),
        (Initializing, 0, None)
    );
}

#[test]
fn zero_budget_fails_at_the_first_drop() {
    let p = BackoffPolicy {
        max_attempts: 0,
        ..policy()
    };
    let mut rng = StdRng::seed_from_u64(3);
    let mut s = state(Ready);
    let t = run_under(
        &mut s,
        Input::Engine(EngineEvent::Crashed {
            cause: "panic".into(),
        }),
        t0(),
        &p,
        &mut rng,
    );
    assert_eq!(t.action, Action::GiveUp);
    assert_eq!(
        s.last_error.as_deref(),
        Some("Reconnection failed after 0 attempts: panic")
    );
}

#[test]
fn budget_resets_after_stable_ready() {
    // (seconds up in ready at the check, restarts left of the 4 used)
    for (up, left) in [(299, 4), (300, 0)] {
        let mut s = state(Ready);
        s.restarts = 4;
        s.ready_since = Some(t0());
        run(
            &mut s,
            Input::StableElapsed,
            t0() + chrono::Duration::seconds(up),
        );
        assert_eq!(s.restarts, left, "{up} s");
    }
    // A drop after a long stable uptime starts from attempt 0 even without
    // the check; a short uptime keeps the budget used: exhausted.
    // (minutes up in ready at the drop, restarts after, error)
    let exhausted = "Reconnection failed after 5 attempts: x";
    for (up, after, error) in [(10, 1, None), (1, 5, Some(exhausted))] {
        let mut s = state(Ready);
        s.restarts = 5;
        s.ready_since = Some(t0());
        let t = run(
            &mut s,
            Input::Engine(EngineEvent::Disconnected { reason: "x".into() }),
            t0() + chrono::Duration::minutes(up),
        );
        let restarted = matches!(t.action, Action::RestartAfter(_));
        assert_eq!(
            (restarted, s.restarts),
            (error.is_none(), after),
            "{up} min"
        );
        assert_eq!(s.last_error.as_deref(), error, "{up} min");
    }
}

#[test]
fn stop_during_backoff_cancels_the_retry() {
    let mut s = state(Ready);
    run(
        &mut s,
        Input::Engine(EngineEvent::Disconnected { reason: "x".into() }),
        t0(),
    );
    assert!(s.next_retry_at.is_some());
    let t = run(&mut s, Input::Command(SessionCommand::Stop), t0());
    assert_eq!(s.next_retry_at, None);
    assert_eq!(s.desired, DesiredState::Stopped);
    // Status already disconnected: only the cancelled retry is announced.
    assert_eq!(t.events, vec![disc("stopped on request", None)]);
    // Stopping again is idempotent and silent.
    let t = run(&mut s, Input::Command(SessionCommand::Stop), t0());
    assert!(t.events.is_empty());
    // A stale retry changes nothing.
    let t = run(&mut s, Input::RetryDue, t0());
    assert_eq!((t.action, s.status), (Action::Nothing, Disconnected));
}

#[test]
fn logout_clears_the_link_and_shutdown_keeps_desired() {
    let mut s = state(Ready);
    s.phone = Some("628".into());
    s.push_name = Some("Bot".into());
    let t = run(&mut s, Input::Command(SessionCommand::Logout), t0());
    assert_eq!(
        (s.phone.clone(), s.push_name.clone(), s.desired),
        (None, None, DesiredState::Stopped)
    );
    assert_eq!(
        t.events,
        vec![
            status_ev(Disconnected, Ready, None),
            disc("logged out on request", None)
        ]
    );

    let mut s = state(Ready);
    s.phone = Some("628".into());
    run(&mut s, Input::Shutdown, t0());
    assert_eq!(
        (s.status, s.desired, s.phone.as_deref()),
        (Disconnected, DesiredState::Running, Some("628"))
    );
}

#[test]
fn failure_emits_status_with_last_error_and_no_retry() {
    let mut s = state(QrReady);
    s.qr = Some(QrCode {
        text: "A".into(),
        expires_at: t0(),
    });
    let t = run(&mut s, Input::Engine(EngineEvent::QrExhausted), t0());
    assert_eq!(
        t.events,
        vec![
            status_ev(Failed, QrReady, Some(QR_EXHAUSTED_ERROR)),
            disc(QR_EXHAUSTED_ERROR, None)
        ]
    );
    assert_eq!(s.qr, None);
    assert_eq!(s.next_retry_at, None);
    // lastError is cleared when the session leaves failed.
    run(&mut s, Input::Command(SessionCommand::Stop), t0());
    assert_eq!(s.last_error, None);
}

#[test]
fn device_unlinked_clears_phone() {
    let mut s = state(Ready);
    s.phone = Some("628".into());
    run(
        &mut s,
        Input::Engine(EngineEvent::LoggedOut {
            reason: "401".into(),
        }),
        t0(),
    );
    assert_eq!((s.status, s.phone.clone()), (Failed, None));
}

#[test]
fn write_record_copies_the_persisted_fields() {
    let mut s = state(Ready);
    s.phone = Some("628".into());
    s.connected_at = Some(t0());
    let mut r = SessionRecord::new(Uuid::nil(), "s".into(), t0());
    s.write_record(&mut r);
    assert_eq!(
        (r.status, r.desired, r.phone.as_deref(), r.connected_at),
        (Ready, DesiredState::Running, Some("628"), Some(t0()))
    );
    let back = SessionState::from_record(&r);
    assert_eq!(back.ready_since, Some(t0()));
}

#[test]
fn the_pending_retry_is_read_from_next_retry_at() {
    let mut s = state(Ready);
    assert_eq!(s.retry_in(t0()), None);
    let t = run(
        &mut s,
        Input::Engine(EngineEvent::Disconnected { reason: "x".into() }),
        t0(),
    );
    let Action::RestartAfter(delay) = t.action else {
        panic!("{:?}", t.action)
    };
    assert_eq!(s.retry_in(t0()), Some(delay));
    let later = t0() + chrono::Duration::from_std(delay).unwrap() + chrono::Duration::seconds(1);
    assert_eq!(s.retry_in(later), Some(Duration::ZERO), "overdue: at once");
    // Any command supersedes it.
    run(&mut s, Input::Command(SessionCommand::Stop), t0());
    assert_eq!(s.retry_in(t0()), None);
}

/// (deaths in a row, nominal delay in s) under the default policy (base 5 s).
#[test]
fn a_dying_actor_backs_off_under_the_session_policy() {
    let p = policy();
    let mut rng = StdRng::seed_from_u64(5);
    for (deaths, nominal) in [
        (0u32, 0.0),
        (1, 0.0),
        (2, 5.0),
        (3, 10.0),
        (4, 20.0),
        (12, 300.0),
    ] {
        let d = recover_delay(&p, deaths, &mut rng).as_secs_f64();
        assert!(
            d >= nominal * 0.8 && d <= (nominal * 1.2).min(300.0),
            "{deaths} deaths: {d}"
        );
    }
}
