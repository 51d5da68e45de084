//! The session state machine: the ONE place that decides a session's status,
//! `lastError`, `phone`, … and which events a change emits (contract §3).
//! Pure: no I/O, the clock and the randomness come in through [`StepContext`].
//!
//! The session actor applies an [`Input`] with [`step`], persists the record
//! and the events in one store call, and performs the returned [`Action`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::backoff::BackoffPolicy;
use crate::events::{session_event::Data, Authenticated, Disconnected, QrRotated, StatusChanged};
use crate::model::{DesiredState, QrCode, SessionRecord, SessionStatus, SessionView};
use crate::ports::EngineEvent;

pub const QR_EXHAUSTED_ERROR: &str = "QR code was never scanned";
pub const LOGGED_OUT_ERROR: &str = "device was unlinked from the phone";
pub const REPLACED_ERROR: &str = "replaced by another connection to this device";
pub const OUTDATED_ERROR: &str = "WhatsApp refuses this client version: update wasup";

/// Everything the state machine decides about one session.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionState {
    pub status: SessionStatus,
    pub desired: DesiredState,
    /// Non-null only while `failed`.
    pub last_error: Option<String>,
    pub phone: Option<String>,
    pub push_name: Option<String>,
    pub connected_at: Option<DateTime<Utc>>,
    pub last_active: Option<DateTime<Utc>>,
    /// Restarts since the last stable `ready` (the budget used).
    pub restarts: u32,
    /// Set while the supervisor waits to restart the session.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// The current QR, while `qr_ready`.
    pub qr: Option<QrCode>,
    /// When the session last became `ready` (for the budget reset).
    pub ready_since: Option<DateTime<Utc>>,
}

impl SessionState {
    /// The state of a session as last persisted, plus the supervision facts
    /// of its view.
    pub fn from_view(view: &SessionView) -> Self {
        let r = &view.record;
        SessionState {
            status: r.status,
            desired: r.desired,
            last_error: r.last_error.clone(),
            phone: r.phone.clone(),
            push_name: r.push_name.clone(),
            connected_at: r.connected_at,
            last_active: r.last_active,
            restarts: view.restarts,
            next_retry_at: view.next_retry_at,
            qr: view.qr.clone(),
            ready_since: (r.status == SessionStatus::Ready)
                .then_some(r.connected_at)
                .flatten(),
        }
    }

    pub fn from_record(record: &SessionRecord) -> Self {
        Self::from_view(&SessionView {
            record: record.clone(),
            next_retry_at: None,
            restarts: 0,
            engine_alive: false,
            qr: None,
        })
    }

    /// Copy the persisted fields into `record` (not `updated_at`, not `event_seq`).
    pub fn write_record(&self, record: &mut SessionRecord) {
        record.status = self.status;
        record.desired = self.desired;
        record.last_error = self.last_error.clone();
        record.phone = self.phone.clone();
        record.push_name = self.push_name.clone();
        record.connected_at = self.connected_at;
        record.last_active = self.last_active;
    }

    /// An engine is (or should be) running for this status.
    pub fn is_running(&self) -> bool {
        is_running_status(self.status)
    }
}

pub fn is_running_status(status: SessionStatus) -> bool {
    matches!(
        status,
        SessionStatus::Initializing
            | SessionStatus::QrReady
            | SessionStatus::Authenticating
            | SessionStatus::Ready
    )
}

/// What happened to a session.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A person (or the boot restore) asked to start it; also the second half
    /// of a restart. Resets the restart budget.
    Start,
    /// The supervisor's backoff delay is over: start again, budget kept.
    RetryDue,
    /// Stopped on purpose, engine closed cleanly. Desired state: stopped.
    Stop,
    /// Engine aborted without a clean close. Desired state: stopped.
    ForceKill,
    /// Unlinked and credentials wiped. Desired state: stopped.
    Logout,
    /// The gateway is shutting down: engine closed, desired state unchanged.
    Shutdown,
    /// The session has been in `ready` long enough: reset the budget.
    StableElapsed,
    /// Something the engine reported (a failed `start` is `ConnectFailed`,
    /// a session actor that panicked is `Crashed`).
    Engine(EngineEvent),
}

