//! Agent tokens: listing the active ones, reading one, creating one (the secret is returned this
//! once) under the two-active-token limit, and revoking one so that it stops authenticating at
//! once.

use super::audit::{self, AuditEntry};
use super::crypto::{SealedFor, SealedMode};
use super::pagination::{PageInfo, Pagination};
use super::refusals::{ParameterError, Refusal};
use super::{AgentAccess, App, AuthCounters, Caller, Error, author, now_ms};
use agentreg_domain::access::ClusterPermission;
use agentreg_domain::entities::{AgentToken, RevocationReason};
use agentreg_domain::ids::{AgentId, AgentTokenId, ProjectId, ProjectRef};
use agentreg_domain::names::{TokenDescription, TokenName};
use agentreg_domain::tokens::{RotationRefused, TokenKind, generate_token, sort_by_last_use};
use agentreg_storage::agent_tokens::{
    CreateAgentTokenError, RevokeAgentTokenError, RotateAgentTokenError,
};
use agentreg_storage::port::{
    NewAgentToken, NewRotation, RevokeAgentToken, RotatedAgentToken, RotationRetrieval,
};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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
    /// ISO 8601: a date (`2030-01-31`, the token stops working at its start, UTC) or an RFC 3339
    /// time.
    pub expires_at: Option<String>,
}

/// `POST .../tokens/:token_id/rotate` parameters as sent.
#[derive(Debug, Default)]
pub struct RotateAgentTokenInput {
    /// GitLab-style `Idempotency-Key`: with `--rotation-retrieve-window`, repeating the rotation
    /// with the same key fetches the same successor and secret once more.
    pub idempotency_key: Option<String>,
    /// The successor's name; the predecessor's when unset.
    pub name: Option<String>,
    /// The successor's description; the predecessor's when unset.
    pub description: Option<String>,
    /// The successor's expiry, as in [`NewAgentTokenInput::expires_at`]. Unset, a successor of
    /// a token with an expiry gets the same lifetime from now.
    pub expires_at: Option<String>,
    /// How long the predecessor keeps working if the successor is not used:
    /// [`DEFAULT_ROTATION_OVERLAP_SECONDS`] when unset, cut to the instance's maximum.
    pub overlap_seconds: Option<i64>,
}

/// A rotation: the predecessor, now retiring, and its successor with the secret shown once.
pub struct RotatedAgentTokenWithSecret {
    pub predecessor: AgentToken,
    pub successor: CreatedAgentToken,
}

/// How often each replica records tokens that ended on their own.
pub const ENDED_TOKEN_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The overlap of a rotation when the caller does not choose one: a day.
pub const DEFAULT_ROTATION_OVERLAP_SECONDS: i64 = 86_400;

/// Which of an agent's tokens a list shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenListStatus {
    /// GitLab's list: the tokens that still authenticate.
    #[default]
    Active,
    /// agentreg's extension: revoked and expired tokens, with their revocation details.
    Revoked,
}

impl TokenListStatus {
    /// `active` or `revoked`; anything else is refused like GitLab refuses a bad enum value.
    pub fn parse(text: &str) -> Result<TokenListStatus, Error> {
        match text {
            "active" => Ok(TokenListStatus::Active),
            "revoked" => Ok(TokenListStatus::Revoked),
            _ => Err(TokenListStatus::invalid()),
        }
    }

    /// The refusal of a status that is neither `active` nor `revoked`, on either edge.
    pub fn invalid() -> Error {
        Error::InvalidParameter(ParameterError::UnknownValue("status"))
    }
}

/// An agent's tokens: `app.agent_tokens()`.
#[derive(Clone, Copy)]
pub struct AgentTokens<'a> {
    app: &'a App,
}

impl App {
    pub fn agent_tokens(&self) -> AgentTokens<'_> {
        AgentTokens { app: self }
    }
}

