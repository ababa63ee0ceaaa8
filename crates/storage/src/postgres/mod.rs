//! The PostgreSQL backend, for several replicas sharing one database: the port over a pool of
//! connections, the embedded migrations, the invalidation feed (LISTEN/NOTIFY) and snapshots in
//! the one snapshot format.
//!
//! Each write is one READ COMMITTED transaction: invariants are enforced by unique indexes, foreign
//! keys with cascades, and a lock on the agent's row where a rule spans several rows (the
//! active-token limit). Every statement ends within the statement timeout and every operation
//! within a deadline, so an outage gives [`StoreError::Unavailable`] quickly; the pool replaces
//! broken connections by itself when the database returns.

mod backup;
mod errors;
mod invalidations;
mod migrations;
mod rows;
#[cfg(test)]
mod tests;
mod tls;

use crate::agent_tokens::{
    CreateAgentTokenError, RevokeAgentTokenError, RotateAgentTokenError, revocation_of,
    rotated as agent_tokens_rotated,
};
use crate::agents::{
    AgentSeek, CreateAgentError, DeleteAgentError, DeletedAgent, Direction, UnmodifiedSince,
};
use crate::audit::NewAuditEvent;
use crate::backup::{RestoreError, SnapshotError, SnapshotSummary};
use crate::identity::{
    AddMemberError, CreatePersonalAccessTokenError, CreateProjectError, CreateUserError,
};
use crate::port::{
    AgentTokenCredential, Audit, Counts, InvalidationFeed, InventoryAgent, NewAgentToken,
    NewPersonalAccessToken, NewRotation, NewUrlConfiguration, PersonalAccessTokenCredential,
    ProjectWithAccess, RevokeAgentToken, RotatedAgentToken, RotationRetrieval, Storage,
    TokenDeadlines,
};
use crate::schema;
use crate::url_configs::{CreateUrlConfigurationError, DeleteUrlConfigurationError};
use crate::{EngineError, Page, PageWindow, SecretHash, StoreError};
use agentreg_domain::access::AccessLevel;
use agentreg_domain::entities::{
    Agent, AgentToken, AuditEvent, AuditScope, Member, PersonalAccessToken, Project, SealedUrlAuth,
    UrlConfiguration, User,
};
use agentreg_domain::ids::{
    AgentId, AgentTokenId, PersonalAccessTokenId, ProjectId, ProjectRef, UrlConfigurationId, UserId,
};
use agentreg_domain::names::{AgentName, ProjectNaming, UserIdentity};
use agentreg_domain::tokens::{AgentTokenSet, TokenHandle, sort_by_last_use};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use errors::{pg, violates};
use rows::{
    AGENT_SELECT, CONFIG_COLUMNS, PROJECT_WITH_ACCESS_SELECT, TOKEN_COLUMNS, get, key, unsigned,
};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// The `instance_settings` row of the instance key's fingerprint (migration 0002).
pub(crate) const KEY_FINGERPRINT_SETTING: &str = "instance_key_fingerprint";

/// How to reach the database.
#[derive(Clone)]
pub struct PostgresOptions {
    /// A libpq URL (`postgres://user@host:5432/db?sslmode=verify-full&sslrootcert=/ca.pem`) or
    /// key=value string. `sslmode` may be disable, allow, prefer (the default), require,
    /// verify-ca or verify-full.
    pub url: String,
    /// Overrides the URL's password (read from `--database-password-file` by the caller).
    pub password: Option<String>,
    /// The most connections the pool opens.
    pub pool_size: usize,
    /// The longest any statement may run; the server cancels it after that.
    pub statement_timeout: Duration,
    /// The longest connecting, or waiting for a pooled connection, may take.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("PostgresOptions")
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// Connecting to the database, or migrating its schema, failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the database URL is invalid")]
    InvalidUrl(#[source] EngineError),
    #[error("setting up TLS for the database connection failed")]
    Tls(#[source] EngineError),
    #[error("the database is unreachable")]
    Unavailable(#[source] EngineError),
    #[error("applying schema migration {version} failed")]
    Migration {
        version: u32,
        #[source]
        source: EngineError,
    },
    #[error(
        "the database schema is at version {found}, newer than this build's {known}; run a newer agentreg"
    )]
    SchemaTooNew { found: u32, known: u32 },
    #[error("the database refused a statement")]
    Store(#[source] StoreError),
}

impl From<StoreError> for ConnectError {
    fn from(error: StoreError) -> ConnectError {
        match error {
            StoreError::Unavailable(source) => ConnectError::Unavailable(source),
            StoreError::Engine(_) | StoreError::Corrupt { .. } | StoreError::Dangling { .. } => {
                ConnectError::Store(error)
            }
        }
    }
}

/// The port over a PostgreSQL database.
pub struct PostgresStorage {
    pool: Pool,
    /// The longest one operation may take, pool wait and every statement included.
    operation_timeout: Duration,
    ping_timeout: Duration,
    invalidations: Mutex<Option<InvalidationFeed>>,
    /// Stops the feed's task when the storage is dropped.
    _listener: invalidations::Listener,
}

impl PostgresStorage {
    /// Connects, applies any pending migrations (once, whichever replica gets there first) and
    /// starts listening for invalidations.
    pub async fn connect(options: PostgresOptions) -> Result<PostgresStorage, ConnectError> {
        let settings = tls::settings(&options).await?;
        let mut client = connect_one(&settings).await?;
        migrations::apply(&mut client).await?;
        drop(client);
        let manager = Manager::from_config(
            settings.config.clone(),
            settings.tls.clone(),
            ManagerConfig {
                // A closed connection is noticed when it is taken; a half-open one fails its
                // first statement (with `Unavailable`) and is dropped then.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // A request never waits longer than the statement timeout in all: for a pooled
        // connection, for a new one, or for its statements (the operation deadline below).
        let request_timeout = options.statement_timeout.min(options.connect_timeout);
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(request_timeout))
            .create_timeout(Some(request_timeout))
            .recycle_timeout(Some(request_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|error| ConnectError::InvalidUrl(EngineError::new(error)))?;
        let (listener, feed) = invalidations::start(settings).await?;
        Ok(PostgresStorage {
            pool,
            operation_timeout: options.statement_timeout,
            ping_timeout: options.statement_timeout.min(Duration::from_secs(2)),
            invalidations: Mutex::new(Some(feed)),
            _listener: listener,
        })
    }

    /// Gets a pooled connection.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(errors::pool)
    }

    /// Runs an operation within the operation deadline.
    async fn bounded<T, E: From<StoreError>>(
        &self,
        operation: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        match tokio::time::timeout(self.operation_timeout, operation).await {
            Ok(result) => result,
            Err(_) => Err(E::from(errors::timed_out())),
        }
    }

    async fn agent_in(
        client: &impl deadpool_postgres::GenericClient,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<Agent>, StoreError> {
        let sql = format!("{AGENT_SELECT} WHERE a.id = $1 AND a.project_id = $2");
        let row = client
            .query_opt(&sql, &[&key(agent_id.get()), &key(project_id.get())])
            .await
            .map_err(pg)?;
        row.as_ref().map(rows::agent).transpose()
    }

    async fn user_by_id(
        client: &impl deadpool_postgres::GenericClient,
        user_id: UserId,
    ) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {} FROM users u WHERE u.id = $1", rows::USER_COLUMNS);
        let row = client
            .query_opt(&sql, &[&key(user_id.get())])
            .await
            .map_err(pg)?;
        row.as_ref().map(|row| rows::user(row, 0)).transpose()
    }

    async fn project_where(
        &self,
        condition: &str,
        parameter: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> Result<Option<Project>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {} FROM projects p JOIN users u ON u.id = p.owner_id WHERE {condition}",
            rows::PROJECT_COLUMNS
        );
        let row = client.query_opt(&sql, &[parameter]).await.map_err(pg)?;
        row.as_ref().map(rows::project).transpose()
    }

    /// Locks the agent's row for a new token (a create or a rotation's successor), then reads
    /// its token set and takes the new token's id; `None` when the agent is not in the project.
    /// The token limits span rows, so they hold under concurrency only because every create and
    /// rotation (on any replica) takes this lock before counting: they take turns per agent.
    async fn lock_for_new_token(
        transaction: &deadpool_postgres::Transaction<'_>,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<(AgentTokenSet, i64)>, StoreError> {
        let locked = transaction
            .query_opt(
                "SELECT id FROM agents WHERE id = $1 AND project_id = $2 FOR UPDATE",
                &[&key(agent_id.get()), &key(project_id.get())],
            )
            .await
            .map_err(pg)?;
        if locked.is_none() {
            return Ok(None);
        }
        let token_set = PostgresStorage::token_set(transaction, agent_id).await?;
        let next = transaction
            .query_one("SELECT nextval('agent_tokens_id_seq')", &[])
            .await
            .map_err(pg)?;
        Ok(Some((token_set, get(&next, 0)?)))
    }

    /// The agent's tokens in sled's token-set order: active, then revoked, each in the order
    /// they took that status.
    async fn token_set(
        client: &impl deadpool_postgres::GenericClient,
        agent_id: AgentId,
    ) -> Result<AgentTokenSet, StoreError> {
        let rows = client
            .query(
                "SELECT id, revoked, expires_at_ms, retiring_until_ms FROM agent_tokens \
                 WHERE agent_id = $1 ORDER BY list_position",
                &[&key(agent_id.get())],
            )
            .await
            .map_err(pg)?;
        let mut active = Vec::new();
        let mut revoked = Vec::new();
        let mut expiries = std::collections::BTreeMap::new();
        let mut retiring = std::collections::BTreeMap::new();
        for row in &rows {
            let id = unsigned(get(row, 0)?);
            if get::<bool>(row, 1)? {
                revoked.push(id);
            } else {
                active.push(id);
            }
            if let Some(expires_at_ms) = get::<Option<i64>>(row, 2)? {
                expiries.insert(id, expires_at_ms);
            }
            if let Some(retiring_until_ms) = get::<Option<i64>>(row, 3)? {
                retiring.insert(id, retiring_until_ms);
            }
        }
        Ok(AgentTokenSet::from_parts(
            active, revoked, expiries, retiring,
        ))
    }

    async fn token_where(
        &self,
        condition: &str,
        parameters: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<(AgentToken, SecretHash)>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM agent_tokens t WHERE {condition}");
        let Some(row) = client.query_opt(&sql, parameters).await.map_err(pg)? else {
            return Ok(None);
        };
        let hash = SecretHash::from_stored(get(&row, rows::TOKEN_HASH)?);
        Ok(Some((rows::agent_token(&row)?, hash)))
    }
}

/// Applies the pending migrations and returns their versions, for `agentreg migrate`.
pub async fn migrate(options: &PostgresOptions) -> Result<Vec<u32>, ConnectError> {
    let settings = tls::settings(options).await?;
    let mut client = connect_one(&settings).await?;
    migrations::apply(&mut client).await
}

/// One connection outside the pool, driven by a task of its own.
async fn connect_one(
    settings: &tls::ConnectionSettings,
) -> Result<tokio_postgres::Client, ConnectError> {
    let connecting = settings.config.connect(settings.tls.clone());
    let (client, connection) = tokio::time::timeout(settings.connect_timeout, connecting)
        .await
        .map_err(|_| ConnectError::Unavailable(EngineError::new("connecting timed out")))?
        .map_err(pg)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = %error, "a database connection ended");
        }
    });
    Ok(client)
}

