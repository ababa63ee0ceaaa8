//! The records agentreg keeps, as the app and both edges see them: plain values with typed ids,
//! built by a storage backend and never holding a secret in clear. Token hashes stay inside the
//! storage port; private keys appear here only sealed.

use crate::access::{AccessLevel, ExpiryDate, Scope};
use crate::ids::{
    AgentId, AgentTokenId, AuditEventId, PersonalAccessTokenId, ProjectId, UrlConfigurationId,
    UserId,
};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub name: String,
    pub email: String,
    pub is_admin: bool,
    pub created_at_ms: i64,
}

/// A personal access token: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalAccessToken {
    pub id: PersonalAccessTokenId,
    pub user_id: UserId,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// The day from which the token no longer works.
    pub expires_at: Option<ExpiryDate>,
    pub revoked: bool,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub path: String,
    pub description: Option<String>,
    pub owner: User,
    pub created_at_ms: i64,
}

impl Project {
    /// `Owner Name / Project Name`.
    pub fn name_with_namespace(&self) -> String {
        format!("{} / {}", self.owner.name, self.name)
    }

    /// `owner/path`.
    pub fn path_with_namespace(&self) -> String {
        format!("{}/{}", self.owner.username, self.path)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user: User,
    pub access_level: AccessLevel,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: AgentId,
    pub project_id: ProjectId,
    pub name: String,
    pub created_by_user_id: Option<UserId>,
    pub created_at_ms: i64,
    /// Changes when the agent's URL configuration is created or deleted.
    pub updated_at_ms: i64,
    pub url_configuration_id: Option<UrlConfigurationId>,
}

impl Agent {
    /// Whether the agent has a URL configuration (GitLab's `is_receptive`).
    pub fn is_receptive(&self) -> bool {
        self.url_configuration_id.is_some()
    }
}

/// GitLab's two token states. A revoked token keeps its record but never authenticates again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenStatus {
    Active,
    Revoked,
}

impl TokenStatus {
    /// GitLab's wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Active => "active",
            TokenStatus::Revoked => "revoked",
        }
    }

    pub fn is_active(self) -> bool {
        self == TokenStatus::Active
    }
}

/// An agent token: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentToken {
    pub id: AgentTokenId,
    pub agent_id: AgentId,
    pub project_id: ProjectId,
    pub name: String,
    pub description: Option<String>,
    pub status: TokenStatus,
    pub created_by_user_id: Option<UserId>,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    /// When the token stops authenticating on its own; `None` for a token that never expires.
    pub expires_at_ms: Option<i64>,
    /// Who revoked the token, when and why. `None` while the token is active, and also for a
    /// token revoked before agentreg kept these details.
    pub revocation: Option<Revocation>,
    /// Set once the token is rotated: it keeps working until its successor is first used, or
    /// until this deadline, whichever comes first.
    pub retiring_until_ms: Option<i64>,
    /// The token that replaced this one in a rotation.
    pub successor_id: Option<AgentTokenId>,
    /// The token this one replaced, while that token is still retiring: the first successful use
    /// of this token retires it.
    pub pending_predecessor_id: Option<AgentTokenId>,
}

/// Why a token stopped working: one of agentreg's reasons, or an administrator's free text of at
/// most [`RevocationReason::MAX_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationReason(String);

/// A revocation reason longer than [`RevocationReason::MAX_CHARS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("reason is too long (maximum is 255 characters)")]
pub struct RevocationReasonTooLong;

impl RevocationReason {
    /// The longest free-text reason accepted.
    pub const MAX_CHARS: usize = 255;

    /// A caller's reason; blank text means the plain `revoked`.
    pub fn parse(text: &str) -> Result<RevocationReason, RevocationReasonTooLong> {
        let text = text.trim();
        if text.chars().count() > RevocationReason::MAX_CHARS {
            return Err(RevocationReasonTooLong);
        }
        if text.is_empty() {
            return Ok(RevocationReason::revoked());
        }
        Ok(RevocationReason(text.to_owned()))
    }

    /// Revoked by a caller who gave no reason.
    pub fn revoked() -> RevocationReason {
        RevocationReason("revoked".to_owned())
    }

    /// The token reached its `expires_at`.
    pub fn expired() -> RevocationReason {
        RevocationReason("expired".to_owned())
    }

    /// The token was replaced by its successor in a rotation.
    pub fn rotated() -> RevocationReason {
        RevocationReason("rotated".to_owned())
    }

