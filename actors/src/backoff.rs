//! The restart policy of a session: exponential backoff with ±20 % jitter,
//! capped, with a budget of attempts that resets after a stable uptime
//! (contract §3).

use std::time::Duration;

use rand::Rng;

use crate::model::SessionConfig;

/// Default base delay (`reconnectBaseDelay`) in ms.
pub const DEFAULT_BASE_DELAY_MS: u64 = 5_000;
/// Default budget (`maxReconnectAttempts`).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Upper clamp of `maxReconnectAttempts`.
pub const MAX_ATTEMPTS_LIMIT: u32 = 20;
/// Jitter: each delay is multiplied by a factor drawn from [1 - J, 1 + J].
pub const JITTER: f64 = 0.2;

/// The bounds the contract puts on the per-session settings. Production uses
/// [`BackoffLimits::default`]; tests inject smaller ones through
/// `SupervisorOptions` so that a whole schedule runs in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffLimits {
    /// Smallest base delay a config may ask for (contract: 1000 ms).
    pub min_base: Duration,
    /// Largest base delay a config may ask for (contract: 300000 ms).
    pub max_base: Duration,
    /// No single delay is longer (contract: 5 min).
    pub cap: Duration,
    /// Uptime in `ready` after which the budget resets (contract: 5 min).
    pub stable_reset: Duration,
}

impl Default for BackoffLimits {
    fn default() -> Self {
        BackoffLimits {
            min_base: Duration::from_millis(1_000),
            max_base: Duration::from_millis(300_000),
            cap: Duration::from_secs(300),
            stable_reset: Duration::from_secs(300),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub base: Duration,
    pub max_attempts: u32,
    pub cap: Duration,
    pub stable_reset: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy::from_config(&SessionConfig::default())
    }
}

impl BackoffPolicy {
    /// The policy of a session under the contract's limits.
    pub fn from_config(config: &SessionConfig) -> Self {
        Self::from_config_with(config, &BackoffLimits::default())
    }

    /// The policy of a session, its settings clamped to `limits`.
    pub fn from_config_with(config: &SessionConfig, limits: &BackoffLimits) -> Self {
        let base_ms = config.reconnect_base_delay.unwrap_or(DEFAULT_BASE_DELAY_MS);
        let min = limits.min_base.as_millis() as u64;
        let max = (limits.max_base.as_millis() as u64).max(min);
        BackoffPolicy {
            base: Duration::from_millis(base_ms.clamp(min, max)),
            max_attempts: config
                .max_reconnect_attempts
                .unwrap_or(DEFAULT_MAX_ATTEMPTS)
                .min(MAX_ATTEMPTS_LIMIT),
            cap: limits.cap,
            stable_reset: limits.stable_reset,
        }
    }

    /// The delay before restart number `attempt` (0 = the first restart):
    /// `base · 2^attempt`, times a jitter factor in [0.8, 1.2], capped.
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let factor = rng.random_range((1.0 - JITTER)..=(1.0 + JITTER));
        self.delay_with_factor(attempt, factor)
    }

    /// The delay without randomness: `factor` is the jitter multiplier.
    pub fn delay_with_factor(&self, attempt: u32, factor: f64) -> Duration {
        let nominal = self.base.as_secs_f64() * 2f64.powi(attempt.min(63) as i32);
        let jittered = nominal * factor;
        let capped = jittered.min(self.cap.as_secs_f64()).max(0.0);
        Duration::from_secs_f64(capped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn cfg(base: Option<u64>, attempts: Option<u32>) -> SessionConfig {
        SessionConfig {
            reconnect_base_delay: base,
            max_reconnect_attempts: attempts,
            ..SessionConfig::default()
        }
    }

    #[test]
    fn defaults_follow_the_contract() {
        let p = BackoffPolicy::from_config(&SessionConfig::default());
        assert_eq!(p.base, Duration::from_millis(5_000));
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.cap, Duration::from_secs(300));
        assert_eq!(p.stable_reset, Duration::from_secs(300));
        assert_eq!(BackoffPolicy::default(), p);
    }

    #[test]
    fn settings_are_clamped() {
        let cases = [
            (Some(0), Some(0), 1_000, 0),
            (Some(999), Some(21), 1_000, 20),
            (Some(1_000), Some(20), 1_000, 20),
            (Some(300_000), Some(7), 300_000, 7),
            (Some(300_001), Some(u32::MAX), 300_000, 20),
            (Some(12_345), None, 12_345, 5),
            (None, Some(3), 5_000, 3),
        ];
        for (base, attempts, want_base, want_attempts) in cases {
            let p = BackoffPolicy::from_config(&cfg(base, attempts));
            assert_eq!(p.base, Duration::from_millis(want_base), "base {base:?}");
            assert_eq!(p.max_attempts, want_attempts, "attempts {attempts:?}");
        }
    }

    #[test]
    fn limits_are_injectable() {
        let limits = BackoffLimits {
            min_base: Duration::from_millis(1),
            max_base: Duration::from_millis(50),
            cap: Duration::from_millis(100),
            stable_reset: Duration::from_millis(200),
        };
        let p = BackoffPolicy::from_config_with(&cfg(Some(2), Some(3)), &limits);
        assert_eq!(p.base, Duration::from_millis(2));
        assert_eq!(p.cap, Duration::from_millis(100));
        assert_eq!(p.stable_reset, Duration::from_millis(200));
        let p = BackoffPolicy::from_config_with(&cfg(Some(500), None), &limits);
        assert_eq!(p.base, Duration::from_millis(50));
    }

    #[test]
    fn schedule_doubles_and_caps_at_five_minutes() {
        let p = BackoffPolicy::default();
        let secs: Vec<u64> = (0..10)
            .map(|a| p.delay_with_factor(a, 1.0).as_secs())
            .collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
        // The cap applies after the jitter too.
        assert_eq!(p.delay_with_factor(6, 1.2), Duration::from_secs(300));
        assert_eq!(p.delay_with_factor(0, 0.8), Duration::from_secs(4));
        assert_eq!(p.delay_with_factor(1, 1.2), Duration::from_secs(12));
        // Huge attempts do not overflow.
        assert_eq!(p.delay_with_factor(u32::MAX, 1.0), Duration::from_secs(300));
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_varies() {
        let p = BackoffPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..5u32 {
            let nominal = 5_000f64 * 2f64.powi(attempt as i32);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..200 {
                let d = p.delay(attempt, &mut rng).as_secs_f64() * 1000.0;
                assert!(
                    d >= nominal * 0.8 - 1e-6 && d <= nominal * 1.2 + 1e-6,
                    "{d} vs {nominal}"
                );
                seen.insert(d as u64);
            }
            assert!(seen.len() > 50, "jitter must vary: {}", seen.len());
        }
        for _ in 0..100 {
            assert!(p.delay(9, &mut rng) <= Duration::from_secs(300));
        }
    }
}
