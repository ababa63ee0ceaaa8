//! Agent tokens: creation under the active-token limit, revocation that keeps the record, lookup
//! by handle for authentication, and last-use times.

use crate::audit::{Audit, audit_entry};
use crate::hashing::SecretHash;
use crate::port::{
    AgentTokenCredential, NewAgentToken, NewRotation, RevokeAgentToken, RotatedAgentToken,
    TokenDeadlines,
};
use crate::records::{encode, v1};
use crate::schema::{self, IdKind, id_key};
use crate::{Store, StoreError, abort, decode, decode_in_tx, engine, finish_tx};
use agentreg_domain::entities::{AgentToken, Revocation, RevocationReason, TokenStatus};
use agentreg_domain::ids::{AgentId, AgentTokenId, ProjectId, UserId};
use agentreg_domain::tokens::{
    AgentTokenSet, RotationRefused, TokenHandle, TokenLimitReached, sort_by_last_use,
};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

#[derive(Debug, thiserror::Error)]
pub enum CreateAgentTokenError {
    #[error("agent not found")]
    AgentNotFound,
    #[error(transparent)]
    LimitReached(#[from] TokenLimitReached),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum RotateAgentTokenError {
    #[error("agent not found")]
    AgentNotFound,
    #[error(transparent)]
    Refused(#[from] RotationRefused),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeAgentTokenError {
    #[error("agent token not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// The agent's token set, if the agent exists in the project. Used to refuse a create early,
    /// before paying for hashing; [`Store::create_agent_token`] checks the limit again atomically.
    pub fn agent_token_set(
        &self,
        project_id: u64,
        agent_id: u64,
    ) -> Result<Option<AgentTokenSet>, StoreError> {
        if self.agent(project_id, agent_id)?.is_none() {
            return Ok(None);
        }
        let Some(bytes) = self
            .trees
            .agent_token_sets
            .get(id_key(agent_id))
            .map_err(engine)?
        else {
            return Ok(Some(AgentTokenSet::default()));
        };
        let record: v1::AgentTokenSet = decode(schema::AGENT_TOKEN_SETS, &bytes)?;
        Ok(Some(token_set_from_record(record)))
    }

    /// Creates an active token. The limit check and the insert happen in one transaction over
    /// the agent's token set, so concurrent creates can never exceed the limit.
    pub fn create_agent_token(
        &self,
        project_id: u64,
        agent_id: u64,
        new: NewAgentToken,
        now_ms: i64,
        audit: Audit<'_, AgentToken>,
    ) -> Result<AgentToken, CreateAgentTokenError> {
        let id = self.next_id(IdKind::AgentToken)?;
        let audit_id = self.audit_id(audit)?;
        let record = v1::AgentToken {
            agent_id,
            project_id,
            name: new.name.as_str().to_owned(),
            description: new.description.map(|d| d.as_str().to_owned()),
            revoked: false,
            created_by_user_id: new.created_by_user_id.map(UserId::get),
            created_at_ms: now_ms,
            handle: new.handle.as_str().to_owned(),
            secret_hash: new.secret_hash.as_str().to_owned(),
            expires_at_ms: new.expires_at_ms,
            revoked_at_ms: None,
            revoked_by_user_id: None,
            revoked_reason: None,
            retiring_until_ms: None,
            successor_id: None,
            pending_predecessor_id: None,
        };
        let expires_at_ms = new.expires_at_ms;
        let encoded = encode(&record);
        let token = token_from_record(id, record, None).token;
        let audit_event = audit_id
            .zip(audit)
            .map(|(audit_id, audit)| audit_entry(audit(&token), audit_id, now_ms));
        let handle_key = new.handle.as_str().as_bytes().to_vec();
        let writing = self.writing();
        let trees = &self.trees;
        finish_tx(
            (
                &trees.agents,
                &trees.agent_token_sets,
                &trees.agent_tokens,
                &trees.agent_token_handles,
                &trees.audit_events,
            )
                .transaction(|(agents, token_sets, tokens, handles, audit_events)| {
                    let Some(agent_bytes) = agents.get(id_key(agent_id))? else {
                        return Err(abort(CreateAgentTokenError::AgentNotFound));
                    };
                    let agent: v1::Agent = decode_in_tx(schema::AGENTS, &agent_bytes)?;
                    if agent.project_id != project_id {
                        return Err(abort(CreateAgentTokenError::AgentNotFound));
                    }
                    let stored: v1::AgentTokenSet = match token_sets.get(id_key(agent_id))? {
                        Some(bytes) => decode_in_tx(schema::AGENT_TOKEN_SETS, &bytes)?,
                        None => v1::AgentTokenSet::default(),
                    };
                    let mut token_set = token_set_from_record(stored);
                    token_set
                        .activate(id, expires_at_ms, now_ms)
                        .map_err(|limit| abort(limit.into()))?;
                    token_sets.insert(&id_key(agent_id), encode(&token_set_record(&token_set)))?;
                    tokens.insert(&id_key(id), encoded.as_slice())?;
                    handles.insert(handle_key.as_slice(), &id_key(id))?;
                    if let Some((key, value)) = &audit_event {
                        audit_events.insert(key, value.as_slice())?;
                    }
                    Ok(())
                }),
        )?;
        self.commit(writing)?;
        Ok(token)
    }

    /// The agent's active tokens, most recently used first, never-used last, then by id.
    pub fn active_agent_tokens(
        &self,
        project_id: u64,
        agent_id: u64,
    ) -> Result<Option<Vec<AgentToken>>, StoreError> {
        let Some(token_set) = self.agent_token_set(project_id, agent_id)? else {
            return Ok(None);
        };
        let mut tokens = Vec::with_capacity(token_set.active().len());
        for token_id in token_set.active() {
            let token = self
                .agent_token_by_id(*token_id)?
                .ok_or(StoreError::Dangling {
                    tree: schema::AGENT_TOKEN_SETS,
                })?;
            tokens.push(token.token);
        }
        sort_by_last_use(&mut tokens, |token| (token.last_used_at_ms, token.id.get()));
        Ok(Some(tokens))
    }

    /// Every token of the agent, active first, each group in the order it took its status.
    pub fn all_agent_tokens(
        &self,
        project_id: u64,
        agent_id: u64,
    ) -> Result<Option<Vec<AgentToken>>, StoreError> {
        let Some(token_set) = self.agent_token_set(project_id, agent_id)? else {
            return Ok(None);
        };
        let mut tokens = Vec::new();
        for token_id in token_set.all() {
            let token = self
                .agent_token_by_id(token_id)?
                .ok_or(StoreError::Dangling {
                    tree: schema::AGENT_TOKEN_SETS,
                })?;
            tokens.push(token.token);
        }
        Ok(Some(tokens))
    }

    /// One of the agent's tokens, active or revoked.
    pub fn agent_token(
        &self,
        project_id: u64,
        agent_id: u64,
        token_id: u64,
    ) -> Result<Option<AgentToken>, StoreError> {
        let Some(AgentTokenCredential { token, .. }) = self.agent_token_by_id(token_id)? else {
            return Ok(None);
        };
        if token.agent_id.get() != agent_id || token.project_id.get() != project_id {
            return Ok(None);
        }
        Ok(Some(token))
    }

    /// Marks a token revoked with `revoke`'s details; the record stays. Revoking a revoked token
    /// succeeds and keeps its first details; an expired token is recorded as expired.
    pub fn revoke_agent_token(
        &self,
        project_id: u64,
        agent_id: u64,
        token_id: u64,
        revoke: &RevokeAgentToken,
        now_ms: i64,
        audit: Audit<'_, AgentToken>,
    ) -> Result<AgentToken, RevokeAgentTokenError> {
        let audit_id = self.audit_id(audit)?;
        let writing = self.writing();
        let trees = &self.trees;
        let record = finish_tx(
            (
                &trees.agent_token_sets,
                &trees.agent_tokens,
                &trees.audit_events,
            )
                .transaction(|(token_sets, tokens, audit_events)| {
                    let Some(bytes) = tokens.get(id_key(token_id))? else {
                        return Err(abort(RevokeAgentTokenError::NotFound));
                    };
                    let mut record: v1::AgentToken = decode_in_tx(schema::AGENT_TOKENS, &bytes)?;
                    if record.agent_id != agent_id || record.project_id != project_id {
                        return Err(abort(RevokeAgentTokenError::NotFound));
                    }
                    let Some(set_bytes) = token_sets.get(id_key(agent_id))? else {
                        return Err(abort(RevokeAgentTokenError::NotFound));
                    };
                    let stored: v1::AgentTokenSet =
                        decode_in_tx(schema::AGENT_TOKEN_SETS, &set_bytes)?;
                    let mut token_set = token_set_from_record(stored);
                    if !token_set.revoke(token_id) {
                        return Err(abort(RevokeAgentTokenError::NotFound));
                    }
                    token_sets.insert(&id_key(agent_id), encode(&token_set_record(&token_set)))?;
                    if !record.revoked {
                        mark_revoked(&mut record, revoke, now_ms);
                    }
                    tokens.insert(&id_key(token_id), encode(&record))?;
                    if let Some((audit_id, audit)) = audit_id.zip(audit) {
                        let revoked = token_from_record(token_id, record.clone(), None).token;
                        let (key, value) = audit_entry(audit(&revoked), audit_id, now_ms);
                        audit_events.insert(&key, value)?;
                    }
                    Ok(record)
                }),
        )?;
        self.commit(writing)?;
        let last_used = self.last_used(token_id)?;
        Ok(token_from_record(token_id, record, last_used).token)
    }

    /// Rotates a token: the checks, the predecessor's update, the successor's insert and the
    /// audit event happen in one transaction over the agent's token set, so concurrent rotations
    /// and creates can never break the limits.
    pub fn rotate_agent_token(
        &self,
        project_id: u64,
        agent_id: u64,
        token_id: u64,
        rotation: NewRotation,
        now_ms: i64,
        audit: Audit<'_, RotatedAgentToken>,
    ) -> Result<RotatedAgentToken, RotateAgentTokenError> {
        let NewRotation {
            successor,
            retiring_until_ms,
        } = rotation;
        let successor_id = self.next_id(IdKind::AgentToken)?;
        let audit_id = self.audit_id(audit)?;
        let successor_expires_at_ms = successor.expires_at_ms;
        let successor_record = v1::AgentToken {
            agent_id,
            project_id,
            name: successor.name.as_str().to_owned(),
            description: successor.description.map(|d| d.as_str().to_owned()),
            revoked: false,
            created_by_user_id: successor.created_by_user_id.map(UserId::get),
            created_at_ms: now_ms,
            handle: successor.handle.as_str().to_owned(),
            secret_hash: successor.secret_hash.as_str().to_owned(),
            expires_at_ms: successor_expires_at_ms,
            revoked_at_ms: None,
            revoked_by_user_id: None,
            revoked_reason: None,
            retiring_until_ms: None,
            successor_id: None,
            pending_predecessor_id: Some(token_id),
        };
        let encoded_successor = encode(&successor_record);
        let handle_key = successor.handle.as_str().as_bytes().to_vec();
        let writing = self.writing();
        let trees = &self.trees;
        let predecessor_record = finish_tx(
            (
                &trees.agent_token_sets,
                &trees.agent_tokens,
                &trees.agent_token_handles,
                &trees.audit_events,
            )
                .transaction(|(token_sets, tokens, handles, audit_events)| {
                    let Some(bytes) = tokens.get(id_key(token_id))? else {
                        return Err(abort(RotateAgentTokenError::Refused(
                            RotationRefused::NotFound,
                        )));
                    };
                    let mut record: v1::AgentToken = decode_in_tx(schema::AGENT_TOKENS, &bytes)?;
                    if record.agent_id != agent_id || record.project_id != project_id {
                        return Err(abort(RotateAgentTokenError::Refused(
                            RotationRefused::NotFound,
                        )));
                    }
                    let Some(set_bytes) = token_sets.get(id_key(agent_id))? else {
                        return Err(abort(RotateAgentTokenError::AgentNotFound));
                    };
                    let stored: v1::AgentTokenSet =
                        decode_in_tx(schema::AGENT_TOKEN_SETS, &set_bytes)?;
                    let mut token_set = token_set_from_record(stored);
                    token_set
                        .rotate(
                            token_id,
                            successor_id,
                            retiring_until_ms,
                            successor_expires_at_ms,
                            now_ms,
                        )
                        .map_err(|refused| abort(refused.into()))?;
                    token_sets.insert(&id_key(agent_id), encode(&token_set_record(&token_set)))?;
                    record.retiring_until_ms = Some(retiring_until_ms);
                    record.successor_id = Some(successor_id);
                    tokens.insert(&id_key(token_id), encode(&record))?;
                    tokens.insert(&id_key(successor_id), encoded_successor.as_slice())?;
                    handles.insert(handle_key.as_slice(), &id_key(successor_id))?;
                    if let Some((audit_id, audit)) = audit_id.zip(audit) {
                        let rotated = RotatedAgentToken {
                            predecessor: token_from_record(token_id, record.clone(), None).token,
                            successor: token_from_record(
                                successor_id,
                                successor_record.clone(),
                                None,
                            )
                            .token,
                        };
                        let (key, value) = audit_entry(audit(&rotated), audit_id, now_ms);
                        audit_events.insert(&key, value)?;
                    }
                    Ok(record)
                }),
        )?;
        self.commit(writing)?;
        let last_used = self.last_used(token_id)?;
        Ok(RotatedAgentToken {
            predecessor: token_from_record(token_id, predecessor_record, last_used).token,
            successor: token_from_record(successor_id, successor_record, None).token,
        })
    }

    /// Ends a rotation on its successor's first use; see the port.
    pub fn complete_agent_token_rotation(
        &self,
        successor_id: u64,
        now_ms: i64,
        audit: Audit<'_, AgentToken>,
    ) -> Result<Option<AgentToken>, StoreError> {
        let audit_id = self.audit_id(audit)?;
        let revoke = rotated();
        let writing = self.writing();
        let trees = &self.trees;
        let retired = finish_tx::<_, StoreError>(
            (
                &trees.agent_token_sets,
                &trees.agent_tokens,
                &trees.audit_events,
            )
                .transaction(|(token_sets, tokens, audit_events)| {
                    let Some(bytes) = tokens.get(id_key(successor_id))? else {
                        return Ok(None);
                    };
                    let mut successor: v1::AgentToken = decode_in_tx(schema::AGENT_TOKENS, &bytes)?;
                    let Some(predecessor_id) = successor.pending_predecessor_id.take() else {
                        return Ok(None);
                    };
                    tokens.insert(&id_key(successor_id), encode(&successor))?;
                    let Some(bytes) = tokens.get(id_key(predecessor_id))? else {
                        return Ok(None);
                    };
                    let mut record: v1::AgentToken = decode_in_tx(schema::AGENT_TOKENS, &bytes)?;
                    if record.revoked {
                        return Ok(None);
                    }
                    end_in_tx(
                        token_sets,
                        tokens,
                        predecessor_id,
                        &mut record,
                        &revoke,
                        now_ms,
                    )?;
                    let revoked = token_from_record(predecessor_id, record, None).token;
                    if let Some((audit_id, audit)) = audit_id.zip(audit) {
                        let (key, value) = audit_entry(audit(&revoked), audit_id, now_ms);
                        audit_events.insert(&key, value)?;
                    }
                    Ok(Some(revoked))
                }),
        )?;
        self.commit(writing)?;
        Ok(retired)
    }

    /// Records the tokens that ended on their own by `now_ms`; see the port. Candidates come from
    /// the token sets; each is re-checked and recorded in a transaction of its own.
    pub fn retire_ended_agent_tokens(
        &self,
        now_ms: i64,
        audit: Audit<'_, AgentToken>,
    ) -> Result<Vec<AgentToken>, StoreError> {
        let mut candidates = Vec::new();
        for entry in self.trees.agent_token_sets.iter() {
            let (_, bytes) = entry.map_err(engine)?;
            let record: v1::AgentTokenSet = decode(schema::AGENT_TOKEN_SETS, &bytes)?;
            let token_set = token_set_from_record(record);
            candidates.extend(
                token_set
                    .active()
                    .iter()
                    .copied()
                    .filter(|token_id| !token_set.is_usable(*token_id, now_ms)),
            );
        }
        let mut retired = Vec::new();
        for token_id in candidates {
            if let Some(token) = self.retire_ended_agent_token(token_id, now_ms, audit)? {
                retired.push(token);
            }
        }
        if !retired.is_empty() {
            self.flush()?;
        }
        Ok(retired)
    }

    fn retire_ended_agent_token(
        &self,
        token_id: u64,
        now_ms: i64,
        audit: Audit<'_, AgentToken>,
    ) -> Result<Option<AgentToken>, StoreError> {
        let audit_id = self.audit_id(audit)?;
        let revoke = RevokeAgentToken::default();
        let _writing = self.writing();
        let trees = &self.trees;
        finish_tx::<_, StoreError>(
            (
                &trees.agent_token_sets,
                &trees.agent_tokens,
                &trees.audit_events,
            )
                .transaction(|(token_sets, tokens, audit_events)| {
                    let Some(bytes) = tokens.get(id_key(token_id))? else {
                        return Ok(None);
                    };
                    let mut record: v1::AgentToken = decode_in_tx(schema::AGENT_TOKENS, &bytes)?;
                    let current = token_from_record(token_id, record.clone(), None).token;
                    if record.revoked || current.is_usable(now_ms) {
                        return Ok(None);
                    }
                    end_in_tx(token_sets, tokens, token_id, &mut record, &revoke, now_ms)?;
                    let retired = token_from_record(token_id, record, None).token;
                    if let Some((audit_id, audit)) = audit_id.zip(audit) {
                        let (key, value) = audit_entry(audit(&retired), audit_id, now_ms);
                        audit_events.insert(&key, value)?;
                    }
                    Ok(Some(retired))
                }),
        )
    }

    /// The token a handle names, if any. The caller verifies the secret and the status.
    pub fn agent_token_by_handle(
        &self,
        handle: &TokenHandle,
    ) -> Result<Option<AgentTokenCredential>, StoreError> {
        let Some(id_bytes) = self
            .trees
            .agent_token_handles
            .get(handle.as_str().as_bytes())
            .map_err(engine)?
        else {
            return Ok(None);
        };
        let token_id = schema::decode_u64(&id_bytes).ok_or(StoreError::Dangling {
            tree: schema::AGENT_TOKEN_HANDLES,
        })?;
        self.agent_token_by_id(token_id)
    }

    /// Records when tokens were last used; a stored time never moves backwards. Tokens deleted
    /// meanwhile are skipped. This write is not flushed on its own: last-use times are advisory,
    /// and the next flush (at most half a second later, or at shutdown) makes them durable.
    pub fn record_agent_token_use(&self, uses: &[(u64, i64)]) -> Result<(), StoreError> {
        let _writing = self.writing();
        let trees = &self.trees;
        finish_tx::<_, StoreError>(
            (&trees.agent_tokens, &trees.agent_token_last_used).transaction(
                |(tokens, last_used)| {
                    for (token_id, used_at_ms) in uses {
                        if tokens.get(id_key(*token_id))?.is_none() {
                            continue;
                        }
                        let stored = last_used
                            .get(id_key(*token_id))?
                            .as_deref()
                            .and_then(schema::decode_i64);
                        if stored.is_none_or(|stored| stored < *used_at_ms) {
                            last_used.insert(&id_key(*token_id), &used_at_ms.to_be_bytes())?;
                        }
                    }
                    Ok(())
                },
            ),
        )
    }

    /// The number of active agent tokens across all agents, for metrics.
    pub fn count_active_agent_tokens(&self) -> Result<usize, StoreError> {
        let mut n_active = 0;
        for entry in self.trees.agent_token_sets.iter() {
            let (_, bytes) = entry.map_err(engine)?;
            let record: v1::AgentTokenSet = decode(schema::AGENT_TOKEN_SETS, &bytes)?;
            n_active += record.active.len();
        }
        Ok(n_active)
    }

    /// The deadlines of every active token that has one, read from the token sets.
    pub fn agent_token_deadlines(&self) -> Result<Vec<TokenDeadlines>, StoreError> {
        let mut deadlines = Vec::new();
        for entry in self.trees.agent_token_sets.iter() {
            let (_, bytes) = entry.map_err(engine)?;
            let record: v1::AgentTokenSet = decode(schema::AGENT_TOKEN_SETS, &bytes)?;
            for token_id in &record.active {
                let token_deadlines = TokenDeadlines {
                    expires_at_ms: record.expiries.get(token_id).copied(),
                    retiring_until_ms: record.retiring.get(token_id).copied(),
                };
                if token_deadlines.expires_at_ms.is_some()
                    || token_deadlines.retiring_until_ms.is_some()
                {
                    deadlines.push(token_deadlines);
                }
            }
        }
        Ok(deadlines)
    }

    fn agent_token_by_id(&self, token_id: u64) -> Result<Option<AgentTokenCredential>, StoreError> {
        let Some(bytes) = self
            .trees
            .agent_tokens
            .get(id_key(token_id))
            .map_err(engine)?
        else {
            return Ok(None);
        };
        let record: v1::AgentToken = decode(schema::AGENT_TOKENS, &bytes)?;
        let last_used = self.last_used(token_id)?;
        Ok(Some(token_from_record(token_id, record, last_used)))
    }

    fn last_used(&self, token_id: u64) -> Result<Option<i64>, StoreError> {
        let bytes = self
            .trees
            .agent_token_last_used
            .get(id_key(token_id))
            .map_err(engine)?;
        Ok(bytes.as_deref().and_then(schema::decode_i64))
    }
}

fn token_set_record(token_set: &AgentTokenSet) -> v1::AgentTokenSet {
    v1::AgentTokenSet {
        active: token_set.active().to_vec(),
        revoked: token_set.revoked().to_vec(),
        expiries: token_set.expiries().clone(),
        retiring: token_set.retiring_deadlines().clone(),
    }
}

fn token_set_from_record(record: v1::AgentTokenSet) -> AgentTokenSet {
    AgentTokenSet::from_parts(
        record.active,
        record.revoked,
        record.expiries,
        record.retiring,
    )
}

/// The details to record when an active token is revoked at `now_ms`: a token that already
/// ended on its own (past its expiry, or a retiring token past its overlap deadline) ended then,
/// for that reason, whoever revokes it now. Both backends follow this rule.
pub(crate) fn revocation_of(
    expires_at_ms: Option<i64>,
    retiring_until_ms: Option<i64>,
    revoke: &RevokeAgentToken,
    now_ms: i64,
) -> Revocation {
    let probe = AgentToken {
        id: AgentTokenId::new(0),
        agent_id: AgentId::new(0),
        project_id: ProjectId::new(0),
        name: String::new(),
        description: None,
        status: TokenStatus::Active,
        created_by_user_id: None,
        created_at_ms: 0,
        last_used_at_ms: None,
        expires_at_ms,
        revocation: None,
        retiring_until_ms,
        successor_id: None,
        pending_predecessor_id: None,
    };
    match probe.as_of(now_ms).revocation {
        Some(ended) => ended,
        None => Revocation {
            revoked_at_ms: now_ms,
            revoked_by_user_id: revoke.by_user_id,
            reason: revoke.reason.clone(),
        },
    }
}

/// What a rotation's completion does to the predecessor.
/// Records on a token that it ended now, by whom and why; a token that had already ended on its
/// own (expired, or retired by its rotation's deadline) keeps that moment and reason.
fn mark_revoked(record: &mut v1::AgentToken, revoke: &RevokeAgentToken, now_ms: i64) {
    let revocation = revocation_of(
        record.expires_at_ms,
        record.retiring_until_ms,
        revoke,
        now_ms,
    );
    record.revoked = true;
    record.revoked_at_ms = Some(revocation.revoked_at_ms);
    record.revoked_by_user_id = revocation.revoked_by_user_id.map(UserId::get);
    record.revoked_reason = Some(revocation.reason.as_str().to_owned());
}

/// Ends a token inside a transaction that the service starts on its own (a rotation completed,
/// a token past its deadline): it leaves its agent's active set, and its record is marked.
fn end_in_tx(
    token_sets: &sled::transaction::TransactionalTree,
    tokens: &sled::transaction::TransactionalTree,
    token_id: u64,
    record: &mut v1::AgentToken,
    revoke: &RevokeAgentToken,
    now_ms: i64,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    if let Some(set_bytes) = token_sets.get(id_key(record.agent_id))? {
        let stored: v1::AgentTokenSet = decode_in_tx(schema::AGENT_TOKEN_SETS, &set_bytes)?;
        let mut token_set = token_set_from_record(stored);
        token_set.revoke(token_id);
        token_sets.insert(
            &id_key(record.agent_id),
            encode(&token_set_record(&token_set)),
        )?;
    }
    mark_revoked(record, revoke, now_ms);
    tokens.insert(&id_key(token_id), encode(&*record))?;
    Ok(())
}

pub(crate) fn rotated() -> RevokeAgentToken {
    RevokeAgentToken {
        by_user_id: None,
        reason: RevocationReason::rotated(),
    }
}

fn token_from_record(
    id: u64,
    record: v1::AgentToken,
    last_used_at_ms: Option<i64>,
) -> AgentTokenCredential {
    let status = if record.revoked {
        TokenStatus::Revoked
    } else {
        TokenStatus::Active
    };
    AgentTokenCredential {
        token: AgentToken {
            id: AgentTokenId::new(id),
            agent_id: AgentId::new(record.agent_id),
            project_id: ProjectId::new(record.project_id),
            name: record.name,
            description: record.description,
            status,
            created_by_user_id: record.created_by_user_id.map(UserId::new),
            created_at_ms: record.created_at_ms,
            last_used_at_ms,
            expires_at_ms: record.expires_at_ms,
            revocation: match (record.revoked, record.revoked_at_ms) {
                (true, Some(revoked_at_ms)) => Some(Revocation {
                    revoked_at_ms,
                    revoked_by_user_id: record.revoked_by_user_id.map(UserId::new),
                    reason: RevocationReason::from_stored(
                        record
                            .revoked_reason
                            .unwrap_or_else(|| "revoked".to_owned()),
                    ),
                }),
                (true, None) | (false, _) => None,
            },
            retiring_until_ms: record.retiring_until_ms,
            successor_id: record.successor_id.map(AgentTokenId::new),
            pending_predecessor_id: record.pending_predecessor_id.map(AgentTokenId::new),
        },
        secret_hash: SecretHash::from_stored(record.secret_hash),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretHasher;
    use crate::fixtures;
    use agentreg_domain::names::{AgentName, TokenName};
    use agentreg_domain::tokens::{TokenKind, generate_token};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn new_token(
        store: &Store,
        project_id: u64,
        agent_id: u64,
        seed: u64,
    ) -> Result<AgentToken, CreateAgentTokenError> {
        let generated = generate_token(TokenKind::Agent, &mut StdRng::seed_from_u64(seed));
        let hash = SecretHasher::insecure_for_tests()
            .hash(&generated.plaintext)
            .unwrap();
        let name = TokenName::parse("t").unwrap();
        let new = NewAgentToken {
            name,
            description: None,
            handle: generated.handle,
            secret_hash: hash,
            created_by_user_id: None,
            expires_at_ms: None,
        };
        store.create_agent_token(project_id, agent_id, new, seed as i64, None)
    }

    fn revoke() -> RevokeAgentToken {
        RevokeAgentToken {
            by_user_id: None,
            reason: RevocationReason::revoked(),
        }
    }

    fn agent(store: &Store) -> (u64, u64) {
        let (_, project_id) = fixtures::project(store);
        let agent = store
            .create_agent(project_id, &AgentName::parse("a").unwrap(), None, 1, None)
            .unwrap();
        (project_id, agent.id.get())
    }

    #[test]
    fn third_active_token_is_refused_and_revoking_frees_a_slot() {
        let store = fixtures::store();
        let (project_id, agent_id) = agent(&store);
        let first = new_token(&store, project_id, agent_id, 1).unwrap();
        new_token(&store, project_id, agent_id, 2).unwrap();
        assert!(matches!(
            new_token(&store, project_id, agent_id, 3),
            Err(CreateAgentTokenError::LimitReached(_))
        ));
        let revoked = store
            .revoke_agent_token(project_id, agent_id, first.id.get(), &revoke(), 0, None)
            .unwrap();
        assert_eq!(revoked.status, TokenStatus::Revoked);
        new_token(&store, project_id, agent_id, 4).unwrap();
        assert_eq!(
            store
                .active_agent_tokens(project_id, agent_id)
                .unwrap()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn concurrent_creates_never_exceed_the_limit() {
        let store = fixtures::store();
        let (project_id, agent_id) = agent(&store);
        let n_created = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..12)
                .map(|seed| {
                    let store = &store;
                    scope.spawn(move || new_token(store, project_id, agent_id, seed).is_ok())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|ok| *ok)
                .count()
        });
        assert_eq!(n_created, 2);
        assert_eq!(store.count_active_agent_tokens().unwrap(), 2);
    }

    #[test]
    fn revoking_twice_succeeds_and_foreign_tokens_are_not_found() {
        let store = fixtures::store();
        let (project_id, agent_id) = agent(&store);
        let token = new_token(&store, project_id, agent_id, 1).unwrap();
        store
            .revoke_agent_token(project_id, agent_id, token.id.get(), &revoke(), 0, None)
            .unwrap();
        store
            .revoke_agent_token(project_id, agent_id, token.id.get(), &revoke(), 0, None)
            .unwrap();
        assert!(matches!(
            store.revoke_agent_token(project_id, agent_id + 1, token.id.get(), &revoke(), 0, None),
            Err(RevokeAgentTokenError::NotFound)
        ));
        assert_eq!(
            store
                .agent_token(project_id, agent_id + 1, token.id.get())
                .unwrap(),
            None
        );
    }

    #[test]
    fn tokens_are_listed_by_last_use_with_never_used_last() {
        let store = fixtures::store();
        let (project_id, agent_id) = agent(&store);
        let never = new_token(&store, project_id, agent_id, 1).unwrap();
        let used = new_token(&store, project_id, agent_id, 2).unwrap();
        store
            .record_agent_token_use(&[(used.id.get(), 50)])
            .unwrap();
        let ids: Vec<_> = store
            .active_agent_tokens(project_id, agent_id)
            .unwrap()
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(ids, vec![used.id, never.id]);
    }

    #[test]
    fn deleting_the_agent_removes_its_tokens_and_handles() {
        let store = fixtures::store();
        let (project_id, agent_id) = agent(&store);
        let generated = generate_token(TokenKind::Agent, &mut StdRng::seed_from_u64(9));
        let name = TokenName::parse("t").unwrap();
        let hash = SecretHasher::insecure_for_tests()
            .hash(&generated.plaintext)
            .unwrap();
        let token = store
            .create_agent_token(
                project_id,
                agent_id,
                NewAgentToken {
                    name,
                    description: None,
                    handle: generated.handle.clone(),
                    secret_hash: hash,
                    created_by_user_id: None,
                    expires_at_ms: None,
                },
                1,
                None,
            )
            .unwrap();
        let deleted = store
            .delete_agent(project_id, agent_id, None, 0, None)
            .unwrap();
        assert_eq!(deleted.token_ids, vec![token.id]);
        assert!(
            store
                .agent_token_by_handle(&generated.handle)
                .unwrap()
                .is_none()
        );
        store
            .record_agent_token_use(&[(token.id.get(), 5)])
            .unwrap();
        assert_eq!(store.last_used(token.id.get()).unwrap(), None);
    }
}
