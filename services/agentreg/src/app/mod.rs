//! The one implementation of every operation. REST and gRPC both call it; it knows neither.
//! It authenticates callers, applies GitLab's roles and order of checks, converts raw input into
//! domain types, talks to storage only through the port (`Arc<dyn Storage>`), and runs argon2 on
//! the blocking pool.

pub mod admin_tokens;
pub mod agent_tokens;
pub mod agents;
mod argon2_pool;
pub mod audit;
pub mod auth;
mod cache;
pub mod credentials;
pub mod crypto;
mod failure_audit;
pub mod identity;
pub mod internal;
pub mod inventory;
mod limiter;
pub mod pagination;
pub mod refusals;
mod snapshot;
pub mod url_configs;
pub mod usage;

use agentreg_domain::access::{ClusterPermission, ProjectRole};
use agentreg_domain::entities::{Agent, Project};
use agentreg_domain::ids::{AgentId, AgentTokenId, PersonalAccessTokenId, ProjectRef};
use agentreg_domain::validation::ValidationErrors;
use agentreg_storage::port::Invalidation;
use agentreg_storage::port::Storage;
use agentreg_storage::{SecretHasher, StoreError};
use cache::TokenCache;
use refusals::{Conflict, ParameterError, Refusal};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use auth::{Caller, Credentials, Intent};
pub use limiter::address_key;

