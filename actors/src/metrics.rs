//! The counters the actors bump (engine starts and exits, reconnects, QR
//! codes, webhook deliveries), and the Prometheus text encoder the binary's
//! `GET /metrics` renders everything with.
//!
//! The counters are process-wide ([`METRICS`]), like the `log` crate's
//! logger: they are bumped deep inside the actors, where threading a handle
//! through every constructor would buy nothing (there is one process, so
//! there is one set of counters). Every label is a closed enum: no session
//! id, name or free text ever becomes a label value.

use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::ports::EngineEvent;
use crate::webhook::AttemptOutcome;

/// The counters of this process.
pub static METRICS: Metrics = Metrics::new();

// ====================================================================== labels

/// What started an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartCause {
    /// `POST /api/sessions/:id/start`.
    Start,
    /// `POST /api/sessions/:id/restart`.
    Restart,
    /// The boot restore of a session whose desired state is `running`.
    Restore,
    /// The supervisor's automatic restart after the engine ended (backoff).
    Reconnect,
}

impl StartCause {
    pub const ALL: [StartCause; 4] = [
        StartCause::Start,
        StartCause::Restart,
        StartCause::Restore,
        StartCause::Reconnect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StartCause::Start => "start",
            StartCause::Restart => "restart",
            StartCause::Restore => "restore",
            StartCause::Reconnect => "reconnect",
        }
    }
}

/// Why a running engine ended without anybody asking it to (a requested
/// stop, logout, restart or shutdown is not an exit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCause {
    /// The connection dropped.
    Disconnected,
    /// The connection never came up (or the engine did not start in time).
    ConnectFailed,
    /// The engine itself died (run loop ended, panic).
    Crashed,
    /// The session actor panicked; the supervisor recovered the session.
    ActorPanicked,
    QrExhausted,
    LoggedOut,
    Replaced,
    Banned,
    Outdated,
}

impl ExitCause {
    pub const ALL: [ExitCause; 9] = [
        ExitCause::Disconnected,
        ExitCause::ConnectFailed,
        ExitCause::Crashed,
        ExitCause::ActorPanicked,
        ExitCause::QrExhausted,
        ExitCause::LoggedOut,
        ExitCause::Replaced,
        ExitCause::Banned,
        ExitCause::Outdated,
    ];

    /// The causes after which the supervisor restarts the session (while
    /// its budget lasts); the others need a person.
    pub const RETRIED: [ExitCause; 4] = [
        ExitCause::Disconnected,
        ExitCause::ConnectFailed,
        ExitCause::Crashed,
        ExitCause::ActorPanicked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExitCause::Disconnected => "disconnected",
            ExitCause::ConnectFailed => "connect_failed",
            ExitCause::Crashed => "crashed",
            ExitCause::ActorPanicked => "actor_panicked",
            ExitCause::QrExhausted => "qr_exhausted",
            ExitCause::LoggedOut => "logged_out",
            ExitCause::Replaced => "replaced",
            ExitCause::Banned => "banned",
            ExitCause::Outdated => "outdated",
        }
    }

    /// The cause a terminal engine event stands for (None for the others).
    /// The event's free text (reasons, ban codes) is deliberately dropped.
    pub fn of(event: &EngineEvent) -> Option<ExitCause> {
        Some(match event {
            EngineEvent::Qr { .. }
            | EngineEvent::PairSuccess { .. }
            | EngineEvent::Connected { .. } => return None,
            EngineEvent::Disconnected { .. } => ExitCause::Disconnected,
            EngineEvent::ConnectFailed { .. } => ExitCause::ConnectFailed,
            EngineEvent::Crashed { .. } => ExitCause::Crashed,
            EngineEvent::QrExhausted => ExitCause::QrExhausted,
            EngineEvent::LoggedOut { .. } => ExitCause::LoggedOut,
            EngineEvent::Replaced => ExitCause::Replaced,
            EngineEvent::TemporaryBan { .. } => ExitCause::Banned,
            EngineEvent::Outdated => ExitCause::Outdated,
        })
    }
}

const OUTCOMES: [AttemptOutcome; 3] = [
    AttemptOutcome::Delivered,
    AttemptOutcome::Failed,
    AttemptOutcome::Dead,
];

fn outcome_index(outcome: AttemptOutcome) -> usize {
    match outcome {
        AttemptOutcome::Delivered => 0,
        AttemptOutcome::Failed => 1,
        AttemptOutcome::Dead => 2,
    }
}

// ====================================================================== primitives

/// Upper bounds (seconds) of webhook delivery latencies; the sender gives
/// up after 10 s.
pub const WEBHOOK_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (seconds) of HTTP request latencies.
pub const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const MAX_BUCKETS: usize = 16;

