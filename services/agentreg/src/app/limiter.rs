//! Throttling of clients that keep failing to authenticate: more than the allowed failures from
//! one address within a minute earn `429 Too Many Requests` until the minute is over. Callers
//! whose token is already verified (cached) are never throttled, so a shared address with one
//! noisy client does not slow the others down.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window over which failures are counted.
const WINDOW: Duration = Duration::from_secs(60);
/// Beyond this many tracked addresses, windows that have ended are dropped.
const PRUNE_ABOVE: usize = 10_000;

/// Failures per client address in the current window.
pub(crate) struct FailureLimiter {
    allowed_per_window: u32,
    windows: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    n_failures: u32,
}

impl FailureLimiter {
    pub(crate) fn new(allowed_per_window: u32) -> FailureLimiter {
        FailureLimiter {
            allowed_per_window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(seconds to wait)` if `client` has used up its failures for this window.
    pub(crate) fn retry_after(&self, client: IpAddr, now: Instant) -> Option<u64> {
        let windows = self.lock();
        let window = windows.get(&client)?;
        let elapsed = now.saturating_duration_since(window.started);
        if elapsed >= WINDOW || window.n_failures <= self.allowed_per_window {
            return None;
        }
        Some((WINDOW - elapsed).as_secs().max(1))
    }

    /// Counts one failed authentication.
    pub(crate) fn record_failure(&self, client: IpAddr, now: Instant) {
        let mut windows = self.lock();
        if windows.len() > PRUNE_ABOVE {
            windows.retain(|_, window| now.saturating_duration_since(window.started) < WINDOW);
        }
        let window = windows.entry(client).or_insert(Window {
            started: now,
            n_failures: 0,
        });
        if now.saturating_duration_since(window.started) >= WINDOW {
            *window = Window {
                started: now,
                n_failures: 0,
            };
        }
        window.n_failures = window.n_failures.saturating_add(1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        // Every mutation is a single map operation, so a poisoned map is still consistent.
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn failures_up_to_the_limit_are_allowed() {
        let limiter = FailureLimiter::new(3);
        let now = Instant::now();
        for _ in 0..3 {
            limiter.record_failure(CLIENT, now);
        }
        assert_eq!(limiter.retry_after(CLIENT, now), None);
    }

    #[test]
    fn one_failure_too_many_is_throttled_until_the_window_ends() {
        let limiter = FailureLimiter::new(3);
        let now = Instant::now();
        for _ in 0..4 {
            limiter.record_failure(CLIENT, now);
        }
        assert_eq!(
            limiter.retry_after(CLIENT, now + Duration::from_secs(10)),
            Some(50)
        );
        assert_eq!(limiter.retry_after(OTHER, now), None);
        assert_eq!(limiter.retry_after(CLIENT, now + WINDOW), None);
    }

    #[test]
    fn a_new_window_starts_from_zero() {
        let limiter = FailureLimiter::new(1);
        let now = Instant::now();
        limiter.record_failure(CLIENT, now);
        limiter.record_failure(CLIENT, now);
        let later = now + WINDOW + Duration::from_secs(1);
        limiter.record_failure(CLIENT, later);
        assert_eq!(limiter.retry_after(CLIENT, later), None);
    }
}