/// Writes an audit event inside the change's transaction.
async fn insert_audit_event(
    transaction: &deadpool_postgres::Transaction<'_>,
    event: NewAuditEvent,
    now_ms: i64,
) -> Result<AuditEvent, StoreError> {
    let sql = format!(
        "INSERT INTO audit_events AS e (project_id, author_id, entity_id, entity_type, details, \
         created_at_ms) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {}",
        rows::AUDIT_COLUMNS
    );
    let author_id = event.author_id.map(|id| key(id.get()));
    let row = transaction
        .query_one(
            &sql,
            &[
                &rows::scope_key(event.scope),
                &author_id,
                &key(event.entity_id),
                &event.entity_type,
                &event.details.to_string(),
                &now_ms,
            ],
        )
        .await
        .map_err(pg)?;
    rows::audit_event(&row)
}

/// Writes the audit event of an outcome, if the operation is audited.
async fn audit_outcome<T>(
    transaction: &deadpool_postgres::Transaction<'_>,
    audit: &Audit<T>,
    outcome: &T,
    now_ms: i64,
) -> Result<(), StoreError> {
    if let Some(audit) = audit {
        insert_audit_event(transaction, audit(outcome), now_ms).await?;
    }
    Ok(())
}

/// Tells every replica's feed that these tokens no longer authenticate. Delivered when the
/// transaction commits, and only then.
async fn notify_revoked(
    transaction: &deadpool_postgres::Transaction<'_>,
    token_ids: &[AgentTokenId],
) -> Result<(), StoreError> {
    if token_ids.is_empty() {
        return Ok(());
    }
    transaction
        .execute(
            "SELECT pg_notify($1, $2)",
            &[&invalidations::CHANNEL, &invalidations::payload(token_ids)],
        )
        .await
        .map_err(pg)?;
    Ok(())
}

/// A page of a project's agents by name with the project's total, from the name buckets of
/// migration 0005: each bucket's count is its folded count plus the pending changes of its
/// range; the bucket that holds the offset (`$2`) is found by summing the counts before it, and
/// the page (`$3` agents) is read from the name the skip of the rest of the offset reaches (a
/// skip that reads only the index). Every row ends with the total; a page past the end is one
/// row with the total alone.
const AGENTS_PAGE: &str = "WITH pending AS ( \
         SELECT coalesce(( \
                    SELECT max(b.lower_name) FROM agent_name_buckets b \
                    WHERE b.project_id = $1 AND b.lower_name <= c.name \
                ), '' COLLATE \"C\") AS lower_name, \
                sum(c.delta) AS delta \
         FROM agent_name_changes c WHERE c.project_id = $1 GROUP BY 1 \
     ), counted AS ( \
         SELECT coalesce(b.lower_name, p.lower_name) AS lower_name, \
                coalesce(b.n_agents, 0) + coalesce(p.delta, 0) AS n_agents \
         FROM (SELECT lower_name, n_agents FROM agent_name_buckets WHERE project_id = $1) b \
         FULL JOIN pending p ON p.lower_name = b.lower_name \
     ), buckets AS ( \
         SELECT lower_name, n_agents, \
                sum(n_agents) OVER (ORDER BY lower_name)::BIGINT AS n_through \
         FROM counted \
     ), start AS ( \
         SELECT lower_name, $2::BIGINT - (n_through - n_agents) AS n_skipped \
         FROM buckets WHERE n_through > $2 ORDER BY lower_name LIMIT 1 \
     ), first_name AS ( \
         SELECT ( \
             SELECT a.name FROM agents a \
             WHERE a.project_id = $1 AND a.name >= start.lower_name \
             ORDER BY a.name OFFSET start.n_skipped LIMIT 1 \
         ) AS name FROM start \
     ), page AS ( \
         SELECT a.* FROM first_name CROSS JOIN LATERAL ( \
             SELECT * FROM agents \
             WHERE project_id = $1 AND name >= first_name.name \
             ORDER BY name LIMIT $3 \
         ) a \
     ) \
     SELECT a.id, a.project_id, a.name, a.created_by_user_id, a.created_at_ms, \
            a.updated_at_ms, c.id, total.n \
     FROM (SELECT coalesce(sum(n_agents), 0)::BIGINT AS n FROM counted) total \
     LEFT JOIN page a ON true \
     LEFT JOIN url_configurations c ON c.agent_id = a.id \
     ORDER BY a.name";

fn limit_and_offset(window: PageWindow) -> (i64, i64) {
    (
        i64::try_from(window.limit).unwrap_or(i64::MAX),
        i64::try_from(window.offset).unwrap_or(i64::MAX),
    )
}

