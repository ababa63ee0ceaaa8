//! The storage port: every operation the app performs on stored data, as one async,
//! object-safe trait over domain types. The app holds an `Arc<dyn Storage>` and never learns
//! which backend is behind it; no backend type (sled trees, SQL rows, driver errors) appears here.
//!
//! Each backend enforces every invariant atomically and under concurrency, whichever process
//! serves the request: unique agent names per project, at most two active tokens per agent, one
//! URL configuration per agent, cascading deletes, monotonic never-reused ids, and each audit
//! event committed together with its change. A write that returns `Ok` is durable. The contract
//! test suite (`tests/contract.rs`) runs against every backend.

use crate::agent_tokens::{CreateAgentTokenError, RevokeAgentTokenError, RotateAgentTokenError};
use crate::agents::{AgentSeek, CreateAgentError, DeleteAgentError, DeletedAgent, UnmodifiedSince};
use crate::audit::NewAuditEvent;
use crate::backup::{RestoreError, SnapshotError, SnapshotSummary};
use crate::hashing::SecretHash;
use crate::identity::{
    AddMemberError, CreatePersonalAccessTokenError, CreateProjectError, CreateUserError,
};
use crate::url_configs::{CreateUrlConfigurationError, DeleteUrlConfigurationError};
use crate::{Page, PageWindow, StoreError};
use agentreg_domain::access::{AccessLevel, ExpiryDate, Scope};
use agentreg_domain::entities::{
    Agent, AgentToken, AuditEvent, AuditScope, Member, PersonalAccessToken, Project,
    RevocationReason, SealedUrlAuth, UrlConfiguration, User,
};
use agentreg_domain::ids::{
    AgentId, AgentTokenId, PersonalAccessTokenId, ProjectId, ProjectRef, UrlConfigurationId, UserId,
};
use agentreg_domain::names::{AgentName, ProjectNaming, TokenDescription, TokenName, UserIdentity};
use agentreg_domain::tokens::{AgentTokenSet, TokenHandle};
use std::sync::Arc;

/// Builds the audit event of a change from its outcome. Mutating operations take one and write
/// the event in the same transaction as the change, so a change is never durable without its
/// event, nor an event without its change. It may run more than once (transactions re-run), so it
/// must be pure.
pub type Audit<T> = Option<Arc<dyn Fn(&T) -> NewAuditEvent + Send + Sync>>;

/// A project with what one user's request needs of it, read together: the user's membership
/// level and, when asked for, one of the project's agents.
#[derive(Debug, Clone)]
pub struct ProjectWithAccess {
    pub project: Project,
    /// The user's membership level; `None` for a non-member.
    pub access_level: Option<AccessLevel>,
    /// The agent asked for, when it exists and belongs to this project.
    pub agent: Option<Agent>,
}

/// A new personal access token; the secret is already hashed (outside any transaction).
#[derive(Debug, Clone)]
pub struct NewPersonalAccessToken {
    pub user_id: UserId,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<ExpiryDate>,
    pub handle: TokenHandle,
    pub secret_hash: SecretHash,
}

/// A personal access token found by its handle, with the hash to verify the presented secret
/// against, and its owner.
#[derive(Debug, Clone)]
pub struct PersonalAccessTokenCredential {
    pub token: PersonalAccessToken,
    pub user: User,
    pub secret_hash: SecretHash,
}

/// A new agent token; the secret is already hashed.
#[derive(Debug, Clone)]
pub struct NewAgentToken {
    pub name: TokenName,
    pub description: Option<TokenDescription>,
    pub handle: TokenHandle,
    pub secret_hash: SecretHash,
    pub created_by_user_id: Option<UserId>,
    /// When it stops authenticating on its own; the app checks it is in the future.
    pub expires_at_ms: Option<i64>,
}

/// Who revokes a token and why. Revoking a revoked token keeps its first details; revoking an
/// expired one records it as expired, at its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeAgentToken {
    pub by_user_id: Option<UserId>,
    pub reason: RevocationReason,
}

impl Default for RevokeAgentToken {
    /// Revoked by nobody in particular, with the plain reason `revoked`.
    fn default() -> RevokeAgentToken {
        RevokeAgentToken {
            by_user_id: None,
            reason: RevocationReason::revoked(),
        }
    }
}

/// A rotation to make: the successor (its secret already hashed) and the predecessor's overlap
/// deadline.
#[derive(Debug, Clone)]
pub struct NewRotation {
    pub successor: NewAgentToken,
    pub retiring_until_ms: i64,
}

/// The two tokens of a rotation: the predecessor, now retiring, and its successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotatedAgentToken {
    pub predecessor: AgentToken,
    pub successor: AgentToken,
}

