//! The columns each query selects and how a row becomes a domain entity. Ids are `BIGINT`s
//! issued by sequences that start at 1.

use super::errors::pg;
use crate::records::DecodeError;
use crate::{EngineError, StoreError};
use agentreg_domain::access::{ExpiryDate, Scope};
use agentreg_domain::entities::{
    Agent, AgentToken, AuditDetails, AuditEvent, AuditScope, PersonalAccessToken, Project,
    Revocation, RevocationReason, SealedUrlAuth, TokenStatus, UrlConfiguration, User,
};
use agentreg_domain::ids::{
    AgentId, AgentTokenId, AuditEventId, PersonalAccessTokenId, ProjectId, UrlConfigurationId,
    UserId,
};
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

/// `users u`.
pub(super) const USER_COLUMNS: &str =
    "u.id, u.username, u.name, u.email, u.is_admin, u.created_at_ms";

/// `projects p JOIN users u ON u.id = p.owner_id`.
pub(super) const PROJECT_COLUMNS: &str = "p.id, p.name, p.path, p.description, p.created_at_ms, \
     u.id, u.username, u.name, u.email, u.is_admin, u.created_at_ms";

/// `personal_access_tokens k`, then its hash.
pub(super) const PAT_COLUMNS: &str =
    "k.id, k.user_id, k.name, k.scopes, k.expires_at, k.revoked, k.created_at_ms, k.secret_hash";

/// How many columns [`AGENT_SELECT`] reads: the index of a column selected after them.
pub(super) const AGENT_COLUMN_COUNT: usize = 7;

/// An agent with its URL configuration's id, if any.
pub(super) const AGENT_SELECT: &str = "SELECT a.id, a.project_id, a.name, a.created_by_user_id, \
     a.created_at_ms, a.updated_at_ms, c.id \
     FROM agents a LEFT JOIN url_configurations c ON c.agent_id = a.id";

/// A project named by `$1` (the caller appends the condition), with user `$2`'s membership
/// level and agent `$3` (NULL for none) if it belongs to the project: [`PROJECT_COLUMNS`], then
/// `access_level`, then the agent's columns as in [`AGENT_SELECT`]. At most one row: members
/// are keyed by project and user, agents by id, and an agent has at most one URL configuration.
pub(super) const PROJECT_WITH_ACCESS_SELECT: &str = "SELECT p.id, p.name, p.path, \
     p.description, p.created_at_ms, u.id, u.username, u.name, u.email, u.is_admin, \
     u.created_at_ms, m.access_level, a.id, a.project_id, a.name, a.created_by_user_id, \
     a.created_at_ms, a.updated_at_ms, c.id \
     FROM projects p JOIN users u ON u.id = p.owner_id \
     LEFT JOIN members m ON m.project_id = p.id AND m.user_id = $2 \
     LEFT JOIN agents a ON a.project_id = p.id AND a.id = $3 \
     LEFT JOIN url_configurations c ON c.agent_id = a.id";

/// Where [`PROJECT_WITH_ACCESS_SELECT`]'s `access_level` column is.
pub(super) const PROJECT_WITH_ACCESS_LEVEL: usize = 11;

/// Where [`PROJECT_WITH_ACCESS_SELECT`]'s agent columns start.
pub(super) const PROJECT_WITH_ACCESS_AGENT: usize = 12;

/// `agent_tokens t`, then its hash.
pub(super) const TOKEN_COLUMNS: &str = "t.id, t.agent_id, t.project_id, t.name, t.description, \
     t.revoked, t.created_by_user_id, t.created_at_ms, t.last_used_at_ms, t.secret_hash, \
     t.expires_at_ms, t.revoked_at_ms, t.revoked_by_user_id, t.revoked_reason, \
     t.retiring_until_ms, t.successor_id, t.pending_predecessor_id";

/// `url_configurations c`.
pub(super) const CONFIG_COLUMNS: &str = "c.id, c.agent_id, c.project_id, c.url, c.ca_cert, \
     c.tls_host, c.auth_mode, c.public_key, c.sealed_private_key, c.client_cert, \
     c.sealed_client_key, c.created_by_user_id, c.created_at_ms";

/// `audit_events e`.
pub(super) const AUDIT_COLUMNS: &str =
    "e.id, e.project_id, e.author_id, e.entity_id, e.entity_type, e.details, e.created_at_ms";

