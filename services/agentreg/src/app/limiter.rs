//! Throttling of failed authentications. Failures are counted per key within a minute: per
//! client address for KAS JWTs, per address and token handle for personal access tokens, per
//! token handle (and over all agents) for agent tokens, so that one noisy client behind the
//! agent server or a proxy cannot lock the others out. A slot is reserved before a token is
//! verified and given back when it verifies, so concurrent forgeries cannot all reach argon2.
//! The map is bounded: beyond its capacity the oldest windows are forgotten first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The window over which failures are counted.
const WINDOW: Duration = Duration::from_secs(60);
/// The most keys tracked at once; each costs well under 200 bytes.
const MAX_TRACKED_KEYS: usize = 100_000;

/// What failures are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ThrottleKey {
    /// A client address (IPv6 by /64): failed KAS JWTs.
    Address(IpAddr),
    /// A client address and the handle of a personal access token.
    AddressAndHandle(IpAddr, String),
    /// The handle of an agent token, wherever it comes from.
    AgentHandle(String),
    /// Every agent token at once: bounds the argon2 work that bogus agent tokens can cause.
    AllAgentTokens,
}

/// The key one client is counted under: an IPv4 address, or an IPv6 address's /64, the block
/// one host usually holds.
pub fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
    }
}

/// Failures per key in the current window.
pub(crate) struct FailureLimiter {
    state: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    by_key: HashMap<ThrottleKey, Window>,
    /// Keys in the order their windows started, for eviction; may hold stale duplicates.
    order: VecDeque<(ThrottleKey, Instant)>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    n_failures: u32,
}

impl FailureLimiter {
    pub(crate) fn new() -> FailureLimiter {
        FailureLimiter {
            state: Mutex::new(Windows::default()),
        }
    }

    /// Reserves one failure for `key` before a credential is checked: `Err(seconds to wait)` if
    /// `allowed` failures are already counted in this window. Give the slot back with
    /// [`FailureLimiter::release`] if the credential verifies.
    pub(crate) fn reserve(&self, key: &ThrottleKey, allowed: u32, now: Instant) -> Result<(), u64> {
        let mut state = self.lock();
        let window = state.current(key, now);
        if window.n_failures >= allowed {
            let elapsed = now.saturating_duration_since(window.started);
            return Err((WINDOW.saturating_sub(elapsed)).as_secs().max(1));
        }
        window.n_failures += 1;
        Ok(())
    }

    /// `Some(seconds to wait)` if `key` has used up its `allowed` failures in this window.
    pub(crate) fn retry_after(&self, key: &ThrottleKey, allowed: u32, now: Instant) -> Option<u64> {
        let state = self.lock();
        let window = state.by_key.get(key)?;
        let elapsed = now.saturating_duration_since(window.started);
        if elapsed >= WINDOW || window.n_failures < allowed {
            return None;
        }
        Some((WINDOW - elapsed).as_secs().max(1))
    }

    /// Counts one failure that was not reserved.
    pub(crate) fn record_failure(&self, key: &ThrottleKey, now: Instant) {
        let mut state = self.lock();
        let window = state.current(key, now);
        window.n_failures = window.n_failures.saturating_add(1);
    }

    /// Gives back a reserved slot: the credential verified.
    pub(crate) fn release(&self, key: &ThrottleKey) {
        let mut state = self.lock();
        if let Some(window) = state.by_key.get_mut(key) {
            window.n_failures = window.n_failures.saturating_sub(1);
        }
    }

