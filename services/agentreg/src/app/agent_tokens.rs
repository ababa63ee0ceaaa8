//! Agent tokens: listing the active ones, reading one, creating one (the secret is returned this
//! once) under the two-active-token limit, and revoking one so that it stops authenticating at
//! once.

use super::audit::{self, AuditEntry};
use super::pagination::{PageInfo, Pagination};
use super::{App, Caller, Error, author, now_ms};
use agentreg_domain::entities::AgentToken;
use agentreg_domain::ids::{AgentId, AgentTokenId, ProjectRef};
use agentreg_domain::names::{TokenDescription, TokenName};
use agentreg_domain::tokens::{TokenKind, generate_token, sort_by_last_use};
use agentreg_storage::agent_tokens::{CreateAgentTokenError, RevokeAgentTokenError};
use agentreg_storage::port::NewAgentToken;
use secrecy::SecretString;
use std::sync::Arc;

/// GitLab's entity type for agent tokens in audit events.
const TOKEN_ENTITY: &str = "Clusters::AgentToken";

/// A token just created, with its secret shown this once.
pub struct CreatedAgentToken {
    pub token: AgentToken,
    pub plaintext: SecretString,
}

/// `POST .../tokens` parameters as sent.
#[derive(Debug, Default)]
pub struct NewAgentTokenInput {
    pub name: Option<String>,
    pub description: Option<String>,
}

impl App {
    /// The agent's active tokens, most recently used first.
    pub async fn list_agent_tokens(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: AgentId,
        pagination: Pagination,
    ) -> Result<(Vec<AgentToken>, PageInfo), Error> {
        let access = self.project_access(caller, project_ref).await?;
        if !access.role.can_read_cluster() {
            return Err(Error::RecordNotFound);
        }
        let agent = self.find_agent(&access, agent_id).await?;
        let mut tokens = self
            .storage()
            .active_agent_tokens(access.project.id, agent.id)
            .await?
            .ok_or(Error::RecordNotFound)?;
        for token in &mut tokens {
            token.last_used_at_ms = self.inner.usage.overlay(token.id, token.last_used_at_ms);
        }
        sort_by_last_use(&mut tokens, |token| (token.last_used_at_ms, token.id.get()));
        Ok(pagination.slice(tokens))
    }

    /// One active token of the agent; a revoked token is not found.
    pub async fn agent_token(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: AgentId,
        token_id: AgentTokenId,
    ) -> Result<AgentToken, Error> {
        let access = self.project_access(caller, project_ref).await?;
        if !access.role.can_read_cluster() {
            return Err(Error::RecordNotFound);
        }
        let agent = self.find_agent(&access, agent_id).await?;
        let token = self
            .storage()
            .agent_token(access.project.id, agent.id, token_id)
            .await?;
        match token {
            Some(mut token) if token.status.is_active() => {
                token.last_used_at_ms = self.inner.usage.overlay(token.id, token.last_used_at_ms);
                Ok(token)
            }
            Some(_) | None => Err(Error::RecordNotFound),
        }
    }

    /// Creates a token. Checks run in GitLab's order: parameters, role, agent, the limit, then
    /// validation. The limit is checked before hashing so that refused creates cost nothing,
    /// and again atomically by the store.
    pub async fn create_agent_token(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: AgentId,
        input: NewAgentTokenInput,
    ) -> Result<CreatedAgentToken, Error> {
        let Some(name) = input.name else {
            return Err(Error::missing("name"));
        };
        let access = self.project_access(caller, project_ref).await?;
        if !access.role.can_admin_cluster() {
            return Err(Error::Forbidden);
        }
        let agent = self.find_agent(&access, agent_id).await?;
        let project_id = access.project.id;
        let token_set = self
            .storage()
            .agent_token_set(project_id, agent.id)
            .await?
            .ok_or(Error::RecordNotFound)?;
        token_set
            .check_capacity()
            .map_err(|limit| Error::BadRequest(limit.to_string()))?;
        let (name, description) = validate_token_fields(&name, input.description.as_deref())?;

        let generated = generate_token(TokenKind::Agent, &mut rand::rng());
        let secret_hash = self.hash_secret(&generated.plaintext).await?;
        let user_id = author(caller);
        let now = now_ms();
        let new = NewAgentToken {
            name,
            description,
            handle: generated.handle,
            secret_hash,
            created_by_user_id: user_id,
        };
        let audit = Arc::new(move |token: &AgentToken| {
            let entry = AuditEntry {
                event_name: "cluster_agent_token_created",
                message: format!("Created cluster agent token '{}'", token.name),
                entity_type: TOKEN_ENTITY,
                entity_id: token.id.get(),
                target_details: &token.name,
            };
            audit::event(project_id, user_id, entry)
        });
        let created = self
            .storage()
            .create_agent_token(project_id, agent.id, new, now, Some(audit))
            .await;
        match created {
            Ok(token) => Ok(CreatedAgentToken {
                token,
                plaintext: generated.plaintext,
            }),
            Err(CreateAgentTokenError::LimitReached(limit)) => {
                Err(Error::BadRequest(limit.to_string()))
            }
            Err(CreateAgentTokenError::AgentNotFound) => Err(Error::RecordNotFound),
            Err(CreateAgentTokenError::Store(error)) => Err(error.into()),
        }
    }

    /// Revokes a token (idempotently); it stops authenticating at once.
    pub async fn revoke_agent_token(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: AgentId,
        token_id: AgentTokenId,
    ) -> Result<(), Error> {
        let access = self.project_access(caller, project_ref).await?;
        if !access.role.can_admin_cluster() {
            return Err(Error::Forbidden);
        }
        let agent = self.find_agent(&access, agent_id).await?;
        let project_id = access.project.id;
        let user_id = author(caller);
        let now = now_ms();
        let audit = Arc::new(move |token: &AgentToken| {
            let entry = AuditEntry {
                event_name: "cluster_agent_token_revoked",
                message: format!("Revoked cluster agent token '{}'", token.name),
                entity_type: TOKEN_ENTITY,
                entity_id: token.id.get(),
                target_details: &token.name,
            };
            audit::event(project_id, user_id, entry)
        });
        let revoked = self
            .storage()
            .revoke_agent_token(project_id, agent.id, token_id, now, Some(audit))
            .await;
        match revoked {
            Ok(token) => {
                self.inner.agent_tokens.invalidate(&[token.id]);
                Ok(())
            }
            Err(RevokeAgentTokenError::NotFound) => Err(Error::RecordNotFound),
            Err(RevokeAgentTokenError::Store(error)) => Err(error.into()),
        }
    }
}

/// Validates name and description together so that every failure is reported.
fn validate_token_fields(
    name: &str,
    description: Option<&str>,
) -> Result<(TokenName, Option<TokenDescription>), Error> {
    let name = TokenName::parse(name);
    let description = description.map(TokenDescription::parse).transpose();
    match (name, description) {
        (Ok(name), Ok(description)) => Ok((name, description)),
        (name, description) => {
            let mut messages = Vec::new();
            if let Err(errors) = name {
                messages.extend(errors.full_messages());
            }
            if let Err(errors) = description {
                messages.extend(errors.full_messages());
            }
            Err(Error::Invalid(messages))
        }
    }
}
