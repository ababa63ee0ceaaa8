//! GitLab's admin token API (17.5+): an administrator finds a token by its value, whatever its
//! kind, and revokes it, without knowing its project. Both calls are audited; the value is
//! never recorded.

use super::audit::{self, AuditEntry};
use super::{App, Caller, Error, author, now_ms};
use agentreg_domain::access::Scope;
use agentreg_domain::entities::{AgentToken, AuditScope, PersonalAccessToken, RevocationReason};
use agentreg_domain::tokens::{TokenKind, personal_access_token_handle, token_handle};
use agentreg_storage::agent_tokens::RevokeAgentTokenError;
use agentreg_storage::audit::NewAuditEvent;
use agentreg_storage::port::RevokeAgentToken;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;

/// A token found by its value.
#[derive(Debug, Clone)]
pub enum IdentifiedToken {
    Agent(AgentToken),
    PersonalAccess(PersonalAccessToken),
}

/// The revocation reason of a token revoked through this API.
const REVOKED_BY_ADMIN: &str = "revoked by an administrator through the admin token API";

/// GitLab's admin token API: `app.admin_tokens()`.
#[derive(Clone, Copy)]
pub struct AdminTokens<'a> {
    app: &'a App,
}

impl App {
    pub fn admin_tokens(&self) -> AdminTokens<'_> {
        AdminTokens { app: self }
    }
}

impl AdminTokens<'_> {
    /// `POST /admin/token`: the token whose value this is.
    pub async fn identify(
        &self,
        caller: &Caller,
        token: Option<SecretString>,
    ) -> Result<IdentifiedToken, Error> {
        let token = self.app.admin_token_parameter(caller, token)?;
        let identified = self.app.find_token(&token).await?;
        let (scope, entity_id, entity_type) = identified_target(&identified);
        let event = NewAuditEvent {
            scope,
            author_id: author(caller).user_id,
            entity_id,
            entity_type,
            details: serde_json::json!({
                "event_name": "admin_token_identified",
                "custom_message": "Identified a token by its value through the admin token API",
                "author_id": author(caller).user_id.map(|id| id.get()),
                "impersonated_by_user_id": caller.sudo_by.map(|id| id.get()),
                "target_id": entity_id,
                "target_type": entity_type,
                "outcome": "success",
            }),
        };
        self.app
            .storage()
            .record_audit_event(event, now_ms())
            .await?;
        Ok(identified)
    }

    /// `DELETE /admin/token`: revokes the token whose value this is, at once on every replica.
    pub async fn revoke(&self, caller: &Caller, token: Option<SecretString>) -> Result<(), Error> {
        let token = self.app.admin_token_parameter(caller, token)?;
        match self.app.find_token(&token).await? {
            IdentifiedToken::Agent(agent_token) => self.app.admin_revoke(caller, agent_token).await,
            IdentifiedToken::PersonalAccess(pat) => self.app.admin_revoke_pat(caller, pat).await,
        }
    }
}

impl App {
    /// GitLab's order: administrators only (`authenticated_as_admin!` runs before parameter
    /// validation), the `api` scope, then the `token` parameter.
    fn admin_token_parameter(
        &self,
        caller: &Caller,
        token: Option<SecretString>,
    ) -> Result<SecretString, Error> {
        if !caller.user.is_admin {
            return Err(Error::Forbidden);
        }
        if !caller.scopes.contains(&Scope::Api) {
            return Err(Error::InsufficientScope);
        }
        token.ok_or_else(|| Error::missing("token"))
    }