/// The `auth_mode` of a JWT configuration.
pub(super) const JWT: &str = "jwt";
/// The `auth_mode` of an mTLS configuration.
pub(super) const MTLS: &str = "mtls";

/// An id as a query parameter. An id too large for `BIGINT` names no row; -1 matches none,
/// since sequences issue only positive ids.
pub(super) fn key(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(-1)
}

/// A stored id. Sequences issue only positive ids, so the conversion cannot fail on our data.
pub(super) fn unsigned(id: i64) -> u64 {
    u64::try_from(id).unwrap_or(0)
}

/// The audit key of a scope: the project's id, or 0 for the instance.
pub(super) fn scope_key(scope: AuditScope) -> i64 {
    match scope {
        AuditScope::Instance => 0,
        AuditScope::Project(project_id) => key(project_id.get()),
    }
}

pub(super) fn get<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, StoreError> {
    row.try_get(index).map_err(pg)
}

fn get_id(row: &Row, index: usize) -> Result<u64, StoreError> {
    get::<i64>(row, index).map(unsigned)
}

fn get_optional_id(row: &Row, index: usize) -> Result<Option<u64>, StoreError> {
    Ok(get::<Option<i64>>(row, index)?.map(unsigned))
}

/// A user from [`USER_COLUMNS`] starting at `start`.
pub(super) fn user(row: &Row, start: usize) -> Result<User, StoreError> {
    Ok(User {
        id: UserId::new(get_id(row, start)?),
        username: get(row, start + 1)?,
        name: get(row, start + 2)?,
        email: get(row, start + 3)?,
        is_admin: get(row, start + 4)?,
        created_at_ms: get(row, start + 5)?,
    })
}

pub(super) fn project(row: &Row) -> Result<Project, StoreError> {
    Ok(Project {
        id: ProjectId::new(get_id(row, 0)?),
        name: get(row, 1)?,
        path: get(row, 2)?,
        description: get(row, 3)?,
        created_at_ms: get(row, 4)?,
        owner: user(row, 5)?,
    })
}

/// A personal access token from [`PAT_COLUMNS`].
pub(super) fn personal_access_token(row: &Row) -> Result<PersonalAccessToken, StoreError> {
    Ok(PersonalAccessToken {
        id: PersonalAccessTokenId::new(get_id(row, 0)?),
        user_id: UserId::new(get_id(row, 1)?),
        name: get(row, 2)?,
        scopes: scopes(row, 3)?,
        expires_at: expiry_date(row, 4)?,
        revoked: get(row, 5)?,
        created_at_ms: get(row, 6)?,
    })
}

/// The `scopes` column of `personal_access_tokens`; a scope agentreg does not know is a decode
/// error, never dropped.
pub(super) fn scopes(row: &Row, index: usize) -> Result<Vec<Scope>, StoreError> {
    get::<Vec<String>>(row, index)?
        .iter()
        .map(|name| Scope::parse(name))
        .collect::<Result<_, _>>()
        .map_err(|error| unreadable_token(DecodeError::UnknownScope(error)))
}

/// The `expires_at` column of `personal_access_tokens` (`YYYY-MM-DD` text, as sled stores it).
pub(super) fn expiry_date(row: &Row, index: usize) -> Result<Option<ExpiryDate>, StoreError> {
    get::<Option<String>>(row, index)?
        .map(|text| ExpiryDate::parse(&text))
        .transpose()
        .map_err(|error| unreadable_token(DecodeError::InvalidExpiryDate(error)))
}

/// The `expires_at` column's value: the text sled stores too.
pub(super) fn expiry_text(expires_at: Option<ExpiryDate>) -> Option<String> {
    expires_at.map(|expires_at| expires_at.to_string())
}

/// The `scopes` column's value: GitLab's scope names.
pub(super) fn scope_names(scopes: &[Scope]) -> Vec<&'static str> {
    scopes.iter().map(|scope| scope.as_str()).collect()
}

fn unreadable_token(source: DecodeError) -> StoreError {
    StoreError::Corrupt {
        tree: "personal_access_tokens",
        source,
    }
}

/// The column after [`PAT_COLUMNS`]' token: where a joined user starts.
pub(super) const PAT_WIDTH: usize = 8;

pub(super) fn agent(row: &Row) -> Result<Agent, StoreError> {
    agent_at(row, 0)
}

