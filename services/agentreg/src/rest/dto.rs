//! GitLab's JSON entities, and their OpenAPI schemas. Keys appear in GitLab's declaration order
//! and are always present, `null` when unset; timestamps are UTC with milliseconds and a `Z`.
//! Every body the REST edge writes is one of these types, so the document cannot drift from the
//! wire: each schema is closed (`additionalProperties: false`, from `deny_unknown_fields`) and
//! lists every key as required, nullable where the field is an `Option`.

use crate::app::agents::AgentDetails;
use crate::app::identity::{CreatedPersonalAccessToken, VersionInfo};
use crate::app::internal::{AuthenticatedAgent, ReceptiveAgent, ReceptiveAuth};
use crate::app::url_configs::UrlConfigurationView;
use agentreg_domain::access::Scope;
use agentreg_domain::entities::AgentToken;
use agentreg_domain::entities::AuditEvent;
use agentreg_domain::entities::{Member, Project, User};
use agentreg_domain::validation::ValidationErrors;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// `2022-03-25T14:12:11.497Z`.
pub(crate) fn timestamp(ms: i64) -> String {
    Timestamp(ms).to_string()
}

/// A time in milliseconds since the epoch, written as GitLab writes it (`2022-03-25T14:12:11.497Z`)
/// straight into the response, without an intermediate string.
#[derive(Clone, Copy)]
pub(crate) struct Timestamp(pub(crate) i64);

impl Timestamp {
    /// The 24 ASCII bytes of `YYYY-MM-DDTHH:MM:SS.mmmZ`, or `None` for a year outside 0..=9999.
    fn ascii(self) -> Option<[u8; 24]> {
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).ok()?;
        let year = u32::try_from(at.year()).ok().filter(|year| *year <= 9999)?;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |start: usize, width: usize, mut value: u32| {
            for index in (start..start + width).rev() {
                out[index] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, u32::from(u8::from(at.month())));
        put(8, 2, u32::from(at.day()));
        put(11, 2, u32::from(at.hour()));
        put(14, 2, u32::from(at.minute()));
        put(17, 2, u32::from(at.second()));
        put(20, 3, u32::from(at.millisecond()));
        Some(out)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ascii() {
            Some(ascii) => f.write_str(std::str::from_utf8(&ascii).map_err(|_| std::fmt::Error)?),
            None => Ok(()),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.ascii() {
            Some(ascii) => {
                serializer.serialize_str(std::str::from_utf8(&ascii).unwrap_or_default())
            }
            None => serializer.serialize_str(""),
        }
    }
}

/// Two parts joined by a separator, serialized without building the joined string
/// (`name_with_namespace`, `path_with_namespace`).
pub(crate) struct Joined<'a>(&'a str, &'static str, &'a str);

impl Serialize for Joined<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}{}{}", self.0, self.1, self.2))
    }
}

/// The project an agent is configured in (GitLab's `ProjectIdentity`). It borrows the project,
/// so that writing it allocates nothing.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ProjectIdentity)]
pub(crate) struct ProjectIdentityJson<'a> {
    id: u64,
    #[schema(required = true)]
    description: Option<&'a str>,
    name: &'a str,
    #[schema(value_type = String)]
    name_with_namespace: Joined<'a>,
    path: &'a str,
    #[schema(value_type = String)]
    path_with_namespace: Joined<'a>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

impl<'a> From<&'a Project> for ProjectIdentityJson<'a> {
    fn from(project: &'a Project) -> ProjectIdentityJson<'a> {
        ProjectIdentityJson {
            id: project.id.get(),
            description: project.description.as_deref(),
            name: &project.name,
            name_with_namespace: Joined(&project.owner.name, " / ", &project.name),
            path: &project.path,
            path_with_namespace: Joined(&project.owner.username, "/", &project.path),
            created_at: Timestamp(project.created_at_ms),
        }
    }
}

