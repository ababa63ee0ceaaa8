//! A backend-neutral image of everything agentreg stores: the primary records with their ids and
//! the id counters, converted from and to the sled trees of the one snapshot format. A backend
//! that does not keep sled trees (PostgreSQL) snapshots and restores through it, so a snapshot
//! taken by either backend restores into the other.

use crate::StoreError;
use crate::backup::{MAGIC, ParsedTree, RestoreError, SNAPSHOT_FORMAT_VERSION, write_bytes};
use crate::records::{self, v1};
use crate::schema::{self, IdKind};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Every id counter, in a fixed order.
pub(crate) const ID_KINDS: [IdKind; 7] = [
    IdKind::User,
    IdKind::PersonalAccessToken,
    IdKind::Project,
    IdKind::Agent,
    IdKind::AgentToken,
    IdKind::UrlConfiguration,
    IdKind::AuditEvent,
];

/// One tree of a snapshot: its name and its entries in key order.
pub(crate) type Tree = (&'static str, Vec<(Vec<u8>, Vec<u8>)>);

/// Everything a store holds. The sled index trees (names, handles, counts) are not kept: they
/// follow from the records and are rebuilt by [`Dataset::to_trees`].
#[derive(Clone, Default)]
pub(crate) struct Dataset {
    /// Per kind, the highest id that may have been issued (sled reserves ids in blocks, so this
    /// is the end of the last block reserved), keyed by the sled counter key; a kind that never
    /// issued an id has no entry.
    pub(crate) counters: BTreeMap<&'static [u8], u64>,
    /// The fingerprint of the instance key that sealed the data, once recorded.
    pub(crate) key_fingerprint: Option<String>,
    pub(crate) users: BTreeMap<u64, v1::User>,
    pub(crate) personal_access_tokens: BTreeMap<u64, v1::PersonalAccessToken>,
    pub(crate) projects: BTreeMap<u64, v1::Project>,
    /// Keyed by (project id, user id).
    pub(crate) members: BTreeMap<(u64, u64), v1::Member>,
    pub(crate) agents: BTreeMap<u64, v1::Agent>,
    /// Projects that have an agent counter even with no agent left (sled keeps a zero count
    /// after the last agent is deleted); the count itself follows from `agents`.
    pub(crate) counted_projects: BTreeSet<u64>,
    /// Per agent, its token ids split by status, each list in the order sled appends to it.
    pub(crate) agent_token_sets: BTreeMap<u64, v1::AgentTokenSet>,
    pub(crate) agent_tokens: BTreeMap<u64, v1::AgentToken>,
    pub(crate) agent_token_last_used: BTreeMap<u64, i64>,
    pub(crate) url_configurations: BTreeMap<u64, v1::UrlConfiguration>,
    /// Keyed by (project id, or 0 for the instance; event id).
    pub(crate) audit_events: BTreeMap<(u64, u64), v1::AuditEvent>,
}

impl Dataset {
    /// Reads the primary trees of a parsed snapshot; the index trees are ignored, as
    /// [`Dataset::to_trees`] rebuilds them.
    pub(crate) fn from_trees(trees: &[ParsedTree<'_>]) -> Result<Dataset, RestoreError> {
        let mut dataset = Dataset::default();
        for (name, entries) in trees {
            for (key, value) in entries {
                dataset.insert(name, key, value)?;
            }
        }
        Ok(dataset)
    }

    /// The trees sled would hold for this data, every tree of [`schema::ALL_TREES`] in that
    /// order, each with its entries in key order.
    pub(crate) fn to_trees(&self) -> Vec<Tree> {
        let mut trees: BTreeMap<&'static str, BTreeMap<Vec<u8>, Vec<u8>>> = schema::ALL_TREES
            .iter()
            .map(|name| (*name, BTreeMap::new()))
            .collect();
        let mut put = |tree: &'static str, key: Vec<u8>, value: Vec<u8>| {
            trees.entry(tree).or_default().insert(key, value);
        };
        for (key, counter) in &self.counters {
            put(schema::META, key.to_vec(), counter.to_be_bytes().to_vec());
        }
        if let Some(fingerprint) = &self.key_fingerprint {
            put(
                schema::META,
                schema::KEY_FINGERPRINT.to_vec(),
                fingerprint.as_bytes().to_vec(),
            );
        }
        for (id, user) in &self.users {
            let id_bytes = schema::id_key(*id).to_vec();
            put(
                schema::USERNAMES,
                schema::folded_key(&user.username),
                id_bytes.clone(),
            );
            put(
                schema::USER_EMAILS,
                schema::folded_key(&user.email),
                id_bytes.clone(),
            );
            put(schema::USERS, id_bytes, records::encode(user));
        }
        for (id, token) in &self.personal_access_tokens {
            let id_bytes = schema::id_key(*id).to_vec();
            put(
                schema::PAT_HANDLES,
                token.handle.as_bytes().to_vec(),
                id_bytes.clone(),
            );
            put(schema::PATS, id_bytes, records::encode(token));
        }
        for (id, project) in &self.projects {
            let id_bytes = schema::id_key(*id).to_vec();
            if let Some(owner) = self.users.get(&project.owner_id) {
                let full_path = format!("{}/{}", owner.username, project.path);
                put(
                    schema::PROJECT_PATHS,
                    schema::folded_key(&full_path),
                    id_bytes.clone(),
                );
            }
            put(schema::PROJECTS, id_bytes, records::encode(project));
        }
        for ((project_id, user_id), member) in &self.members {
            let key = schema::pair_key(*project_id, *user_id).to_vec();
            put(schema::MEMBERS, key, records::encode(member));
        }
        let mut agent_counts: BTreeMap<u64, u64> = self
            .counted_projects
            .iter()
            .map(|project_id| (*project_id, 0))
            .collect();
        for (id, agent) in &self.agents {
            let id_bytes = schema::id_key(*id).to_vec();
            *agent_counts.entry(agent.project_id).or_default() += 1;
            let name_key = schema::agent_name_key(agent.project_id, &agent.name);
            put(schema::AGENT_NAMES, name_key, id_bytes.clone());
            put(schema::AGENTS, id_bytes, records::encode(agent));
        }
        for (project_id, count) in agent_counts {
            let key = schema::id_key(project_id).to_vec();
            put(
                schema::PROJECT_AGENT_COUNTS,
                key,
                count.to_be_bytes().to_vec(),
            );
        }
        for (agent_id, token_set) in &self.agent_token_sets {
            let key = schema::id_key(*agent_id).to_vec();
            put(schema::AGENT_TOKEN_SETS, key, records::encode(token_set));
        }
        for (id, token) in &self.agent_tokens {
            let id_bytes = schema::id_key(*id).to_vec();
            put(
                schema::AGENT_TOKEN_HANDLES,
                token.handle.as_bytes().to_vec(),
                id_bytes.clone(),
            );
            put(schema::AGENT_TOKENS, id_bytes, records::encode(token));
        }
        for (id, used_at_ms) in &self.agent_token_last_used {
            let key = schema::id_key(*id).to_vec();
            put(
                schema::AGENT_TOKEN_LAST_USED,
                key,
                used_at_ms.to_be_bytes().to_vec(),
            );
        }
        for (id, config) in &self.url_configurations {
            let key = schema::id_key(*id).to_vec();
            put(schema::URL_CONFIGURATIONS, key, records::encode(config));
        }
        for ((project_id, id), event) in &self.audit_events {
            let key = schema::pair_key(*project_id, *id).to_vec();
            put(schema::AUDIT_EVENTS, key, records::encode(event));
        }
        schema::ALL_TREES
            .iter()
            .map(|name| {
                let entries = trees.remove(name).unwrap_or_default().into_iter().collect();
                (*name, entries)
            })
            .collect()
    }

    /// The last id issued for a kind, at least the highest id its records hold.
    pub(crate) fn last_id(&self, kind: IdKind) -> u64 {
        let counter = self.counters.get(kind.counter_key()).copied().unwrap_or(0);
        let highest = match kind {
            IdKind::User => self.users.keys().next_back().copied(),
            IdKind::PersonalAccessToken => self.personal_access_tokens.keys().next_back().copied(),
            IdKind::Project => self.projects.keys().next_back().copied(),
            IdKind::Agent => self.agents.keys().next_back().copied(),
            IdKind::AgentToken => self.agent_tokens.keys().next_back().copied(),
            IdKind::UrlConfiguration => self.url_configurations.keys().next_back().copied(),
            IdKind::AuditEvent => self.audit_events.keys().map(|(_, id)| *id).max(),
        };
        counter.max(highest.unwrap_or(0))
    }

    fn insert(&mut self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), RestoreError> {
        match tree {
            schema::META if key == schema::KEY_FINGERPRINT => {
                let fingerprint = std::str::from_utf8(value).map_err(|_| RestoreError::Corrupt)?;
                self.key_fingerprint = Some(fingerprint.to_owned());
            }
            schema::META => {
                let counter_key = ID_KINDS
                    .iter()
                    .map(|kind| kind.counter_key())
                    .find(|counter_key| *counter_key == key)
                    .ok_or(RestoreError::Corrupt)?;
                let counter = schema::decode_u64(value).ok_or(RestoreError::Corrupt)?;
                self.counters.insert(counter_key, counter);
            }
            schema::USERS => {
                self.users.insert(id(key)?, record(schema::USERS, value)?);
            }
            schema::PATS => {
                self.personal_access_tokens
                    .insert(id(key)?, record(schema::PATS, value)?);
            }
            schema::PROJECTS => {
                self.projects
                    .insert(id(key)?, record(schema::PROJECTS, value)?);
            }
            schema::MEMBERS => {
                self.members
                    .insert(pair(key)?, record(schema::MEMBERS, value)?);
            }
            schema::AGENTS => {
                self.agents.insert(id(key)?, record(schema::AGENTS, value)?);
            }
            schema::PROJECT_AGENT_COUNTS => {
                self.counted_projects.insert(id(key)?);
            }
            schema::AGENT_TOKEN_SETS => {
                let token_set = record(schema::AGENT_TOKEN_SETS, value)?;
                self.agent_token_sets.insert(id(key)?, token_set);
            }
            schema::AGENT_TOKENS => {
                self.agent_tokens
                    .insert(id(key)?, record(schema::AGENT_TOKENS, value)?);
            }
            schema::AGENT_TOKEN_LAST_USED => {
                let used_at_ms = schema::decode_i64(value).ok_or(RestoreError::Corrupt)?;
                self.agent_token_last_used.insert(id(key)?, used_at_ms);
            }
            schema::URL_CONFIGURATIONS => {
                let config = record(schema::URL_CONFIGURATIONS, value)?;
                self.url_configurations.insert(id(key)?, config);
            }
            schema::AUDIT_EVENTS => {
                self.audit_events
                    .insert(pair(key)?, record(schema::AUDIT_EVENTS, value)?);
            }
            // Index trees: rebuilt from the records.
            _ => {}
        }
        Ok(())
    }
}

/// Writes trees in the snapshot format (see [`crate::backup`]) and returns the file.
pub(crate) fn write_snapshot_file(trees: &[Tree]) -> Result<Vec<u8>, std::io::Error> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_be_bytes());
    for (name, entries) in trees {
        write_bytes(&mut bytes, name.as_bytes())?;
        bytes.extend_from_slice(&(entries.len() as u64).to_be_bytes());
        for (key, value) in entries {
            write_bytes(&mut bytes, key)?;
            write_bytes(&mut bytes, value)?;
        }
    }
    let digest = Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    Ok(bytes)
}

