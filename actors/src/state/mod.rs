//! The session state machine: the ONE place that decides a session's status,
//! `lastError`, `phone`, … and which events a change emits (contract §3),
//! and that answers every question asked of a status (`queries`).
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

mod queries;
#[cfg(test)]
mod tests;

pub use queries::{pairing_allowed, restored_at_boot, shown_qr, PairingUnavailable, QrUnavailable};

pub const QR_EXHAUSTED_ERROR: &str = "QR code was never scanned";
pub const LOGGED_OUT_ERROR: &str = "device was unlinked from the phone";
pub const REPLACED_ERROR: &str = "replaced by another connection to this device";
pub const OUTDATED_ERROR: &str = "WhatsApp refuses this client version: update wasup";

/// What a person can ask of a session: the one name of a session command,
/// from the API message down to the session actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionCommand {
    /// Start the engine (also the boot restore's start). Resets the budget.
    Start,
    /// Close the engine cleanly. Desired state: stopped.
    Stop,
    /// Abort the engine without a clean close. Desired state: stopped.
    ForceKill,
    /// Start again: a new engine replaces the running one.
    Restart,
    /// Unlink at WhatsApp and wipe the credentials. Desired state: stopped.
    Logout,
    /// Stop, wipe the credentials and remove the session.
    Delete,
}

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

    /// The engine is starting and has not yet shown a QR or connected (a
    /// boot-restore start holds its slot this long).
    pub fn is_starting(&self) -> bool {
        self.status == SessionStatus::Initializing
    }

    /// Connected to WhatsApp: a logout can unlink the device there.
    pub fn is_connected(&self) -> bool {
        self.status == SessionStatus::Ready
    }

    /// The time left until the pending restart (zero when overdue); None when
    /// no restart is pending. `next_retry_at` is the one record of it: the
    /// supervisor's timer is set from this when the actor ends.
    pub fn retry_in(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.next_retry_at
            .map(|at| (at - now).to_std().unwrap_or_default())
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
    /// A person (or the boot restore) asked for this. `Start` and `Restart`
    /// reset the restart budget; `Delete` leaves the session stopped (the
    /// actor removes it).
    Command(SessionCommand),
    /// The supervisor's backoff delay is over: start again, budget kept.
    RetryDue,
    /// The gateway is shutting down: engine closed, desired state unchanged.
    Shutdown,
    /// The session has been in `ready` long enough: reset the budget.
    StableElapsed,
    /// Nothing happened: the actor only wants the events the store refused
    /// before to be saved now.
    Flush,
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
    /// The session just became `ready`: feed `StableElapsed` after this long,
    /// so that the budget resets once it has been up that long.
    CheckStableAfter(Duration),
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
        Input::Command(SessionCommand::Start | SessionCommand::Restart) => {
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
        Input::Command(_) | Input::Shutdown => {
            let reason = match input {
                Input::Command(SessionCommand::ForceKill) => "force-killed on request",
                Input::Command(SessionCommand::Logout) => "logged out on request",
                Input::Command(_) => "stopped on request",
                _ => "the gateway is shutting down",
            };
            if input != Input::Shutdown {
                state.desired = DesiredState::Stopped;
            }
            let was_live = state.is_running() || state.next_retry_at.is_some();
            state.next_retry_at = None;
            if input == Input::Command(SessionCommand::Logout) {
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
            reset_budget_if_stable(state, now, ctx.policy);
            Action::Nothing
        }
        Input::Flush => Action::Nothing,
        Input::Engine(event) => engine_event(state, event, ctx, &mut out),
    };
    Transition {
        events: out.events,
        action,
    }
}

/// Up in `ready` for `stable_reset` already: the restart budget is back.
fn reset_budget_if_stable(state: &mut SessionState, now: DateTime<Utc>, policy: &BackoffPolicy) {
    let stable = |since: DateTime<Utc>| {
        (now - since)
            .to_std()
            .is_ok_and(|up| up >= policy.stable_reset)
    };
    if state.status == SessionStatus::Ready && state.ready_since.is_some_and(stable) {
        state.restarts = 0;
    }
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
                expired: false,
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
            if was_ready {
                return Action::Nothing;
            }
            state.connected_at = Some(now);
            state.ready_since = Some(now);
            Action::CheckStableAfter(ctx.policy.stable_reset)
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
    reset_budget_if_stable(state, ctx.now, ctx.policy);
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

/// How long the supervisor waits before it recovers a session whose actor
/// died (a panic) `deaths` times in a row. The first death is recovered at
/// once: the recovery feeds the machine `Crashed`, which backs off under
/// `policy` like any drop. An actor that dies again before it could record
/// that crash waits under the same policy, so that it cannot spin.
pub fn recover_delay<R: Rng + ?Sized>(
    policy: &BackoffPolicy,
    deaths: u32,
    rng: &mut R,
) -> Duration {
    match deaths.checked_sub(2) {
        None => Duration::ZERO,
        Some(attempt) => policy.delay(attempt, rng),
    }
}