/// Every way an operation can fail. Each edge maps it with one exhaustive `match`. `Display` is
/// GitLab's message, the one text both edges show.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No credentials, or credentials that do not authenticate.
    #[error("401 Unauthorized")]
    Unauthorized,
    /// A `read_api` token on a route that writes.
    #[error("insufficient_scope")]
    InsufficientScope,
    /// The caller sees the resource but may not change it.
    #[error("403 Forbidden")]
    Forbidden,
    /// The project does not exist or the caller cannot see it.
    #[error("404 Project Not Found")]
    ProjectNotFound,
    /// The caller sees the project but not its agents (list route).
    #[error("404 ClusterAgents Not Found")]
    ClusterAgentsNotFound,
    /// A record lookup failed (GitLab's `ActiveRecord::RecordNotFound`, lower-case "found").
    #[error("404 Not found")]
    RecordNotFound,
    /// GitLab's `not_found!`: a resource or feature that is not there.
    #[error("404 Not Found")]
    NotFound,
    /// A user named by id does not exist.
    #[error("404 User Not Found")]
    UserNotFound,
    /// A parameter is missing, malformed or not allowed (Grape's `{"error": ...}`).
    #[error("{0}")]
    InvalidParameter(ParameterError),
    /// Keyset pagination asked for an order it cannot follow (GitLab's 405).
    #[error("Keyset pagination is not yet available for this type of request")]
    KeysetUnavailable,
    /// An operation the current state does not allow, with GitLab's reason.
    #[error("400 Bad request - {0}")]
    Refused(Refusal),
    /// Model validation failed: full messages, rendered as Ruby array text.
    #[error("400 Bad request - {}", agentreg_domain::validation::ruby_array_inspect(.0))]
    Invalid(Vec<String>),
    /// Validation of a user or project failed: messages keyed by attribute.
    #[error("{0}")]
    InvalidAttributes(ValidationErrors),
    /// `Sudo` from a caller who is not an administrator.
    #[error("403 Forbidden - Must be admin to use sudo")]
    SudoForbidden,
    /// `Sudo` with a token that lacks the `sudo` scope (GitLab's `insufficient_scope`).
    #[error("insufficient_scope")]
    SudoScopeMissing,
    /// `Sudo` names no user.
    #[error("404 User with ID or username '{0}' Not Found")]
    SudoUserNotFound(String),
    /// The admin token API found no token with this value (GitLab's
    /// `{"message":{"error":"Not found"}}`).
    #[error("Not found")]
    AdminTokenNotFound,
    /// The admin token API does not know the value's kind (GitLab's 422).
    #[error("Token type not supported.")]
    TokenTypeNotSupported,
    /// A unique value is taken (user create, member add).
    #[error("{0}")]
    Conflict(Conflict),
    /// `If-Unmodified-Since` did not hold.
    #[error("412 Precondition Failed")]
    PreconditionFailed,
    /// The agent-server JWT is missing or invalid.
    #[error("KAS JWT authentication invalid")]
    KasUnauthorized,
    /// The client failed to authenticate too often; it may retry after this many seconds.
    #[error("429 Too Many Requests")]
    TooManyRequests { retry_after_secs: u64 },
    /// The database cannot be reached or did not answer in time; nothing was changed.
    #[error("503 Service Unavailable")]
    Unavailable(#[source] StoreError),
    /// Too many callers already wait for argon2; this one may retry after this many seconds.
    /// Nothing was changed.
    #[error("503 Service Unavailable")]
    Overloaded { retry_after_secs: u64 },
    /// Something broke inside the service; the caller gets a generic message.
    #[error("500 Internal Server Error")]
    Internal(#[source] InternalError),
}

/// The cause of an internal error, logged once at the edge with its whole chain.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct InternalError {
    context: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl Error {
    pub(crate) fn internal(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::Internal(InternalError {
            context,
            source: source.into(),
        })
    }

    pub(crate) fn missing(parameter: &'static str) -> Error {
        Error::InvalidParameter(ParameterError::Missing(vec![parameter]))
    }

    pub(crate) fn invalid(parameter: &'static str) -> Error {
        Error::InvalidParameter(ParameterError::Invalid(parameter))
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Error {
        match error {
            StoreError::Unavailable(_) => Error::Unavailable(error),
            StoreError::Engine(_) | StoreError::Corrupt { .. } | StoreError::Dangling { .. } => {
                Error::internal("storage failed", error)
            }
        }
    }
}

impl From<ValidationErrors> for Error {
    fn from(errors: ValidationErrors) -> Error {
        Error::Invalid(errors.full_messages())
    }
}

/// Instance-wide behaviour that operations depend on.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub receptive_agents_enabled: bool,
    /// Failed authentications one client address (and token handle) may make per minute
    /// before it gets 429s.
    pub auth_failures_per_minute: u32,
    /// Failed agent-token authentications over all agents per minute.
    pub agent_token_failures_per_minute: u32,
    /// Callers waiting for argon2 beyond which new verifications are refused at once.
    pub argon2_queue_limit: usize,
    /// How the threads that hash new secrets yield to the rest of the process (Linux only).
    pub argon2_nice: crate::config::HashPriority,
    /// How far ahead an agent token's `expires_at` may be; `None` for no limit.
    pub agent_token_max_lifetime: Option<std::time::Duration>,
    /// Refuse agent tokens without an `expires_at`.
    pub require_agent_token_expiry: bool,
    /// The longest overlap a rotation may ask for; longer requests are cut to it.
    pub max_rotation_overlap: std::time::Duration,
    /// How long a rotated successor's secret is held for one more fetch; `None` when off.
    pub rotation_retrieve_window: Option<std::time::Duration>,
}

/// Counters that metrics report.
#[derive(Debug, Default)]
pub struct AuthCounters {
    pub argon2_verifications: AtomicU64,
    pub cache_hits: AtomicU64,
    pub failures: AtomicU64,
    /// Agent token rotations this process performed.
    pub rotations: AtomicU64,
}

impl AuthCounters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How many of each record exist, for metrics.
pub use agentreg_storage::port::Counts as Inventory;

/// Agent token deadlines as metrics report them.
#[derive(Debug, Clone, Default)]
pub struct TokenLifetimes {
    /// Time left on each usable token with an expiry.
    pub seconds_to_expiry: Vec<f64>,
    /// Usable tokens being rotated.
    pub n_retiring: u64,
}

/// The application: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Arc<dyn Storage>,
    hasher: SecretHasher,
    config: AppConfig,
    personal_tokens: TokenCache<PersonalAccessTokenId, Arc<Caller>>,
    agent_tokens: TokenCache<AgentTokenId, internal::AuthenticatedAgent>,
    sealer: crypto::Sealer,
    kas: internal::KasVerifier,
    counters: AuthCounters,
    limiter: limiter::FailureLimiter,
    turns: limiter::VerificationTurns,
    failure_audit: failure_audit::FailureAudit,
    /// Runs every argon2 hash and verification, on threads of its own.
    argon2: argon2_pool::Argon2Pool,
    usage: usage::TokenUsage,
}

/// A project the caller can see, with the caller's role in it.
#[derive(Debug, Clone)]
pub struct ProjectAccess {
    pub project: Project,
    pub role: ProjectRole,
}