/// A Kubernetes agent (GitLab's `ClusterAgent`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ClusterAgent)]
pub(crate) struct AgentJson<'a> {
    id: u64,
    name: &'a str,
    config_project: ProjectIdentityJson<'a>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(required = true)]
    created_by_user_id: Option<u64>,
    /// Whether the agent has a URL configuration, so that the agent server connects to it.
    is_receptive: bool,
}

impl<'a> From<&'a AgentDetails> for AgentJson<'a> {
    fn from(details: &'a AgentDetails) -> AgentJson<'a> {
        AgentJson {
            id: details.agent.id.get(),
            name: &details.agent.name,
            config_project: ProjectIdentityJson::from(&details.project),
            created_at: Timestamp(details.agent.created_at_ms),
            created_by_user_id: details.agent.created_by_user_id.map(u64::from),
            is_receptive: details.agent.is_receptive(),
        }
    }
}

/// Whether an agent token still authenticates.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TokenStatus {
    Active,
    Revoked,
}

impl TokenStatus {
    fn of(token: &AgentToken) -> TokenStatus {
        match token.status {
            agentreg_domain::entities::TokenStatus::Active => TokenStatus::Active,
            agentreg_domain::entities::TokenStatus::Revoked => TokenStatus::Revoked,
        }
    }
}

/// GitLab's `AgentTokenBasic`: what the list returns.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AgentTokenBasic)]
pub(crate) struct AgentTokenBasicJson {
    id: u64,
    name: String,
    #[schema(required = true)]
    description: Option<String>,
    agent_id: u64,
    status: TokenStatus,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(required = true)]
    created_by_user_id: Option<u64>,
    /// When the token stops working on its own (agentreg extension); `null` when it never does.
    #[schema(required = true, format = DateTime)]
    expires_at: Option<String>,
    /// When a revoked or expired token stopped working (agentreg extension).
    #[schema(required = true, format = DateTime)]
    revoked_at: Option<String>,
    /// Who revoked the token (agentreg extension); `null` for an expired token.
    #[schema(required = true)]
    revoked_by_user_id: Option<u64>,
    /// `revoked`, `rotated`, `expired`, `agent_deleted`, or the revoker's text (agentreg
    /// extension).
    #[schema(required = true)]
    revoked_reason: Option<String>,
    /// Set once the token is rotated (agentreg extension): it keeps working until its successor
    /// is first used, or until this time.
    #[schema(required = true, format = DateTime)]
    retiring_until: Option<String>,
    /// The token that replaced this one in a rotation (agentreg extension).
    #[schema(required = true)]
    successor_id: Option<u64>,
}

impl From<&AgentToken> for AgentTokenBasicJson {
    fn from(token: &AgentToken) -> AgentTokenBasicJson {
        AgentTokenBasicJson {
            id: token.id.get(),
            name: token.name.clone(),
            description: token.description.clone(),
            agent_id: token.agent_id.get(),
            status: TokenStatus::of(token),
            created_at: timestamp(token.created_at_ms),
            created_by_user_id: token.created_by_user_id.map(u64::from),
            expires_at: token.expires_at_ms.map(timestamp),
            revoked_at: token
                .revocation
                .as_ref()
                .map(|r| timestamp(r.revoked_at_ms)),
            revoked_by_user_id: token
                .revocation
                .as_ref()
                .and_then(|r| r.revoked_by_user_id.map(u64::from)),
            revoked_reason: token
                .revocation
                .as_ref()
                .map(|r| r.reason.as_str().to_owned()),
            retiring_until: token.retiring_until_ms.map(timestamp),
            successor_id: token.successor_id.map(u64::from),
        }
    }
}