impl AgentTokens<'_> {
    /// The agent's active tokens, most recently used first.
    pub async fn list(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: AgentId,
        status: TokenListStatus,
        pagination: Pagination,
    ) -> Result<(Vec<AgentToken>, PageInfo), Error> {
        let AgentAccess { project, agent } = self
            .app
            .agent_access(
                caller,
                project_ref,
                agent_id,
                ClusterPermission::Read,
                Error::RecordNotFound,
            )
            .await?;
        let now = now_ms();
        let stored = match status {
            TokenListStatus::Active => {
                self.app
                    .storage()
                    .active_agent_tokens(project.id, agent.id)
                    .await?
            }
            TokenListStatus::Revoked => {
                self.app
                    .storage()
                    .all_agent_tokens(project.id, agent.id)
                    .await?
            }
        };
        let mut tokens: Vec<AgentToken> = stored
            .ok_or(Error::RecordNotFound)?
            .into_iter()
            .map(|token| token.as_of(now))
            .filter(|token| match status {
                TokenListStatus::Active => token.status.is_active(),
                TokenListStatus::Revoked => !token.status.is_active(),
            })
            .collect();
        for token in &mut tokens {
            token.last_used_at_ms = self
                .app
                .inner
                .usage
                .overlay(token.id, token.last_used_at_ms);
        }
        match status {
            TokenListStatus::Active => {
                sort_by_last_use(&mut tokens, |token| (token.last_used_at_ms, token.id.get()));
            }
            TokenListStatus::Revoked => tokens.sort_by_key(|token| token.id),
        }
        Ok(pagination.slice(tokens))
    }

    /// One active token of the agent; a revoked token is not found.
    pub async fn get(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: AgentId,
        token_id: AgentTokenId,
    ) -> Result<AgentToken, Error> {
        let AgentAccess { project, agent } = self
            .app
            .agent_access(
                caller,
                project_ref,
                agent_id,
                ClusterPermission::Read,
                Error::RecordNotFound,
            )
            .await?;
        let token = self
            .app
            .storage()
            .agent_token(project.id, agent.id, token_id)
            .await?;
        match token.map(|token| token.as_of(now_ms())) {
            Some(mut token) if token.status.is_active() => {
                token.last_used_at_ms = self
                    .app
                    .inner
                    .usage
                    .overlay(token.id, token.last_used_at_ms);
                Ok(token)
            }
            Some(_) | None => Err(Error::RecordNotFound),
        }
    }

    /// Creates a token. Checks run in GitLab's order: parameters, role, agent, the limit, then
    /// validation. The limit is checked before hashing so that refused creates cost nothing,
    /// and again atomically by the store.
    pub async fn create(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: AgentId,
        input: NewAgentTokenInput,
    ) -> Result<CreatedAgentToken, Error> {
        let Some(name) = input.name else {
            return Err(Error::missing("name"));
        };
        let expires_at_ms = input
            .expires_at
            .as_deref()
            .map(|text| parse_expiry(text).ok_or_else(|| Error::invalid("expires_at")))
            .transpose()?;
        let AgentAccess { project, agent } = self
            .app
            .agent_access(
                caller,
                project_ref,
                agent_id,
                ClusterPermission::Admin,
                Error::Forbidden,
            )
            .await?;
        let project_id = project.id;
        let token_set = self
            .app
            .storage()
            .agent_token_set(project_id, agent.id)
            .await?
            .ok_or(Error::RecordNotFound)?;
        let now = now_ms();
        token_set
            .check_capacity(now)
            .map_err(|limit| Error::Refused(Refusal::TokenLimitReached(limit)))?;
        let (name, description) = validate_token_fields(&name, input.description.as_deref())?;
        self.app.validate_expiry(expires_at_ms, now)?;

        let generated = generate_token(TokenKind::Agent, &mut rand::rng());
        let secret_hash = self.app.hash_secret(&generated.plaintext).await?;
        let author = author(caller);
        let user_id = author.user_id;
        let new = NewAgentToken {
            name,
            description,
            handle: generated.handle,
            secret_hash,
            created_by_user_id: user_id,
            expires_at_ms,
        };
        let audit = Arc::new(move |token: &AgentToken| {
            let entry = AuditEntry {
                event_name: "cluster_agent_token_created",
                message: format!("Created cluster agent token '{}'", token.name),
                entity_type: TOKEN_ENTITY,
                entity_id: token.id.get(),
                target_details: &token.name,
            };
            let mut event = audit::event(project_id, author, entry);
            event.details["expires_at_ms"] = serde_json::json!(token.expires_at_ms);
            event
        });
        let created = self
            .app
            .storage()
            .create_agent_token(project_id, agent.id, new, now, Some(audit))
            .await;
        match created {
            Ok(token) => Ok(CreatedAgentToken {
                token,
                plaintext: generated.plaintext,
            }),
            Err(CreateAgentTokenError::LimitReached(limit)) => {
                Err(Error::Refused(Refusal::TokenLimitReached(limit)))
            }
            Err(CreateAgentTokenError::AgentNotFound) => Err(Error::RecordNotFound),
            Err(CreateAgentTokenError::Store(error)) => Err(error.into()),
        }
    }

    /// Revokes a token (idempotently), with an optional reason; it stops authenticating at once.
    pub async fn revoke(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: AgentId,
        token_id: AgentTokenId,
        reason: Option<String>,
    ) -> Result<(), Error> {
        let reason = match reason.as_deref() {
            Some(text) => RevocationReason::parse(text).map_err(|too_long| {
                Error::InvalidParameter(ParameterError::ReasonTooLong(too_long))
            })?,
            None => RevocationReason::revoked(),
        };
        let AgentAccess { project, agent } = self
            .app
            .agent_access(
                caller,
                project_ref,
                agent_id,
                ClusterPermission::Admin,
                Error::Forbidden,
            )
            .await?;
        let project_id = project.id;
        let author = author(caller);
        let user_id = author.user_id;
        let now = now_ms();
        let audit = Arc::new(move |token: &AgentToken| {
            let entry = AuditEntry {
                event_name: "cluster_agent_token_revoked",
                message: format!("Revoked cluster agent token '{}'", token.name),
                entity_type: TOKEN_ENTITY,
                entity_id: token.id.get(),
                target_details: &token.name,
            };
            let mut event = audit::event(project_id, author, entry);
            event.details["revoked_reason"] = serde_json::json!(
                token
                    .revocation
                    .as_ref()
                    .map(|revocation| revocation.reason.as_str())
            );
            event
        });
        let revoke = RevokeAgentToken {
            by_user_id: user_id,
            reason,
        };
        let revoked = self
            .app
            .storage()
            .revoke_agent_token(project_id, agent.id, token_id, revoke, now, Some(audit))
            .await;
        match revoked {
            Ok(token) => {
                self.app.inner.agent_tokens.invalidate(&[token.id]);
                Ok(())
            }
            Err(RevokeAgentTokenError::NotFound) => Err(Error::RecordNotFound),
            Err(RevokeAgentTokenError::Store(error)) => Err(error.into()),
        }
    }

    /// Rotates a token: creates its successor (shown once, with its secret) and marks it
    /// retiring. It keeps working until the successor's first successful use, or until the
    /// overlap ends, whichever comes first. Checks run in the order of a create; a token that is
    /// not usable (revoked, expired, retired) is not found.
    pub async fn rotate(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: AgentId,
        token_id: AgentTokenId,
        input: RotateAgentTokenInput,
    ) -> Result<RotatedAgentTokenWithSecret, Error> {
        let expires_at_ms = input
            .expires_at
            .as_deref()
            .map(|text| parse_expiry(text).ok_or_else(|| Error::invalid("expires_at")))
            .transpose()?;
        let overlap_seconds = match input.overlap_seconds {
            Some(seconds) if seconds <= 0 => return Err(Error::invalid("overlap_seconds")),
            Some(seconds) => seconds,
            None => DEFAULT_ROTATION_OVERLAP_SECONDS,
        };
        let AgentAccess { project, agent } = self
            .app
            .agent_access(
                caller,
                project_ref,
                agent_id,
                ClusterPermission::Admin,
                Error::Forbidden,
            )
            .await?;
        let project_id = project.id;
        let now = now_ms();
        let retrieve_window = self.app.inner.config.rotation_retrieve_window;
        let idempotency_key = input
            .idempotency_key
            .clone()
            .filter(|key| !key.is_empty() && retrieve_window.is_some());
        if let Some(key) = &idempotency_key
            && let Some(retrieved) = self
                .app
                .retrieve_rotation(caller, project_id, agent.id, token_id, key, now)
                .await?
        {
            return Ok(retrieved);
        }
        let predecessor = self
            .app
            .storage()
            .agent_token(project_id, agent.id, token_id)
            .await?
            .filter(|token| token.is_usable(now))
            .ok_or(Error::RecordNotFound)?;
        let token_set = self
            .app
            .storage()
            .agent_token_set(project_id, agent.id)
            .await?
            .ok_or(Error::RecordNotFound)?;
        token_set
            .check_rotation(token_id.get(), now)
            .map_err(rotation_refused)?;
        let name = input.name.unwrap_or_else(|| predecessor.name.clone());
        let description = input
            .description
            .or_else(|| predecessor.description.clone());
        let (name, description) = validate_token_fields(&name, description.as_deref())?;
        let expires_at_ms = expires_at_ms.or_else(|| {
            let lifetime = predecessor.expires_at_ms? - predecessor.created_at_ms;
            Some(now.saturating_add(lifetime))
        });
        self.app.validate_expiry(expires_at_ms, now)?;
        let max_overlap_seconds =
            i64::try_from(self.app.inner.config.max_rotation_overlap.as_secs()).unwrap_or(i64::MAX);
        let retiring_until_ms = now.saturating_add(
            overlap_seconds
                .min(max_overlap_seconds)
                .saturating_mul(1_000),
        );

        let generated = generate_token(TokenKind::Agent, &mut rand::rng());
        let secret_hash = self.app.hash_secret(&generated.plaintext).await?;
        let author = author(caller);
        let user_id = author.user_id;
        let successor = NewAgentToken {
            name,
            description,
            handle: generated.handle,
            secret_hash,
            created_by_user_id: user_id,
            expires_at_ms,
        };
        let audit = Arc::new(move |rotated: &RotatedAgentToken| {
            let predecessor = &rotated.predecessor;
            let entry = AuditEntry {
                event_name: "cluster_agent_token_rotated",
                message: format!(
                    "Rotated cluster agent token '{}': successor {} created, the token retires \
                     on the successor's first use",
                    predecessor.name, rotated.successor.id
                ),
                entity_type: TOKEN_ENTITY,
                entity_id: predecessor.id.get(),
                target_details: &predecessor.name,
            };
            let mut event = audit::event(project_id, author, entry);
            event.details["successor_id"] = serde_json::json!(rotated.successor.id.get());
            event.details["retiring_until_ms"] = serde_json::json!(predecessor.retiring_until_ms);
            event
        });
        let rotated = self
            .app
            .storage()
            .rotate_agent_token(
                project_id,
                agent.id,
                token_id,
                NewRotation {
                    successor,
                    retiring_until_ms,
                },
                now,
                Some(audit),
            )
            .await;
        match rotated {
            Ok(rotated) => {
                // A cached predecessor does not know its overlap deadline yet.
                self.app.inner.agent_tokens.invalidate(&[token_id]);
                AuthCounters::bump(&self.app.inner.counters.rotations);
                if let (Some(key), Some(window)) = (idempotency_key, retrieve_window) {
                    self.app
                        .hold_rotation_secret(
                            caller,
                            &rotated,
                            key,
                            &generated.plaintext,
                            now,
                            window,
                        )
                        .await;
                }
                Ok(RotatedAgentTokenWithSecret {
                    predecessor: rotated.predecessor,
                    successor: CreatedAgentToken {
                        token: rotated.successor,
                        plaintext: generated.plaintext,
                    },
                })
            }
            Err(RotateAgentTokenError::Refused(refused)) => Err(rotation_refused(refused)),
            Err(RotateAgentTokenError::AgentNotFound) => Err(Error::RecordNotFound),
            Err(RotateAgentTokenError::Store(error)) => Err(error.into()),
        }
    }
}

