//! Failed-auth rate limiting (issue 14.3): each client address may present
//! `WASUP_AUTH_FAILURES_PER_MINUTE` invalid keys a minute (a GCRA bucket, so
//! the allowance refills steadily). Past it the address is refused with 429
//! `too_many_requests` and `Retry-After` *before* its key is looked up, so a
//! guess that happens to be right is refused too and tells the guesser
//! nothing. Valid keys never count.
//!
//! Keyed by the peer address (wasup reads no proxy headers); IPv6 by its /64,
//! since one host usually holds a whole /64. Memory stays bounded: addresses
//! not seen for a minute are dropped (governor's `retain_recent`, run at most
//! once a minute, on failures only).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use wasup_actors::keys::AuthError;
use wasup_actors::ErrorCode;

use super::error::ApiError;

const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub struct AuthFailures {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    blocked: Mutex<Blocked>,
}

/// Addresses past the limit, and until when.
struct Blocked {
    until: HashMap<IpAddr, Instant>,
    pruned: Instant,
}

impl AuthFailures {
    /// `None` when `per_minute` is 0 (limiting off).
    pub fn new(per_minute: u32) -> Option<Self> {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute)?);
        Some(AuthFailures {
            limiter: RateLimiter::keyed(quota),
            blocked: Mutex::new(Blocked {
                until: HashMap::new(),
                pruned: Instant::now(),
            }),
        })
    }

    /// Seconds `ip` must wait before it may present a key again, if it is
    /// past the limit.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let ip = bucket(ip);
        let blocked = self.blocked.lock();
        let until = *blocked.until.get(&ip)?;
        let now = Instant::now();
        (until > now).then(|| ceil_secs(until - now))
    }

    /// Count one invalid key from `ip`; the wait in seconds when this one
    /// went over the limit.
    pub fn failed(&self, ip: IpAddr) -> Option<u64> {
        let ip = bucket(ip);
        let outcome = self.limiter.check_key(&ip);
        let now = Instant::now();
        let mut blocked = self.blocked.lock();
        if now.duration_since(blocked.pruned) >= PRUNE_EVERY {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            blocked.until.retain(|_, until| *until > now);
            blocked.pruned = now;
        }
        let not_until = outcome.err()?;
        let wait = not_until
            .wait_time_from(self.limiter.clock().now())
            .max(Duration::from_secs(1));
        blocked.until.insert(ip, now + wait);
        Some(ceil_secs(wait))
    }

    /// Addresses tracked now (for tests of the memory bound).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// Authenticate through the limiter: an address past the limit gets 429
/// without a lookup; an invalid key counts against its address.
pub fn authenticate<T>(
    limiter: Option<&AuthFailures>,
    peer: Option<IpAddr>,
    lookup: impl FnOnce() -> Result<T, AuthError>,
) -> Result<T, ApiError> {
    let (Some(limiter), Some(ip)) = (limiter, peer) else {
        return lookup().map_err(ApiError::from);
    };
    if let Some(secs) = limiter.blocked(ip) {
        return Err(too_many(secs));
    }
    match lookup() {
        Err(AuthError::Invalid) => match limiter.failed(ip) {
            Some(secs) => Err(too_many(secs)),
            None => Err(AuthError::Invalid.into()),
        },
        other => other.map_err(ApiError::from),
    }
}

fn too_many(secs: u64) -> ApiError {
    ApiError {
        retry_after_secs: Some(secs),
        ..ApiError::new(
            ErrorCode::TooManyRequests,
            format!(
                "Too many invalid API keys from this address (WASUP_AUTH_FAILURES_PER_MINUTE); retry after {secs} s"
            ),
        )
    }
}

/// IPv4 as is; IPv6 by its /64 (IPv4-mapped addresses as IPv4).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_blocks_the_address_and_spares_others() {
        let limiter = AuthFailures::new(3).unwrap();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.failed(ip), None);
        }
        let wait = limiter.failed(ip).expect("over the limit");
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(limiter.blocked(ip).is_some());
        assert!(limiter.blocked("203.0.113.8".parse().unwrap()).is_none());
        assert!(AuthFailures::new(0).is_none(), "0 turns it off");
    }

    #[test]
    fn ipv6_counts_per_64_and_stays_bounded() {
        let limiter = AuthFailures::new(2).unwrap();
        for host in 0..50u16 {
            let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, host));
            limiter.failed(ip);
        }
        assert_eq!(limiter.tracked(), 1, "one /64, one bucket");
        let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, 9));
        assert!(limiter.blocked(other).is_some());
    }

    #[test]
    fn a_blocked_address_is_refused_before_the_lookup() {
        let limiter = AuthFailures::new(1).unwrap();
        let ip = Some("198.51.100.1".parse().unwrap());
        let invalid = || Err::<(), _>(AuthError::Invalid);
        assert_eq!(
            authenticate(Some(&limiter), ip, invalid).unwrap_err().code,
            ErrorCode::InvalidApiKey
        );
        assert_eq!(
            authenticate(Some(&limiter), ip, invalid).unwrap_err().code,
            ErrorCode::TooManyRequests
        );
        let err = authenticate(Some(&limiter), ip, || -> Result<(), AuthError> {
            panic!("looked up while blocked")
        })
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::TooManyRequests);
        assert!(err.retry_after_secs.is_some());
    }
}