/// GitLab's `AgentToken`: the basic shape plus `last_used_at`.
// The keys are spelled out rather than flattened so that the schema stays closed.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AgentToken)]
pub(crate) struct AgentTokenJson {
    id: u64,
    name: String,
    #[schema(required = true)]
    description: Option<String>,
    agent_id: u64,
    status: TokenStatus,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(required = true)]
    created_by_user_id: Option<u64>,
    #[schema(required = true, format = DateTime)]
    last_used_at: Option<String>,
    /// When the token stops working on its own (agentreg extension); `null` when it never does.
    #[schema(required = true, format = DateTime)]
    expires_at: Option<String>,
    /// When a revoked or expired token stopped working (agentreg extension).
    #[schema(required = true, format = DateTime)]
    revoked_at: Option<String>,
    /// Who revoked the token (agentreg extension); `null` for an expired token.
    #[schema(required = true)]
    revoked_by_user_id: Option<u64>,
    /// `revoked`, `rotated`, `expired`, `agent_deleted`, or the revoker's text (agentreg
    /// extension).
    #[schema(required = true)]
    revoked_reason: Option<String>,
    /// Set once the token is rotated (agentreg extension): it keeps working until its successor
    /// is first used, or until this time.
    #[schema(required = true, format = DateTime)]
    retiring_until: Option<String>,
    /// The token that replaced this one in a rotation (agentreg extension).
    #[schema(required = true)]
    successor_id: Option<u64>,
}

impl From<&AgentToken> for AgentTokenJson {
    fn from(token: &AgentToken) -> AgentTokenJson {
        AgentTokenJson {
            id: token.id.get(),
            name: token.name.clone(),
            description: token.description.clone(),
            agent_id: token.agent_id.get(),
            status: TokenStatus::of(token),
            created_at: timestamp(token.created_at_ms),
            created_by_user_id: token.created_by_user_id.map(u64::from),
            last_used_at: token.last_used_at_ms.map(timestamp),
            expires_at: token.expires_at_ms.map(timestamp),
            revoked_at: token
                .revocation
                .as_ref()
                .map(|r| timestamp(r.revoked_at_ms)),
            revoked_by_user_id: token
                .revocation
                .as_ref()
                .and_then(|r| r.revoked_by_user_id.map(u64::from)),
            revoked_reason: token
                .revocation
                .as_ref()
                .map(|r| r.reason.as_str().to_owned()),
            retiring_until: token.retiring_until_ms.map(timestamp),
            successor_id: token.successor_id.map(u64::from),
        }
    }
}

/// GitLab's `AgentTokenWithToken`: the create response, the only place the secret is shown.
// It borrows the secret, so that it is written into the response and kept in no other value.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AgentTokenWithToken)]
pub(crate) struct AgentTokenWithTokenJson<'a> {
    id: u64,
    name: String,
    #[schema(required = true)]
    description: Option<String>,
    agent_id: u64,
    status: TokenStatus,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(required = true)]
    created_by_user_id: Option<u64>,
    #[schema(required = true, format = DateTime)]
    last_used_at: Option<String>,
    /// The token, shown this once.
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String)]
    token: &'a SecretString,
    /// When the token stops working on its own (agentreg extension); `null` when it never does.
    #[schema(required = true, format = DateTime)]
    expires_at: Option<String>,
    /// When a revoked or expired token stopped working (agentreg extension).
    #[schema(required = true, format = DateTime)]
    revoked_at: Option<String>,
    /// Who revoked the token (agentreg extension); `null` for an expired token.
    #[schema(required = true)]
    revoked_by_user_id: Option<u64>,
    /// `revoked`, `rotated`, `expired`, `agent_deleted`, or the revoker's text (agentreg
    /// extension).
    #[schema(required = true)]
    revoked_reason: Option<String>,
    /// Set once the token is rotated (agentreg extension): it keeps working until its successor
    /// is first used, or until this time.
    #[schema(required = true, format = DateTime)]
    retiring_until: Option<String>,
    /// The token that replaced this one in a rotation (agentreg extension).
    #[schema(required = true)]
    successor_id: Option<u64>,
}