impl App {
    /// Holds the successor's secret, sealed under the instance key, so that the caller who
    /// rotated may fetch it once more within `window` with the same idempotency key. A failure
    /// only loses that second chance; the rotation and its response stand.
    async fn hold_rotation_secret(
        &self,
        caller: &Caller,
        rotated: &RotatedAgentToken,
        idempotency_key: String,
        plaintext: &SecretString,
        now: i64,
        window: std::time::Duration,
    ) {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let sealed_for = SealedFor {
            agent_id: rotated.successor.agent_id.get(),
            mode: SealedMode::RotationSecret,
        };
        let retrieval = RotationRetrieval {
            predecessor_id: rotated.predecessor.id,
            idempotency_key,
            user_id: caller.user.id,
            successor_id: rotated.successor.id,
            sealed_secret: self
                .inner
                .sealer
                .seal(plaintext.expose_secret().as_bytes(), sealed_for),
            expires_at_ms: now.saturating_add(window_ms),
        };
        if let Err(error) = self.storage().hold_rotation_secret(retrieval).await {
            tracing::warn!(error = %crate::telemetry::error_chain(&error), "holding a rotated secret for its retrieve window failed");
        }
    }

    /// The successor and secret of a rotation this caller made with this idempotency key, once,
    /// within the retrieve window; `None` sends the request down the ordinary rotation path.
    async fn retrieve_rotation(
        &self,
        caller: &Caller,
        project_id: ProjectId,
        agent_id: AgentId,
        token_id: AgentTokenId,
        idempotency_key: &str,
        now: i64,
    ) -> Result<Option<RotatedAgentTokenWithSecret>, Error> {
        let Some((successor_id, sealed)) = self
            .storage()
            .take_rotation_secret(token_id, idempotency_key, caller.user.id, now)
            .await?
        else {
            return Ok(None);
        };
        let sealed_for = SealedFor {
            agent_id: agent_id.get(),
            mode: SealedMode::RotationSecret,
        };
        let secret = self
            .inner
            .sealer
            .open(&sealed, sealed_for)
            .map_err(|error| Error::internal("opening a held rotation secret failed", error))?;
        let plaintext = String::from_utf8(secret.expose_secret().clone())
            .map_err(|error| Error::internal("a held rotation secret is not text", error))?;
        let predecessor = self.storage().agent_token(project_id, agent_id, token_id);
        let successor = self
            .storage()
            .agent_token(project_id, agent_id, successor_id);
        let (Some(predecessor), Some(successor)) = (predecessor.await?, successor.await?) else {
            return Ok(None);
        };
        Ok(Some(RotatedAgentTokenWithSecret {
            predecessor,
            successor: CreatedAgentToken {
                token: successor,
                plaintext: SecretString::from(plaintext),
            },
        }))
    }

