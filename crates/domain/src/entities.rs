//! The records agentreg keeps, as the app and both edges see them: plain values with typed ids,
//! built by a storage backend and never holding a secret in clear. Token hashes stay inside the
//! storage port; private keys appear here only sealed.

use crate::access::AccessLevel;
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
    pub scopes: Vec<String>,
    /// ISO date (`YYYY-MM-DD`) from which the token no longer works.
    pub expires_at: Option<String>,
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