impl<'a> AgentTokenWithTokenJson<'a> {
    pub(crate) fn new(
        token: &AgentToken,
        plaintext: &'a SecretString,
    ) -> AgentTokenWithTokenJson<'a> {
        let shown = AgentTokenJson::from(token);
        AgentTokenWithTokenJson {
            id: shown.id,
            name: shown.name,
            description: shown.description,
            agent_id: shown.agent_id,
            status: shown.status,
            created_at: shown.created_at,
            created_by_user_id: shown.created_by_user_id,
            last_used_at: shown.last_used_at,
            expires_at: shown.expires_at,
            revoked_at: shown.revoked_at,
            revoked_by_user_id: shown.revoked_by_user_id,
            revoked_reason: shown.revoked_reason,
            retiring_until: shown.retiring_until,
            successor_id: shown.successor_id,
            token: plaintext,
        }
    }
}

/// A receptive agent's URL configuration (GitLab's `ClusterAgentUrlConfiguration`). Private keys
/// never appear; `public_key` is set in JWT mode and `client_cert` in mTLS mode.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UrlConfiguration)]
pub(crate) struct UrlConfigurationJson {
    id: u64,
    agent_id: u64,
    url: String,
    /// Standard base64 of the raw 32-byte Ed25519 public key, in JWT mode.
    #[schema(required = true)]
    public_key: Option<String>,
    #[schema(required = true)]
    client_cert: Option<String>,
    #[schema(required = true)]
    ca_cert: Option<String>,
    #[schema(required = true)]
    tls_host: Option<String>,
}

impl From<UrlConfigurationView> for UrlConfigurationJson {
    fn from(view: UrlConfigurationView) -> UrlConfigurationJson {
        UrlConfigurationJson {
            id: view.id.get(),
            agent_id: view.agent_id.get(),
            url: view.url,
            public_key: view.public_key,
            client_cert: view.client_cert,
            ca_cert: view.ca_cert,
            tls_host: view.tls_host,
        }
    }
}

/// GitLab's `UserPublic` (what `/user` shows its own caller, and `POST /users` returns).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = User)]
pub(crate) struct UserJson {
    id: u64,
    username: String,
    name: String,
    /// Always `active`.
    #[schema(value_type = String)]
    state: &'static str,
    locked: bool,
    #[schema(required = true)]
    avatar_url: Option<String>,
    web_url: String,
    #[schema(format = DateTime)]
    created_at: String,
    email: String,
    is_admin: bool,
}

impl UserJson {
    pub(crate) fn new(user: &User, origin: &str) -> UserJson {
        UserJson {
            id: user.id.get(),
            username: user.username.clone(),
            name: user.name.clone(),
            state: "active",
            locked: false,
            avatar_url: None,
            web_url: format!("{origin}/{}", user.username),
            created_at: timestamp(user.created_at_ms),
            email: user.email.clone(),
            is_admin: user.is_admin,
        }
    }
}

/// The namespace a project lives in: always its owner's personal namespace.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Namespace)]
pub(crate) struct NamespaceJson {
    id: u64,
    name: String,
    path: String,
    /// Always `user`.
    #[schema(value_type = String)]
    kind: &'static str,
    full_path: String,
    #[schema(required = true)]
    parent_id: Option<u64>,
    #[schema(required = true)]
    avatar_url: Option<String>,
    web_url: String,
}

/// GitLab's `Project`, reduced to the keys agentreg knows.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Project)]
pub(crate) struct ProjectJson {
    id: u64,
    #[schema(required = true)]
    description: Option<String>,
    name: String,
    name_with_namespace: String,
    path: String,
    path_with_namespace: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(required = true)]
    default_branch: Option<String>,
    tag_list: Vec<String>,
    topics: Vec<String>,
    web_url: String,
    /// Always `private`.
    #[schema(value_type = String)]
    visibility: &'static str,
    namespace: NamespaceJson,
}

impl ProjectJson {
    pub(crate) fn new(project: &Project, origin: &str) -> ProjectJson {
        ProjectJson {
            id: project.id.get(),
            description: project.description.clone(),
            name: project.name.clone(),
            name_with_namespace: project.name_with_namespace(),
            path: project.path.clone(),
            path_with_namespace: project.path_with_namespace(),
            created_at: timestamp(project.created_at_ms),
            default_branch: None,
            tag_list: Vec::new(),
            topics: Vec::new(),
            web_url: format!("{origin}/{}", project.path_with_namespace()),
            visibility: "private",
            namespace: NamespaceJson {
                id: project.owner.id.get(),
                name: project.owner.name.clone(),
                path: project.owner.username.clone(),
                kind: "user",
                full_path: project.owner.username.clone(),
                parent_id: None,
                avatar_url: None,
                web_url: format!("{origin}/{}", project.owner.username),
            },
        }
    }
}