    /// Deletes held rotation secrets whose window has ended.
    pub async fn purge_rotation_secrets(&self) -> Result<u64, Error> {
        Ok(self.storage().purge_rotation_secrets(now_ms()).await?)
    }

    /// Ends a rotation on the successor's first successful use (on whichever replica sees it):
    /// the predecessor is revoked with the reason `rotated`, leaves every cache, and its audit
    /// trail records the first use. A failure here does not fail the agent's request: the
    /// overlap deadline retires the predecessor anyway.
    pub(crate) async fn complete_rotation(&self, successor_id: AgentTokenId, now: i64) {
        let audit = Arc::new(move |predecessor: &AgentToken| {
            let entry = AuditEntry {
                event_name: "cluster_agent_token_revoked",
                message: format!(
                    "Revoked cluster agent token '{}': its successor {successor_id} was used",
                    predecessor.name
                ),
                entity_type: TOKEN_ENTITY,
                entity_id: predecessor.id.get(),
                target_details: &predecessor.name,
            };
            let mut event = audit::event(predecessor.project_id, audit::Author::service(), entry);
            event.details["revoked_reason"] = serde_json::json!("rotated");
            event.details["successor_id"] = serde_json::json!(successor_id.get());
            event.details["successor_first_used_at_ms"] = serde_json::json!(now);
            event
        });
        let completed = self
            .storage()
            .complete_agent_token_rotation(successor_id, now, Some(audit))
            .await;
        match completed {
            Ok(Some(predecessor)) => {
                self.inner
                    .agent_tokens
                    .invalidate(&[predecessor.id, successor_id]);
            }
            // Another process completed it; forget the cached successor so that its pending
            // predecessor is read again.
            Ok(None) => self.inner.agent_tokens.invalidate(&[successor_id]),
            Err(error) => {
                tracing::warn!(
                    error = %error,
                    successor_id = successor_id.get(),
                    "completing an agent token rotation failed; the overlap deadline still applies"
                );
            }
        }
    }

