//! Aggregation of failed-authentication audit events, so that a flood cannot fill the disk:
//! the first failure of a client address and credential kind in a minute is recorded at once,
//! the rest of that minute's failures as one event with their count when the minute is over.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The period over which one address's failures are aggregated.
pub(crate) const AGGREGATION_WINDOW: Duration = Duration::from_secs(60);
/// The most addresses aggregated at once; beyond, failures are pooled under no address.
const MAX_TRACKED: usize = 10_000;

/// Failures awaiting their aggregated event.
#[derive(Default)]
pub(crate) struct FailureAudit {
    pending: Mutex<HashMap<(Option<IpAddr>, &'static str), Pending>>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    started: Instant,
    /// Failures after the first, which was recorded at once.
    n_more: u64,
}

/// An aggregated event to write: `n_failures` failures of one kind from one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Aggregated {
    pub(crate) client: Option<IpAddr>,
    pub(crate) credential: &'static str,
    pub(crate) n_failures: u64,
}

impl FailureAudit {
    /// Notes a failure; `true` if it is the first of its minute and must be recorded now.
    pub(crate) fn note(
        &self,
        client: Option<IpAddr>,
        credential: &'static str,
        now: Instant,
    ) -> bool {
        let mut pending = self.lock();
        let client = if pending.len() >= MAX_TRACKED && !pending.contains_key(&(client, credential))
        {
            None
        } else {
            client
        };
        match pending.get_mut(&(client, credential)) {
            // An ended window that still holds failures keeps counting until it is flushed.
            Some(entry)
                if entry.n_more > 0
                    || now.saturating_duration_since(entry.started) < AGGREGATION_WINDOW =>
            {
                entry.n_more = entry.n_more.saturating_add(1);
                false
            }
            Some(_) | None => {
                pending.insert(
                    (client, credential),
                    Pending {
                        started: now,
                        n_more: 0,
                    },
                );
                true
            }
        }
    }

    /// Takes the aggregates whose minute is over (all of them with `everything`, at shutdown).
    pub(crate) fn take_due(&self, now: Instant, everything: bool) -> Vec<Aggregated> {
        let mut pending = self.lock();
        let mut due = Vec::new();
        pending.retain(|(client, credential), entry| {
            let ended = now.saturating_duration_since(entry.started) >= AGGREGATION_WINDOW;
            if !(ended || everything) {
                return true;
            }
            if entry.n_more > 0 {
                due.push(Aggregated {
                    client: *client,
                    credential,
                    n_failures: entry.n_more,
                });
            }
            false
        });
        due
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Option<IpAddr>, &'static str), Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)));

    #[test]
    fn only_the_first_failure_of_a_minute_is_recorded_at_once() {
        let audit = FailureAudit::default();
        let now = Instant::now();

        let first = audit.note(CLIENT, "personal_access_token", now);
        let rest: Vec<bool> = (0..99)
            .map(|_| audit.note(CLIENT, "personal_access_token", now))
            .collect();

        assert!(first);
        assert!(rest.iter().all(|recorded| !recorded));
        assert!(audit.take_due(now, false).is_empty());
        assert_eq!(
            audit.take_due(now + AGGREGATION_WINDOW, false),
            vec![Aggregated {
                client: CLIENT,
                credential: "personal_access_token",
                n_failures: 99
            }]
        );
        assert!(audit.note(CLIENT, "personal_access_token", now + AGGREGATION_WINDOW));
    }

    #[test]
    fn a_lone_failure_leaves_nothing_to_flush() {
        let audit = FailureAudit::default();
        let now = Instant::now();
        assert!(audit.note(CLIENT, "kas_jwt", now));
        assert!(audit.take_due(now, true).is_empty());
    }
}