/// GitLab's `Member`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Member)]
pub(crate) struct MemberJson {
    id: u64,
    username: String,
    name: String,
    /// Always `active`.
    #[schema(value_type = String)]
    state: &'static str,
    #[schema(required = true)]
    avatar_url: Option<String>,
    web_url: String,
    /// 10 Guest, 20 Reporter, 30 Developer, 40 Maintainer, 50 Owner.
    access_level: i64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(required = true, format = Date)]
    expires_at: Option<String>,
}

impl MemberJson {
    pub(crate) fn new(member: &Member, origin: &str) -> MemberJson {
        MemberJson {
            id: member.user.id.get(),
            username: member.user.username.clone(),
            name: member.user.name.clone(),
            state: "active",
            avatar_url: None,
            web_url: format!("{origin}/{}", member.user.username),
            access_level: member.access_level.value(),
            created_at: timestamp(member.created_at_ms),
            expires_at: None,
        }
    }
}

/// GitLab's `PersonalAccessTokenWithToken`: the create response, with its secret shown once.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PersonalAccessTokenWithToken)]
pub(crate) struct PersonalAccessTokenJson<'a> {
    id: u64,
    name: String,
    revoked: bool,
    #[schema(format = DateTime)]
    created_at: String,
    /// Always `null`: agentreg stores no token descriptions.
    #[schema(required = true)]
    description: Option<String>,
    scopes: Vec<String>,
    user_id: u64,
    /// Always `null` in the create response.
    #[schema(required = true, format = DateTime)]
    last_used_at: Option<String>,
    active: bool,
    #[schema(required = true, format = Date)]
    expires_at: Option<String>,
    /// The token, shown this once.
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String)]
    token: &'a SecretString,
}

impl<'a> PersonalAccessTokenJson<'a> {
    pub(crate) fn new(created: &'a CreatedPersonalAccessToken) -> PersonalAccessTokenJson<'a> {
        let token = &created.token;
        PersonalAccessTokenJson {
            id: token.id.get(),
            name: token.name.clone(),
            revoked: token.revoked,
            created_at: timestamp(token.created_at_ms),
            description: None,
            scopes: Scope::names(&token.scopes),
            user_id: token.user_id.get(),
            last_used_at: None,
            active: !token.revoked,
            expires_at: token.expires_at.map(|expires_at| expires_at.to_string()),
            token: &created.plaintext,
        }
    }
}

/// `GET /version`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Version)]
pub(crate) struct VersionJson {
    /// The GitLab version whose agent API this service implements.
    version: &'static str,
    /// agentreg's own version.
    revision: &'static str,
    kas: KasJson,
    enterprise: bool,
}

/// The agent server (KAS) as `/version` reports it.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Kas)]
pub(crate) struct KasJson {
    enabled: bool,
    #[serde(rename = "externalUrl")]
    #[schema(required = true)]
    external_url: Option<String>,
    #[serde(rename = "externalK8sProxyUrl")]
    #[schema(required = true)]
    external_k8s_proxy_url: Option<String>,
    #[schema(required = true)]
    version: Option<String>,
}

impl From<&VersionInfo> for VersionJson {
    fn from(info: &VersionInfo) -> VersionJson {
        VersionJson {
            version: info.version,
            revision: info.revision,
            kas: KasJson {
                enabled: true,
                external_url: None,
                external_k8s_proxy_url: None,
                version: None,
            },
            enterprise: false,
        }
    }
}

/// GitLab's audit-event shape.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AuditEvent)]
pub(crate) struct AuditEventJson {
    id: u64,
    #[schema(required = true)]
    author_id: Option<u64>,
    entity_id: u64,
    entity_type: String,
    /// The action, its target and its outcome; never a secret.
    #[schema(value_type = Object)]
    details: serde_json::Value,
    #[schema(format = DateTime)]
    created_at: String,
}

impl From<&AuditEvent> for AuditEventJson {
    fn from(event: &AuditEvent) -> AuditEventJson {
        AuditEventJson {
            id: event.id.get(),
            author_id: event.author_id.map(u64::from),
            entity_id: event.entity_id,
            entity_type: event.entity_type.clone(),
            details: serde_json::from_str(event.details.as_json()).unwrap_or_default(),
            created_at: timestamp(event.created_at_ms),
        }
    }
}

/// The agent an agent token belongs to, for the agent server.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AgentInfo)]
pub(crate) struct AgentInfoJson<'a> {
    project_id: u64,
    agent_id: u64,
    agent_name: &'a str,
}