    /// A reason read back from storage, which only ever holds parsed reasons.
    pub fn from_stored(text: String) -> RevocationReason {
        RevocationReason(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The details of a revoked token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub revoked_at_ms: i64,
    /// `None` when nobody revoked it (it expired).
    pub revoked_by_user_id: Option<UserId>,
    pub reason: RevocationReason,
}

impl AgentToken {
    /// Whether the token authenticates at `now_ms`: active, and past neither its expiry nor
    /// its overlap deadline.
    pub fn is_usable(&self, now_ms: i64) -> bool {
        self.status.is_active() && self.ended(now_ms).is_none()
    }

    /// The first moment after which the token stops working on its own (expiry or the end of a
    /// rotation's overlap), if any.
    pub fn usable_until_ms(&self) -> Option<i64> {
        match (self.expires_at_ms, self.retiring_until_ms) {
            (Some(expires), Some(retiring)) => Some(expires.min(retiring)),
            (expires, retiring) => expires.or(retiring),
        }
    }

    /// The token as GitLab clients should see it at `now_ms`: a token past its expiry reads as
    /// revoked then, with the reason `expired`; a retiring token past its overlap deadline reads
    /// as revoked then, with the reason `rotated`.
    pub fn as_of(mut self, now_ms: i64) -> AgentToken {
        if self.status.is_active()
            && let Some(revocation) = self.ended(now_ms)
        {
            self.status = TokenStatus::Revoked;
            self.revocation = Some(revocation);
        }
        self
    }

    /// How an active token ended on its own by `now_ms`, if it did.
    fn ended(&self, now_ms: i64) -> Option<Revocation> {
        let expired = self
            .expires_at_ms
            .filter(|at| *at <= now_ms)
            .map(|at| (at, RevocationReason::expired()));
        let retired = self
            .retiring_until_ms
            .filter(|at| *at <= now_ms)
            .map(|at| (at, RevocationReason::rotated()));
        let (revoked_at_ms, reason) = match (expired, retired) {
            (Some(expired), Some(retired)) if retired.0 < expired.0 => retired,
            (Some(expired), Some(_) | None) => expired,
            (None, retired) => retired?,
        };
        Some(Revocation {
            revoked_at_ms,
            revoked_by_user_id: None,
            reason,
        })
    }
}

/// How the agent server authenticates to a receptive agent, with private keys sealed (encrypted
/// under the instance key) by the app before they reach storage.
#[derive(Clone, PartialEq, Eq)]
pub enum SealedUrlAuth {
    /// JWT mode: a generated Ed25519 key pair.
    Jwt {
        public_key: Vec<u8>,
        sealed_private_key: Vec<u8>,
    },
    /// mTLS mode: a client certificate and its key.
    Mtls {
        client_cert: String,
        sealed_client_key: Vec<u8>,
    },
}

impl fmt::Debug for SealedUrlAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealedUrlAuth::Jwt { .. } => f.write_str("Jwt { .. }"),
            SealedUrlAuth::Mtls { .. } => f.write_str("Mtls { .. }"),
        }
    }
}

/// A receptive agent's URL configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlConfiguration {
    pub id: UrlConfigurationId,
    pub agent_id: AgentId,
    pub project_id: ProjectId,
    pub url: String,
    pub ca_cert: Option<String>,
    pub tls_host: Option<String>,
    pub auth: SealedUrlAuth,
    pub created_by_user_id: Option<UserId>,
    pub created_at_ms: i64,
}

/// Whose audit trail an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditScope {
    /// Instance-wide events, such as failed authentications.
    Instance,
    Project(ProjectId),
}

/// An event's details: a JSON object (action, target, outcome), rendered by the app when the
/// event is recorded and passed through verbatim by storage and the edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditDetails(String);

impl AuditDetails {
    /// Wraps JSON object text. The app renders it; storage gives back what it was given.
    pub fn from_json(json: String) -> AuditDetails {
        AuditDetails(json)
    }

    pub fn as_json(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: AuditEventId,
    pub scope: AuditScope,
    pub author_id: Option<UserId>,
    pub entity_id: u64,
    pub entity_type: String,
    pub details: AuditDetails,
    pub created_at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(expires_at_ms: Option<i64>) -> AgentToken {
        AgentToken {
            id: AgentTokenId::new(1),
            agent_id: AgentId::new(1),
            project_id: ProjectId::new(1),
            name: "t".to_owned(),
            description: None,
            status: TokenStatus::Active,
            created_by_user_id: None,
            created_at_ms: 0,
            last_used_at_ms: None,
            expires_at_ms,
            revocation: None,
            retiring_until_ms: None,
            successor_id: None,
            pending_predecessor_id: None,
        }
    }

    #[test]
    fn a_token_past_its_expiry_reads_as_revoked_with_reason_expired() {
        let expiring = token(Some(100));
        assert!(expiring.is_usable(99));
        assert!(!expiring.is_usable(100));
        assert_eq!(expiring.clone().as_of(99), expiring);
        let expired = expiring.as_of(100);
        assert_eq!(expired.status, TokenStatus::Revoked);
        let revocation = expired.revocation.unwrap();
        assert_eq!(revocation.reason.as_str(), "expired");
        assert_eq!(revocation.revoked_at_ms, 100);
        assert_eq!(revocation.revoked_by_user_id, None);
    }

    #[test]
    fn a_retiring_token_past_its_deadline_reads_as_revoked_with_reason_rotated() {
        let retiring = AgentToken {
            retiring_until_ms: Some(50),
            ..token(Some(100))
        };
        assert!(retiring.is_usable(49));
        assert_eq!(retiring.usable_until_ms(), Some(50));
        let retired = retiring.as_of(60);
        assert_eq!(retired.status, TokenStatus::Revoked);
        let revocation = retired.revocation.unwrap();
        assert_eq!(revocation.reason.as_str(), "rotated");
        assert_eq!(revocation.revoked_at_ms, 50);
        let expiring_first = AgentToken {
            retiring_until_ms: Some(150),
            ..token(Some(100))
        };
        let expired = expiring_first.as_of(200).revocation.unwrap();
        assert_eq!(
            (expired.revoked_at_ms, expired.reason.as_str()),
            (100, "expired")
        );
    }

    #[test]
    fn a_token_without_expiry_stays_usable() {
        assert!(token(None).is_usable(i64::MAX));
    }

    #[test]
    fn revocation_reasons_are_at_most_255_characters_and_blank_means_revoked() {
        assert_eq!(RevocationReason::parse("  ").unwrap().as_str(), "revoked");
        assert_eq!(
            RevocationReason::parse("leaked in CI log")
                .unwrap()
                .as_str(),
            "leaked in CI log"
        );
        assert!(RevocationReason::parse(&"é".repeat(255)).is_ok());
        assert_eq!(
            RevocationReason::parse(&"x".repeat(256)),
            Err(RevocationReasonTooLong)
        );
    }
}