/// A cumulative histogram with fixed bounds, lock-free. The sum is kept in
/// microseconds (observations are durations).
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the slot after the last bound is +Inf.
    counts: [AtomicU64; MAX_BUCKETS],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub const fn new(bounds: &'static [f64]) -> Self {
        assert!(bounds.len() < MAX_BUCKETS);
        Histogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; MAX_BUCKETS],
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe_micros(&self, micros: u64) {
        let seconds = micros as f64 / 1e6;
        let slot = self
            .bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[slot].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn observe(&self, elapsed: std::time::Duration) {
        self.observe_micros(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }
}

// ====================================================================== the counters

pub struct Metrics {
    engine_starts: [AtomicU64; StartCause::ALL.len()],
    engine_exits: [AtomicU64; ExitCause::ALL.len()],
    reconnects: [AtomicU64; ExitCause::ALL.len()],
    qr_codes: AtomicU64,
    webhook_deliveries: [AtomicU64; 3],
    webhook_latency: Histogram,
    outbox_corrupt: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub const fn new() -> Self {
        Metrics {
            engine_starts: [const { AtomicU64::new(0) }; StartCause::ALL.len()],
            engine_exits: [const { AtomicU64::new(0) }; ExitCause::ALL.len()],
            reconnects: [const { AtomicU64::new(0) }; ExitCause::ALL.len()],
            qr_codes: AtomicU64::new(0),
            webhook_deliveries: [const { AtomicU64::new(0) }; 3],
            webhook_latency: Histogram::new(WEBHOOK_BUCKETS),
            outbox_corrupt: AtomicU64::new(0),
        }
    }

    pub fn engine_started(&self, cause: StartCause) {
        self.engine_starts[cause as usize].fetch_add(1, Relaxed);
    }

    pub fn engine_exited(&self, cause: ExitCause) {
        self.engine_exits[cause as usize].fetch_add(1, Relaxed);
    }

    /// The supervisor will restart the session after a backoff delay.
    pub fn reconnect_scheduled(&self, cause: ExitCause) {
        self.reconnects[cause as usize].fetch_add(1, Relaxed);
    }

    pub fn qr_issued(&self) {
        self.qr_codes.fetch_add(1, Relaxed);
    }

    /// One webhook delivery attempt and how long the receiver took.
    pub fn webhook_attempt(&self, outcome: AttemptOutcome, latency_ms: u64) {
        self.webhook_deliveries[outcome_index(outcome)].fetch_add(1, Relaxed);
        self.webhook_latency
            .observe_micros(latency_ms.saturating_mul(1000));
    }

    /// An outbox row that could not be turned into a delivery (its event
    /// does not decode, its webhook's secret does not open); it was
    /// dead-lettered instead of blocking its webhook's queue.
    pub fn webhook_outbox_corrupt(&self) {
        self.outbox_corrupt.fetch_add(1, Relaxed);
    }

    pub fn webhook_outbox_corrupt_rows(&self) -> u64 {
        self.outbox_corrupt.load(Relaxed)
    }

    pub fn engine_starts(&self, cause: StartCause) -> u64 {
        self.engine_starts[cause as usize].load(Relaxed)
    }

    pub fn engine_exits(&self, cause: ExitCause) -> u64 {
        self.engine_exits[cause as usize].load(Relaxed)
    }

    pub fn reconnects(&self, cause: ExitCause) -> u64 {
        self.reconnects[cause as usize].load(Relaxed)
    }

    pub fn qr_codes(&self) -> u64 {
        self.qr_codes.load(Relaxed)
    }

    pub fn webhook_deliveries(&self, outcome: AttemptOutcome) -> u64 {
        self.webhook_deliveries[outcome_index(outcome)].load(Relaxed)
    }

    /// Write every counter of this set (all label values, zeros included).
    pub fn encode(&self, enc: &mut TextEncoder) {
        enc.family(
            "wasup_engine_starts_total",
            "counter",
            "Engine starts, by what started them: start, restart (API), restore (boot), reconnect (automatic, after backoff).",
        );
        for cause in StartCause::ALL {
            enc.sample(
                "wasup_engine_starts_total",
                &[("cause", cause.as_str())],
                self.engine_starts(cause),
            );
        }
        enc.family(
            "wasup_engine_exits_total",
            "counter",
            "Engines that ended without being asked to, by cause.",
        );
        for cause in ExitCause::ALL {
            enc.sample(
                "wasup_engine_exits_total",
                &[("cause", cause.as_str())],
                self.engine_exits(cause),
            );
        }
        enc.family(
            "wasup_reconnect_attempts_total",
            "counter",
            "Automatic restarts scheduled by the supervisor (with backoff), by the cause of the exit that led to them.",
        );
        for cause in ExitCause::RETRIED {
            enc.sample(
                "wasup_reconnect_attempts_total",
                &[("cause", cause.as_str())],
                self.reconnects(cause),
            );
        }
        enc.family(
            "wasup_qr_codes_total",
            "counter",
            "QR codes issued to sessions waiting for a link (every rotation counts).",
        );
        enc.sample("wasup_qr_codes_total", &[], self.qr_codes());
        enc.family(
            "wasup_webhook_deliveries_total",
            "counter",
            "Webhook delivery attempts by outcome: delivered (2xx), failed (retried later), dead (last attempt failed).",
        );
        for outcome in OUTCOMES {
            enc.sample(
                "wasup_webhook_deliveries_total",
                &[("outcome", outcome.as_str())],
                self.webhook_deliveries(outcome),
            );
        }
        enc.family(
            "wasup_webhook_delivery_duration_seconds",
            "histogram",
            "Time from sending a webhook delivery to the receiver's answer (or the failure).",
        );
        enc.histogram(
            "wasup_webhook_delivery_duration_seconds",
            &[],
            &self.webhook_latency,
        );
        enc.family(
            "wasup_webhook_outbox_corrupt_total",
            "counter",
            "Outbox rows that could not be delivered because a stored row was corrupt (undecodable event, unopenable secret); each was dead-lettered.",
        );
        enc.sample(
            "wasup_webhook_outbox_corrupt_total",
            &[],
            self.webhook_outbox_corrupt_rows(),
        );
    }
}

// ====================================================================== encoding

/// Writes the Prometheus text exposition format (version 0.0.4).
#[derive(Default)]
pub struct TextEncoder {
    out: String,
}

/// The `Content-Type` of [`TextEncoder`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn escape_label(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A float as Prometheus writes it (`+Inf`, no exponent for our ranges).
fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else {
        v.to_string()
    }
}