    /// Records the tokens that ended on their own (expired, or retiring past their overlap) as
    /// revoked, each with an audit event. Reads and authentication already treat them as
    /// revoked at their deadline; this makes the change durable and audited. Runs in the
    /// background on every replica; the store records each token once.
    pub async fn retire_ended_agent_tokens(&self) -> Result<usize, Error> {
        let audit = Arc::new(|token: &AgentToken| {
            let reason = token
                .revocation
                .as_ref()
                .map_or("expired", |revocation| revocation.reason.as_str());
            let (event_name, message) = if reason == "expired" {
                (
                    "cluster_agent_token_expired",
                    format!("Cluster agent token '{}' expired", token.name),
                )
            } else {
                (
                    "cluster_agent_token_revoked",
                    format!(
                        "Revoked cluster agent token '{}': its rotation overlap ended",
                        token.name
                    ),
                )
            };
            let entry = AuditEntry {
                event_name,
                message,
                entity_type: TOKEN_ENTITY,
                entity_id: token.id.get(),
                target_details: &token.name,
            };
            let mut event = audit::event(token.project_id, audit::Author::service(), entry);
            event.details["revoked_reason"] = serde_json::json!(reason);
            event
        });
        let retired = self
            .storage()
            .retire_ended_agent_tokens(now_ms(), Some(audit))
            .await?;
        let ids: Vec<AgentTokenId> = retired.iter().map(|token| token.id).collect();
        self.inner.agent_tokens.invalidate(&ids);
        Ok(retired.len())
    }

