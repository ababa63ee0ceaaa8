//! Secret tokens and the agent-token limit: how personal access tokens and agent tokens look,
//! how they are generated from a caller-supplied RNG, and the rule that an agent has at most
//! [`MAX_ACTIVE_AGENT_TOKENS`] active tokens.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::{CryptoRng, RngCore};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// At most this many of an agent's tokens are active at once, so that a token can be rotated
/// (create the new one, roll it out, revoke the old one) but not multiplied.
pub const MAX_ACTIVE_AGENT_TOKENS: usize = 2;

/// Random bytes in a token's lookup handle (16 URL-safe characters).
const HANDLE_BYTES: usize = 12;
/// Random bytes in a token's secret part (43 URL-safe characters).
const SECRET_BYTES: usize = 32;
/// Characters of the encoded handle.
const HANDLE_CHARS: usize = 16;

/// The kinds of secret token agentreg issues, each with GitLab's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A personal access token: `glpat-…`.
    PersonalAccess,
    /// A Kubernetes agent token: `glagent-…`.
    Agent,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::PersonalAccess => "glpat-",
            TokenKind::Agent => "glagent-",
        }
    }
}

/// The public part of a token that lets the store find its record without scanning.
/// It is not secret on its own: the record is only accepted after the whole token verifies.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHandle(String);

impl TokenHandle {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TokenHandle").field(&self.0).finish()
    }
}

/// A freshly generated token: its handle and its plaintext, to be shown exactly once.
pub struct GeneratedToken {
    pub handle: TokenHandle,
    pub plaintext: SecretString,
}

impl fmt::Debug for GeneratedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedToken")
            .field("handle", &self.handle)
            .field("plaintext", &"[redacted]")
            .finish()
    }
}

/// Generates `<prefix><16-char handle><43-char secret>`, all URL-safe, from `rng`.
/// An agent token is therefore `glagent-` and 59 characters, over GitLab's minimum of 50.
pub fn generate_token<R: RngCore + CryptoRng + ?Sized>(
    kind: TokenKind,
    rng: &mut R,
) -> GeneratedToken {
    let mut handle_bytes = [0u8; HANDLE_BYTES];
    let mut secret_bytes = [0u8; SECRET_BYTES];
    rng.fill_bytes(&mut handle_bytes);
    rng.fill_bytes(&mut secret_bytes);
    let handle = URL_SAFE_NO_PAD.encode(handle_bytes);
    let plaintext = format!(
        "{}{handle}{}",
        kind.prefix(),
        URL_SAFE_NO_PAD.encode(secret_bytes)
    );
    GeneratedToken {
        handle: TokenHandle(handle),
        plaintext: SecretString::from(plaintext),
    }
}

/// The handle of a presented token, or `None` if it cannot be a token of `kind` (wrong prefix,
/// wrong length or alphabet). Rejecting malformed tokens here keeps them away from argon2.
pub fn token_handle(kind: TokenKind, presented: &str) -> Option<TokenHandle> {
    let rest = presented.strip_prefix(kind.prefix())?;
    let well_formed = rest.len() == HANDLE_CHARS + 43
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return None;
    }
    Some(TokenHandle(rest[..HANDLE_CHARS].to_owned()))
}

/// The handle of a personal access token that need not have the generated shape (an
/// administrator may choose the root token). A well-formed token uses its embedded handle; any
/// other string gets an HMAC-SHA256 under `handle_key`, a key kept out of the store and its
/// snapshots, so that a stored handle cannot be used to test guesses of the token offline.
#[expect(
    clippy::expect_used,
    reason = "HMAC accepts keys of any length, so building it cannot fail"
)]
pub fn keyed_personal_access_token_handle(presented: &str, handle_key: &[u8; 32]) -> TokenHandle {
    use hmac::Mac as _;
    token_handle(TokenKind::PersonalAccess, presented).unwrap_or_else(|| {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(handle_key)
            .expect("HMAC accepts keys of any length");
        mac.update(presented.as_bytes());
        let digest = mac.finalize().into_bytes();
        TokenHandle(format!(
            "~~{}",
            URL_SAFE_NO_PAD.encode(&digest[..HANDLE_BYTES])
        ))
    })
}

/// The handle that versions before keyed handles gave a chosen token: an unsalted SHA-256
/// prefix. Only looked up, so that tokens stored before the change keep working; never written.
pub fn personal_access_token_handle(presented: &str) -> TokenHandle {
    token_handle(TokenKind::PersonalAccess, presented).unwrap_or_else(|| {
        let digest = Sha256::digest(presented.as_bytes());
        TokenHandle(format!(
            "~{}",
            URL_SAFE_NO_PAD.encode(&digest[..HANDLE_BYTES])
        ))
    })
}

