//! Rate limits: keyed token buckets, per client IP (every activation request) and per
//! serial (refused activation attempts).
//!
//! A bucket holds up to `burst` tokens and refills at `rate` tokens per second; a
//! request takes one token or is refused (HTTP 429, code 5003). Buckets that have
//! refilled completely carry no information and are dropped when the table grows,
//! so memory stays bounded under a flood of distinct keys.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Above this many keys, full buckets are swept out.
const SWEEP_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A token-bucket limiter keyed by `K`.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// `rate` tokens per second, at most `burst` at once. A rate of 0 or less turns
    /// the limiter off.
    pub fn new(rate: f64, burst: f64) -> KeyedLimiter<K> {
        KeyedLimiter {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`; false when the key is over its limit.
    pub fn check(&self, key: &K) -> bool {
        self.check_at(key, Instant::now())
    }

    /// Whether `key` has a token left, without taking it (for limits that only count
    /// some outcomes: look first, [`KeyedLimiter::check`] when the outcome counts).
    pub fn peek(&self, key: &K) -> bool {
        if self.rate <= 0.0 || !self.rate.is_finite() {
            return true;
        }
        let now = Instant::now();
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.get(key).is_none_or(|b| {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            (b.tokens + elapsed * self.rate).min(self.burst) >= 1.0
        })
    }

    fn check_at(&self, key: &K, now: Instant) -> bool {
        if self.rate <= 0.0 || !self.rate.is_finite() {
            return true;
        }
        // A poisoned lock only means another thread panicked mid-update; the table
        // is still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= SWEEP_AT && !buckets.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
        }
        let b = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Number of keys tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }
}

/// Rate-limit settings.
#[derive(Debug, Clone, Copy)]
pub struct RateConfig {
    /// Activation requests per second per client IP (0 = unlimited).
    pub per_ip: f64,
    /// Burst per client IP.
    pub ip_burst: f64,
    /// Refused activation attempts per minute per serial (0 = unlimited).
    pub per_serial_per_minute: f64,
}

impl Default for RateConfig {
    fn default() -> RateConfig {
        RateConfig {
            per_ip: 20.0,
            ip_burst: 40.0,
            per_serial_per_minute: 10.0,
        }
    }
}

/// The server's limiters.
#[derive(Debug)]
pub struct RateLimits {
    /// Per client IP, on `/v1/activate`.
    pub ip: KeyedLimiter<IpAddr>,
    /// Per serial (compact form), on refused activation attempts: a serial that
    /// keeps being refused (guessed, leaked, revoked, at its cap) is throttled, while
    /// granted activations never count, so a product-line serial can activate many
    /// devices quickly.
    pub serial: KeyedLimiter<String>,
}

impl RateLimits {
    /// Limiters for these settings.
    pub fn new(c: RateConfig) -> RateLimits {
        RateLimits {
            ip: KeyedLimiter::new(c.per_ip, c.ip_burst),
            serial: KeyedLimiter::new(
                c.per_serial_per_minute / 60.0,
                c.per_serial_per_minute.max(1.0),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let l = KeyedLimiter::new(2.0, 4.0);
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(l.check_at(&1, t0));
        }
        assert!(!l.check_at(&1, t0));
        assert!(l.check_at(&2, t0), "keys are independent");
        assert!(l.peek(&3), "an unknown key has tokens");
        assert!(l.check_at(&1, t0 + Duration::from_millis(500)));
        assert!(!l.check_at(&1, t0 + Duration::from_millis(500)));
    }

    #[test]
    fn zero_rate_is_unlimited_and_full_buckets_are_swept() {
        let off = KeyedLimiter::new(0.0, 1.0);
        for _ in 0..100 {
            assert!(off.check(&1));
        }
        let l = KeyedLimiter::new(1000.0, 1.0);
        let t0 = Instant::now();
        for k in 0..SWEEP_AT {
            l.check_at(&k, t0);
        }
        assert_eq!(l.tracked(), SWEEP_AT);
        l.check_at(&usize::MAX, t0 + Duration::from_secs(1));
        assert_eq!(l.tracked(), 1);
    }
}