    /// Checks an expiry against the clock and the instance's policy: in the future, within the
    /// maximum lifetime, and present when required.
    fn validate_expiry(&self, expires_at_ms: Option<i64>, now: i64) -> Result<(), Error> {
        let config = &self.inner.config;
        let Some(expires_at_ms) = expires_at_ms else {
            if config.require_agent_token_expiry {
                return Err(Error::Invalid(vec!["Expires at can't be blank".to_owned()]));
            }
            return Ok(());
        };
        if expires_at_ms <= now {
            return Err(Error::Invalid(vec![
                "Expires at must be in the future".to_owned(),
            ]));
        }
        if let Some(max_lifetime) = config.agent_token_max_lifetime {
            let max_ms = i64::try_from(max_lifetime.as_millis()).unwrap_or(i64::MAX);
            if expires_at_ms > now.saturating_add(max_ms) {
                return Err(Error::Invalid(vec![format!(
                    "Expires at must be at most {} seconds ahead",
                    max_lifetime.as_secs()
                )]));
            }
        }
        Ok(())
    }
}

/// The app error of a refused rotation: a token that cannot be rotated is not found, one that
/// is rotating or whose agent has a rotation in progress is a bad request.
fn rotation_refused(refused: RotationRefused) -> Error {
    match refused {
        RotationRefused::NotFound => Error::RecordNotFound,
        RotationRefused::AlreadyRotating | RotationRefused::RotationInProgress => {
            Error::Refused(Refusal::Rotation(refused))
        }
    }
}

/// An ISO 8601 date (the token stops working at its start, UTC) or RFC 3339 time, in unix
/// milliseconds.
pub(crate) fn parse_expiry(text: &str) -> Option<i64> {
    let moment = match super::auth::parse_date(text) {
        Some(date) => date.midnight().assume_utc(),
        None => OffsetDateTime::parse(text, &Rfc3339).ok()?,
    };
    i64::try_from(moment.unix_timestamp_nanos() / 1_000_000).ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_iso_dates_or_rfc3339_times() {
        assert_eq!(parse_expiry("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_expiry("1970-01-01T00:00:01Z"), Some(1_000));
        assert_eq!(parse_expiry("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_expiry("tomorrow"), None);
        assert_eq!(parse_expiry("1970-13-01"), None);
    }
}