fn id(key: &[u8]) -> Result<u64, RestoreError> {
    schema::decode_u64(key).ok_or(RestoreError::Corrupt)
}

fn pair(key: &[u8]) -> Result<(u64, u64), RestoreError> {
    if key.len() != 16 {
        return Err(RestoreError::Corrupt);
    }
    let (first, second) = key.split_at(8);
    Ok((id(first)?, id(second)?))
}

fn record<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    value: &[u8],
) -> Result<T, RestoreError> {
    records::decode(value)
        .map_err(|source| RestoreError::Store(StoreError::Corrupt { tree, source }))
}

/// A store holding every kind of record, for the snapshot tests of both backends.
#[cfg(test)]
pub(crate) mod sample {
    use crate::agents::DeletedAgent;
    use crate::audit::NewAuditEvent;
    use crate::hashing::SecretHasher;
    use crate::port::{NewAgentToken, NewPersonalAccessToken, NewUrlConfiguration, Storage};
    use agentreg_domain::access::{AccessLevel, ExpiryDate, Scope};
    use agentreg_domain::entities::{
        Agent, AgentToken, AuditScope, SealedUrlAuth, UrlConfiguration,
    };
    use agentreg_domain::ids::UserId;
    use agentreg_domain::names::{
        AgentName, ProjectNaming, TokenDescription, TokenName, UserIdentity,
    };
    use agentreg_domain::tokens::{TokenKind, generate_token};
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use secrecy::SecretString;
    use std::sync::Arc;

