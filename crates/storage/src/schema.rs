//! Every sled tree agentreg uses and how its keys are encoded. Integers are big-endian so that a
//! range scan returns items in numeric order; composite keys concatenate their parts.

/// Monotonic id counters, one key per kind (`next_id/agent`), and [`KEY_FINGERPRINT`].
pub(crate) const META: &str = "meta";
/// The `meta` key of the fingerprint of the instance key that sealed the stored private keys.
pub(crate) const KEY_FINGERPRINT: &[u8] = b"instance_key_fingerprint";
/// user id → `records::v1::User`.
pub(crate) const USERS: &str = "users";
/// lower-cased username → user id.
pub(crate) const USERNAMES: &str = "usernames";
/// lower-cased e-mail → user id.
pub(crate) const USER_EMAILS: &str = "user_emails";
/// personal access token id → `records::v1::PersonalAccessToken`.
pub(crate) const PATS: &str = "personal_access_tokens";
/// token handle → personal access token id.
pub(crate) const PAT_HANDLES: &str = "personal_access_token_handles";
/// project id → `records::v1::Project`.
pub(crate) const PROJECTS: &str = "projects";
/// lower-cased `namespace/path` → project id.
pub(crate) const PROJECT_PATHS: &str = "project_paths";
/// project id ++ user id → `records::v1::Member`.
pub(crate) const MEMBERS: &str = "members";
/// agent id → `records::v1::Agent`.
pub(crate) const AGENTS: &str = "agents";
/// project id ++ agent name → agent id: the ordered index that pages the agent list by name.
pub(crate) const AGENT_NAMES: &str = "agent_names";
/// project id → number of agents, so that `X-Total` is O(1).
pub(crate) const PROJECT_AGENT_COUNTS: &str = "project_agent_counts";
/// agent id → `records::v1::AgentTokenSet`: which of the agent's tokens are active.
pub(crate) const AGENT_TOKEN_SETS: &str = "agent_token_sets";
/// agent token id → `records::v1::AgentToken`.
pub(crate) const AGENT_TOKENS: &str = "agent_tokens";
/// token handle → agent token id.
pub(crate) const AGENT_TOKEN_HANDLES: &str = "agent_token_handles";
/// agent token id → last use, unix milliseconds. Kept apart from the token record because it
/// is written on every agent authentication.
pub(crate) const AGENT_TOKEN_LAST_USED: &str = "agent_token_last_used";
/// URL configuration id → `records::v1::UrlConfiguration`.
pub(crate) const URL_CONFIGURATIONS: &str = "url_configurations";
/// project id ++ audit event id → `records::v1::AuditEvent`.
pub(crate) const AUDIT_EVENTS: &str = "audit_events";
/// predecessor token id ++ idempotency key → `records::v1::RotationRetrieval`: a rotated
/// successor's sealed secret, held only for the retrieve window. Never part of a snapshot.
pub(crate) const ROTATION_RETRIEVALS: &str = "rotation_retrievals";

/// Every tree, in snapshot order.
pub(crate) const ALL_TREES: [&str; 18] = [
    META,
    USERS,
    USERNAMES,
    USER_EMAILS,
    PATS,
    PAT_HANDLES,
    PROJECTS,
    PROJECT_PATHS,
    MEMBERS,
    AGENTS,
    AGENT_NAMES,
    PROJECT_AGENT_COUNTS,
    AGENT_TOKEN_SETS,
    AGENT_TOKENS,
    AGENT_TOKEN_HANDLES,
    AGENT_TOKEN_LAST_USED,
    URL_CONFIGURATIONS,
    AUDIT_EVENTS,
];

/// The id counters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IdKind {
    User,
    PersonalAccessToken,
    Project,
    Agent,
    AgentToken,
    UrlConfiguration,
    AuditEvent,
}

impl IdKind {
    pub(crate) fn counter_key(self) -> &'static [u8] {
        match self {
            IdKind::User => b"next_id/user",
            IdKind::PersonalAccessToken => b"next_id/personal_access_token",
            IdKind::Project => b"next_id/project",
            IdKind::Agent => b"next_id/agent",
            IdKind::AgentToken => b"next_id/agent_token",
            IdKind::UrlConfiguration => b"next_id/url_configuration",
            IdKind::AuditEvent => b"next_id/audit_event",
        }
    }
}

pub(crate) fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

pub(crate) fn pair_key(first: u64, second: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&first.to_be_bytes());
    key[8..].copy_from_slice(&second.to_be_bytes());
    key
}

pub(crate) fn agent_name_key(project_id: u64, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + name.len());
    key.extend_from_slice(&project_id.to_be_bytes());
    key.extend_from_slice(name.as_bytes());
    key
}

pub(crate) fn folded_key(text: &str) -> Vec<u8> {
    text.to_lowercase().into_bytes()
}

/// Decodes an 8-byte big-endian integer; `None` if the value has another length.
pub(crate) fn decode_u64(bytes: &[u8]) -> Option<u64> {
    let array: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_be_bytes(array))
}

/// Decodes an 8-byte big-endian signed integer.
pub(crate) fn decode_i64(bytes: &[u8]) -> Option<i64> {
    let array: [u8; 8] = bytes.try_into().ok()?;
    Some(i64::from_be_bytes(array))
}