/// What the supervision does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Nothing,
    /// Start an engine now.
    StartEngine,
    /// The engine is gone; restart it after this delay.
    RestartAfter(Duration),
    /// The engine is gone and the session is `failed`: never restarted.
    GiveUp,
    /// The credentials are no longer valid (the phone unlinked the device):
    /// wipe them, never restart.
    ForgetAndGiveUp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// Event payloads, in order; the session actor stamps id and seq.
    pub events: Vec<Data>,
    pub action: Action,
}

pub struct StepContext<'a, R: Rng + ?Sized> {
    pub now: DateTime<Utc>,
    pub policy: &'a BackoffPolicy,
    pub rng: &'a mut R,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

struct Out {
    events: Vec<Data>,
}

impl Out {
    fn status(&mut self, state: &mut SessionState, to: SessionStatus, last_error: Option<String>) {
        let from = state.status;
        let changed = from != to || state.last_error != last_error;
        state.status = to;
        state.last_error = last_error;
        if to != SessionStatus::QrReady {
            state.qr = None;
        }
        if to != SessionStatus::Ready {
            state.ready_since = None;
        }
        if changed {
            self.events.push(Data::Status(StatusChanged {
                status: to.as_str().to_string(),
                previous_status: from.as_str().to_string(),
                last_error: state.last_error.clone(),
            }));
        }
    }

    fn disconnected(&mut self, reason: String, retry_at: Option<DateTime<Utc>>) {
        self.events.push(Data::Disconnected(Disconnected {
            reason,
            will_retry: retry_at.is_some(),
            next_retry_at_ms: retry_at.map(ms),
        }));
    }
}

/// Apply `input` to `state`: the new state is written in place; the events
/// it emits and the action that follows are returned.
pub fn step<R: Rng + ?Sized>(
    state: &mut SessionState,
    input: Input,
    ctx: &mut StepContext<'_, R>,
) -> Transition {
    let now = ctx.now;
    let mut out = Out { events: Vec::new() };
    let action = match input {
        Input::Start => {
            state.desired = DesiredState::Running;
            state.restarts = 0;
            state.next_retry_at = None;
            out.status(state, SessionStatus::Initializing, None);
            Action::StartEngine
        }
        Input::RetryDue => {
            if state.desired != DesiredState::Running || state.next_retry_at.is_none() {
                Action::Nothing
            } else {
                state.next_retry_at = None;
                out.status(state, SessionStatus::Initializing, None);
                Action::StartEngine
            }
        }
        Input::Stop | Input::ForceKill | Input::Logout | Input::Shutdown => {
            let reason = match input {
                Input::Stop => "stopped on request",
                Input::ForceKill => "force-killed on request",
                Input::Logout => "logged out on request",
                _ => "the gateway is shutting down",
            };
            if input != Input::Shutdown {
                state.desired = DesiredState::Stopped;
            }
            let was_live = state.is_running() || state.next_retry_at.is_some();
            state.next_retry_at = None;
            if input == Input::Logout {
                state.phone = None;
                state.push_name = None;
                state.connected_at = None;
            }
            out.status(state, SessionStatus::Disconnected, None);
            if was_live {
                out.disconnected(reason.to_string(), None);
            }
            Action::Nothing
        }
        Input::StableElapsed => {
            if state.status == SessionStatus::Ready
                && state
                    .ready_since
                    .is_some_and(|t| stable(t, now, ctx.policy))
            {
                state.restarts = 0;
            }
            Action::Nothing
        }
        Input::Engine(event) => engine_event(state, event, ctx, &mut out),
    };
    Transition {
        events: out.events,
        action,
    }
}