    fn audit<T: 'static>(describe: fn(&T) -> (AuditScope, u64)) -> crate::port::Audit<T> {
        Some(Arc::new(move |outcome: &T| {
            let (scope, entity_id) = describe(outcome);
            NewAuditEvent {
                scope,
                author_id: Some(UserId::new(1)),
                entity_id,
                entity_type: "Clusters::Agent",
                details: serde_json::json!({"event_name": "sample", "z": 1, "a": [true, null]}),
            }
        }))
    }

    fn agent_audit() -> crate::port::Audit<Agent> {
        audit(|agent: &Agent| (AuditScope::Project(agent.project_id), agent.id.get()))
    }

    fn token_audit() -> crate::port::Audit<AgentToken> {
        audit(|token: &AgentToken| (AuditScope::Project(token.project_id), token.id.get()))
    }

    fn config_audit() -> crate::port::Audit<UrlConfiguration> {
        audit(|config: &UrlConfiguration| (AuditScope::Project(config.project_id), config.id.get()))
    }

    fn deleted_audit() -> crate::port::Audit<DeletedAgent> {
        audit(|deleted: &DeletedAgent| {
            (
                AuditScope::Project(deleted.agent.project_id),
                deleted.agent.id.get(),
            )
        })
    }

    fn new_token(seed: u64, description: Option<&str>) -> NewAgentToken {
        let generated = generate_token(TokenKind::Agent, &mut StdRng::seed_from_u64(seed));
        NewAgentToken {
            name: TokenName::parse(&format!("token-{seed}")).unwrap(),
            description: description.map(|text| TokenDescription::parse(text).unwrap()),
            handle: generated.handle,
            secret_hash: SecretHasher::insecure_for_tests()
                .hash(&generated.plaintext)
                .unwrap(),
            created_by_user_id: Some(UserId::new(1)),
            expires_at_ms: None,
        }
    }

    /// Fills `storage` with users, a personal access token, projects, members, agents (one
    /// deleted, so counters run ahead of records), active and revoked tokens with last uses,
    /// URL configurations of both kinds (one deleted) and audit events of both scopes.
    pub(crate) async fn populate(storage: &dyn Storage) {
        let owner = UserIdentity::parse("Owner", "Owner Person", "Owner@Example.com").unwrap();
        let owner = storage.create_user(owner, true, 10).await.unwrap();
        let bob = UserIdentity::parse("bob", "Bob", "bob@example.com").unwrap();
        let bob = storage.create_user(bob, false, 11).await.unwrap();
        let generated = generate_token(TokenKind::PersonalAccess, &mut StdRng::seed_from_u64(1));
        let pat = NewPersonalAccessToken {
            user_id: owner.id,
            name: "root token".to_owned(),
            scopes: vec![Scope::Api, Scope::ReadApi],
            expires_at: Some(ExpiryDate::parse("2030-01-01").unwrap()),
            handle: generated.handle,
            secret_hash: SecretHasher::insecure_for_tests()
                .hash(&SecretString::from("secret"))
                .unwrap(),
        };
        storage.create_personal_access_token(pat, 12).await.unwrap();
        let naming = ProjectNaming::parse(Some("App"), Some("app")).unwrap();
        let project = storage
            .create_project(owner.id, naming, Some("the app".to_owned()), 13)
            .await
            .unwrap();
        let naming = ProjectNaming::parse(Some("empty"), None).unwrap();
        let empty = storage
            .create_project(bob.id, naming, None, 14)
            .await
            .unwrap();
        storage
            .add_member(project.id, bob.id, AccessLevel::Developer, 15)
            .await
            .unwrap();
        let mut agents = Vec::new();
        for (name, now_ms) in [("zeta", 20), ("a0", 21), ("a-b", 22)] {
            let agent = storage
                .create_agent(
                    project.id,
                    AgentName::parse(name).unwrap(),
                    Some(owner.id),
                    now_ms,
                    agent_audit(),
                )
                .await
                .unwrap();
            agents.push(agent);
        }
        let doomed = storage
            .create_agent(
                empty.id,
                AgentName::parse("doomed").unwrap(),
                None,
                23,
                None,
            )
            .await
            .unwrap();
        storage
            .create_agent_token(empty.id, doomed.id, new_token(9, None), 24, None)
            .await
            .unwrap();
        storage
            .delete_agent(empty.id, doomed.id, None, 25, deleted_audit())
            .await
            .unwrap();
        let first = &agents[0];
        let mut tokens = Vec::new();
        for seed in 1..=2 {
            let token = storage
                .create_agent_token(
                    project.id,
                    first.id,
                    new_token(seed, Some("rotating")),
                    30,
                    token_audit(),
                )
                .await
                .unwrap();
            tokens.push(token);
        }
        storage
            .revoke_agent_token(
                project.id,
                first.id,
                tokens[1].id,
                crate::port::RevokeAgentToken {
                    by_user_id: Some(owner.id),
                    reason: agentreg_domain::entities::RevocationReason::parse("leaked").unwrap(),
                },
                31,
                token_audit(),
            )
            .await
            .unwrap();
        storage
            .revoke_agent_token(
                project.id,
                first.id,
                tokens[0].id,
                crate::port::RevokeAgentToken::default(),
                32,
                None,
            )
            .await
            .unwrap();
        let expiring = NewAgentToken {
            expires_at_ms: Some(1_000_000),
            ..new_token(3, None)
        };
        let third = storage
            .create_agent_token(project.id, first.id, expiring, 33, None)
            .await
            .unwrap();
        storage
            .record_agent_token_use(vec![(third.id, 40), (tokens[0].id, 41)])
            .await
            .unwrap();
        let jwt = NewUrlConfiguration {
            url: "grpc://agent.example.com".to_owned(),
            ca_cert: Some("-----BEGIN CERTIFICATE-----".to_owned()),
            tls_host: Some("agent.example.com".to_owned()),
            auth: SealedUrlAuth::Jwt {
                public_key: vec![1; 32],
                sealed_private_key: vec![2; 60],
            },
            created_by_user_id: Some(owner.id),
        };
        let mtls = NewUrlConfiguration {
            url: "grpcs://other.example.com".to_owned(),
            ca_cert: None,
            tls_host: None,
            auth: SealedUrlAuth::Mtls {
                client_cert: "cert".to_owned(),
                sealed_client_key: vec![3; 48],
            },
            created_by_user_id: None,
        };
        let removed = storage
            .create_url_configuration(project.id, agents[1].id, jwt.clone(), 50, None)
            .await
            .unwrap();
        storage
            .delete_url_configuration(
                project.id,
                agents[1].id,
                removed.id,
                None,
                51,
                config_audit(),
            )
            .await
            .unwrap();
        storage
            .create_url_configuration(project.id, agents[1].id, jwt, 52, config_audit())
            .await
            .unwrap();
        storage
            .create_url_configuration(project.id, agents[2].id, mtls, 53, None)
            .await
            .unwrap();
        let failure = NewAuditEvent {
            scope: AuditScope::Instance,
            author_id: None,
            entity_id: 0,
            entity_type: "Gitlab::Audit::UnauthenticatedAuthor",
            details: serde_json::json!({"event_name": "authentication_failed", "ip_address": null}),
        };
        storage.record_audit_event(failure, 60).await.unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::parse;
    use crate::embedded::SledStorage;
    use crate::port::Storage;

    type OwnedTree = (String, Vec<(Vec<u8>, Vec<u8>)>);

    fn owned(trees: &[ParsedTree<'_>]) -> Vec<OwnedTree> {
        trees
            .iter()
            .map(|(name, entries)| {
                let entries = entries
                    .iter()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect();
                (name.clone(), entries)
            })
            .collect()
    }

    #[tokio::test]
    async fn sled_trees_survive_a_trip_through_a_dataset_unchanged() {
        let storage = SledStorage::temporary().unwrap();
        sample::populate(&storage).await;
        let bytes = storage.snapshot().await.unwrap();
        let trees = parse(&bytes).unwrap();

        let dataset = Dataset::from_trees(&trees).unwrap();
        let rebuilt = dataset.to_trees();

        let rebuilt_owned: Vec<_> = rebuilt
            .iter()
            .map(|(name, entries)| ((*name).to_owned(), entries.clone()))
            .collect();
        assert_eq!(rebuilt_owned, owned(&trees));
        assert_eq!(write_snapshot_file(&rebuilt).unwrap(), bytes);
    }

    #[tokio::test]
    async fn the_sample_holds_every_kind_of_record() {
        let storage = SledStorage::temporary().unwrap();
        sample::populate(&storage).await;
        let bytes = storage.snapshot().await.unwrap();

        let dataset = Dataset::from_trees(&parse(&bytes).unwrap()).unwrap();

        let trees = dataset.to_trees();
        let empty: Vec<_> = trees
            .iter()
            .filter(|(_, entries)| entries.is_empty())
            .map(|(name, _)| *name)
            .collect();
        assert!(empty.is_empty(), "empty trees: {empty:?}");
        assert_eq!(dataset.counted_projects.len(), 2);
        assert!(dataset.last_id(IdKind::Agent) > *dataset.agents.keys().next_back().unwrap());
    }

    #[test]
    fn an_empty_store_gives_every_tree_empty() {
        let trees = Dataset::default().to_trees();
        assert_eq!(trees.len(), schema::ALL_TREES.len());
        assert!(trees.iter().all(|(_, entries)| entries.is_empty()));
    }

    #[test]
    fn malformed_keys_are_refused() {
        let trees = vec![(
            schema::USERS.to_owned(),
            vec![(&b"abc"[..], &b"\x01{}"[..])],
        )];
        assert!(matches!(
            Dataset::from_trees(&trees),
            Err(RestoreError::Corrupt)
        ));
    }
}