/// A project's agent that the caller may act on, the role check passed.
#[derive(Debug, Clone)]
pub(crate) struct AgentAccess {
    pub(crate) project: Project,
    pub(crate) agent: Agent,
}

impl App {
    pub fn new(
        storage: Arc<dyn Storage>,
        hasher: SecretHasher,
        config: AppConfig,
        sealer: crypto::Sealer,
        kas: internal::KasVerifier,
    ) -> App {
        App {
            inner: Arc::new(Inner {
                storage,
                hasher,
                personal_tokens: TokenCache::new(),
                agent_tokens: TokenCache::new(),
                sealer,
                kas,
                counters: AuthCounters::default(),
                limiter: limiter::FailureLimiter::new(),
                turns: limiter::VerificationTurns::default(),
                failure_audit: failure_audit::FailureAudit::default(),
                usage: usage::TokenUsage::default(),
                argon2: argon2_pool::Argon2Pool::new(
                    argon2_pool::Argon2Pool::default_slots(),
                    config.argon2_queue_limit,
                    config.argon2_nice,
                ),
                config,
            }),
        }
    }

    pub fn counters(&self) -> &AuthCounters {
        &self.inner.counters
    }

    /// The numbers of agents, active tokens and URL configurations.
    pub async fn inventory(&self) -> Result<Inventory, Error> {
        Ok(self.inner.storage.counts().await?)
    }