fn stable(ready_since: DateTime<Utc>, now: DateTime<Utc>, policy: &BackoffPolicy) -> bool {
    (now - ready_since)
        .to_std()
        .is_ok_and(|up| up >= policy.stable_reset)
}

fn engine_event<R: Rng + ?Sized>(
    state: &mut SessionState,
    event: EngineEvent,
    ctx: &mut StepContext<'_, R>,
    out: &mut Out,
) -> Action {
    let now = ctx.now;
    // Events only matter while an engine should be running; anything else
    // is a late event of an engine that was already dealt with.
    if !state.is_running() {
        return Action::Nothing;
    }
    state.last_active = Some(now);
    match event {
        EngineEvent::Qr { code, timeout } => {
            if !matches!(
                state.status,
                SessionStatus::Initializing | SessionStatus::QrReady
            ) {
                return Action::Nothing;
            }
            let expires_at = now + chrono::Duration::from_std(timeout).unwrap_or_default();
            out.status(state, SessionStatus::QrReady, None);
            state.qr = Some(QrCode {
                text: code.clone(),
                expires_at,
            });
            out.events.push(Data::Qr(QrRotated {
                qr: code,
                expires_at_ms: ms(expires_at),
            }));
            Action::Nothing
        }
        EngineEvent::PairSuccess { phone, push_name } => {
            if !matches!(
                state.status,
                SessionStatus::Initializing | SessionStatus::QrReady
            ) {
                return Action::Nothing;
            }
            out.status(state, SessionStatus::Authenticating, None);
            state.phone = Some(phone.clone());
            state.push_name = push_name.clone();
            out.events
                .push(Data::Authenticated(Authenticated { phone, push_name }));
            Action::Nothing
        }
        EngineEvent::Connected { phone, push_name } => {
            let newly_linked = state.phone.as_deref() != Some(phone.as_str());
            let was_ready = state.status == SessionStatus::Ready;
            out.status(state, SessionStatus::Ready, None);
            if newly_linked {
                out.events.push(Data::Authenticated(Authenticated {
                    phone: phone.clone(),
                    push_name: push_name.clone(),
                }));
            }
            state.phone = Some(phone);
            if push_name.is_some() {
                state.push_name = push_name;
            }
            if !was_ready {
                state.connected_at = Some(now);
                state.ready_since = Some(now);
            }
            Action::Nothing
        }
        EngineEvent::Disconnected { reason } | EngineEvent::ConnectFailed { reason } => {
            retry_or_fail(state, reason, ctx, out)
        }
        EngineEvent::Crashed { cause } => retry_or_fail(state, cause, ctx, out),
        EngineEvent::QrExhausted => {
            fail(state, QR_EXHAUSTED_ERROR.to_string(), out, Action::GiveUp)
        }
        EngineEvent::LoggedOut { .. } => {
            state.phone = None;
            state.push_name = None;
            state.connected_at = None;
            fail(
                state,
                LOGGED_OUT_ERROR.to_string(),
                out,
                Action::ForgetAndGiveUp,
            )
        }
        EngineEvent::Replaced => fail(state, REPLACED_ERROR.to_string(), out, Action::GiveUp),
        EngineEvent::TemporaryBan { code, expires_in } => {
            let until = now + chrono::Duration::from_std(expires_in).unwrap_or_default();
            let msg = format!(
                "temporarily banned by WhatsApp (code {code}) until {}",
                until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
            fail(state, msg, out, Action::GiveUp)
        }
        EngineEvent::Outdated => fail(state, OUTDATED_ERROR.to_string(), out, Action::GiveUp),
    }
}

fn fail(state: &mut SessionState, error: String, out: &mut Out, action: Action) -> Action {
    state.next_retry_at = None;
    out.status(state, SessionStatus::Failed, Some(error.clone()));
    out.disconnected(error, None);
    action
}

fn retry_or_fail<R: Rng + ?Sized>(
    state: &mut SessionState,
    cause: String,
    ctx: &mut StepContext<'_, R>,
    out: &mut Out,
) -> Action {
    if state.status == SessionStatus::Ready
        && state
            .ready_since
            .is_some_and(|t| stable(t, ctx.now, ctx.policy))
    {
        state.restarts = 0;
    }
    if state.restarts >= ctx.policy.max_attempts {
        let error = format!(
            "Reconnection failed after {} attempts: {cause}",
            state.restarts
        );
        return fail(state, error, out, Action::GiveUp);
    }
    let delay = ctx.policy.delay(state.restarts, ctx.rng);
    let at = ctx.now + chrono::Duration::from_std(delay).unwrap_or_default();
    state.restarts += 1;
    state.next_retry_at = Some(at);
    out.status(state, SessionStatus::Disconnected, None);
    out.disconnected(cause, Some(at));
    Action::RestartAfter(delay)
}

#[cfg(test)]
mod tests {
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
        let p = policy();
        let mut rng = StdRng::seed_from_u64(1);
        step(
            s,
            input,
            &mut StepContext {
                now,
                policy: &p,
                rng: &mut rng,
            },
        )
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
        let drop = |r: &str| Input::Engine(EngineEvent::Disconnected { reason: r.into() });
        let ban = Input::Engine(EngineEvent::TemporaryBan {
            code: 402,
            expires_in: Duration::from_secs(3600),
        });
        let cases: Vec<(SessionStatus, Input, SessionStatus, Option<&str>, Action)> = vec![
            (
                Created,
                Input::Start,
                Initializing,
                None,
                Action::StartEngine,
            ),
            (
                Disconnected,
                Input::Start,
                Initializing,
                None,
                Action::StartEngine,
            ),
            (
                Failed,
                Input::Start,
                Initializing,
                None,
                Action::StartEngine,
            ),
            (Ready, Input::Start, Initializing, None, Action::StartEngine),
            (Ready, Input::Stop, Disconnected, None, Action::Nothing),
            (Created, Input::Stop, Disconnected, None, Action::Nothing),
            (Failed, Input::Stop, Disconnected, None, Action::Nothing),
            (
                QrReady,
                Input::ForceKill,
                Disconnected,
                None,
                Action::Nothing,
            ),
            (Ready, Input::Logout, Disconnected, None, Action::Nothing),
            (Ready, Input::Shutdown, Disconnected, None, Action::Nothing),
            (
                Initializing,
                Input::Engine(EngineEvent::QrExhausted),
                Failed,
                Some(QR_EXHAUSTED_ERROR),
                Action::GiveUp,
            ),
            (
                QrReady,
                Input::Engine(EngineEvent::QrExhausted),
                Failed,
                Some(QR_EXHAUSTED_ERROR),
                Action::GiveUp,
            ),
            (
                Ready,
                Input::Engine(EngineEvent::LoggedOut {
                    reason: "401".into(),
                }),
                Failed,
                Some(LOGGED_OUT_ERROR),
                Action::ForgetAndGiveUp,
            ),
            (
                Ready,
                Input::Engine(EngineEvent::Replaced),
                Failed,
                Some(REPLACED_ERROR),
                Action::GiveUp,
            ),
            (
                Ready,
                Input::Engine(EngineEvent::Outdated),
                Failed,
                Some(OUTDATED_ERROR),
                Action::GiveUp,
            ),
            (
                Ready,
                ban,
                Failed,
                Some("temporarily banned by WhatsApp (code 402) until 2026-06-25T10:00:00.000Z"),
                Action::GiveUp,
            ),
            (
                Ready,
                drop("x"),
                Disconnected,
                None,
                Action::RestartAfter(Duration::from_secs(5)),
            ),
            // Late events of a session that is not running change nothing.
            (Disconnected, drop("x"), Disconnected, None, Action::Nothing),
            (Failed, connected("1"), Failed, None, Action::Nothing),
            (
                Created,
                Input::Engine(EngineEvent::QrExhausted),
                Created,
                None,
                Action::Nothing,
            ),
            (Ready, Input::RetryDue, Ready, None, Action::Nothing),
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
                    t.events.is_empty() || matches!(input, Input::Start),
                    "case {i}: no change, no events: {:?}",
                    t.events
                );
            }
        }
    }

    #[test]
    fn full_link_emits_status_qr_authenticated_in_order() {
        let mut s = state(Created);
        let t = run(&mut s, Input::Start, t0());
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
                    expires_at_ms: ms(exp)
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
                expires_at_ms: ms(exp)
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
            let t = step(
                &mut s,
                Input::Engine(EngineEvent::Disconnected {
                    reason: "stream closed".into(),
                }),
                &mut StepContext {
                    now,
                    policy: &p,
                    rng: &mut rng,
                },
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
            let t = step(
                &mut s,
                Input::RetryDue,
                &mut StepContext {
                    now,
                    policy: &p,
                    rng: &mut rng,
                },
            );
            assert_eq!(t.action, Action::StartEngine);
            assert_eq!(t.events, vec![status_ev(Initializing, Disconnected, None)]);
            assert_eq!(s.next_retry_at, None);
            assert_eq!(s.restarts, attempt + 1);
        }
        let t = step(
            &mut s,
            Input::Engine(EngineEvent::ConnectFailed {
                reason: "timeout".into(),
            }),
            &mut StepContext {
                now,
                policy: &p,
                rng: &mut rng,
            },
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
        run(&mut s, Input::Start, now);
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
        let t = step(
            &mut s,
            Input::Engine(EngineEvent::Crashed {
                cause: "panic".into(),
            }),
            &mut StepContext {
                now: t0(),
                policy: &p,
                rng: &mut rng,
            },
        );
        assert_eq!(t.action, Action::GiveUp);
        assert_eq!(
            s.last_error.as_deref(),
            Some("Reconnection failed after 0 attempts: panic")
        );
    }

    #[test]
    fn budget_resets_after_stable_ready() {
        let mut s = state(Ready);
        s.restarts = 4;
        s.ready_since = Some(t0());
        // Not yet stable.
        run(
            &mut s,
            Input::StableElapsed,
            t0() + chrono::Duration::seconds(299),
        );
        assert_eq!(s.restarts, 4);
        run(
            &mut s,
            Input::StableElapsed,
            t0() + chrono::Duration::seconds(300),
        );
        assert_eq!(s.restarts, 0);

        // A drop after a long stable uptime starts from attempt 0 even without the timer.
        let mut s = state(Ready);
        s.restarts = 5;
        s.ready_since = Some(t0());
        let t = run(
            &mut s,
            Input::Engine(EngineEvent::Disconnected { reason: "x".into() }),
            t0() + chrono::Duration::minutes(10),
        );
        assert!(matches!(t.action, Action::RestartAfter(_)));
        assert_eq!(s.restarts, 1);

        // A short uptime keeps the budget used: exhausted.
        let mut s = state(Ready);
        s.restarts = 5;
        s.ready_since = Some(t0());
        let t = run(
            &mut s,
            Input::Engine(EngineEvent::Disconnected { reason: "x".into() }),
            t0() + chrono::Duration::minutes(1),
        );
        assert_eq!(t.action, Action::GiveUp);
        assert_eq!(
            s.last_error.as_deref(),
            Some("Reconnection failed after 5 attempts: x")
        );
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
        let t = run(&mut s, Input::Stop, t0());
        assert_eq!(s.next_retry_at, None);
        assert_eq!(s.desired, DesiredState::Stopped);
        // Status already disconnected: only the cancelled retry is announced.
        assert_eq!(t.events, vec![disc("stopped on request", None)]);
        // Stopping again is idempotent and silent.
        let t = run(&mut s, Input::Stop, t0());
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
        let t = run(&mut s, Input::Logout, t0());
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
        run(&mut s, Input::Stop, t0());
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
}