/// Refusal to activate a token beyond [`MAX_ACTIVE_AGENT_TOKENS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("An agent can have only two active tokens at a time")]
pub struct TokenLimitReached {
    pub active: usize,
}

/// GitLab's order of an agent's tokens: most recently used first, never-used last, then by id.
/// `key` gives each item's last use (unix milliseconds) and id.
pub fn sort_by_last_use<T>(items: &mut [T], key: impl Fn(&T) -> (Option<i64>, u64)) {
    items.sort_by_key(|item| {
        let (last_used, id) = key(item);
        (last_used.is_none(), std::cmp::Reverse(last_used), id)
    });
}

/// The ids of one agent's tokens, split by status, with the expiry of those that have one and
/// the overlap deadline of those being rotated (retiring). It owns the token limits: at most
/// [`MAX_ACTIVE_AGENT_TOKENS`] usable tokens that are not retiring, plus at most one retiring
/// token. A token past its expiry, or a retiring token past its deadline, counts for nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentTokenSet {
    active: Vec<u64>,
    revoked: Vec<u64>,
    expiries: BTreeMap<u64, i64>,
    retiring: BTreeMap<u64, i64>,
}

/// Why a token cannot be rotated now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RotationRefused {
    /// The token is revoked, expired, retired or not the agent's.
    #[error("agent token not found")]
    NotFound,
    /// The token is already being rotated: it has a successor.
    #[error("Token is already being rotated")]
    AlreadyRotating,
    /// Another of the agent's tokens is being rotated; only one rotation may overlap at a time.
    #[error("An agent can rotate only one token at a time")]
    RotationInProgress,
}

impl AgentTokenSet {
    /// Rebuilds a set from stored ids, expiries and overlap deadlines. Stored data was produced
    /// by this type, so the limits hold.
    pub fn from_parts(
        active: Vec<u64>,
        revoked: Vec<u64>,
        expiries: BTreeMap<u64, i64>,
        retiring: BTreeMap<u64, i64>,
    ) -> AgentTokenSet {
        AgentTokenSet {
            active,
            revoked,
            expiries,
            retiring,
        }
    }

