//! GitLab's JSON entities. Keys appear in GitLab's declaration order and are always present,
//! `null` when unset; timestamps are UTC with milliseconds and a `Z`.

use crate::app::agents::AgentDetails;
use crate::app::identity::{CreatedPersonalAccessToken, VersionInfo};
use crate::app::internal::{AuthenticatedAgent, ReceptiveAgent, ReceptiveAuth};
use crate::app::url_configs::UrlConfigurationView;
use agentreg_storage::agent_tokens::AgentToken;
use agentreg_storage::audit::AuditEvent;
use agentreg_storage::identity::{Member, Project, User};
use secrecy::ExposeSecret;
use serde::Serialize;
use time::OffsetDateTime;
use time::macros::format_description;

/// `2022-03-25T14:12:11.497Z`.
pub(crate) fn timestamp(ms: i64) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_default()
}

#[derive(Serialize)]
pub(crate) struct ProjectIdentityJson {
    id: u64,
    description: Option<String>,
    name: String,
    name_with_namespace: String,
    path: String,
    path_with_namespace: String,
    created_at: String,
}

impl From<&Project> for ProjectIdentityJson {
    fn from(project: &Project) -> ProjectIdentityJson {
        ProjectIdentityJson {
            id: project.id,
            description: project.description.clone(),
            name: project.name.clone(),
            name_with_namespace: project.name_with_namespace(),
            path: project.path.clone(),
            path_with_namespace: project.path_with_namespace(),
            created_at: timestamp(project.created_at_ms),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct AgentJson {
    id: u64,
    name: String,
    config_project: ProjectIdentityJson,
    created_at: String,
    created_by_user_id: Option<u64>,
    is_receptive: bool,
}

impl From<&AgentDetails> for AgentJson {
    fn from(details: &AgentDetails) -> AgentJson {
        AgentJson {
            id: details.agent.id,
            name: details.agent.name.clone(),
            config_project: ProjectIdentityJson::from(&details.project),
            created_at: timestamp(details.agent.created_at_ms),
            created_by_user_id: details.agent.created_by_user_id,
            is_receptive: details.agent.is_receptive(),
        }
    }
}

/// GitLab's `AgentTokenBasic`: what the list returns.
#[derive(Serialize)]
pub(crate) struct AgentTokenBasicJson {
    id: u64,
    name: String,
    description: Option<String>,
    agent_id: u64,
    status: &'static str,
    created_at: String,
    created_by_user_id: Option<u64>,
}

impl From<&AgentToken> for AgentTokenBasicJson {
    fn from(token: &AgentToken) -> AgentTokenBasicJson {
        AgentTokenBasicJson {
            id: token.id,
            name: token.name.clone(),
            description: token.description.clone(),
            agent_id: token.agent_id,
            status: if token.revoked { "revoked" } else { "active" },
            created_at: timestamp(token.created_at_ms),
            created_by_user_id: token.created_by_user_id,
        }
    }
}

/// GitLab's `AgentToken`: the basic shape plus `last_used_at`.
#[derive(Serialize)]
pub(crate) struct AgentTokenJson {
    #[serde(flatten)]
    basic: AgentTokenBasicJson,
    last_used_at: Option<String>,
}

impl From<&AgentToken> for AgentTokenJson {
    fn from(token: &AgentToken) -> AgentTokenJson {
        AgentTokenJson {
            basic: AgentTokenBasicJson::from(token),
            last_used_at: token.last_used_at_ms.map(timestamp),
        }
    }
}

/// GitLab's `AgentTokenWithToken`: the create response. It is built as a JSON value so that
/// the secret is written once into the response and kept in no other type.
pub(crate) fn agent_token_with_token(
    token: &AgentToken,
    plaintext: &secrecy::SecretString,
) -> serde_json::Value {
    let mut value = serde_json::to_value(AgentTokenJson::from(token)).unwrap_or_default();
    if let serde_json::Value::Object(object) = &mut value {
        object.insert(
            "token".to_owned(),
            serde_json::Value::String(plaintext.expose_secret().to_owned()),
        );
    }
    value
}

#[derive(Serialize)]
pub(crate) struct UrlConfigurationJson {
    id: u64,
    agent_id: u64,
    url: String,
    public_key: Option<String>,
    client_cert: Option<String>,
    ca_cert: Option<String>,
    tls_host: Option<String>,
}

impl From<UrlConfigurationView> for UrlConfigurationJson {
    fn from(view: UrlConfigurationView) -> UrlConfigurationJson {
        UrlConfigurationJson {
            id: view.id,
            agent_id: view.agent_id,
            url: view.url,
            public_key: view.public_key,
            client_cert: view.client_cert,
            ca_cert: view.ca_cert,
            tls_host: view.tls_host,
        }
    }
}

#[derive(Serialize)]
pub(crate) struct UserJson {
    id: u64,
    username: String,
    name: String,
    state: &'static str,
    locked: bool,
    avatar_url: Option<String>,
    web_url: String,
    created_at: String,
    email: String,
    is_admin: bool,
}

impl UserJson {
    pub(crate) fn new(user: &User, origin: &str) -> UserJson {
        UserJson {
            id: user.id,
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

#[derive(Serialize)]
pub(crate) struct NamespaceJson {
    id: u64,
    name: String,
    path: String,
    kind: &'static str,
    full_path: String,
    parent_id: Option<u64>,
    avatar_url: Option<String>,
    web_url: String,
}

#[derive(Serialize)]
pub(crate) struct ProjectJson {
    id: u64,
    description: Option<String>,
    name: String,
    name_with_namespace: String,
    path: String,
    path_with_namespace: String,
    created_at: String,
    default_branch: Option<String>,
    tag_list: Vec<String>,
    topics: Vec<String>,
    web_url: String,
    visibility: &'static str,
    namespace: NamespaceJson,
}

impl ProjectJson {
    pub(crate) fn new(project: &Project, origin: &str) -> ProjectJson {
        ProjectJson {
            id: project.id,
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
                id: project.owner.id,
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

#[derive(Serialize)]
pub(crate) struct MemberJson {
    id: u64,
    username: String,
    name: String,
    state: &'static str,
    avatar_url: Option<String>,
    web_url: String,
    access_level: i64,
    created_at: String,
    expires_at: Option<String>,
}

impl MemberJson {
    pub(crate) fn new(member: &Member, origin: &str) -> MemberJson {
        MemberJson {
            id: member.user.id,
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

/// The personal access token create response, with its secret.
pub(crate) fn personal_access_token(created: &CreatedPersonalAccessToken) -> serde_json::Value {
    let token = &created.token;
    serde_json::json!({
        "id": token.id,
        "name": token.name,
        "revoked": token.revoked,
        "created_at": timestamp(token.created_at_ms),
        "description": null,
        "scopes": token.scopes,
        "user_id": token.user_id,
        "last_used_at": null,
        "active": !token.revoked,
        "expires_at": token.expires_at,
        "token": created.plaintext.expose_secret(),
    })
}

pub(crate) fn version(info: &VersionInfo) -> serde_json::Value {
    serde_json::json!({
        "version": info.version,
        "revision": info.revision,
        "kas": {"enabled": true, "externalUrl": null, "externalK8sProxyUrl": null, "version": null},
        "enterprise": false,
    })
}

#[derive(Serialize)]
pub(crate) struct AuditEventJson {
    id: u64,
    author_id: Option<u64>,
    entity_id: u64,
    entity_type: String,
    details: serde_json::Value,
    created_at: String,
}

impl From<&AuditEvent> for AuditEventJson {
    fn from(event: &AuditEvent) -> AuditEventJson {
        AuditEventJson {
            id: event.id,
            author_id: event.author_id,
            entity_id: event.entity_id,
            entity_type: event.entity_type.clone(),
            details: event.details.clone(),
            created_at: timestamp(event.created_at_ms),
        }
    }
}

pub(crate) fn agent_info(agent: &AuthenticatedAgent) -> serde_json::Value {
    serde_json::json!({
        "project_id": agent.project_id,
        "agent_id": agent.agent_id,
        "agent_name": agent.agent_name,
    })
}

pub(crate) fn receptive_agents(agents: &[ReceptiveAgent]) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = agents
        .iter()
        .map(|agent| {
            let (jwt, mtls) = match &agent.auth {
                ReceptiveAuth::Jwt { private_key } => (
                    serde_json::json!({"private_key": private_key.expose_secret()}),
                    serde_json::Value::Null,
                ),
                ReceptiveAuth::Mtls {
                    client_cert,
                    client_key,
                } => (
                    serde_json::Value::Null,
                    serde_json::json!({
                        "client_key": client_key.expose_secret(),
                        "client_cert": client_cert,
                    }),
                ),
            };
            serde_json::json!({
                "id": agent.agent_id,
                "url": agent.url,
                "ca_cert": agent.ca_cert,
                "tls_host": agent.tls_host,
                "jwt": jwt,
                "mtls": mtls,
            })
        })
        .collect();
    serde_json::json!({"agents": entries})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        assert_eq!(timestamp(1_648_217_531_497), "2022-03-25T14:12:11.497Z");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
    }
}