/// An agent from [`AGENT_SELECT`]'s columns starting at `start`.
pub(super) fn agent_at(row: &Row, start: usize) -> Result<Agent, StoreError> {
    Ok(Agent {
        id: AgentId::new(get_id(row, start)?),
        project_id: ProjectId::new(get_id(row, start + 1)?),
        name: get(row, start + 2)?,
        created_by_user_id: get_optional_id(row, start + 3)?.map(UserId::new),
        created_at_ms: get(row, start + 4)?,
        updated_at_ms: get(row, start + 5)?,
        url_configuration_id: get_optional_id(row, start + 6)?.map(UrlConfigurationId::new),
    })
}

/// An agent token from [`TOKEN_COLUMNS`].
pub(super) fn agent_token(row: &Row) -> Result<AgentToken, StoreError> {
    let revoked: bool = get(row, 5)?;
    Ok(AgentToken {
        id: AgentTokenId::new(get_id(row, 0)?),
        agent_id: AgentId::new(get_id(row, 1)?),
        project_id: ProjectId::new(get_id(row, 2)?),
        name: get(row, 3)?,
        description: get(row, 4)?,
        status: if revoked {
            TokenStatus::Revoked
        } else {
            TokenStatus::Active
        },
        created_by_user_id: get_optional_id(row, 6)?.map(UserId::new),
        created_at_ms: get(row, 7)?,
        last_used_at_ms: get(row, 8)?,
        expires_at_ms: get(row, 10)?,
        revocation: match (revoked, get::<Option<i64>>(row, 11)?) {
            (true, Some(revoked_at_ms)) => Some(Revocation {
                revoked_at_ms,
                revoked_by_user_id: get_optional_id(row, 12)?.map(UserId::new),
                reason: RevocationReason::from_stored(
                    get::<Option<String>>(row, 13)?.unwrap_or_else(|| "revoked".to_owned()),
                ),
            }),
            (true, None) | (false, _) => None,
        },
        retiring_until_ms: get(row, 14)?,
        successor_id: get_optional_id(row, 15)?.map(AgentTokenId::new),
        pending_predecessor_id: get_optional_id(row, 16)?.map(AgentTokenId::new),
    })
}

/// The index of the hash in [`TOKEN_COLUMNS`].
pub(super) const TOKEN_HASH: usize = 9;

pub(super) fn url_configuration(row: &Row) -> Result<UrlConfiguration, StoreError> {
    let auth_mode: String = get(row, 6)?;
    let auth = match auth_mode.as_str() {
        JWT => SealedUrlAuth::Jwt {
            public_key: get::<Option<Vec<u8>>>(row, 7)?.unwrap_or_default(),
            sealed_private_key: get::<Option<Vec<u8>>>(row, 8)?.unwrap_or_default(),
        },
        MTLS => SealedUrlAuth::Mtls {
            client_cert: get::<Option<String>>(row, 9)?.unwrap_or_default(),
            sealed_client_key: get::<Option<Vec<u8>>>(row, 10)?.unwrap_or_default(),
        },
        other => {
            return Err(StoreError::Engine(EngineError::new(format!(
                "a URL configuration has the unknown auth mode {other:?}"
            ))));
        }
    };
    Ok(UrlConfiguration {
        id: UrlConfigurationId::new(get_id(row, 0)?),
        agent_id: AgentId::new(get_id(row, 1)?),
        project_id: ProjectId::new(get_id(row, 2)?),
        url: get(row, 3)?,
        ca_cert: get(row, 4)?,
        tls_host: get(row, 5)?,
        auth,
        created_by_user_id: get_optional_id(row, 11)?.map(UserId::new),
        created_at_ms: get(row, 12)?,
    })
}

pub(super) fn audit_event(row: &Row) -> Result<AuditEvent, StoreError> {
    let scope = match get_id(row, 1)? {
        0 => AuditScope::Instance,
        project_id => AuditScope::Project(ProjectId::new(project_id)),
    };
    Ok(AuditEvent {
        id: AuditEventId::new(get_id(row, 0)?),
        scope,
        author_id: get_optional_id(row, 2)?.map(UserId::new),
        entity_id: get_id(row, 3)?,
        entity_type: get(row, 4)?,
        details: AuditDetails::from_json(get(row, 5)?),
        created_at_ms: get(row, 6)?,
    })
}
