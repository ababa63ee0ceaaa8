//! An in-memory cache of verified tokens, keyed by the SHA-256 digest of the presented token, so
//! that only the first use of a token pays for argon2.
//!
//! Invariant: an entry is never served after its token was revoked or deleted. Invalidation
//! removes matching entries and bumps a generation counter; a verification that started before
//! an invalidation may not insert its result (it might be stale). While the feed of other
//! replicas' revocations is interrupted, the cache is suspended: empty, and neither served nor
//! filled, because a revocation might be missed.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// Beyond this many entries the cache starts over rather than grow without bound.
const MAX_ENTRIES: usize = 100_000;

/// SHA-256 of a presented token. A fast digest is enough: it only ever compares a token with one
/// that already passed argon2, and it never leaves memory.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub(crate) fn of(token: &SecretString) -> TokenDigest {
        TokenDigest(Sha256::digest(token.expose_secret().as_bytes()).into())
    }
}

/// The generation observed before a verification started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Generation(u64);

/// Verified tokens of one kind, each with its token's id `Id`.
pub(crate) struct TokenCache<Id, V> {
    inner: Mutex<Entries<Id, V>>,
}

struct Entries<Id, V> {
    by_digest: HashMap<TokenDigest, (Id, V)>,
    generation: u64,
    suspended: bool,
}

impl<Id: Copy + PartialEq, V: Clone> TokenCache<Id, V> {
    pub(crate) fn new() -> TokenCache<Id, V> {
        TokenCache {
            inner: Mutex::new(Entries {
                by_digest: HashMap::new(),
                generation: 0,
                suspended: false,
            }),
        }
    }

    pub(crate) fn get(&self, digest: &TokenDigest) -> Option<V> {
        let entries = self.lock();
        entries
            .by_digest
            .get(digest)
            .map(|(_, value)| value.clone())
    }

    /// Empties the cache and keeps it empty until [`TokenCache::resume`].
    pub(crate) fn suspend(&self) {
        let mut entries = self.lock();
        entries.suspended = true;
        entries.generation += 1;
        entries.by_digest.clear();
    }

    pub(crate) fn resume(&self) {
        let mut entries = self.lock();
        entries.suspended = false;
        entries.generation += 1;
    }

    pub(crate) fn generation(&self) -> Generation {
        Generation(self.lock().generation)
    }

    /// Caches a verified token unless something was invalidated since `observed`.
    pub(crate) fn insert(&self, observed: Generation, digest: TokenDigest, token_id: Id, value: V) {
        let mut entries = self.lock();
        if entries.suspended || entries.generation != observed.0 {
            return;
        }
        if entries.by_digest.len() >= MAX_ENTRIES {
            entries.by_digest.clear();
        }
        entries.by_digest.insert(digest, (token_id, value));
    }

    /// Forgets the given tokens at once.
    pub(crate) fn invalidate(&self, token_ids: &[Id]) {
        let mut entries = self.lock();
        entries.generation += 1;
        entries
            .by_digest
            .retain(|_, (token_id, _)| !token_ids.contains(token_id));
    }

    /// Forgets one entry by digest (an expired token).
    pub(crate) fn remove(&self, digest: &TokenDigest) {
        self.lock().by_digest.remove(digest);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<Id, V>> {
        // A panic while holding this lock cannot leave the map inconsistent (every mutation is a
        // single std call), so a poisoned lock is still safe to use.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(text: &str) -> TokenDigest {
        TokenDigest::of(&SecretString::from(text))
    }

    #[test]
    fn verified_tokens_are_served_from_the_cache() {
        let cache = TokenCache::new();
        let generation = cache.generation();
        cache.insert(generation, digest("a"), 1, "agent-1");
        assert_eq!(cache.get(&digest("a")), Some("agent-1"));
        assert_eq!(cache.get(&digest("b")), None);
    }

    #[test]
    fn invalidated_tokens_are_forgotten() {
        let cache = TokenCache::new();
        cache.insert(cache.generation(), digest("a"), 1, "x");
        cache.insert(cache.generation(), digest("b"), 2, "y");
        cache.invalidate(&[1]);
        assert_eq!(cache.get(&digest("a")), None);
        assert_eq!(cache.get(&digest("b")), Some("y"));
    }

    #[test]
    fn a_suspended_cache_is_empty_and_stays_empty_until_resumed() {
        let cache = TokenCache::new();
        cache.insert(cache.generation(), digest("a"), 1, "x");
        cache.suspend();
        assert_eq!(cache.get(&digest("a")), None);
        cache.insert(cache.generation(), digest("a"), 1, "x");
        assert_eq!(cache.get(&digest("a")), None);
        cache.resume();
        cache.insert(cache.generation(), digest("a"), 1, "x");
        assert_eq!(cache.get(&digest("a")), Some("x"));
    }

    #[test]
    fn a_verification_that_raced_an_invalidation_is_not_cached() {
        let cache = TokenCache::new();
        let before = cache.generation();
        cache.invalidate(&[1]);
        cache.insert(before, digest("a"), 1, "stale");
        assert_eq!(cache.get(&digest("a")), None);
    }
}