    /// The time left on every usable agent token with an expiry, in seconds, and the number of
    /// usable tokens being rotated.
    pub async fn token_lifetimes(&self) -> Result<TokenLifetimes, Error> {
        let deadlines = self.inner.storage.agent_token_deadlines().await?;
        let now = now_ms();
        let mut lifetimes = TokenLifetimes::default();
        for deadline in deadlines {
            let retiring = deadline.retiring_until_ms.filter(|until| *until > now);
            let expiry = deadline.expires_at_ms;
            if expiry.is_some_and(|expires| expires <= now)
                || deadline.retiring_until_ms.is_some_and(|until| until <= now)
            {
                continue;
            }
            if retiring.is_some() {
                lifetimes.n_retiring += 1;
            }
            if let Some(expires) = expiry {
                #[expect(
                    clippy::cast_precision_loss,
                    reason = "milliseconds to seconds for a histogram"
                )]
                lifetimes
                    .seconds_to_expiry
                    .push((expires - now) as f64 / 1_000.0);
            }
        }
        Ok(lifetimes)
    }

    /// Whether storage can serve requests (readiness and gRPC health).
    pub async fn ready(&self) -> Result<(), Error> {
        Ok(self.inner.storage.ping().await?)
    }

    /// Which storage backend serves this instance.
    pub fn storage_backend(&self) -> &'static str {
        self.inner.storage.backend()
    }

    /// Follows invalidations from other replicas until storage goes away: evicts revoked
    /// tokens from the cache, and while the feed is interrupted keeps the cache empty and
    /// bypassed, so that no revoked token is honoured from a stale cache. Returns at once for a
    /// backend that only this process writes.
    pub async fn follow_invalidations(&self) {
        let Some(mut feed) = self.inner.storage.invalidations() else {
            return;
        };
        while let Some(invalidation) = feed.recv().await {
            match invalidation {
                Invalidation::PersonalAccessTokens(token_ids) => {
                    self.inner.personal_tokens.invalidate(&token_ids);
                }
                Invalidation::AgentTokens(token_ids) => {
                    self.inner.agent_tokens.invalidate(&token_ids);
                }
                Invalidation::Interrupted => {
                    tracing::warn!("invalidation feed interrupted; token caches bypassed");
                    self.inner.agent_tokens.suspend();
                    self.inner.personal_tokens.suspend();
                }
                Invalidation::Resumed => {
                    tracing::info!("invalidation feed resumed; token caches enabled");
                    self.inner.agent_tokens.resume();
                    self.inner.personal_tokens.resume();
                }
            }
        }
    }

    /// Writes pending last-use times of agent tokens in one transaction.
    pub async fn flush_token_usage(&self) -> Result<(), Error> {
        let pending = self.inner.usage.snapshot();
        if pending.is_empty() {
            return Ok(());
        }
        let written = pending.clone();
        self.inner.storage.record_agent_token_use(pending).await?;
        self.inner.usage.forget_written(&written);
        Ok(())
    }

    /// Makes every write durable, pending last-use times included; used at shutdown.
    pub async fn flush(&self) -> Result<(), Error> {
        self.flush_token_usage().await?;
        self.inner.storage.flush().await?;
        Ok(())
    }

    fn storage(&self) -> &dyn Storage {
        self.inner.storage.as_ref()
    }

    /// Hashes a new secret with argon2id on the argon2 threads.
    async fn hash_secret(
        &self,
        secret: &secrecy::SecretString,
    ) -> Result<agentreg_storage::SecretHash, Error> {
        let hasher = self.inner.hasher.clone();
        let secret = secret.clone();
        self.inner
            .argon2
            .run(argon2_pool::Class::Hash, move || hasher.hash(&secret))
            .await?
            .map_err(|error| Error::internal("hashing a secret failed", error))
    }

    /// Checks a presented secret against its stored hash on the argon2 threads.
    async fn verify_secret(
        &self,
        secret: &secrecy::SecretString,
        hash: agentreg_storage::SecretHash,
    ) -> Result<bool, Error> {
        AuthCounters::bump(&self.inner.counters.argon2_verifications);
        let hasher = self.inner.hasher.clone();
        let secret = secret.clone();
        self.inner
            .argon2
            .run(argon2_pool::Class::Verify, move || {
                hasher.verify(&secret, &hash)
            })
            .await
    }

    /// Resolves a project reference (a numeric id, or a full path matched case-insensitively)
    /// that the caller can see.
    pub(crate) async fn project_access(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
    ) -> Result<ProjectAccess, Error> {
        let (access, _) = self.visible_project(caller, project_ref, None).await?;
        Ok(access)
    }

    /// GitLab's order of checks for a route on one agent, over one storage read: the project
    /// the caller can see (else `404 Project Not Found`), then the caller's role (else
    /// `refusal`), then the agent (else `404 Not found`).
    pub(crate) async fn agent_access(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: AgentId,
        permission: ClusterPermission,
        refusal: Error,
    ) -> Result<AgentAccess, Error> {
        let (access, agent) = self
            .visible_project(caller, project_ref, Some(agent_id))
            .await?;
        access.require(permission, refusal, agent)
    }

    /// The project the caller can see with the caller's role in it and, when `agent_id` is
    /// given, that agent if it belongs to the project, in one storage read. Checks that GitLab
    /// runs between the project and the role (URL configurations) come after this call.
    async fn visible_project(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: Option<AgentId>,
    ) -> Result<(ProjectAccess, Option<Agent>), Error> {
        let found = self
            .storage()
            .project_with_access(
                project_ref,
                (!caller.user.is_admin).then_some(caller.user.id),
                agent_id,
            )
            .await?;
        let Some(found) = found else {
            return Err(Error::ProjectNotFound);
        };
        let role = if caller.user.is_admin {
            ProjectRole::Admin
        } else {
            match found.access_level {
                Some(level) => ProjectRole::Member(level),
                None => ProjectRole::NonMember,
            }
        };
        if !role.can_read_project() {
            return Err(Error::ProjectNotFound);
        }
        let access = ProjectAccess {
            project: found.project,
            role,
        };
        Ok((access, found.agent))
    }
}

impl ProjectAccess {
    /// The checks after the project's: the caller's role (else `refusal`), then the agent
    /// (else `404 Not found`).
    pub(crate) fn require(
        self,
        permission: ClusterPermission,
        refusal: Error,
        agent: Option<Agent>,
    ) -> Result<AgentAccess, Error> {
        if !self.role.allows(permission) {
            return Err(refusal);
        }
        let Some(agent) = agent else {
            return Err(Error::RecordNotFound);
        };
        Ok(AgentAccess {
            project: self.project,
            agent,
        })
    }
}

/// Milliseconds since the Unix epoch, UTC. Operations read the clock once, before storage.
pub(crate) fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Who an operation acts for, when recorded as an author: the caller, or the user `Sudo` named,
/// with the administrator who used it.
pub(crate) fn author(caller: &Caller) -> audit::Author {
    audit::Author {
        user_id: Some(caller.user.id),
        sudo_by: caller.sudo_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_render_as_gitlab_bad_request() {
        let error = Error::Invalid(vec!["Name can't be blank".to_owned()]);
        assert_eq!(
            error.to_string(),
            r#"400 Bad request - ["Name can't be blank"]"#
        );
    }
}
