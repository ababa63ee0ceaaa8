//! When agent tokens were last used. Every successful agent authentication records `now` here,
//! in memory; reads overlay these values at once, and a background task writes them to the store
//! in one transaction per interval (and at shutdown). An authentication therefore costs a map
//! insert rather than a storage transaction, which would also make concurrent callers of one
//! token conflict with each other.

use agentreg_domain::ids::AgentTokenId;
use std::collections::HashMap;
use std::sync::Mutex;

/// How often pending last-use times are written to the store.
pub const USAGE_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct TokenUsage {
    pending: Mutex<HashMap<AgentTokenId, i64>>,
}

impl TokenUsage {
    /// Records a use; a time never moves backwards.
    pub(crate) fn record(&self, token_id: AgentTokenId, used_at_ms: i64) {
        let mut pending = self.lock();
        let entry = pending.entry(token_id).or_insert(used_at_ms);
        *entry = (*entry).max(used_at_ms);
    }

    /// The later of the stored last use and a pending one.
    pub(crate) fn overlay(&self, token_id: AgentTokenId, stored: Option<i64>) -> Option<i64> {
        let pending = self.lock().get(&token_id).copied();
        match (stored, pending) {
            (Some(stored), Some(pending)) => Some(stored.max(pending)),
            (stored, pending) => stored.or(pending),
        }
    }

    /// The pending uses, to be written.
    pub(crate) fn snapshot(&self) -> Vec<(AgentTokenId, i64)> {
        self.lock().iter().map(|(id, at)| (*id, *at)).collect()
    }

    /// Forgets written uses, unless a newer use arrived meanwhile.
    pub(crate) fn forget_written(&self, written: &[(AgentTokenId, i64)]) {
        let mut pending = self.lock();
        for (token_id, used_at_ms) in written {
            if pending.get(token_id) == Some(used_at_ms) {
                pending.remove(token_id);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentTokenId, i64>> {
        // Every mutation is a single map operation, so a poisoned map is still consistent.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: AgentTokenId = AgentTokenId::new(1);
    const TWO: AgentTokenId = AgentTokenId::new(2);

    #[test]
    fn pending_uses_overlay_stored_ones_and_never_go_back() {
        let usage = TokenUsage::default();
        usage.record(ONE, 50);
        usage.record(ONE, 40);
        assert_eq!(usage.overlay(ONE, Some(10)), Some(50));
        assert_eq!(usage.overlay(ONE, Some(90)), Some(90));
        assert_eq!(usage.overlay(TWO, None), None);
    }

    #[test]
    fn a_use_newer_than_the_written_one_stays_pending() {
        let usage = TokenUsage::default();
        usage.record(ONE, 50);
        let written = usage.snapshot();
        usage.record(ONE, 60);
        usage.forget_written(&written);
        assert_eq!(usage.snapshot(), vec![(ONE, 60)]);
        usage.forget_written(&[(ONE, 60)]);
        assert!(usage.snapshot().is_empty());
    }
}