/// An agent token found by its handle, with the hash to verify the presented secret against.
#[derive(Debug, Clone)]
pub struct AgentTokenCredential {
    pub token: AgentToken,
    pub secret_hash: SecretHash,
}

/// A rotated successor's secret, sealed by the app under the instance key, that the caller who
/// rotated may fetch once more with the same idempotency key until `expires_at_ms`.
#[derive(Clone)]
pub struct RotationRetrieval {
    pub predecessor_id: AgentTokenId,
    pub idempotency_key: String,
    pub user_id: UserId,
    pub successor_id: AgentTokenId,
    pub sealed_secret: Vec<u8>,
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for RotationRetrieval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotationRetrieval")
            .field("predecessor_id", &self.predecessor_id)
            .field("successor_id", &self.successor_id)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// A URL configuration to create; private keys arrive sealed.
#[derive(Debug, Clone)]
pub struct NewUrlConfiguration {
    pub url: String,
    pub ca_cert: Option<String>,
    pub tls_host: Option<String>,
    pub auth: SealedUrlAuth,
    pub created_by_user_id: Option<UserId>,
}

/// How many of each record exist, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub agents: u64,
    pub active_agent_tokens: u64,
    pub url_configurations: u64,
}

/// An agent with its project and every one of its tokens, for the instance inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryAgent {
    pub agent: Agent,
    pub project: Project,
    /// Active first, then revoked.
    pub tokens: Vec<AgentToken>,
}

/// When an active token stops working on its own, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenDeadlines {
    pub expires_at_ms: Option<i64>,
    /// Set while the token is being rotated.
    pub retiring_until_ms: Option<i64>,
}

/// What another process changed that a local cache may hold. Only backends shared by several
/// processes send these; an embedded backend has no other writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// These agent tokens were revoked (directly, or with their agent) and must stop
    /// authenticating, or were rotated and must be read again for their overlap deadline.
    AgentTokens(Vec<AgentTokenId>),
    /// These personal access tokens were revoked and must stop authenticating.
    PersonalAccessTokens(Vec<PersonalAccessTokenId>),
    /// The feed lost its connection: changes may be missed until [`Invalidation::Resumed`], so
    /// caches must be dropped and bypassed meanwhile.
    Interrupted,
    /// The feed is connected again; caches may fill again.
    Resumed,
}

/// A stream of [`Invalidation`]s, for as long as the storage lives.
pub type InvalidationFeed = tokio::sync::mpsc::Receiver<Invalidation>;