    /// The active tokens that still authenticate at `now_ms`, retiring ones included.
    pub fn usable(&self, now_ms: i64) -> impl Iterator<Item = u64> + '_ {
        self.active
            .iter()
            .copied()
            .filter(move |token_id| self.is_usable(*token_id, now_ms))
    }

    /// Whether the token is active and past neither its expiry nor its overlap deadline.
    pub fn is_usable(&self, token_id: u64, now_ms: i64) -> bool {
        let past = |deadline: Option<&i64>| deadline.is_some_and(|deadline| *deadline <= now_ms);
        self.is_active(token_id)
            && !past(self.expiries.get(&token_id))
            && !past(self.retiring.get(&token_id))
    }

    /// The usable tokens being rotated at `now_ms`.
    pub fn retiring(&self, now_ms: i64) -> impl Iterator<Item = u64> + '_ {
        self.usable(now_ms)
            .filter(|token_id| self.retiring.contains_key(token_id))
    }

    /// Checks the limit at `now_ms` without changing anything, so a caller can fail fast before
    /// paying for hashing; [`AgentTokenSet::activate`] checks again atomically.
    pub fn check_capacity(&self, now_ms: i64) -> Result<(), TokenLimitReached> {
        let n_counted = self
            .usable(now_ms)
            .filter(|token_id| !self.retiring.contains_key(token_id))
            .count();
        if n_counted >= MAX_ACTIVE_AGENT_TOKENS {
            return Err(TokenLimitReached { active: n_counted });
        }
        Ok(())
    }

    /// Adds a new active token, unless the agent already has the maximum of usable ones at
    /// `now_ms`.
    pub fn activate(
        &mut self,
        token_id: u64,
        expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(), TokenLimitReached> {
        self.check_capacity(now_ms)?;
        self.active.push(token_id);
        if let Some(expires_at_ms) = expires_at_ms {
            self.expiries.insert(token_id, expires_at_ms);
        }
        Ok(())
    }

    /// Checks that `token_id` may be rotated at `now_ms`, without changing anything.
    pub fn check_rotation(&self, token_id: u64, now_ms: i64) -> Result<(), RotationRefused> {
        if !self.is_usable(token_id, now_ms) {
            return Err(RotationRefused::NotFound);
        }
        if self.retiring.contains_key(&token_id) {
            return Err(RotationRefused::AlreadyRotating);
        }
        if self.retiring(now_ms).next().is_some() {
            return Err(RotationRefused::RotationInProgress);
        }
        Ok(())
    }

    /// Rotates `token_id`: it retires at `retiring_until_ms` at the latest, and `successor_id`
    /// takes its slot, so the number of counted tokens does not change.
    pub fn rotate(
        &mut self,
        token_id: u64,
        successor_id: u64,
        retiring_until_ms: i64,
        successor_expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(), RotationRefused> {
        self.check_rotation(token_id, now_ms)?;
        self.retiring.insert(token_id, retiring_until_ms);
        self.active.push(successor_id);
        if let Some(expires_at_ms) = successor_expires_at_ms {
            self.expiries.insert(successor_id, expires_at_ms);
        }
        Ok(())
    }

    /// The overlap deadline of each token being rotated.
    pub fn retiring_deadlines(&self) -> &BTreeMap<u64, i64> {
        &self.retiring
    }

    /// Marks a token revoked. Returns `false` if it is not one of this agent's tokens. Revoking
    /// a revoked token is a no-op that succeeds, as GitLab's revoke is idempotent.
    pub fn revoke(&mut self, token_id: u64) -> bool {
        if let Some(position) = self.active.iter().position(|id| *id == token_id) {
            self.active.remove(position);
            self.revoked.push(token_id);
            return true;
        }
        self.revoked.contains(&token_id)
    }

    /// The expiry of each token that has one.
    pub fn expiries(&self) -> &BTreeMap<u64, i64> {
        &self.expiries
    }

    pub fn is_active(&self, token_id: u64) -> bool {
        self.active.contains(&token_id)
    }

    pub fn contains(&self, token_id: u64) -> bool {
        self.is_active(token_id) || self.revoked.contains(&token_id)
    }

    pub fn active(&self) -> &[u64] {
        &self.active
    }

    pub fn revoked(&self) -> &[u64] {
        &self.revoked
    }

    /// Every token id, active first.
    pub fn all(&self) -> impl Iterator<Item = u64> + '_ {
        self.active.iter().chain(self.revoked.iter()).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chosen_tokens_keyed_handle_depends_on_the_key_and_differs_from_the_legacy_one() {
        let chosen = "my-chosen-root-token-0123456789";

        let one = keyed_personal_access_token_handle(chosen, &[1; 32]);
        let other = keyed_personal_access_token_handle(chosen, &[2; 32]);

        assert_ne!(one, other);
        assert_ne!(one, personal_access_token_handle(chosen));
        assert!(one.as_str().starts_with("~~"));
    }
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use secrecy::ExposeSecret;

    #[test]
    fn agent_token_has_prefix_and_at_least_50_url_safe_chars() {
        let token = generate_token(TokenKind::Agent, &mut StdRng::seed_from_u64(7));
        let plaintext = token.plaintext.expose_secret();
        let rest = plaintext.strip_prefix("glagent-").unwrap();
        assert!(rest.len() >= 50, "{} chars", rest.len());
        assert!(
            rest.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn handle_is_recovered_from_a_generated_token() {
        let token = generate_token(TokenKind::PersonalAccess, &mut StdRng::seed_from_u64(1));
        let handle = token_handle(TokenKind::PersonalAccess, token.plaintext.expose_secret());
        assert_eq!(handle, Some(token.handle));
    }

    #[test]
    fn malformed_or_foreign_tokens_have_no_handle() {
        let agent = generate_token(TokenKind::Agent, &mut StdRng::seed_from_u64(2));
        assert_eq!(
            token_handle(TokenKind::PersonalAccess, agent.plaintext.expose_secret()),
            None
        );
        assert_eq!(token_handle(TokenKind::Agent, "glagent-short"), None);
        assert_eq!(token_handle(TokenKind::Agent, "NONEXISTENT"), None);
        let spaced = format!("glagent-{}", " ".repeat(59));
        assert_eq!(token_handle(TokenKind::Agent, &spaced), None);
    }

    #[test]
    fn chosen_tokens_get_a_stable_derived_handle() {
        let chosen = personal_access_token_handle("my-own-root-token-of-some-length");
        assert_eq!(
            chosen,
            personal_access_token_handle("my-own-root-token-of-some-length")
        );
        assert_ne!(
            chosen,
            personal_access_token_handle("another-root-token-of-some-length")
        );
        let generated = generate_token(TokenKind::PersonalAccess, &mut StdRng::seed_from_u64(5));
        assert_eq!(
            personal_access_token_handle(generated.plaintext.expose_secret()),
            generated.handle
        );
    }

    #[test]
    fn different_rng_states_give_different_tokens() {
        let mut rng = StdRng::seed_from_u64(3);
        let a = generate_token(TokenKind::Agent, &mut rng);
        let b = generate_token(TokenKind::Agent, &mut rng);
        assert_ne!(a.plaintext.expose_secret(), b.plaintext.expose_secret());
    }

    #[test]
    fn debug_output_hides_the_plaintext() {
        let token = generate_token(TokenKind::Agent, &mut StdRng::seed_from_u64(4));
        let debug = format!("{token:?}");
        assert!(!debug.contains(token.plaintext.expose_secret()));
    }

    #[test]
    fn third_active_token_is_rejected() {
        let mut tokens = AgentTokenSet::default();
        tokens.activate(1, None, 0).unwrap();
        tokens.activate(2, None, 0).unwrap();
        assert_eq!(
            tokens.activate(3, None, 0),
            Err(TokenLimitReached { active: 2 })
        );
        assert_eq!(tokens.active(), &[1, 2]);
    }

    #[test]
    fn an_expired_token_stops_counting_toward_the_limit() {
        let mut tokens = AgentTokenSet::default();
        tokens.activate(1, Some(100), 0).unwrap();
        tokens.activate(2, None, 0).unwrap();
        assert_eq!(
            tokens.activate(3, None, 99),
            Err(TokenLimitReached { active: 2 })
        );
        tokens.activate(3, None, 100).unwrap();
        assert_eq!(tokens.usable(100).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(
            tokens.activate(4, None, 100),
            Err(TokenLimitReached { active: 2 })
        );
    }

    #[test]
    fn rotating_one_of_two_tokens_keeps_two_counted_plus_one_retiring() {
        let mut tokens = AgentTokenSet::default();
        tokens.activate(1, None, 0).unwrap();
        tokens.activate(2, None, 0).unwrap();
        tokens.rotate(1, 3, 100, None, 0).unwrap();
        assert_eq!(tokens.usable(0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(tokens.retiring(0).collect::<Vec<_>>(), vec![1]);
        assert!(tokens.activate(4, None, 0).is_err());
        assert_eq!(
            tokens.rotate(1, 5, 100, None, 0),
            Err(RotationRefused::AlreadyRotating)
        );
        assert_eq!(
            tokens.rotate(2, 5, 100, None, 0),
            Err(RotationRefused::RotationInProgress)
        );
        assert_eq!(
            tokens.rotate(9, 5, 100, None, 0),
            Err(RotationRefused::NotFound)
        );
        // At the deadline the retiring token is gone and another rotation may start.
        assert_eq!(tokens.usable(100).collect::<Vec<_>>(), vec![2, 3]);
        tokens.rotate(2, 5, 200, None, 100).unwrap();
    }

    #[test]
    fn revoked_and_expired_tokens_cannot_be_rotated() {
        let mut tokens = AgentTokenSet::default();
        tokens.activate(1, Some(10), 0).unwrap();
        tokens.activate(2, None, 0).unwrap();
        assert!(tokens.revoke(2));
        assert_eq!(tokens.check_rotation(1, 10), Err(RotationRefused::NotFound));
        assert_eq!(tokens.check_rotation(2, 0), Err(RotationRefused::NotFound));
    }

    #[test]
    fn revoking_frees_exactly_one_slot() {
        let mut tokens =
            AgentTokenSet::from_parts(vec![1, 2], vec![], BTreeMap::new(), BTreeMap::new());
        assert!(tokens.revoke(1));
        tokens.activate(3, None, 0).unwrap();
        assert!(tokens.activate(4, None, 0).is_err());
        assert!(tokens.contains(1) && !tokens.is_active(1));
    }

    #[test]
    fn revoking_twice_succeeds_and_unknown_tokens_are_refused() {
        let mut tokens =
            AgentTokenSet::from_parts(vec![1], vec![], BTreeMap::new(), BTreeMap::new());
        assert!(tokens.revoke(1));
        assert!(tokens.revoke(1));
        assert!(!tokens.revoke(9));
        assert_eq!(tokens.all().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn recently_used_tokens_come_first_and_unused_ones_last_by_id() {
        let mut tokens = vec![(None, 1), (Some(5), 2), (Some(9), 3), (None, 0)];
        sort_by_last_use(&mut tokens, |token| *token);
        assert_eq!(
            tokens,
            vec![(Some(9), 3), (Some(5), 2), (None, 0), (None, 1)]
        );
    }

    #[test]
    fn limit_message_is_gitlabs() {
        assert_eq!(
            TokenLimitReached { active: 2 }.to_string(),
            "An agent can have only two active tokens at a time"
        );
    }
}
