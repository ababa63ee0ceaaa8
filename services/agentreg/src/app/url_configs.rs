//! Receptive agents' URL configurations: one per agent, in JWT mode (agentreg generates an
//! Ed25519 key pair) or mTLS mode (the caller's certificate and key). Private keys are sealed
//! before they reach the store and are never returned.
//!
//! GitLab checks these routes in a different order from the other agent routes: the project and
//! the instance setting come before parameter validation. Edges therefore hand over their
//! parameters as they parsed them ([`Parsed`]), and a parsing error waits for those checks.

use super::audit::{self, AuditEntry};
use super::crypto::{SealedFor, SealedMode};
use super::refusals::Refusal;
use super::{AgentAccess, App, Caller, Error, ProjectAccess, author, now_ms};
use agentreg_domain::access::ClusterPermission;
use agentreg_domain::entities::{Agent, SealedUrlAuth, UrlConfiguration};
use agentreg_domain::ids::{AgentId, ProjectRef, UrlConfigurationId};
use agentreg_domain::url_config::{
    Ed25519KeyPair, UrlAuthSpec, UrlConfigInput, UrlConfigSpec, pem_from_pem_or_base64,
};
use agentreg_storage::port::NewUrlConfiguration;
use agentreg_storage::url_configs::{CreateUrlConfigurationError, DeleteUrlConfigurationError};
use secrecy::ExposeSecret;
use std::sync::Arc;

use super::agents::UnmodifiedSinceSeconds;

/// GitLab's entity type for URL configurations in audit events.
const URL_CONFIGURATION_ENTITY: &str = "Clusters::Agents::UrlConfiguration";

/// A parameter as an edge parsed it; its error is reported in GitLab's order, after the project
/// and the instance setting.
pub type Parsed<T> = Result<T, Error>;

/// `POST .../url_configurations` parameters as sent.
#[derive(Debug, Default)]
pub struct NewUrlConfigurationInput {
    pub url: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<secrecy::SecretString>,
    pub ca_cert: Option<String>,
    pub tls_host: Option<String>,
}

/// A URL configuration as clients see it: never a private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlConfigurationView {
    pub id: UrlConfigurationId,
    pub agent_id: AgentId,
    pub url: String,
    /// Standard base64 of the raw 32-byte Ed25519 public key, in JWT mode.
    pub public_key: Option<String>,
    pub client_cert: Option<String>,
    pub ca_cert: Option<String>,
    pub tls_host: Option<String>,
}

/// A receptive agent's URL configurations: `app.url_configurations()`.
#[derive(Clone, Copy)]
pub struct UrlConfigurations<'a> {
    app: &'a App,
}

impl App {
    pub fn url_configurations(&self) -> UrlConfigurations<'_> {
        UrlConfigurations { app: self }
    }
}