    /// How many keys are tracked (for tests of the bound).
    #[cfg(test)]
    fn n_tracked(&self) -> usize {
        self.lock().by_key.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        // Every mutation leaves the map consistent, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Windows {
    /// The key's window, restarted if it ended, created (evicting the oldest) if absent.
    fn current(&mut self, key: &ThrottleKey, now: Instant) -> &mut Window {
        let fresh = Window {
            started: now,
            n_failures: 0,
        };
        let expired = self
            .by_key
            .get(key)
            .is_none_or(|window| now.saturating_duration_since(window.started) >= WINDOW);
        if expired {
            while self.by_key.len() >= MAX_TRACKED_KEYS || self.order.len() >= 2 * MAX_TRACKED_KEYS
            {
                let Some((oldest, started)) = self.order.pop_front() else {
                    break;
                };
                if self
                    .by_key
                    .get(&oldest)
                    .is_some_and(|window| window.started == started)
                {
                    self.by_key.remove(&oldest);
                }
            }
            self.order.push_back((key.clone(), now));
            self.by_key.insert(key.clone(), fresh);
        }
        self.by_key.entry(key.clone()).or_insert(fresh)
    }
}

/// At most one uncached verification in flight per client address: the others wait their
/// turn, so one address cannot occupy every argon2 slot.
#[derive(Default)]
pub(crate) struct VerificationTurns {
    by_address: Mutex<HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>>,
}

/// A client address's turn to verify; the next caller from that address proceeds when dropped.
pub(crate) struct Turn {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl VerificationTurns {
    pub(crate) async fn take(&self, address: IpAddr) -> Turn {
        let turn = {
            let mut by_address = self.lock();
            // Entries nobody holds or waits for are dropped here, which bounds the map by the
            // number of addresses with a verification in progress.
            by_address.retain(|_, turn| Arc::strong_count(turn) > 1);
            by_address.entry(address).or_default().clone()
        };
        Turn {
            _guard: turn.lock_owned().await,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>> {
        self.by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn key(address: IpAddr) -> ThrottleKey {
        ThrottleKey::Address(address)
    }

    #[test]
    fn reservations_up_to_the_limit_are_allowed() {
        let limiter = FailureLimiter::new();
        let now = Instant::now();
        for _ in 0..3 {
            assert!(limiter.reserve(&key(CLIENT), 3, now).is_ok());
        }
        assert_eq!(limiter.reserve(&key(CLIENT), 3, now), Err(60));
        assert!(limiter.reserve(&key(OTHER), 3, now).is_ok());
    }

    #[test]
    fn a_released_reservation_does_not_count() {
        let limiter = FailureLimiter::new();
        let now = Instant::now();
        for _ in 0..10 {
            limiter.reserve(&key(CLIENT), 1, now).unwrap();
            limiter.release(&key(CLIENT));
        }
        assert!(limiter.reserve(&key(CLIENT), 1, now).is_ok());
    }

    #[test]
    fn recorded_failures_throttle_until_the_window_ends() {
        let limiter = FailureLimiter::new();
        let now = Instant::now();
        for _ in 0..3 {
            limiter.record_failure(&key(CLIENT), now);
        }
        assert_eq!(
            limiter.retry_after(&key(CLIENT), 3, now + Duration::from_secs(10)),
            Some(50)
        );
        assert_eq!(limiter.retry_after(&key(OTHER), 3, now), None);
        assert_eq!(limiter.retry_after(&key(CLIENT), 3, now + WINDOW), None);
    }

    #[test]
    fn a_new_window_starts_from_zero() {
        let limiter = FailureLimiter::new();
        let now = Instant::now();
        limiter.reserve(&key(CLIENT), 1, now).unwrap();
        let later = now + WINDOW + Duration::from_secs(1);
        assert!(limiter.reserve(&key(CLIENT), 1, later).is_ok());
    }

    #[test]
    fn the_map_is_bounded_and_forgets_the_oldest_first() {
        let limiter = FailureLimiter::new();
        let now = Instant::now();
        let n_keys = MAX_TRACKED_KEYS + 1_000;
        for key_idx in 0..n_keys {
            limiter.record_failure(&ThrottleKey::AgentHandle(key_idx.to_string()), now);
        }
        assert!(limiter.n_tracked() <= MAX_TRACKED_KEYS);
        let newest = ThrottleKey::AgentHandle((n_keys - 1).to_string());
        assert_eq!(limiter.retry_after(&newest, 1, now), Some(60));
        let oldest = ThrottleKey::AgentHandle("0".to_owned());
        assert_eq!(limiter.retry_after(&oldest, 1, now), None);
    }
}