    /// The token this value is, verified with argon2; a value of no known kind is refused.
    async fn find_token(&self, token: &SecretString) -> Result<IdentifiedToken, Error> {
        let value = token.expose_secret();
        if value.starts_with(TokenKind::Agent.prefix()) {
            let Some(handle) = token_handle(TokenKind::Agent, value) else {
                return Err(Error::AdminTokenNotFound);
            };
            let Some(credential) = self.storage().agent_token_by_handle(&handle).await? else {
                return Err(Error::AdminTokenNotFound);
            };
            if !self.verify_secret(token, credential.secret_hash).await? {
                return Err(Error::AdminTokenNotFound);
            }
            let mut found = credential.token.as_of(now_ms());
            found.last_used_at_ms = self.inner.usage.overlay(found.id, found.last_used_at_ms);
            return Ok(IdentifiedToken::Agent(found));
        }
        if value.starts_with(TokenKind::PersonalAccess.prefix()) {
            let handle = personal_access_token_handle(value);
            let found = self
                .storage()
                .personal_access_token_by_handle(&handle)
                .await?;
            let Some(credential) = found else {
                return Err(Error::AdminTokenNotFound);
            };
            if !self.verify_secret(token, credential.secret_hash).await? {
                return Err(Error::AdminTokenNotFound);
            }
            return Ok(IdentifiedToken::PersonalAccess(credential.token));
        }
        Err(Error::TokenTypeNotSupported)
    }

    async fn admin_revoke(&self, caller: &Caller, token: AgentToken) -> Result<(), Error> {
        let author = author(caller);
        let user_id = author.user_id;
        let audit = Arc::new(move |revoked: &AgentToken| {
            let entry = AuditEntry {
                event_name: "cluster_agent_token_revoked",
                message: format!(
                    "Revoked cluster agent token '{}' through the admin token API",
                    revoked.name
                ),
                entity_type: "Clusters::AgentToken",
                entity_id: revoked.id.get(),
                target_details: &revoked.name,
            };
            let mut event = audit::event(revoked.project_id, author, entry);
            event.details["revoked_reason"] = serde_json::json!(
                revoked
                    .revocation
                    .as_ref()
                    .map(|revocation| revocation.reason.as_str())
            );
            event
        });
        let revoke = RevokeAgentToken {
            by_user_id: user_id,
            reason: RevocationReason::parse(REVOKED_BY_ADMIN)
                .map_err(|too_long| Error::internal("the admin reason is too long", too_long))?,
        };
        let revoked = self
            .storage()
            .revoke_agent_token(
                token.project_id,
                token.agent_id,
                token.id,
                revoke,
                now_ms(),
                Some(audit),
            )
            .await;
        match revoked {
            Ok(revoked) => {
                self.inner.agent_tokens.invalidate(&[revoked.id]);
                Ok(())
            }
            Err(RevokeAgentTokenError::NotFound) => Err(Error::AdminTokenNotFound),
            Err(RevokeAgentTokenError::Store(error)) => Err(error.into()),
        }
    }
}

impl App {
    async fn admin_revoke_pat(
        &self,
        caller: &Caller,
        token: PersonalAccessToken,
    ) -> Result<(), Error> {
        let author = author(caller);
        let audit = Arc::new(move |revoked: &PersonalAccessToken| NewAuditEvent {
            scope: AuditScope::Instance,
            author_id: author.user_id,
            entity_id: revoked.id.get(),
            entity_type: "PersonalAccessToken",
            details: serde_json::json!({
                "event_name": "personal_access_token_revoked",
                "custom_message": format!(
                    "Revoked personal access token '{}' through the admin token API",
                    revoked.name
                ),
                "author_id": author.user_id.map(|id| id.get()),
                "impersonated_by_user_id": author.sudo_by.map(|id| id.get()),
                "target_id": revoked.id.get(),
                "target_type": "PersonalAccessToken",
                "target_details": revoked.name,
                "outcome": "success",
            }),
        });
        let revoked = self
            .storage()
            .revoke_personal_access_token(token.id, now_ms(), Some(audit))
            .await?;
        let Some(revoked) = revoked else {
            return Err(Error::AdminTokenNotFound);
        };
        self.inner.personal_tokens.invalidate(&[revoked.id]);
        Ok(())
    }
}

/// Whose audit trail a lookup goes to, and what it names.
fn identified_target(identified: &IdentifiedToken) -> (AuditScope, u64, &'static str) {
    match identified {
        IdentifiedToken::Agent(token) => (
            AuditScope::Project(token.project_id),
            token.id.get(),
            "Clusters::AgentToken",
        ),
        IdentifiedToken::PersonalAccess(token) => {
            (AuditScope::Instance, token.id.get(), "PersonalAccessToken")
        }
    }
}