impl<'a> From<&'a AuthenticatedAgent> for AgentInfoJson<'a> {
    fn from(agent: &'a AuthenticatedAgent) -> AgentInfoJson<'a> {
        AgentInfoJson {
            project_id: agent.project_id.get(),
            agent_id: agent.agent_id.get(),
            agent_name: &agent.agent_name,
        }
    }
}

/// Every receptive agent's configuration, for the agent server, keys in clear.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReceptiveAgents)]
pub(crate) struct ReceptiveAgentsJson<'a> {
    agents: Vec<ReceptiveAgentJson<'a>>,
}

/// One receptive agent: exactly one of `jwt` and `mtls` is set.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReceptiveAgent)]
pub(crate) struct ReceptiveAgentJson<'a> {
    id: u64,
    url: &'a str,
    #[schema(required = true)]
    ca_cert: Option<&'a str>,
    #[schema(required = true)]
    tls_host: Option<&'a str>,
    #[schema(required = true)]
    jwt: Option<ReceptiveJwtJson<'a>>,
    #[schema(required = true)]
    mtls: Option<ReceptiveMtlsJson<'a>>,
}

/// JWT mode: the agent server signs with this key.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReceptiveJwt)]
pub(crate) struct ReceptiveJwtJson<'a> {
    /// Standard base64 of the 32-byte Ed25519 seed.
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String)]
    private_key: &'a SecretString,
}

/// mTLS mode: the agent server presents this client certificate.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReceptiveMtls)]
pub(crate) struct ReceptiveMtlsJson<'a> {
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String)]
    client_key: &'a SecretString,
    client_cert: &'a str,
}