impl UrlConfigurations<'_> {
    /// The agent's configurations: `[]` or one (Developer and above).
    pub async fn list(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: Parsed<AgentId>,
    ) -> Result<Vec<UrlConfigurationView>, Error> {
        let (access, agent) = self
            .app
            .receptive_agent(caller, project_ref, agent_id)
            .await?;
        let AgentAccess { project, agent } =
            access.require(ClusterPermission::Read, Error::Forbidden, agent)?;
        let configs = self
            .app
            .storage()
            .url_configurations(project.id, agent.id)
            .await?
            .ok_or(Error::RecordNotFound)?;
        Ok(configs.into_iter().map(view).collect())
    }

    pub async fn get(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: Parsed<AgentId>,
        url_configuration_id: Parsed<UrlConfigurationId>,
    ) -> Result<UrlConfigurationView, Error> {
        let (access, agent) = self
            .app
            .receptive_agent(caller, project_ref, agent_id)
            .await?;
        let url_configuration_id = url_configuration_id?;
        let AgentAccess { project, agent } =
            access.require(ClusterPermission::Read, Error::Forbidden, agent)?;
        self.app
            .storage()
            .url_configuration(project.id, agent.id, url_configuration_id)
            .await?
            .map(view)
            .ok_or(Error::NotFound)
    }

    /// Creates the agent's configuration. Checks run in GitLab's order: the project, the
    /// instance setting, the parameters, `url` present, role, agent, one per agent, then
    /// validation.
    pub async fn create(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: Parsed<AgentId>,
        input: Parsed<NewUrlConfigurationInput>,
    ) -> Result<UrlConfigurationView, Error> {
        let (access, agent) = self
            .app
            .receptive_agent(caller, project_ref, agent_id)
            .await?;
        let input = input?;
        let Some(url) = input.url.as_deref() else {
            return Err(Error::missing("url"));
        };
        let AgentAccess { project, agent } =
            access.require(ClusterPermission::Admin, Error::Forbidden, agent)?;
        if agent.is_receptive() {
            return Err(Error::Refused(Refusal::UrlConfigurationExists));
        }
        let client_cert = input.client_cert.as_deref().map(pem_from_pem_or_base64);
        let client_key = input
            .client_key
            .as_ref()
            .map(|key| pem_from_pem_or_base64(key.expose_secret()));
        let ca_cert = input.ca_cert.as_deref().map(pem_from_pem_or_base64);
        let spec = UrlConfigSpec::parse(&UrlConfigInput {
            url,
            client_cert: client_cert.as_ref().map(|pem| pem.as_str()),
            client_key: client_key.as_ref().map(|pem| pem.as_str()),
            ca_cert: ca_cert.as_ref().map(|pem| pem.as_str()),
            tls_host: input.tls_host.as_deref(),
        })
        .map_err(|errors| Error::Invalid(errors.messages().to_vec()))?;
        let auth = match spec.auth() {
            UrlAuthSpec::Jwt => {
                let key_pair = Ed25519KeyPair::generate(&mut rand::rng());
                SealedUrlAuth::Jwt {
                    public_key: key_pair.public_key().to_vec(),
                    sealed_private_key: self.app.inner.sealer.seal(
                        key_pair.seed_bytes(),
                        SealedFor {
                            agent_id: agent.id.get(),
                            mode: SealedMode::Jwt,
                        },
                    ),
                }
            }
            UrlAuthSpec::Mtls {
                client_cert,
                client_key,
            } => SealedUrlAuth::Mtls {
                client_cert: client_cert.clone(),
                sealed_client_key: self.app.inner.sealer.seal(
                    client_key.expose_secret().as_bytes(),
                    SealedFor {
                        agent_id: agent.id.get(),
                        mode: SealedMode::Mtls,
                    },
                ),
            },
        };
        let new = NewUrlConfiguration {
            url: spec.url().to_owned(),
            ca_cert: spec.ca_cert().map(str::to_owned),
            tls_host: spec.tls_host().map(str::to_owned),
            auth,
            created_by_user_id: author(caller).user_id,
        };
        let project_id = project.id;
        let author = author(caller);
        let now = now_ms();
        let agent_name = agent.name.clone();
        let audit = Arc::new(move |config: &UrlConfiguration| {
            let entry = AuditEntry {
                event_name: "cluster_agent_url_configuration_created",
                message: format!("Created URL configuration for cluster agent '{agent_name}'"),
                entity_type: URL_CONFIGURATION_ENTITY,
                entity_id: config.id.get(),
                target_details: &config.url,
            };
            audit::event(project_id, author, entry)
        });
        let created = self
            .app
            .storage()
            .create_url_configuration(project_id, agent.id, new, now, Some(audit))
            .await;
        match created {
            Ok(config) => Ok(view(config)),
            Err(CreateUrlConfigurationError::AlreadyExists) => {
                Err(Error::Refused(Refusal::UrlConfigurationExists))
            }
            Err(CreateUrlConfigurationError::AgentNotFound) => Err(Error::RecordNotFound),
            Err(CreateUrlConfigurationError::Store(error)) => Err(error.into()),
        }
    }

    /// Deletes the agent's configuration; the agent is no longer receptive.
    pub async fn delete(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: Parsed<AgentId>,
        url_configuration_id: Parsed<UrlConfigurationId>,
        unmodified_since: Option<UnmodifiedSinceSeconds>,
    ) -> Result<(), Error> {
        let (access, agent) = self
            .app
            .receptive_agent(caller, project_ref, agent_id)
            .await?;
        let url_configuration_id = url_configuration_id?;
        let AgentAccess { project, agent } =
            access.require(ClusterPermission::Admin, Error::Forbidden, agent)?;
        let project_id = project.id;
        let author = author(caller);
        let precondition = unmodified_since.map(UnmodifiedSinceSeconds::precondition);
        let now = now_ms();
        let agent_name = agent.name.clone();
        let audit = Arc::new(move |config: &UrlConfiguration| {
            let entry = AuditEntry {
                event_name: "cluster_agent_url_configuration_deleted",
                message: format!("Deleted URL configuration for cluster agent '{agent_name}'"),
                entity_type: URL_CONFIGURATION_ENTITY,
                entity_id: config.id.get(),
                target_details: &config.url,
            };
            audit::event(project_id, author, entry)
        });
        let deleted = self
            .app
            .storage()
            .delete_url_configuration(
                project_id,
                agent.id,
                url_configuration_id,
                precondition,
                now,
                Some(audit),
            )
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(DeleteUrlConfigurationError::NotFound) => Err(Error::NotFound),
            Err(DeleteUrlConfigurationError::PreconditionFailed) => Err(Error::PreconditionFailed),
            Err(DeleteUrlConfigurationError::Store(error)) => Err(error.into()),
        }
    }
}

impl App {
    /// The first checks of every URL-configuration route, in GitLab's order: the project, the
    /// instance setting (`404 Not Found` when receptive agents are disabled), then the agent's
    /// id. Returns the project with the caller's role and the agent, if it is in the project.
    async fn receptive_agent(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: Parsed<AgentId>,
    ) -> Result<(ProjectAccess, Option<Agent>), Error> {
        let wanted = agent_id.as_ref().ok().copied();
        let (access, agent) = self.visible_project(caller, project_ref, wanted).await?;
        if !self.inner.config.receptive_agents_enabled {
            return Err(Error::NotFound);
        }
        agent_id?;
        Ok((access, agent))
    }
}

fn view(config: UrlConfiguration) -> UrlConfigurationView {
    use base64::Engine as _;
    let (public_key, client_cert) = match config.auth {
        SealedUrlAuth::Jwt { public_key, .. } => (
            Some(base64::engine::general_purpose::STANDARD.encode(public_key)),
            None,
        ),
        SealedUrlAuth::Mtls { client_cert, .. } => (None, Some(client_cert)),
    };
    UrlConfigurationView {
        id: config.id,
        agent_id: config.agent_id,
        url: config.url,
        public_key,
        client_cert,
        ca_cert: config.ca_cert,
        tls_host: config.tls_host,
    }
}