impl TextEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// `# HELP` and `# TYPE` lines; the samples of the family follow.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_help(help, &mut self.out);
        let _ = writeln!(self.out, "\n# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// A gauge or counter value given as a float.
    pub fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, labels, float(value));
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_label(v, &mut self.out);
            self.out.push('"');
        }
        self.out.push('}');
    }

    /// `_bucket` (cumulative, ending with `+Inf`), `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let mut cumulative = 0;
        for slot in 0..=h.bounds.len() {
            cumulative += h.counts[slot].load(Relaxed);
            let le = h.bounds.get(slot).map_or("+Inf".to_string(), |b| float(*b));
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        // The buckets were read one by one while others observe: report a
        // count consistent with them (never below the +Inf bucket).
        let count = cumulative;
        let sum = h.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", float(sum));
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {count}");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_label_value_is_written_and_escaped() {
        let m = Metrics::new();
        m.engine_started(StartCause::Restore);
        m.engine_exited(ExitCause::ConnectFailed);
        m.reconnect_scheduled(ExitCause::ConnectFailed);
        m.qr_issued();
        m.webhook_attempt(AttemptOutcome::Delivered, 30);
        m.webhook_attempt(AttemptOutcome::Dead, 20_000);
        let mut enc = TextEncoder::new();
        m.encode(&mut enc);
        enc.sample("x", &[("v", "a\"b\\c\nd")], 1);
        let text = enc.finish();
        assert!(text.contains("wasup_engine_starts_total{cause=\"restore\"} 1\n"));
        assert!(text.contains("wasup_engine_starts_total{cause=\"start\"} 0\n"));
        assert!(text.contains("wasup_engine_exits_total{cause=\"connect_failed\"} 1\n"));
        assert!(text.contains("wasup_reconnect_attempts_total{cause=\"connect_failed\"} 1\n"));
        assert!(!text.contains("wasup_reconnect_attempts_total{cause=\"logged_out\"}"));
        assert!(text.contains("wasup_qr_codes_total 1\n"));
        assert!(text.contains("wasup_webhook_deliveries_total{outcome=\"dead\"} 1\n"));
        assert!(text.contains("wasup_webhook_delivery_duration_seconds_bucket{le=\"0.025\"} 0\n"));
        assert!(text.contains("wasup_webhook_delivery_duration_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("wasup_webhook_delivery_duration_seconds_bucket{le=\"10\"} 1\n"));
        assert!(text.contains("wasup_webhook_delivery_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("wasup_webhook_delivery_duration_seconds_sum 20.03\n"));
        assert!(text.contains("wasup_webhook_delivery_duration_seconds_count 2\n"));
        m.webhook_outbox_corrupt();
        let corrupt = {
            let mut enc = TextEncoder::new();
            m.encode(&mut enc);
            enc.finish()
        };
        assert!(corrupt.contains("# TYPE wasup_webhook_outbox_corrupt_total counter\n"));
        assert!(corrupt.contains("wasup_webhook_outbox_corrupt_total 1\n"));
        assert!(text.contains("x{v=\"a\\\"b\\\\c\\nd\"} 1\n"));
        assert!(text.contains("# TYPE wasup_engine_starts_total counter\n"));
    }

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let h = Histogram::new(HTTP_BUCKETS);
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_secs(60));
        let mut enc = TextEncoder::new();
        enc.histogram("h", &[("route", "/x")], &h);
        let text = enc.finish();
        assert!(
            text.contains("h_bucket{route=\"/x\",le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("h_bucket{route=\"/x\",le=\"10\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("h_bucket{route=\"/x\",le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert_eq!(h.count(), 2);
    }

    #[test]
    fn exit_causes_drop_the_free_text() {
        let e = EngineEvent::Disconnected {
            reason: "session 1234 went away".into(),
        };
        assert_eq!(ExitCause::of(&e), Some(ExitCause::Disconnected));
        assert_eq!(
            ExitCause::of(&EngineEvent::Qr {
                code: "x".into(),
                timeout: Duration::from_secs(1)
            }),
            None
        );
        for (i, c) in ExitCause::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        for (i, c) in StartCause::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