impl<'a> ReceptiveAgentsJson<'a> {
    pub(crate) fn new(agents: &'a [ReceptiveAgent]) -> ReceptiveAgentsJson<'a> {
        let agents = agents
            .iter()
            .map(|agent| {
                let (jwt, mtls) = match &agent.auth {
                    ReceptiveAuth::Jwt { private_key } => {
                        (Some(ReceptiveJwtJson { private_key }), None)
                    }
                    ReceptiveAuth::Mtls {
                        client_cert,
                        client_key,
                    } => (
                        None,
                        Some(ReceptiveMtlsJson {
                            client_key,
                            client_cert,
                        }),
                    ),
                };
                ReceptiveAgentJson {
                    id: agent.agent_id.get(),
                    url: &agent.url,
                    ca_cert: agent.ca_cert.as_deref(),
                    tls_host: agent.tls_host.as_deref(),
                    jwt,
                    mtls,
                }
            })
            .collect();
        ReceptiveAgentsJson { agents }
    }
}

/// GitLab's most common error body, `{"message": "404 Project Not Found"}`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MessageError)]
pub(crate) struct MessageErrorJson {
    message: String,
}

impl MessageErrorJson {
    pub(crate) fn new(message: impl Into<String>) -> MessageErrorJson {
        MessageErrorJson {
            message: message.into(),
        }
    }
}

/// Grape's error body for parameters and bodies, `{"error": "name is missing"}`, and GitLab's
/// catch-all `{"error": "404 Not Found"}`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ParameterError)]
pub(crate) struct ParameterErrorJson {
    error: String,
}

impl ParameterErrorJson {
    pub(crate) fn new(error: impl Into<String>) -> ParameterErrorJson {
        ParameterErrorJson {
            error: error.into(),
        }
    }
}

/// A `read_api` token on a route that writes (sent with a `WWW-Authenticate` header).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = InsufficientScopeError)]
pub(crate) struct InsufficientScopeJson {
    /// Always `insufficient_scope`.
    #[schema(value_type = String)]
    error: &'static str,
    #[schema(value_type = String)]
    error_description: &'static str,
    /// The scope the request needs: `api`, or `sudo` for a request with `Sudo`.
    #[schema(value_type = String)]
    scope: &'static str,
}

impl InsufficientScopeJson {
    pub(crate) fn for_scope(scope: &'static str) -> InsufficientScopeJson {
        InsufficientScopeJson {
            error: "insufficient_scope",
            error_description: "The request requires higher privileges than provided by the access token.",
            scope,
        }
    }
}

/// Model validation of a user or project: messages keyed by attribute,
/// `{"message": {"path": ["has already been taken"]}}`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AttributeErrors)]
pub(crate) struct AttributeErrorsJson {
    #[schema(value_type = std::collections::HashMap<String, Vec<String>>)]
    message: serde_json::Map<String, serde_json::Value>,
}

impl From<&ValidationErrors> for AttributeErrorsJson {
    fn from(errors: &ValidationErrors) -> AttributeErrorsJson {
        let message = errors
            .by_attribute()
            .into_iter()
            .map(|(attribute, messages)| (attribute.to_owned(), serde_json::json!(messages)))
            .collect();
        AttributeErrorsJson { message }
    }
}

/// Writes a borrowed secret into a response body; the only place a secret is exposed.
fn expose<S: serde::Serializer>(secret: &&SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        assert_eq!(timestamp(1_648_217_531_497), "2022-03-25T14:12:11.497Z");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(timestamp(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            serde_json::to_string(&Timestamp(1_000_000_000_123)).unwrap(),
            r#""2001-09-09T01:46:40.123Z""#
        );
    }

    #[test]
    fn version_keeps_gitlabs_keys() {
        let info = VersionInfo {
            version: "18.0.0",
            revision: "0.1.0",
        };
        let value = serde_json::to_value(VersionJson::from(&info)).unwrap();
        assert_eq!(
            value.to_string(),
            r#"{"version":"18.0.0","revision":"0.1.0","kas":{"enabled":true,"externalUrl":null,"externalK8sProxyUrl":null,"version":null},"enterprise":false}"#
        );
    }

    #[test]
    fn secrets_are_written_once_as_text() {
        let private_key = SecretString::from("c2VlZA==");
        let client_key = SecretString::from("-----BEGIN PRIVATE KEY-----");
        let agents = vec![
            ReceptiveAgent {
                agent_id: agentreg_domain::ids::AgentId::new(1),
                url: "grpc://a.example".to_owned(),
                ca_cert: None,
                tls_host: None,
                auth: ReceptiveAuth::Jwt { private_key },
            },
            ReceptiveAgent {
                agent_id: agentreg_domain::ids::AgentId::new(2),
                url: "grpc://b.example".to_owned(),
                ca_cert: Some("ca".to_owned()),
                tls_host: Some("b".to_owned()),
                auth: ReceptiveAuth::Mtls {
                    client_cert: "cert".to_owned(),
                    client_key,
                },
            },
        ];
        let value = serde_json::to_value(ReceptiveAgentsJson::new(&agents)).unwrap();
        assert_eq!(
            value.to_string(),
            r#"{"agents":[{"id":1,"url":"grpc://a.example","ca_cert":null,"tls_host":null,"jwt":{"private_key":"c2VlZA=="},"mtls":null},{"id":2,"url":"grpc://b.example","ca_cert":"ca","tls_host":"b","jwt":null,"mtls":{"client_key":"-----BEGIN PRIVATE KEY-----","client_cert":"cert"}}]}"#
        );
    }
}

/// GitLab's error with a nested message: `{"message": {"error": "Not found"}}` (the admin token
/// API's 404).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NestedError)]
pub(crate) struct NestedErrorJson {
    message: NestedErrorMessageJson,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NestedErrorMessage)]
