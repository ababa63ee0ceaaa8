//! Receptive agents' URL configurations: one per agent, in JWT mode (agentreg generates an
//! Ed25519 key pair) or mTLS mode (the caller's certificate and key). Private keys are sealed
//! before they reach the store and are never returned.
//!
//! GitLab checks these routes in a different order from the other agent routes: the project and
//! the instance setting come before parameter validation. Callers therefore first obtain a
//! [`ReceptiveProject`] and only then parse the remaining parameters.

use super::audit::{self, AuditEntry};
use super::crypto::{SealedFor, SealedMode};
use super::refusals::Refusal;
use super::{App, Caller, Error, ProjectAccess, author, now_ms};
use agentreg_domain::entities::{SealedUrlAuth, UrlConfiguration};
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

/// A project the caller can see, on an instance with receptive agents enabled.
#[derive(Debug, Clone)]
pub struct ReceptiveProject(ProjectAccess);

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

impl App {
    /// The first checks of every URL-configuration route: the project, then the instance
    /// setting (`404 Not Found` when receptive agents are disabled).
    pub async fn receptive_project(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
    ) -> Result<ReceptiveProject, Error> {
        let access = self.project_access(caller, project_ref).await?;
        if !self.inner.config.receptive_agents_enabled {
            return Err(Error::NotFound);
        }
        Ok(ReceptiveProject(access))
    }

    /// The agent's configurations: `[]` or one (Developer and above).
    pub async fn list_url_configurations(
        &self,
        project: &ReceptiveProject,
        agent_id: AgentId,
    ) -> Result<Vec<UrlConfigurationView>, Error> {
        let access = &project.0;
        if !access.role.can_read_cluster() {
            return Err(Error::Forbidden);
        }
        let agent = self.find_agent(access, agent_id).await?;
        let configs = self
            .storage()
            .url_configurations(access.project.id, agent.id)
            .await?
            .ok_or(Error::RecordNotFound)?;
        Ok(configs.into_iter().map(view).collect())
    }

    pub async fn url_configuration(
        &self,
        project: &ReceptiveProject,
        agent_id: AgentId,
        url_configuration_id: UrlConfigurationId,
    ) -> Result<UrlConfigurationView, Error> {
        let access = &project.0;
        if !access.role.can_read_cluster() {
            return Err(Error::Forbidden);
        }
        let agent = self.find_agent(access, agent_id).await?;
        self.storage()
            .url_configuration(access.project.id, agent.id, url_configuration_id)
            .await?
            .map(view)
            .ok_or(Error::NotFound)
    }

    /// Creates the agent's configuration. Checks run in GitLab's order: `url` present, role,
    /// agent, one per agent, then validation.
    pub async fn create_url_configuration(
        &self,
        project: &ReceptiveProject,
        agent_id: AgentId,
        input: NewUrlConfigurationInput,
    ) -> Result<UrlConfigurationView, Error> {
        let Some(url) = input.url.as_deref() else {
            return Err(Error::missing("url"));
        };
        let access = &project.0;
        if !access.role.can_admin_cluster() {
            return Err(Error::Forbidden);
        }
        let agent = self.find_agent(access, agent_id).await?;
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
                    sealed_private_key: self.inner.sealer.seal(
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
                sealed_client_key: self.inner.sealer.seal(
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
            created_by_user_id: author(&access.caller).user_id,
        };
        let project_id = access.project.id;
        let author = author(&access.caller);
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
    pub async fn delete_url_configuration(
        &self,
        project: &ReceptiveProject,
        agent_id: AgentId,
        url_configuration_id: UrlConfigurationId,
        unmodified_since: Option<UnmodifiedSinceSeconds>,
    ) -> Result<(), Error> {
        let access = &project.0;
        if !access.role.can_admin_cluster() {
            return Err(Error::Forbidden);
        }
        let agent = self.find_agent(access, agent_id).await?;
        let project_id = access.project.id;
        let author = author(&access.caller);
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
