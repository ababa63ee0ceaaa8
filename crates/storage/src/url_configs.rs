//! URL configurations of receptive agents: at most one per agent, created and deleted together
//! with the agent's receptive flag. Private keys arrive sealed (encrypted) by the caller; this
//! module stores the ciphertext and never sees a key in clear.

use crate::agents::UnmodifiedSince;
use crate::audit::{Audit, audit_entry};
use crate::port::NewUrlConfiguration;
use crate::records::{encode, v1};
use crate::schema::{self, IdKind, id_key};
use crate::{Store, StoreError, abort, decode, decode_in_tx, engine, finish_tx};
use agentreg_domain::entities::{SealedUrlAuth, UrlConfiguration};
use agentreg_domain::ids::{AgentId, ProjectId, UrlConfigurationId, UserId};
use sled::Transactional;

#[derive(Debug, thiserror::Error)]
pub enum CreateUrlConfigurationError {
    #[error("agent not found")]
    AgentNotFound,
    #[error("URL configuration already exists for this agent")]
    AlreadyExists,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteUrlConfigurationError {
    #[error("URL configuration not found")]
    NotFound,
    #[error("URL configuration was modified after the given time")]
    PreconditionFailed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Creates the agent's configuration and marks the agent receptive, unless it already is.
    pub fn create_url_configuration(
        &self,
        project_id: u64,
        agent_id: u64,
        new: NewUrlConfiguration,
        now_ms: i64,
        audit: Audit<'_, UrlConfiguration>,
    ) -> Result<UrlConfiguration, CreateUrlConfigurationError> {
        let id = self.next_id(IdKind::UrlConfiguration)?;
        let audit_id = self.audit_id(audit)?;
        let record = v1::UrlConfiguration {
            agent_id,
            project_id,
            url: new.url,
            ca_cert: new.ca_cert,
            tls_host: new.tls_host,
            auth: match new.auth {
                SealedUrlAuth::Jwt {
                    public_key,
                    sealed_private_key,
                } => v1::UrlAuth::Jwt {
                    public_key,
                    sealed_private_key,
                },
                SealedUrlAuth::Mtls {
                    client_cert,
                    sealed_client_key,
                } => v1::UrlAuth::Mtls {
                    client_cert,
                    sealed_client_key,
                },
            },
            created_by_user_id: new.created_by_user_id.map(UserId::get),
            created_at_ms: now_ms,
        };
        let encoded = encode(&record);
        let config = config_from_record(id, record);
        let audit_event = audit_id
            .zip(audit)
            .map(|(audit_id, audit)| audit_entry(audit(&config), audit_id, now_ms));
        let writing = self.writing();
        let trees = &self.trees;
        let created = finish_tx(
            (
                &trees.agents,
                &trees.url_configurations,
                &trees.audit_events,
            )
                .transaction(|(agents, configs, audit_events)| {
                    let Some(bytes) = agents.get(id_key(agent_id))? else {
                        return Err(abort(CreateUrlConfigurationError::AgentNotFound));
                    };
                    let mut agent: v1::Agent = decode_in_tx(schema::AGENTS, &bytes)?;
                    if agent.project_id != project_id {
                        return Err(abort(CreateUrlConfigurationError::AgentNotFound));
                    }
                    if agent.url_configuration_id.is_some() {
                        return Err(abort(CreateUrlConfigurationError::AlreadyExists));
                    }
                    agent.url_configuration_id = Some(id);
                    agent.updated_at_ms = now_ms;
                    agents.insert(&id_key(agent_id), encode(&agent))?;
                    configs.insert(&id_key(id), encoded.as_slice())?;
                    if let Some((key, value)) = &audit_event {
                        audit_events.insert(key, value.as_slice())?;
                    }
                    Ok(())
                }),
        );
        self.decoded_agents.forget(agent_id);
        created?;
        self.commit(writing)?;
        Ok(config)
    }

    /// The agent's configurations: none or one.
    pub fn url_configurations(
        &self,
        project_id: u64,
        agent_id: u64,
    ) -> Result<Option<Vec<UrlConfiguration>>, StoreError> {
        let Some(agent) = self.agent(project_id, agent_id)? else {
            return Ok(None);
        };
        let Some(config_id) = agent.url_configuration_id else {
            return Ok(Some(Vec::new()));
        };
        let config =
            self.url_configuration_by_id(config_id.get())?
                .ok_or(StoreError::Dangling {
                    tree: schema::AGENTS,
                })?;
        Ok(Some(vec![config]))
    }

    /// The configuration with this id, if it is the agent's.
    pub fn url_configuration(
        &self,
        project_id: u64,
        agent_id: u64,
        url_configuration_id: u64,
    ) -> Result<Option<UrlConfiguration>, StoreError> {
        let Some(config) = self.url_configuration_by_id(url_configuration_id)? else {
            return Ok(None);
        };
        if config.agent_id.get() != agent_id || config.project_id.get() != project_id {
            return Ok(None);
        }
        Ok(Some(config))
    }

    /// Deletes the agent's configuration and clears its receptive flag.
    pub fn delete_url_configuration(
        &self,
        project_id: u64,
        agent_id: u64,
        url_configuration_id: u64,
        precondition: Option<UnmodifiedSince>,
        now_ms: i64,
        audit: Audit<'_, UrlConfiguration>,
    ) -> Result<UrlConfiguration, DeleteUrlConfigurationError> {
        let audit_id = self.audit_id(audit)?;
        let writing = self.writing();
        let trees = &self.trees;
        let record = finish_tx(
            (
                &trees.agents,
                &trees.url_configurations,
                &trees.audit_events,
            )
                .transaction(|(agents, configs, audit_events)| {
                    let Some(bytes) = agents.get(id_key(agent_id))? else {
                        return Err(abort(DeleteUrlConfigurationError::NotFound));
                    };
                    let mut agent: v1::Agent = decode_in_tx(schema::AGENTS, &bytes)?;
                    if agent.project_id != project_id
                        || agent.url_configuration_id != Some(url_configuration_id)
                    {
                        return Err(abort(DeleteUrlConfigurationError::NotFound));
                    }
                    let Some(config_bytes) = configs.remove(&id_key(url_configuration_id))? else {
                        return Err(abort(DeleteUrlConfigurationError::NotFound));
                    };
                    let record: v1::UrlConfiguration =
                        decode_in_tx(schema::URL_CONFIGURATIONS, &config_bytes)?;
                    if let Some(precondition) = precondition
                        && !precondition.holds_for(record.created_at_ms)
                    {
                        return Err(abort(DeleteUrlConfigurationError::PreconditionFailed));
                    }
                    agent.url_configuration_id = None;
                    agent.updated_at_ms = now_ms;
                    agents.insert(&id_key(agent_id), encode(&agent))?;
                    if let Some((audit_id, audit)) = audit_id.zip(audit) {
                        let deleted = config_from_record(url_configuration_id, record.clone());
                        let (key, value) = audit_entry(audit(&deleted), audit_id, now_ms);
                        audit_events.insert(&key, value)?;
                    }
                    Ok(record)
                }),
        );
        self.decoded_agents.forget(agent_id);
        let record = record?;
        self.commit(writing)?;
        Ok(config_from_record(url_configuration_id, record))
    }

    /// Every configuration of every agent, for the agent server.
    pub fn all_url_configurations(&self) -> Result<Vec<UrlConfiguration>, StoreError> {
        let mut configs = Vec::new();
        for entry in self.trees.url_configurations.iter() {
            let (key, bytes) = entry.map_err(engine)?;
            let id = schema::decode_u64(&key).ok_or(StoreError::Dangling {
                tree: schema::URL_CONFIGURATIONS,
            })?;
            let record: v1::UrlConfiguration = decode(schema::URL_CONFIGURATIONS, &bytes)?;
            configs.push(config_from_record(id, record));
        }
        Ok(configs)
    }

    /// Replaces the configuration's sealed key, unless the configuration was deleted meanwhile.
    pub fn replace_sealed_key(&self, id: u64, sealed: Vec<u8>) -> Result<bool, StoreError> {
        let writing = self.writing();
        let tree = &self.trees.url_configurations;
        let Some(old_bytes) = tree.get(id_key(id)).map_err(engine)? else {
            return Ok(false);
        };
        let mut record: v1::UrlConfiguration = decode(schema::URL_CONFIGURATIONS, &old_bytes)?;
        match &mut record.auth {
            v1::UrlAuth::Jwt {
                sealed_private_key, ..
            } => *sealed_private_key = sealed,
            v1::UrlAuth::Mtls {
                sealed_client_key, ..
            } => *sealed_client_key = sealed,
        }
        // Compare-and-swap: a configuration deleted since it was read stays deleted.
        let swapped = tree
            .compare_and_swap(id_key(id), Some(old_bytes), Some(encode(&record)))
            .map_err(engine)?
            .is_ok();
        self.commit(writing)?;
        Ok(swapped)
    }

    /// The number of URL configurations, for metrics.
    pub fn count_url_configurations(&self) -> usize {
        self.trees.url_configurations.len()
    }

    fn url_configuration_by_id(&self, id: u64) -> Result<Option<UrlConfiguration>, StoreError> {
        let Some(bytes) = self
            .trees
            .url_configurations
            .get(id_key(id))
            .map_err(engine)?
        else {
            return Ok(None);
        };
        let record: v1::UrlConfiguration = decode(schema::URL_CONFIGURATIONS, &bytes)?;
        Ok(Some(config_from_record(id, record)))
    }
}

fn config_from_record(id: u64, record: v1::UrlConfiguration) -> UrlConfiguration {
    UrlConfiguration {
        id: UrlConfigurationId::new(id),
        agent_id: AgentId::new(record.agent_id),
        project_id: ProjectId::new(record.project_id),
        url: record.url,
        ca_cert: record.ca_cert,
        tls_host: record.tls_host,
        auth: match record.auth {
            v1::UrlAuth::Jwt {
                public_key,
                sealed_private_key,
            } => SealedUrlAuth::Jwt {
                public_key,
                sealed_private_key,
            },
            v1::UrlAuth::Mtls {
                client_cert,
                sealed_client_key,
            } => SealedUrlAuth::Mtls {
                client_cert,
                sealed_client_key,
            },
        },
        created_by_user_id: record.created_by_user_id.map(UserId::new),
        created_at_ms: record.created_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use agentreg_domain::names::AgentName;

    fn jwt() -> NewUrlConfiguration {
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

    #[test]
    fn one_configuration_per_agent_and_the_receptive_flag_follows_it() {
        let store = fixtures::store();
        let (_, project_id) = fixtures::project(&store);
        let agent = store
            .create_agent(project_id, &AgentName::parse("a").unwrap(), None, 1, None)
            .unwrap();
        // Read first, so that every later read would find a stale decoded agent if a write
        // failed to forget it.
        let before = store.agent(project_id, agent.id.get()).unwrap().unwrap();
        assert!(!before.is_receptive());
        let config = store
            .create_url_configuration(project_id, agent.id.get(), jwt(), 2, None)
            .unwrap();
        assert!(
            store
                .agent(project_id, agent.id.get())
                .unwrap()
                .unwrap()
                .is_receptive()
        );
        assert!(matches!(
            store.create_url_configuration(project_id, agent.id.get(), jwt(), 3, None),
            Err(CreateUrlConfigurationError::AlreadyExists)
        ));
        store
            .delete_url_configuration(project_id, agent.id.get(), config.id.get(), None, 4, None)
            .unwrap();
        let agent_after = store.agent(project_id, agent.id.get()).unwrap().unwrap();
        assert!(!agent_after.is_receptive());
        assert_eq!(agent_after.updated_at_ms, 4);
        assert_eq!(
            store
                .url_configurations(project_id, agent.id.get())
                .unwrap(),
            Some(vec![])
        );
    }

    #[test]
    fn deleting_the_agent_removes_its_configuration() {
        let store = fixtures::store();
        let (_, project_id) = fixtures::project(&store);
        let agent = store
            .create_agent(project_id, &AgentName::parse("a").unwrap(), None, 1, None)
            .unwrap();
        store
            .create_url_configuration(project_id, agent.id.get(), jwt(), 2, None)
            .unwrap();
        assert!(store.agent(project_id, agent.id.get()).unwrap().is_some());
        store
            .delete_agent(project_id, agent.id.get(), None, 0, None)
            .unwrap();
        assert!(store.all_url_configurations().unwrap().is_empty());
        assert!(
            store.agent(project_id, agent.id.get()).unwrap().is_none(),
            "a deleted agent is not served from the decoded agents"
        );
    }
}