pub(crate) struct NestedErrorMessageJson {
    error: String,
}

impl NestedErrorJson {
    pub(crate) fn new(error: &str) -> NestedErrorJson {
        NestedErrorJson {
            message: NestedErrorMessageJson {
                error: error.to_owned(),
            },
        }
    }
}

/// GitLab's `PersonalAccessToken`: everything but the secret.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PersonalAccessToken)]
pub(crate) struct PersonalAccessTokenInfoJson {
    id: u64,
    name: String,
    revoked: bool,
    #[schema(format = DateTime)]
    created_at: String,
    /// Always `null`: agentreg stores no token descriptions.
    #[schema(required = true)]
    description: Option<String>,
    scopes: Vec<String>,
    user_id: u64,
    /// Always `null`: agentreg does not track personal access token use.
    #[schema(required = true, format = DateTime)]
    last_used_at: Option<String>,
    active: bool,
    #[schema(required = true, format = Date)]
    expires_at: Option<String>,
}

impl From<&agentreg_domain::entities::PersonalAccessToken> for PersonalAccessTokenInfoJson {
    fn from(token: &agentreg_domain::entities::PersonalAccessToken) -> PersonalAccessTokenInfoJson {
        PersonalAccessTokenInfoJson {
            id: token.id.get(),
            name: token.name.clone(),
            revoked: token.revoked,
            created_at: timestamp(token.created_at_ms),
            description: None,
            scopes: Scope::names(&token.scopes),
            user_id: token.user_id.get(),
            last_used_at: None,
            active: !token.revoked,
            expires_at: token.expires_at.map(|expires_at| expires_at.to_string()),
        }
    }
}

/// A token found by its value: an agent token or a personal access token, in its own shape.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = IdentifiedToken)]
pub(crate) enum IdentifiedTokenJson {
    Agent(AgentTokenJson),
    PersonalAccess(PersonalAccessTokenInfoJson),
}

/// One agent of the instance inventory (agentreg extension).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = InventoryAgent)]
pub(crate) struct InventoryAgentJson {
    id: u64,
    name: String,
    project_id: u64,
    /// The project's full path, `owner/path`.
    project_path: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(required = true)]
    created_by_user_id: Option<u64>,
    is_receptive: bool,
    token_summary: TokenSummaryJson,
}

/// An agent's tokens at a glance.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TokenSummary)]
pub(crate) struct TokenSummaryJson {
    /// Tokens that authenticate now (retiring ones included).
    active: u64,
    /// The most recent use of any of the agent's tokens.
    #[schema(required = true, format = DateTime)]
    last_used_at: Option<String>,
    /// The earliest expiry among the tokens that authenticate now.
    #[schema(required = true, format = DateTime)]
    earliest_expires_at: Option<String>,
}

impl From<&crate::app::inventory::InventoryEntry> for InventoryAgentJson {
    fn from(entry: &crate::app::inventory::InventoryEntry) -> InventoryAgentJson {
        InventoryAgentJson {
            id: entry.agent.id.get(),
            name: entry.agent.name.clone(),
            project_id: entry.project.id.get(),
            project_path: entry.project.path_with_namespace(),
            created_at: timestamp(entry.agent.created_at_ms),
            created_by_user_id: entry.agent.created_by_user_id.map(u64::from),
            is_receptive: entry.agent.is_receptive(),
            token_summary: TokenSummaryJson {
                active: entry.n_active_tokens,
                last_used_at: entry.last_used_at_ms.map(timestamp),
                earliest_expires_at: entry.earliest_expires_at_ms.map(timestamp),
            },
        }
    }
}
