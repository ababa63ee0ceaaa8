//! Records the cases build on, created through the port itself, and the secrets and audit hooks
//! they pass in.

use agentreg_domain::access::{ExpiryDate, Scope};
use agentreg_domain::entities::{Agent, AuditScope, Project, SealedUrlAuth, User};
use agentreg_domain::ids::{ProjectId, UserId};
use agentreg_domain::names::{AgentName, ProjectNaming, TokenDescription, TokenName, UserIdentity};
use agentreg_domain::tokens::{TokenHandle, TokenKind, generate_token};
use agentreg_storage::audit::NewAuditEvent;
use agentreg_storage::port::{
    Audit, NewAgentToken, NewPersonalAccessToken, NewUrlConfiguration, Storage,
};
use agentreg_storage::{Page, PageWindow, SecretHasher};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use std::sync::Arc;

/// Generates token handles and hashes from a seeded RNG, with argon2's cheapest parameters.
pub(crate) struct Secrets {
    rng: StdRng,
    hasher: SecretHasher,
}

impl Secrets {
    pub(crate) fn seeded(seed: u64) -> Secrets {
        Secrets {
            rng: StdRng::seed_from_u64(seed),
            hasher: SecretHasher::insecure_for_tests(),
        }
    }

    /// A new agent token named `token`, without a description or creator.
    pub(crate) fn agent_token(&mut self) -> NewAgentToken {
        let generated = generate_token(TokenKind::Agent, &mut self.rng);
        NewAgentToken {
            name: TokenName::parse("token").unwrap(),
            description: None,
            handle: generated.handle,
            secret_hash: self.hasher.hash(&generated.plaintext).unwrap(),
            created_by_user_id: None,
            expires_at_ms: None,
        }
    }

    /// A new agent token with every optional field set.
    pub(crate) fn described_agent_token(&mut self, created_by: UserId) -> NewAgentToken {
        NewAgentToken {
            name: TokenName::parse("deploy").unwrap(),
            description: Some(TokenDescription::parse("for the deploy pipeline").unwrap()),
            created_by_user_id: Some(created_by),
            ..self.agent_token()
        }
    }

    pub(crate) fn personal_access_token(&mut self, user_id: UserId) -> NewPersonalAccessToken {
        let generated = generate_token(TokenKind::PersonalAccess, &mut self.rng);
        NewPersonalAccessToken {
            user_id,
            name: "ci".to_owned(),
            scopes: vec![Scope::Api, Scope::ReadApi],
            expires_at: Some(ExpiryDate::parse("2030-01-01").unwrap()),
            handle: generated.handle,
            secret_hash: self.hasher.hash(&generated.plaintext).unwrap(),
        }
    }

    /// A handle that no stored token has.
    pub(crate) fn unknown_handle(&mut self, kind: TokenKind) -> TokenHandle {
        generate_token(kind, &mut self.rng).handle
    }
}

pub(crate) fn agent_name(text: &str) -> AgentName {
    AgentName::parse(text).unwrap()
}

pub(crate) fn window(offset: u64, limit: u64) -> PageWindow {
    PageWindow { offset, limit }
}

/// The names on a page of agents, in order.
pub(crate) fn names(page: &Page<Agent>) -> Vec<&str> {
    page.items.iter().map(|agent| agent.name.as_str()).collect()
}

/// A user `username` (display name and e-mail derived from it).
pub(crate) async fn user(storage: &dyn Storage, username: &str) -> User {
    let identity = UserIdentity::parse(
        username,
        &username.to_uppercase(),
        &format!("{username}@example.com"),
    )
    .unwrap();
    storage.create_user(identity, false, 1).await.unwrap()
}

/// A project `path` in `owner`'s namespace.
pub(crate) async fn project(storage: &dyn Storage, owner: &User, path: &str) -> Project {
    let naming = ProjectNaming::parse(Some(path), None).unwrap();
    storage
        .create_project(owner.id, naming, Some(format!("{path} project")), 2)
        .await
        .unwrap()
}

/// A user `owner` with a project `owner/app`.
pub(crate) async fn owner_and_project(storage: &dyn Storage) -> (User, Project) {
    let owner = user(storage, "owner").await;
    let project = project(storage, &owner, "app").await;
    (owner, project)
}

/// An agent `name` in the project, created at 1, without an audit event.
pub(crate) async fn agent(storage: &dyn Storage, project_id: ProjectId, name: &str) -> Agent {
    storage
        .create_agent(project_id, agent_name(name), None, 1, None)
        .await
        .unwrap()
}

/// A URL configuration in JWT mode.
pub(crate) fn jwt_url_configuration() -> NewUrlConfiguration {
    NewUrlConfiguration {
        url: "grpc://agent.example.com".to_owned(),
        ca_cert: None,
        tls_host: None,
        auth: SealedUrlAuth::Jwt {
            public_key: vec![1; 32],
            sealed_private_key: vec![2; 60],
        },
        created_by_user_id: None,
    }
}

/// A URL configuration in mTLS mode, with every optional field set.
pub(crate) fn mtls_url_configuration(created_by: UserId) -> NewUrlConfiguration {
    NewUrlConfiguration {
        url: "grpcs://agent.example.com:8443".to_owned(),
        ca_cert: Some("-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n".to_owned()),
        tls_host: Some("agent.internal".to_owned()),
        auth: SealedUrlAuth::Mtls {
            client_cert: "-----BEGIN CERTIFICATE-----\nclient\n-----END CERTIFICATE-----\n"
                .to_owned(),
            sealed_client_key: vec![0, 255, 3, 4],
        },
        created_by_user_id: Some(created_by),
    }
}

/// An audit hook that files each change in its project's scope, as `entity_type`, with details
/// naming `event_name`. `locate` gives the entity's project and id.
pub(crate) fn audit<T: 'static>(
    author_id: UserId,
    entity_type: &'static str,
    event_name: &'static str,
    locate: fn(&T) -> (ProjectId, u64),
) -> Audit<T> {
    Some(Arc::new(move |entity: &T| {
        let (project_id, entity_id) = locate(entity);
        NewAuditEvent {
            scope: AuditScope::Project(project_id),
            author_id: Some(author_id),
            entity_id,
            entity_type,
            details: serde_json::json!({ "event_name": event_name }),
        }
    }))
}

/// An event that belongs to no change, such as a failed authentication.
pub(crate) fn standalone_event(scope: AuditScope, entity_id: u64) -> NewAuditEvent {
    NewAuditEvent {
        scope,
        author_id: None,
        entity_id,
        entity_type: "PersonalAccessToken",
        details: serde_json::json!({ "event_name": "authentication_failed" }),
    }
}