/// Every operation on stored data. Reads return `Ok(None)` for what does not exist (or exists in
/// another project: a record is found only through its owner). Writes take `now_ms`, ids and
/// hashes from the caller, computed before any transaction starts.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Which backend this is, for logs (`sled`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Checks that the backend can serve requests (readiness): `Err(Unavailable)` when its
    /// database is unreachable.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Makes every acknowledged write durable; called at shutdown.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Holds a rotated successor's sealed secret for the retrieve window. Held secrets are never
    /// part of a snapshot.
    async fn hold_rotation_secret(&self, retrieval: RotationRetrieval) -> Result<(), StoreError>;

    /// Takes a held secret, at most once under any concurrency: only for the user who rotated,
    /// with the same idempotency key, before the window ends. Returns the successor's id and the
    /// sealed secret.
    async fn take_rotation_secret(
        &self,
        predecessor_id: AgentTokenId,
        idempotency_key: &str,
        user_id: UserId,
        now_ms: i64,
    ) -> Result<Option<(AgentTokenId, Vec<u8>)>, StoreError>;

    /// Deletes held secrets whose window has ended; returns how many went.
    async fn purge_rotation_secrets(&self, now_ms: i64) -> Result<u64, StoreError>;

    /// Records the fingerprint of the instance key unless one is recorded, and returns the one
    /// recorded: a different one means this process holds another key than the one that sealed
    /// the data. Snapshots carry it.
    async fn record_key_fingerprint(&self, fingerprint: &str) -> Result<String, StoreError>;

    /// Changes made by other processes that caches must follow; `None` for a backend that only
    /// this process writes. Called once, at start.
    fn invalidations(&self) -> Option<InvalidationFeed>;

    // Users, tokens, projects and members.

    /// Whether any user exists; none means this is a first start.
    async fn has_users(&self) -> Result<bool, StoreError>;
    async fn create_user(
        &self,
        identity: UserIdentity,
        is_admin: bool,
        now_ms: i64,
    ) -> Result<User, CreateUserError>;
    async fn user(&self, user_id: UserId) -> Result<Option<User>, StoreError>;
    /// Matched case-insensitively.
    async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError>;
    async fn create_personal_access_token(
        &self,
        new: NewPersonalAccessToken,
        now_ms: i64,
    ) -> Result<PersonalAccessToken, CreatePersonalAccessTokenError>;
    async fn personal_access_token_by_handle(
        &self,
        handle: &TokenHandle,
    ) -> Result<Option<PersonalAccessTokenCredential>, StoreError>;
    /// Revokes a personal access token (idempotently), and tells every process to drop it;
    /// `None` when it does not exist.
    async fn revoke_personal_access_token(
        &self,
        token_id: PersonalAccessTokenId,
        now_ms: i64,
        audit: Audit<PersonalAccessToken>,
    ) -> Result<Option<PersonalAccessToken>, StoreError>;
    async fn create_project(
        &self,
        owner_id: UserId,
        naming: ProjectNaming,
        description: Option<String>,
        now_ms: i64,
    ) -> Result<Project, CreateProjectError>;
    async fn project(&self, project_id: ProjectId) -> Result<Option<Project>, StoreError>;
    /// `namespace/path`, matched case-insensitively.
    async fn project_by_full_path(&self, full_path: &str) -> Result<Option<Project>, StoreError>;
    async fn access_level(
        &self,
        project_id: ProjectId,
        user_id: UserId,
    ) -> Result<Option<AccessLevel>, StoreError>;
    /// The project named by id or by full path (matched case-insensitively), with `member`'s
    /// membership level in it (none asked for an administrator, whose role does not depend on
    /// it) and, when `agent_id` is given, that agent if it belongs to the project: one read, so
    /// one round trip on PostgreSQL. `None` when no project matches.
    async fn project_with_access(
        &self,
        project_ref: &ProjectRef,
        member: Option<UserId>,
        agent_id: Option<AgentId>,
    ) -> Result<Option<ProjectWithAccess>, StoreError>;
    async fn add_member(
        &self,
        project_id: ProjectId,
        user_id: UserId,
        access_level: AccessLevel,
        now_ms: i64,
    ) -> Result<Member, AddMemberError>;

    // Agents.

    /// Registers an agent; its name is unique in the project.
    async fn create_agent(
        &self,
        project_id: ProjectId,
        name: AgentName,
        created_by_user_id: Option<UserId>,
        now_ms: i64,
        audit: Audit<Agent>,
    ) -> Result<Agent, CreateAgentError>;
    async fn agent(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<Agent>, StoreError>;
    /// A page of the project's agents ordered by name, with the project's total. It costs the
    /// same at any offset (O(log n + page) on sled, a bucket per few hundred agents on
    /// PostgreSQL), not a walk over the agents before it.
    async fn agents_page(
        &self,
        project_id: ProjectId,
        window: PageWindow,
    ) -> Result<Page<Agent>, StoreError>;
    /// Up to `limit` of the project's agents from a keyset position, in the position's order,
    /// in O(log n + limit). Fewer than `limit` means the end of the list.
    async fn agents_keyset_page(
        &self,
        project_id: ProjectId,
        seek: AgentSeek,
        limit: u64,
    ) -> Result<Vec<Agent>, StoreError>;
    /// Deletes an agent with its tokens (revoked with it) and URL configuration.
    async fn delete_agent(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        precondition: Option<UnmodifiedSince>,
        now_ms: i64,
        audit: Audit<DeletedAgent>,
    ) -> Result<DeletedAgent, DeleteAgentError>;

    // Agent tokens.

    /// The agent's token set, if the agent exists in the project; used to refuse a create before
    /// paying for hashing. [`Storage::create_agent_token`] checks the limit again atomically.
    async fn agent_token_set(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<AgentTokenSet>, StoreError>;
    /// Creates an active token; at most two usable (active and unexpired at `now_ms`) per agent,
    /// under any concurrency.
    async fn create_agent_token(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        new: NewAgentToken,
        now_ms: i64,
        audit: Audit<AgentToken>,
    ) -> Result<AgentToken, CreateAgentTokenError>;
    /// The agent's active tokens (unordered), or `None` when the agent is not in the project.
    async fn active_agent_tokens(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<Vec<AgentToken>>, StoreError>;
    /// One token of the agent, active or revoked.
    async fn agent_token(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        token_id: AgentTokenId,
    ) -> Result<Option<AgentToken>, StoreError>;
    /// Every token of the agent, active, expired and revoked (unordered), or `None` when the
    /// agent is not in the project.
    async fn all_agent_tokens(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<Vec<AgentToken>>, StoreError>;
    /// Revokes a token (idempotently); it keeps its record, with `revoke`'s details.
    async fn revoke_agent_token(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        token_id: AgentTokenId,
        revoke: RevokeAgentToken,
        now_ms: i64,
        audit: Audit<AgentToken>,
    ) -> Result<AgentToken, RevokeAgentTokenError>;
    /// Rotates a usable token: it becomes retiring (usable until the rotation's deadline at the
    /// latest) and the successor takes its slot. Refused for a token that is not usable, already
    /// rotating, or while another of the agent's tokens is retiring; so concurrent rotations of
    /// one token create exactly one successor, and an agent never has more than two counted
    /// tokens plus one retiring.
    async fn rotate_agent_token(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        token_id: AgentTokenId,
        rotation: NewRotation,
        now_ms: i64,
        audit: Audit<RotatedAgentToken>,
    ) -> Result<RotatedAgentToken, RotateAgentTokenError>;
    /// Ends a rotation on its successor's first use, whichever process sees it: revokes the
    /// predecessor (reason `rotated`) unless it is already revoked, tells every process to drop
    /// it, and clears the successor's pending predecessor. Returns the predecessor it revoked, or
    /// `None` when there was nothing to do (another process got there first).
    async fn complete_agent_token_rotation(
        &self,
        successor_id: AgentTokenId,
        now_ms: i64,
        audit: Audit<AgentToken>,
    ) -> Result<Option<AgentToken>, StoreError>;
    /// Records every token that ended on its own by `now_ms` (past its expiry, or retiring past
    /// its overlap deadline) as revoked then, for that reason, each with its audit event: once,
    /// whichever process sweeps first. Reads already treat such tokens as revoked; this makes the
    /// change durable and audited. Returns the tokens it recorded.
    async fn retire_ended_agent_tokens(
        &self,
        now_ms: i64,
        audit: Audit<AgentToken>,
    ) -> Result<Vec<AgentToken>, StoreError>;
    async fn agent_token_by_handle(
        &self,
        handle: &TokenHandle,
    ) -> Result<Option<AgentTokenCredential>, StoreError>;
    /// Records last-use times; a stored time never moves backwards.
    async fn record_agent_token_use(
        &self,
        uses: Vec<(AgentTokenId, i64)>,
    ) -> Result<(), StoreError>;

    /// Every agent of the instance, ordered by id, with its project and tokens, read
    /// consistently (the administrators' inventory).
    async fn all_agents(&self) -> Result<Vec<InventoryAgent>, StoreError>;

    // URL configurations.

    /// Creates the agent's one configuration and marks the agent receptive.
    async fn create_url_configuration(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        new: NewUrlConfiguration,
        now_ms: i64,
        audit: Audit<UrlConfiguration>,
    ) -> Result<UrlConfiguration, CreateUrlConfigurationError>;
    /// The agent's configurations (zero or one), or `None` when the agent is not in the
    /// project.
    async fn url_configurations(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<Vec<UrlConfiguration>>, StoreError>;
    async fn url_configuration(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        url_configuration_id: UrlConfigurationId,
    ) -> Result<Option<UrlConfiguration>, StoreError>;
    async fn delete_url_configuration(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        url_configuration_id: UrlConfigurationId,
        precondition: Option<UnmodifiedSince>,
        now_ms: i64,
        audit: Audit<UrlConfiguration>,
    ) -> Result<UrlConfiguration, DeleteUrlConfigurationError>;
    /// Every URL configuration of the instance, ordered by id (the agent server's list).
    async fn all_url_configurations(&self) -> Result<Vec<UrlConfiguration>, StoreError>;
    /// Replaces the sealed key of a configuration (its private key in JWT mode, its client key
    /// in mTLS mode) with the same key sealed anew; `false` if the configuration is gone.
    async fn replace_sealed_key(
        &self,
        url_configuration_id: UrlConfigurationId,
        sealed: Vec<u8>,
    ) -> Result<bool, StoreError>;

    // Audit events and totals.

    /// Appends an event that belongs to no other change (a failed authentication).
    async fn record_audit_event(
        &self,
        event: NewAuditEvent,
        now_ms: i64,
    ) -> Result<AuditEvent, StoreError>;
    /// Deletes the instance-wide events created before `before_ms` (the retention setting) and
    /// says how many; project events are kept.
    async fn delete_instance_audit_events_before(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// A page of one scope's events, newest first.
    async fn audit_events_page(
        &self,
        scope: AuditScope,
        window: PageWindow,
    ) -> Result<Page<AuditEvent>, StoreError>;
    async fn counts(&self) -> Result<Counts, StoreError>;
    /// The deadlines of every active (not revoked) agent token that has one, for metrics.
    async fn agent_token_deadlines(&self) -> Result<Vec<TokenDeadlines>, StoreError>;

    // Backup.

    /// A consistent snapshot of everything, in the one snapshot format every backend reads.
    async fn snapshot(&self) -> Result<Vec<u8>, SnapshotError>;
    /// Fills an empty store from a snapshot; refuses a store that holds data.
    async fn restore(&self, snapshot: Vec<u8>) -> Result<SnapshotSummary, RestoreError>;
}