#[async_trait::async_trait]
impl Storage for PostgresStorage {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let ping = async {
            let client = self.client().await?;
            client.simple_query("SELECT 1").await.map_err(pg)?;
            Ok(())
        };
        match tokio::time::timeout(self.ping_timeout, ping).await {
            Ok(result) => result,
            Err(_) => Err(errors::timed_out()),
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // A committed transaction is already durable.
        Ok(())
    }

    fn invalidations(&self) -> Option<InvalidationFeed> {
        self.invalidations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    async fn hold_rotation_secret(&self, retrieval: RotationRetrieval) -> Result<(), StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO rotation_retrievals (predecessor_id, idempotency_key, user_id, \
                     successor_id, sealed_secret, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (predecessor_id, idempotency_key) DO UPDATE SET \
                     user_id = EXCLUDED.user_id, successor_id = EXCLUDED.successor_id, \
                     sealed_secret = EXCLUDED.sealed_secret, expires_at_ms = EXCLUDED.expires_at_ms",
                    &[
                        &key(retrieval.predecessor_id.get()),
                        &retrieval.idempotency_key,
                        &key(retrieval.user_id.get()),
                        &key(retrieval.successor_id.get()),
                        &retrieval.sealed_secret,
                        &retrieval.expires_at_ms,
                    ],
                )
                .await
                .map_err(pg)?;
            Ok(())
        })
        .await
    }

    async fn take_rotation_secret(
        &self,
        predecessor_id: AgentTokenId,
        idempotency_key: &str,
        user_id: UserId,
        now_ms: i64,
    ) -> Result<Option<(AgentTokenId, Vec<u8>)>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            // The DELETE decides who takes it: a concurrent second take finds no row.
            let row = client
                .query_opt(
                    "DELETE FROM rotation_retrievals WHERE predecessor_id = $1 \
                     AND idempotency_key = $2 AND user_id = $3 AND expires_at_ms > $4 \
                     RETURNING successor_id, sealed_secret",
                    &[
                        &key(predecessor_id.get()),
                        &idempotency_key,
                        &key(user_id.get()),
                        &now_ms,
                    ],
                )
                .await
                .map_err(pg)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let successor_id: i64 = get(&row, 0)?;
            Ok(Some((
                AgentTokenId::new(unsigned(successor_id)),
                get(&row, 1)?,
            )))
        })
        .await
    }

    async fn purge_rotation_secrets(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute(
                    "DELETE FROM rotation_retrievals WHERE expires_at_ms <= $1",
                    &[&now_ms],
                )
                .await
                .map_err(pg)
        })
        .await
    }

    async fn record_key_fingerprint(&self, fingerprint: &str) -> Result<String, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            // Replicas starting together may race: the first insert wins, and every replica
            // reads back what won.
            client
                .execute(
                    "INSERT INTO instance_settings (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING",
                    &[&KEY_FINGERPRINT_SETTING, &fingerprint],
                )
                .await
                .map_err(pg)?;
            let row = client
                .query_one(
                    "SELECT value FROM instance_settings WHERE name = $1",
                    &[&KEY_FINGERPRINT_SETTING],
                )
                .await
                .map_err(pg)?;
            get(&row, 0)
        })
        .await
    }

    async fn has_users(&self) -> Result<bool, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT EXISTS (SELECT 1 FROM users)", &[])
                .await
                .map_err(pg)?;
            get(&row, 0)
        })
        .await
    }

    async fn create_user(
        &self,
        identity: UserIdentity,
        is_admin: bool,
        now_ms: i64,
    ) -> Result<User, CreateUserError> {
        let username_folded = identity.username().to_lowercase();
        let email_folded = identity.email().to_lowercase();
        self.bounded(async {
            let client = self.client().await?;
            // The unique indexes decide; this read only reports the username first when both
            // are taken, as sled does.
            let taken = client
                .query_opt(
                    "SELECT username_folded = $1 FROM users \
                     WHERE username_folded = $1 OR email_folded = $2 LIMIT 1",
                    &[&username_folded, &email_folded],
                )
                .await
                .map_err(pg)?;
            if let Some(row) = taken {
                if get::<bool>(&row, 0)? {
                    return Err(CreateUserError::UsernameTaken);
                }
                return Err(CreateUserError::EmailTaken);
            }
            let sql = format!(
                "INSERT INTO users AS u (username, username_folded, name, email, email_folded, \
                 is_admin, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {}",
                rows::USER_COLUMNS
            );
            let inserted = client
                .query_one(
                    &sql,
                    &[
                        &identity.username(),
                        &username_folded,
                        &identity.name(),
                        &identity.email(),
                        &email_folded,
                        &is_admin,
                        &now_ms,
                    ],
                )
                .await;
            match inserted {
                Ok(row) => Ok(rows::user(&row, 0)?),
                Err(error) if violates(&error, "users_username_folded_key") => {
                    Err(CreateUserError::UsernameTaken)
                }
                Err(error) if violates(&error, "users_email_folded_key") => {
                    Err(CreateUserError::EmailTaken)
                }
                Err(error) => Err(CreateUserError::Store(pg(error))),
            }
        })
        .await
    }

    async fn user(&self, user_id: UserId) -> Result<Option<User>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            PostgresStorage::user_by_id(&client, user_id).await
        })
        .await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        let folded = username.to_lowercase();
        self.bounded(async {
            let client = self.client().await?;
            let sql = format!(
                "SELECT {} FROM users u WHERE u.username_folded = $1",
                rows::USER_COLUMNS
            );
            let row = client.query_opt(&sql, &[&folded]).await.map_err(pg)?;
            row.as_ref().map(|row| rows::user(row, 0)).transpose()
        })
        .await
    }

    async fn create_personal_access_token(
        &self,
        new: NewPersonalAccessToken,
        now_ms: i64,
    ) -> Result<PersonalAccessToken, CreatePersonalAccessTokenError> {
        self.bounded(async {
            let client = self.client().await?;
            let sql = format!(
                "INSERT INTO personal_access_tokens AS k (user_id, name, scopes, expires_at, \
                 revoked, handle, secret_hash, created_at_ms) \
                 VALUES ($1, $2, $3, $4, false, $5, $6, $7) RETURNING {}",
                rows::PAT_COLUMNS
            );
            let inserted = client
                .query_one(
                    &sql,
                    &[
                        &key(new.user_id.get()),
                        &new.name,
                        &rows::scope_names(&new.scopes),
                        &rows::expiry_text(new.expires_at),
                        &new.handle.as_str(),
                        &new.secret_hash.as_str(),
                        &now_ms,
                    ],
                )
                .await;
            match inserted {
                Ok(row) => Ok(rows::personal_access_token(&row)?),
                Err(error) if violates(&error, "personal_access_tokens_user_id_fkey") => {
                    Err(CreatePersonalAccessTokenError::UserNotFound)
                }
                Err(error) => Err(CreatePersonalAccessTokenError::Store(pg(error))),
            }
        })
        .await
    }

    async fn personal_access_token_by_handle(
        &self,
        handle: &TokenHandle,
    ) -> Result<Option<PersonalAccessTokenCredential>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let sql = format!(
                "SELECT {}, {} FROM personal_access_tokens k JOIN users u ON u.id = k.user_id \
                 WHERE k.handle = $1",
                rows::PAT_COLUMNS,
                rows::USER_COLUMNS
            );
            let Some(row) = client
                .query_opt(&sql, &[&handle.as_str()])
                .await
                .map_err(pg)?
            else {
                return Ok(None);
            };
            Ok(Some(PersonalAccessTokenCredential {
                token: rows::personal_access_token(&row)?,
                secret_hash: SecretHash::from_stored(get(&row, rows::PAT_WIDTH - 1)?),
                user: rows::user(&row, rows::PAT_WIDTH)?,
            }))
        })
        .await
    }

    async fn revoke_personal_access_token(
        &self,
        token_id: PersonalAccessTokenId,
        now_ms: i64,
        audit: Audit<PersonalAccessToken>,
    ) -> Result<Option<PersonalAccessToken>, StoreError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client.transaction().await.map_err(pg)?;
            let sql = format!(
                "UPDATE personal_access_tokens AS k SET revoked = true WHERE k.id = $1 \
                 RETURNING {}",
                rows::PAT_COLUMNS
            );
            let row = transaction
                .query_opt(&sql, &[&key(token_id.get())])
                .await
                .map_err(pg)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let token = rows::personal_access_token(&row)?;
            transaction
                .execute(
                    "SELECT pg_notify($1, $2)",
                    &[
                        &invalidations::CHANNEL,
                        &invalidations::personal_access_token_payload(&[token.id]),
                    ],
                )
                .await
                .map_err(pg)?;
            audit_outcome(&transaction, &audit, &token, now_ms).await?;
            transaction.commit().await.map_err(pg)?;
            Ok(Some(token))
        })
        .await
    }

    async fn create_project(
        &self,
        owner_id: UserId,
        naming: ProjectNaming,
        description: Option<String>,
        now_ms: i64,
    ) -> Result<Project, CreateProjectError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let owner = PostgresStorage::user_by_id(&client, owner_id)
                .await?
                .ok_or(StoreError::Dangling {
                    tree: schema::USERS,
                })?;
            let full_path_folded = format!("{}/{}", owner.username, naming.path()).to_lowercase();
            let transaction = client.transaction().await.map_err(pg)?;
            let inserted = transaction
                .query_one(
                    "INSERT INTO projects (name, path, description, owner_id, full_path_folded, \
                     created_at_ms) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[
                        &naming.name(),
                        &naming.path(),
                        &description,
                        &key(owner_id.get()),
                        &full_path_folded,
                        &now_ms,
                    ],
                )
                .await;
            let project_id: i64 = match inserted {
                Ok(row) => get(&row, 0)?,
                Err(error) if violates(&error, "projects_full_path_folded_key") => {
                    return Err(CreateProjectError::PathTaken);
                }
                Err(error) => return Err(CreateProjectError::Store(pg(error))),
            };
            transaction
                .execute(
                    "INSERT INTO members (project_id, user_id, access_level, created_at_ms) \
                     VALUES ($1, $2, $3, $4)",
                    &[
                        &project_id,
                        &key(owner_id.get()),
                        &AccessLevel::Owner.value(),
                        &now_ms,
                    ],
                )
                .await
                .map_err(pg)?;
            transaction.commit().await.map_err(pg)?;
            Ok(Project {
                id: ProjectId::new(unsigned(project_id)),
                name: naming.name().to_owned(),
                path: naming.path().to_owned(),
                description,
                owner,
                created_at_ms: now_ms,
            })
        })
        .await
    }

    async fn project(&self, project_id: ProjectId) -> Result<Option<Project>, StoreError> {
        self.bounded(self.project_where("p.id = $1", &key(project_id.get())))
            .await
    }

    async fn project_by_full_path(&self, full_path: &str) -> Result<Option<Project>, StoreError> {
        let folded = full_path.to_lowercase();
        self.bounded(self.project_where("p.full_path_folded = $1", &folded))
            .await
    }

    async fn access_level(
        &self,
        project_id: ProjectId,
        user_id: UserId,
    ) -> Result<Option<AccessLevel>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT access_level FROM members WHERE project_id = $1 AND user_id = $2",
                    &[&key(project_id.get()), &key(user_id.get())],
                )
                .await
                .map_err(pg)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let level =
                AccessLevel::from_value(get(&row, 0)?).map_err(|_| StoreError::Dangling {
                    tree: schema::MEMBERS,
                })?;
            Ok(Some(level))
        })
        .await
    }

    async fn add_member(
        &self,
        project_id: ProjectId,
        user_id: UserId,
        access_level: AccessLevel,
        now_ms: i64,
    ) -> Result<Member, AddMemberError> {
        self.bounded(async {
            let client = self.client().await?;
            let Some(user) = PostgresStorage::user_by_id(&client, user_id).await? else {
                return Err(AddMemberError::UserNotFound);
            };
            let inserted = client
                .execute(
                    "INSERT INTO members (project_id, user_id, access_level, created_at_ms) \
                     VALUES ($1, $2, $3, $4)",
                    &[
                        &key(project_id.get()),
                        &key(user_id.get()),
                        &access_level.value(),
                        &now_ms,
                    ],
                )
                .await;
            match inserted {
                Ok(_) => Ok(Member {
                    user,
                    access_level,
                    created_at_ms: now_ms,
                }),
                Err(error) if violates(&error, "members_pkey") => {
                    Err(AddMemberError::AlreadyMember)
                }
                Err(error) if violates(&error, "members_user_id_fkey") => {
                    Err(AddMemberError::UserNotFound)
                }
                Err(error) => Err(AddMemberError::Store(pg(error))),
            }
        })
        .await
    }

    async fn create_agent(
        &self,
        project_id: ProjectId,
        name: AgentName,
        created_by_user_id: Option<UserId>,
        now_ms: i64,
        audit: Audit<Agent>,
    ) -> Result<Agent, CreateAgentError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client.transaction().await.map_err(pg)?;
            // The unique index on (project_id, name) refuses a second agent of the same name,
            // however many replicas race.
            let inserted = transaction
                .query_one(
                    "INSERT INTO agents (project_id, name, created_by_user_id, created_at_ms, \
                     updated_at_ms) VALUES ($1, $2, $3, $4, $4) RETURNING id",
                    &[
                        &key(project_id.get()),
                        &name.as_str(),
                        &created_by_user_id.map(|id| key(id.get())),
                        &now_ms,
                    ],
                )
                .await;
            let agent_id: i64 = match inserted {
                Ok(row) => get(&row, 0)?,
                Err(error) if violates(&error, "agents_project_id_name_key") => {
                    return Err(CreateAgentError::NameTaken);
                }
                Err(error) => return Err(CreateAgentError::Store(pg(error))),
            };
            let agent = Agent {
                id: AgentId::new(unsigned(agent_id)),
                project_id,
                name: name.as_str().to_owned(),
                created_by_user_id,
                created_at_ms: now_ms,
                updated_at_ms: now_ms,
                url_configuration_id: None,
            };
            audit_outcome(&transaction, &audit, &agent, now_ms).await?;
            transaction.commit().await.map_err(pg)?;
            Ok(agent)
        })
        .await
    }

    async fn project_with_access(
        &self,
        project_ref: &ProjectRef,
        member: Option<UserId>,
        agent_id: Option<AgentId>,
    ) -> Result<Option<ProjectWithAccess>, StoreError> {
        let (condition, project): (&str, Box<dyn tokio_postgres::types::ToSql + Sync + Send>) =
            match project_ref {
                ProjectRef::Id(project_id) => ("p.id = $1", Box::new(key(project_id.get()))),
                ProjectRef::FullPath(full_path) => (
                    "p.full_path_folded = $1",
                    Box::new(full_path.to_lowercase()),
                ),
                ProjectRef::Nothing => return Ok(None),
            };
        let sql = format!("{PROJECT_WITH_ACCESS_SELECT} WHERE {condition}");
        let agent_key = agent_id.map(|agent_id| key(agent_id.get()));
        // NULL matches no membership.
        let member_key = member.map(|user_id| key(user_id.get()));
        self.bounded(async {
            let client = self.client().await?;
            let row = client
                .query_opt(&sql, &[project.as_ref(), &member_key, &agent_key])
                .await
                .map_err(pg)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let access_level = get::<Option<i64>>(&row, rows::PROJECT_WITH_ACCESS_LEVEL)?
                .map(AccessLevel::from_value)
                .transpose()
                .map_err(|_| StoreError::Dangling {
                    tree: schema::MEMBERS,
                })?;
            let agent = match get::<Option<i64>>(&row, rows::PROJECT_WITH_ACCESS_AGENT)? {
                Some(_) => Some(rows::agent_at(&row, rows::PROJECT_WITH_ACCESS_AGENT)?),
                None => None,
            };
            Ok(Some(ProjectWithAccess {
                project: rows::project(&row)?,
                access_level,
                agent,
            }))
        })
        .await
    }

    async fn agent(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<Agent>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            PostgresStorage::agent_in(&client, project_id, agent_id).await
        })
        .await
    }

    async fn agents_page(
        &self,
        project_id: ProjectId,
        window: PageWindow,
    ) -> Result<Page<Agent>, StoreError> {
        let (limit, offset) = limit_and_offset(window);
        self.bounded(async {
            let client = self.client().await?;
            // One statement, so one snapshot for the page and its total (migration 0005).
            // Prepared once per connection: planning it costs about as much as running it.
            let statement = client.prepare_cached(AGENTS_PAGE).await.map_err(pg)?;
            let rows = client
                .query(&statement, &[&key(project_id.get()), &offset, &limit])
                .await
                .map_err(pg)?;
            let total = match rows.first() {
                Some(row) => unsigned(get(row, rows::AGENT_COLUMN_COUNT)?),
                None => 0,
            };
            let mut items = Vec::with_capacity(rows.len());
            for row in &rows {
                // The total's row when the page is empty has no agent.
                if get::<Option<i64>>(row, 0)?.is_some() {
                    items.push(rows::agent(row)?);
                }
            }
            Ok(Page { items, total })
        })
        .await
    }

    async fn agents_keyset_page(
        &self,
        project_id: ProjectId,
        seek: AgentSeek,
        limit: u64,
    ) -> Result<Vec<Agent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let project = key(project_id.get());
        self.bounded(async {
            let client = self.client().await?;
            // Each is a range of an index on (project_id, id) or (project_id, name): O(log n +
            // limit) at any depth.
            let rows = match &seek {
                AgentSeek::Id { direction, after } => {
                    let (condition, order) = match direction {
                        Direction::Ascending => ("a.id > $2", "a.id"),
                        Direction::Descending => ("a.id < $2", "a.id DESC"),
                    };
                    let after = match (direction, after) {
                        (_, Some(after)) => key(after.get()),
                        (Direction::Ascending, None) => 0,
                        (Direction::Descending, None) => i64::MAX,
                    };
                    let sql = format!(
                        "{AGENT_SELECT} WHERE a.project_id = $1 AND {condition} \
                         ORDER BY {order} LIMIT $3"
                    );
                    client.query(&sql, &[&project, &after, &limit]).await
                }
                AgentSeek::Name { direction, after } => {
                    let order = match direction {
                        Direction::Ascending => "a.name",
                        Direction::Descending => "a.name DESC",
                    };
                    match after {
                        Some(after) => {
                            let condition = match direction {
                                Direction::Ascending => "a.name > $2",
                                Direction::Descending => "a.name < $2",
                            };
                            let sql = format!(
                                "{AGENT_SELECT} WHERE a.project_id = $1 AND {condition} \
                                 ORDER BY {order} LIMIT $3"
                            );
                            client.query(&sql, &[&project, after, &limit]).await
                        }
                        None => {
                            let sql = format!(
                                "{AGENT_SELECT} WHERE a.project_id = $1 ORDER BY {order} LIMIT $2"
                            );
                            client.query(&sql, &[&project, &limit]).await
                        }
                    }
                }
            }
            .map_err(pg)?;
            rows.iter().map(rows::agent).collect()
        })
        .await
    }

    async fn delete_agent(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        precondition: Option<UnmodifiedSince>,
        now_ms: i64,
        audit: Audit<DeletedAgent>,
    ) -> Result<DeletedAgent, DeleteAgentError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client.transaction().await.map_err(pg)?;
            // Locking the agent's row orders this delete with token creation on the agent.
            let sql =
                format!("{AGENT_SELECT} WHERE a.id = $1 AND a.project_id = $2 FOR UPDATE OF a");
            let row = transaction
                .query_opt(&sql, &[&key(agent_id.get()), &key(project_id.get())])
                .await
                .map_err(pg)?;
            let Some(row) = row else {
                return Err(DeleteAgentError::NotFound);
            };
            let agent = rows::agent(&row)?;
            if let Some(precondition) = precondition
                && agent.updated_at_ms > precondition.latest_allowed_ms
            {
                return Err(DeleteAgentError::PreconditionFailed);
            }
            let token_set = PostgresStorage::token_set(&transaction, agent_id).await?;
            let active: Vec<AgentTokenId> = token_set
                .active()
                .iter()
                .copied()
                .map(AgentTokenId::new)
                .collect();
            // The tokens and the URL configuration go with the agent (ON DELETE CASCADE).
            transaction
                .execute("DELETE FROM agents WHERE id = $1", &[&key(agent_id.get())])
                .await
                .map_err(pg)?;
            // Revoked tokens authenticate nowhere already; only the active ones are announced,
            // which keeps the payload small.
            notify_revoked(&transaction, &active).await?;
            let deleted = DeletedAgent {
                agent,
                token_ids: token_set.all().map(AgentTokenId::new).collect(),
            };
            audit_outcome(&transaction, &audit, &deleted, now_ms).await?;
            transaction.commit().await.map_err(pg)?;
            Ok(deleted)
        })
        .await
    }

    async fn agent_token_set(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<AgentTokenSet>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            if PostgresStorage::agent_in(&client, project_id, agent_id)
                .await?
                .is_none()
            {
                return Ok(None);
            }
            Ok(Some(PostgresStorage::token_set(&client, agent_id).await?))
        })
        .await
    }

    async fn create_agent_token(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        new: NewAgentToken,
        now_ms: i64,
        audit: Audit<AgentToken>,
    ) -> Result<AgentToken, CreateAgentTokenError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client.transaction().await.map_err(pg)?;
            let Some((mut token_set, token_id)) =
                PostgresStorage::lock_for_new_token(&transaction, project_id, agent_id).await?
            else {
                return Err(CreateAgentTokenError::AgentNotFound);
            };
            token_set.activate(unsigned(token_id), new.expires_at_ms, now_ms)?;
            let sql = format!(
                "INSERT INTO agent_tokens AS t (id, agent_id, project_id, name, description, \
                 revoked, created_by_user_id, created_at_ms, handle, secret_hash, expires_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, false, $6, $7, $8, $9, $10) RETURNING {TOKEN_COLUMNS}"
            );
            let row = transaction
                .query_one(
                    &sql,
                    &[
                        &token_id,
                        &key(agent_id.get()),
                        &key(project_id.get()),
                        &new.name.as_str(),
                        &new.description.as_ref().map(|d| d.as_str()),
                        &new.created_by_user_id.map(|id| key(id.get())),
                        &now_ms,
                        &new.handle.as_str(),
                        &new.secret_hash.as_str(),
                        &new.expires_at_ms,
                    ],
                )
                .await
                .map_err(pg)?;
            let token = rows::agent_token(&row)?;
            audit_outcome(&transaction, &audit, &token, now_ms).await?;
            transaction.commit().await.map_err(pg)?;
            Ok(token)
        })
        .await
    }

    async fn active_agent_tokens(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<Vec<AgentToken>>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            if PostgresStorage::agent_in(&client, project_id, agent_id)
                .await?
                .is_none()
            {
                return Ok(None);
            }
            let sql = format!(
                "SELECT {TOKEN_COLUMNS} FROM agent_tokens t WHERE t.agent_id = $1 AND NOT t.revoked"
            );
            let rows = client
                .query(&sql, &[&key(agent_id.get())])
                .await
                .map_err(pg)?;
            let mut tokens = rows
                .iter()
                .map(rows::agent_token)
                .collect::<Result<Vec<_>, _>>()?;
            sort_by_last_use(&mut tokens, |token| (token.last_used_at_ms, token.id.get()));
            Ok(Some(tokens))
        })
        .await
    }

    async fn all_agent_tokens(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<Vec<AgentToken>>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            if PostgresStorage::agent_in(&client, project_id, agent_id)
                .await?
                .is_none()
            {
                return Ok(None);
            }
            let sql = format!(
                "SELECT {TOKEN_COLUMNS} FROM agent_tokens t WHERE t.agent_id = $1 \
                 ORDER BY t.revoked, t.list_position"
            );
            let rows = client
                .query(&sql, &[&key(agent_id.get())])
                .await
                .map_err(pg)?;
            let tokens = rows
                .iter()
                .map(rows::agent_token)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(tokens))
        })
        .await
    }

    async fn agent_token(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        token_id: AgentTokenId,
    ) -> Result<Option<AgentToken>, StoreError> {
        let ids = [
            key(token_id.get()),
            key(agent_id.get()),
            key(project_id.get()),
        ];
        let found = self
            .bounded(self.token_where(
                "t.id = $1 AND t.agent_id = $2 AND t.project_id = $3",
                &[&ids[0], &ids[1], &ids[2]],
            ))
            .await?;
        Ok(found.map(|(token, _)| token))
    }

    async fn revoke_agent_token(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        token_id: AgentTokenId,
        revoke: RevokeAgentToken,
        now_ms: i64,
        audit: Audit<AgentToken>,
    ) -> Result<AgentToken, RevokeAgentTokenError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client.transaction().await.map_err(pg)?;
            // The row lock orders concurrent revokes, so the first one's details stick.
            let current = transaction
                .query_opt(
                    "SELECT expires_at_ms, retiring_until_ms FROM agent_tokens \
                     WHERE id = $1 AND agent_id = $2 AND project_id = $3 FOR UPDATE",
                    &[
                        &key(token_id.get()),
                        &key(agent_id.get()),
                        &key(project_id.get()),
                    ],
                )
                .await
                .map_err(pg)?;
            let Some(current) = current else {
                return Err(RevokeAgentTokenError::NotFound);
            };
            let revocation = revocation_of(get(&current, 0)?, get(&current, 1)?, &revoke, now_ms);
            // Revoking twice succeeds and changes nothing the second time; the revoked token
            // moves to the end of the agent's revoked list, as in sled's token set.
            let sql = format!(
                "UPDATE agent_tokens AS t SET revoked = true, \
                 list_position = CASE WHEN t.revoked THEN t.list_position \
                 ELSE nextval('agent_token_list_positions') END, \
                 revoked_at_ms = CASE WHEN t.revoked THEN t.revoked_at_ms ELSE $4 END, \
                 revoked_by_user_id = CASE WHEN t.revoked THEN t.revoked_by_user_id ELSE $5 END, \
                 revoked_reason = CASE WHEN t.revoked THEN t.revoked_reason ELSE $6 END \
                 WHERE t.id = $1 AND t.agent_id = $2 AND t.project_id = $3 \
                 RETURNING {TOKEN_COLUMNS}"
            );
            let row = transaction
                .query_opt(
                    &sql,
                    &[
                        &key(token_id.get()),
                        &key(agent_id.get()),
                        &key(project_id.get()),
                        &revocation.revoked_at_ms,
                        &revocation.revoked_by_user_id.map(|id| key(id.get())),
                        &revocation.reason.as_str(),
                    ],
                )
                .await
                .map_err(pg)?;
            let Some(row) = row else {
                return Err(RevokeAgentTokenError::NotFound);
            };
            let token = rows::agent_token(&row)?;
            notify_revoked(&transaction, &[token_id]).await?;
            audit_outcome(&transaction, &audit, &token, now_ms).await?;
            transaction.commit().await.map_err(pg)?;
            Ok(token)
        })
        .await
    }

    async fn rotate_agent_token(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        token_id: AgentTokenId,
        rotation: NewRotation,
        now_ms: i64,
        audit: Audit<RotatedAgentToken>,
    ) -> Result<RotatedAgentToken, RotateAgentTokenError> {
        let NewRotation {
            successor,
            retiring_until_ms,
        } = rotation;
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client.transaction().await.map_err(pg)?;
            let Some((mut token_set, successor_id)) =
                PostgresStorage::lock_for_new_token(&transaction, project_id, agent_id).await?
            else {
                return Err(RotateAgentTokenError::AgentNotFound);
            };
            token_set.rotate(
                token_id.get(),
                unsigned(successor_id),
                retiring_until_ms,
                successor.expires_at_ms,
                now_ms,
            )?;
            let sql = format!(
                "UPDATE agent_tokens AS t SET retiring_until_ms = $2, successor_id = $3 \
                 WHERE t.id = $1 RETURNING {TOKEN_COLUMNS}"
            );
            let row = transaction
                .query_one(
                    &sql,
                    &[&key(token_id.get()), &retiring_until_ms, &successor_id],
                )
                .await
                .map_err(pg)?;
            let predecessor = rows::agent_token(&row)?;
            let sql = format!(
                "INSERT INTO agent_tokens AS t (id, agent_id, project_id, name, description, \
                 revoked, created_by_user_id, created_at_ms, handle, secret_hash, expires_at_ms, \
                 pending_predecessor_id) \
                 VALUES ($1, $2, $3, $4, $5, false, $6, $7, $8, $9, $10, $11) \
                 RETURNING {TOKEN_COLUMNS}"
            );
            let row = transaction
                .query_one(
                    &sql,
                    &[
                        &successor_id,
                        &key(agent_id.get()),
                        &key(project_id.get()),
                        &successor.name.as_str(),
                        &successor.description.as_ref().map(|d| d.as_str()),
                        &successor.created_by_user_id.map(|id| key(id.get())),
                        &now_ms,
                        &successor.handle.as_str(),
                        &successor.secret_hash.as_str(),
                        &successor.expires_at_ms,
                        &key(token_id.get()),
                    ],
                )
                .await
                .map_err(pg)?;
            let rotated = RotatedAgentToken {
                predecessor,
                successor: rows::agent_token(&row)?,
            };
            // Caches on every replica hold the predecessor without its overlap deadline: they
            // drop it, as for a revocation, and read the deadline on its next use.
            notify_revoked(&transaction, &[token_id]).await?;
            audit_outcome(&transaction, &audit, &rotated, now_ms).await?;
            transaction.commit().await.map_err(pg)?;
            Ok(rotated)
        })
        .await
    }

    async fn complete_agent_token_rotation(
        &self,
        successor_id: AgentTokenId,
        now_ms: i64,
        audit: Audit<AgentToken>,
    ) -> Result<Option<AgentToken>, StoreError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client.transaction().await.map_err(pg)?;
            // Locking the successor's row makes completions on several replicas take turns: the
            // first clears the pending predecessor, the others then read it cleared.
            let successor = transaction
                .query_opt(
                    "SELECT pending_predecessor_id FROM agent_tokens WHERE id = $1 FOR UPDATE",
                    &[&key(successor_id.get())],
                )
                .await
                .map_err(pg)?;
            let Some(predecessor_id) = successor
                .as_ref()
                .map(|row| get::<Option<i64>>(row, 0))
                .transpose()?
                .flatten()
            else {
                transaction.commit().await.map_err(pg)?;
                return Ok(None);
            };
            transaction
                .execute(
                    "UPDATE agent_tokens SET pending_predecessor_id = NULL WHERE id = $1",
                    &[&key(successor_id.get())],
                )
                .await
                .map_err(pg)?;
            let current = transaction
                .query_opt(
                    "SELECT expires_at_ms, retiring_until_ms FROM agent_tokens \
                     WHERE id = $1 AND NOT revoked FOR UPDATE",
                    &[&predecessor_id],
                )
                .await
                .map_err(pg)?;
            let Some(current) = current else {
                transaction.commit().await.map_err(pg)?;
                return Ok(None);
            };
            let revocation = revocation_of(
                get(&current, 0)?,
                get(&current, 1)?,
                &agent_tokens_rotated(),
                now_ms,
            );
            let sql = format!(
                "UPDATE agent_tokens AS t SET revoked = true, \
                 list_position = nextval('agent_token_list_positions'), \
                 revoked_at_ms = $2, revoked_by_user_id = NULL, revoked_reason = $3 \
                 WHERE t.id = $1 RETURNING {TOKEN_COLUMNS}"
            );
            let row = transaction
                .query_one(
                    &sql,
                    &[
                        &predecessor_id,
                        &revocation.revoked_at_ms,
                        &revocation.reason.as_str(),
                    ],
                )
                .await
                .map_err(pg)?;
            let predecessor = rows::agent_token(&row)?;
            notify_revoked(&transaction, &[predecessor.id]).await?;
            audit_outcome(&transaction, &audit, &predecessor, now_ms).await?;
            transaction.commit().await.map_err(pg)?;
            Ok(Some(predecessor))
        })
        .await
    }

    async fn retire_ended_agent_tokens(
        &self,
        now_ms: i64,
        audit: Audit<AgentToken>,
    ) -> Result<Vec<AgentToken>, StoreError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client.transaction().await.map_err(pg)?;
            // The row locks make sweeps on several replicas take turns: a later one re-reads
            // `NOT revoked` after the earlier commits and finds nothing left to record.
            let candidates = transaction
                .query(
                    "SELECT id, expires_at_ms, retiring_until_ms FROM agent_tokens \
                     WHERE NOT revoked AND (expires_at_ms <= $1 OR retiring_until_ms <= $1) \
                     ORDER BY id FOR UPDATE",
                    &[&now_ms],
                )
                .await
                .map_err(pg)?;
            let revoke = RevokeAgentToken::default();
            let sql = format!(
                "UPDATE agent_tokens AS t SET revoked = true, \
                 list_position = nextval('agent_token_list_positions'), \
                 revoked_at_ms = $2, revoked_by_user_id = NULL, revoked_reason = $3 \
                 WHERE t.id = $1 RETURNING {TOKEN_COLUMNS}"
            );
            let mut retired = Vec::with_capacity(candidates.len());
            for candidate in &candidates {
                let token_id: i64 = get(candidate, 0)?;
                let revocation =
                    revocation_of(get(candidate, 1)?, get(candidate, 2)?, &revoke, now_ms);
                let row = transaction
                    .query_one(
                        &sql,
                        &[
                            &token_id,
                            &revocation.revoked_at_ms,
                            &revocation.reason.as_str(),
                        ],
                    )
                    .await
                    .map_err(pg)?;
                let token = rows::agent_token(&row)?;
                audit_outcome(&transaction, &audit, &token, now_ms).await?;
                retired.push(token);
            }
            let ids: Vec<AgentTokenId> = retired.iter().map(|token| token.id).collect();
            notify_revoked(&transaction, &ids).await?;
            transaction.commit().await.map_err(pg)?;
            Ok(retired)
        })
        .await
    }

    async fn agent_token_by_handle(
        &self,
        handle: &TokenHandle,
    ) -> Result<Option<AgentTokenCredential>, StoreError> {
        let found = self
            .bounded(self.token_where("t.handle = $1", &[&handle.as_str()]))
            .await?;
        Ok(found.map(|(token, secret_hash)| AgentTokenCredential { token, secret_hash }))
    }

    async fn record_agent_token_use(
        &self,
        uses: Vec<(AgentTokenId, i64)>,
    ) -> Result<(), StoreError> {
        // One time per token (the latest), in id order.
        let mut latest: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
        for (token_id, used_at_ms) in uses {
            let entry = latest.entry(key(token_id.get())).or_insert(used_at_ms);
            *entry = (*entry).max(used_at_ms);
        }
        if latest.is_empty() {
            return Ok(());
        }
        let (ids, times): (Vec<i64>, Vec<i64>) = latest.into_iter().unzip();
        self.bounded(async {
            let client = self.client().await?;
            let mut attempt = 0;
            loop {
                // GREATEST ignores NULL, and never lowers a stored time: batches from several
                // replicas may arrive in any order. Tokens deleted meanwhile match no row.
                let updated = client
                    .execute(
                        "UPDATE agent_tokens AS t \
                         SET last_used_at_ms = GREATEST(t.last_used_at_ms, u.used_at_ms) \
                         FROM unnest($1::bigint[], $2::bigint[]) AS u(id, used_at_ms) \
                         WHERE t.id = u.id",
                        &[&ids, &times],
                    )
                    .await;
                match updated {
                    Ok(_) => return Ok(()),
                    // Two replicas' batches may lock the same rows in opposite orders.
                    Err(error) if errors::is_retryable(&error) && attempt < 3 => attempt += 1,
                    Err(error) => return Err(pg(error)),
                }
            }
        })
        .await
    }

    async fn all_agents(&self) -> Result<Vec<InventoryAgent>, StoreError> {
        self.bounded(async {
            let mut client = self.client().await?;
            // One snapshot for the three reads, so tokens and agents agree.
            let transaction = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(pg)?;
            let sql = format!("{AGENT_SELECT} ORDER BY a.id");
            let agent_rows = transaction.query(&sql, &[]).await.map_err(pg)?;
            let sql = format!(
                "SELECT {} FROM projects p JOIN users u ON u.id = p.owner_id",
                rows::PROJECT_COLUMNS
            );
            let mut projects = std::collections::BTreeMap::new();
            for row in &transaction.query(&sql, &[]).await.map_err(pg)? {
                let project = rows::project(row)?;
                projects.insert(project.id, project);
            }
            let sql = format!(
                "SELECT {TOKEN_COLUMNS} FROM agent_tokens t ORDER BY t.revoked, t.list_position"
            );
            let mut tokens_by_agent: std::collections::BTreeMap<AgentId, Vec<AgentToken>> =
                std::collections::BTreeMap::new();
            for row in &transaction.query(&sql, &[]).await.map_err(pg)? {
                let token = rows::agent_token(row)?;
                tokens_by_agent
                    .entry(token.agent_id)
                    .or_default()
                    .push(token);
            }
            transaction.commit().await.map_err(pg)?;
            let mut inventory = Vec::with_capacity(agent_rows.len());
            for row in &agent_rows {
                let agent = rows::agent(row)?;
                let project = projects
                    .get(&agent.project_id)
                    .cloned()
                    .ok_or(StoreError::Dangling { tree: "agents" })?;
                let tokens = tokens_by_agent.remove(&agent.id).unwrap_or_default();
                inventory.push(InventoryAgent {
                    agent,
                    project,
                    tokens,
                });
            }
            Ok(inventory)
        })
        .await
    }

    async fn create_url_configuration(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        new: NewUrlConfiguration,
        now_ms: i64,
        audit: Audit<UrlConfiguration>,
    ) -> Result<UrlConfiguration, CreateUrlConfigurationError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client.transaction().await.map_err(pg)?;
            let updated = transaction
                .execute(
                    "UPDATE agents SET updated_at_ms = $3 WHERE id = $1 AND project_id = $2",
                    &[&key(agent_id.get()), &key(project_id.get()), &now_ms],
                )
                .await
                .map_err(pg)?;
            if updated == 0 {
                return Err(CreateUrlConfigurationError::AgentNotFound);
            }
            let (auth_mode, public_key, sealed_private_key, client_cert, sealed_client_key) =
                match &new.auth {
                    SealedUrlAuth::Jwt {
                        public_key,
                        sealed_private_key,
                    } => (
                        rows::JWT,
                        Some(public_key),
                        Some(sealed_private_key),
                        None,
                        None,
                    ),
                    SealedUrlAuth::Mtls {
                        client_cert,
                        sealed_client_key,
                    } => (
                        rows::MTLS,
                        None,
                        None,
                        Some(client_cert),
                        Some(sealed_client_key),
                    ),
                };
            let sql = format!(
                "INSERT INTO url_configurations AS c (agent_id, project_id, url, ca_cert, \
                 tls_host, auth_mode, public_key, sealed_private_key, client_cert, \
                 sealed_client_key, created_by_user_id, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 RETURNING {CONFIG_COLUMNS}"
            );
            // The unique index on agent_id keeps one configuration per agent.
            let inserted = transaction
                .query_one(
                    &sql,
                    &[
                        &key(agent_id.get()),
                        &key(project_id.get()),
                        &new.url,
                        &new.ca_cert,
                        &new.tls_host,
                        &auth_mode,
                        &public_key,
                        &sealed_private_key,
                        &client_cert,
                        &sealed_client_key,
                        &new.created_by_user_id.map(|id| key(id.get())),
                        &now_ms,
                    ],
                )
                .await;
            let config = match inserted {
                Ok(row) => rows::url_configuration(&row)?,
                Err(error) if violates(&error, "url_configurations_agent_id_key") => {
                    return Err(CreateUrlConfigurationError::AlreadyExists);
                }
                Err(error) => return Err(CreateUrlConfigurationError::Store(pg(error))),
            };
            audit_outcome(&transaction, &audit, &config, now_ms).await?;
            transaction.commit().await.map_err(pg)?;
            Ok(config)
        })
        .await
    }

    async fn url_configurations(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<Vec<UrlConfiguration>>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            if PostgresStorage::agent_in(&client, project_id, agent_id)
                .await?
                .is_none()
            {
                return Ok(None);
            }
            let sql =
                format!("SELECT {CONFIG_COLUMNS} FROM url_configurations c WHERE c.agent_id = $1");
            let rows = client
                .query(&sql, &[&key(agent_id.get())])
                .await
                .map_err(pg)?;
            Ok(Some(
                rows.iter()
                    .map(rows::url_configuration)
                    .collect::<Result<_, _>>()?,
            ))
        })
        .await
    }

    async fn url_configuration(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        url_configuration_id: UrlConfigurationId,
    ) -> Result<Option<UrlConfiguration>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let sql = format!(
                "SELECT {CONFIG_COLUMNS} FROM url_configurations c \
                 WHERE c.id = $1 AND c.agent_id = $2 AND c.project_id = $3"
            );
            let row = client
                .query_opt(
                    &sql,
                    &[
                        &key(url_configuration_id.get()),
                        &key(agent_id.get()),
                        &key(project_id.get()),
                    ],
                )
                .await
                .map_err(pg)?;
            row.as_ref().map(rows::url_configuration).transpose()
        })
        .await
    }

    async fn delete_url_configuration(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        url_configuration_id: UrlConfigurationId,
        precondition: Option<UnmodifiedSince>,
        now_ms: i64,
        audit: Audit<UrlConfiguration>,
    ) -> Result<UrlConfiguration, DeleteUrlConfigurationError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client.transaction().await.map_err(pg)?;
            let sql = format!(
                "DELETE FROM url_configurations c \
                 WHERE c.id = $1 AND c.agent_id = $2 AND c.project_id = $3 \
                 RETURNING {CONFIG_COLUMNS}"
            );
            let row = transaction
                .query_opt(
                    &sql,
                    &[
                        &key(url_configuration_id.get()),
                        &key(agent_id.get()),
                        &key(project_id.get()),
                    ],
                )
                .await
                .map_err(pg)?;
            let Some(row) = row else {
                return Err(DeleteUrlConfigurationError::NotFound);
            };
            let config = rows::url_configuration(&row)?;
            if let Some(precondition) = precondition
                && config.created_at_ms > precondition.latest_allowed_ms
            {
                return Err(DeleteUrlConfigurationError::PreconditionFailed);
            }
            transaction
                .execute(
                    "UPDATE agents SET updated_at_ms = $2 WHERE id = $1",
                    &[&key(agent_id.get()), &now_ms],
                )
                .await
                .map_err(pg)?;
            audit_outcome(&transaction, &audit, &config, now_ms).await?;
            transaction.commit().await.map_err(pg)?;
            Ok(config)
        })
        .await
    }

    async fn replace_sealed_key(
        &self,
        url_configuration_id: UrlConfigurationId,
        sealed: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let id = key(url_configuration_id.get());
        self.bounded(async {
            let client = self.client().await?;
            let n_updated = client
                .execute(
                    "UPDATE url_configurations SET \
                     sealed_private_key = CASE WHEN auth_mode = 'jwt' THEN $2 ELSE sealed_private_key END, \
                     sealed_client_key = CASE WHEN auth_mode = 'mtls' THEN $2 ELSE sealed_client_key END \
                     WHERE id = $1",
                    &[&id, &sealed],
                )
                .await
                .map_err(pg)?;
            Ok(n_updated == 1)
        })
        .await
    }

    async fn all_url_configurations(&self) -> Result<Vec<UrlConfiguration>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let sql = format!("SELECT {CONFIG_COLUMNS} FROM url_configurations c ORDER BY c.id");
            let rows = client.query(&sql, &[]).await.map_err(pg)?;
            rows.iter().map(rows::url_configuration).collect()
        })
        .await
    }

    async fn record_audit_event(
        &self,
        event: NewAuditEvent,
        now_ms: i64,
    ) -> Result<AuditEvent, StoreError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client.transaction().await.map_err(pg)?;
            let recorded = insert_audit_event(&transaction, event, now_ms).await?;
            transaction.commit().await.map_err(pg)?;
            Ok(recorded)
        })
        .await
    }

    async fn delete_instance_audit_events_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute(
                    "DELETE FROM audit_events WHERE project_id = 0 AND created_at_ms < $1",
                    &[&before_ms],
                )
                .await
                .map_err(pg)
        })
        .await
    }

    async fn audit_events_page(
        &self,
        scope: AuditScope,
        window: PageWindow,
    ) -> Result<Page<AuditEvent>, StoreError> {
        let (limit, offset) = limit_and_offset(window);
        let scope_key = rows::scope_key(scope);
        self.bounded(async {
            let client = self.client().await?;
            let total = client
                .query_one(
                    "SELECT count(*) FROM audit_events WHERE project_id = $1",
                    &[&scope_key],
                )
                .await
                .map_err(pg)?;
            let sql = format!(
                "SELECT {} FROM audit_events e WHERE e.project_id = $1 \
                 ORDER BY e.id DESC LIMIT $2 OFFSET $3",
                rows::AUDIT_COLUMNS
            );
            let rows = client
                .query(&sql, &[&scope_key, &limit, &offset])
                .await
                .map_err(pg)?;
            Ok(Page {
                items: rows
                    .iter()
                    .map(rows::audit_event)
                    .collect::<Result<_, _>>()?,
                total: unsigned(get(&total, 0)?),
            })
        })
        .await
    }

    async fn agent_token_deadlines(&self) -> Result<Vec<TokenDeadlines>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT expires_at_ms, retiring_until_ms FROM agent_tokens WHERE NOT revoked \
                     AND (expires_at_ms IS NOT NULL OR retiring_until_ms IS NOT NULL)",
                    &[],
                )
                .await
                .map_err(pg)?;
            rows.iter()
                .map(|row| {
                    Ok(TokenDeadlines {
                        expires_at_ms: get(row, 0)?,
                        retiring_until_ms: get(row, 1)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM agents), \
                     (SELECT count(*) FROM agent_tokens WHERE NOT revoked), \
                     (SELECT count(*) FROM url_configurations)",
                    &[],
                )
                .await
                .map_err(pg)?;
            Ok(Counts {
                agents: unsigned(get(&row, 0)?),
                active_agent_tokens: unsigned(get(&row, 1)?),
                url_configurations: unsigned(get(&row, 2)?),
            })
        })
        .await
    }

    async fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut client = self.client().await?;
        let dataset = backup::read_dataset(&mut client).await?;
        let trees = dataset.to_trees();
        Ok(crate::dataset::write_snapshot_file(&trees)?)
    }

    async fn restore(&self, snapshot: Vec<u8>) -> Result<SnapshotSummary, RestoreError> {
        let trees = crate::backup::parse(&snapshot)?;
        let dataset = crate::dataset::Dataset::from_trees(&trees)?;
        let mut client = self.client().await?;
        backup::write_dataset(&mut client, &dataset).await?;
        Ok(SnapshotSummary {
            n_trees: trees.len(),
            n_entries: trees.iter().map(|(_, entries)| entries.len() as u64).sum(),
        })
    }
}
