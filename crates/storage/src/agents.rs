//! Kubernetes agents: registration with a name unique in its project, the name-ordered index
//! that pages the list (offset pages start through the in-memory positions, keyset pages seek
//! the index or the project's ids), the per-project count, and deletion that cascades to
//! everything the agent owns.

use crate::audit::{Audit, audit_entry};
use crate::combine::Combiner;
use crate::port::InventoryAgent;
use crate::positions::Walk;
use crate::records::{encode, v1};
use crate::schema::{self, IdKind, agent_name_key, id_key};
use crate::{
    EngineError, Page, PageWindow, Store, StoreError, abort, decode, decode_in_tx, engine,
    finish_tx,
};
use agentreg_domain::entities::{Agent, Project};
use agentreg_domain::ids::{AgentId, AgentTokenId, ProjectId, UrlConfigurationId, UserId};
use agentreg_domain::names::AgentName;
use sled::Transactional;
use std::collections::BTreeMap;
use std::ops::Bound;

/// A precondition for a delete: refuse it if the record changed after this instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnmodifiedSince {
    /// The last modification time that still satisfies the precondition, unix milliseconds.
    pub latest_allowed_ms: i64,
}

impl UnmodifiedSince {
    pub(crate) fn holds_for(self, modified_at_ms: i64) -> bool {
        modified_at_ms <= self.latest_allowed_ms
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateAgentError {
    #[error("name has already been taken")]
    NameTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteAgentError {
    #[error("agent not found")]
    NotFound,
    #[error("agent was modified after the given time")]
    PreconditionFailed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which way a keyset page walks its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ascending,
    Descending,
}

/// Where a keyset page of a project's agents starts: just after an agent's key in one of the
/// list's orders, or at the start of that order. Seeking a key costs O(log n) on every backend,
/// however deep the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentSeek {
    /// By id; after this id when set.
    Id {
        direction: Direction,
        after: Option<AgentId>,
    },
    /// By name in byte order (names are unique in a project); after this name when set.
    Name {
        direction: Direction,
        after: Option<String>,
    },
}

/// What a deleted agent took with it, so that caches can forget it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedAgent {
    pub agent: Agent,
    pub token_ids: Vec<AgentTokenId>,
}

/// Registrations waiting to be applied together; see [`Store::register_together`].
pub(crate) type Registrations = Combiner<NewRegistration, Result<Agent, CreateAgentError>>;

/// An agent to register, as the caller asked for it.
pub(crate) struct NewRegistration {
    pub(crate) project_id: u64,
    pub(crate) name: AgentName,
    pub(crate) created_by_user_id: Option<u64>,
    pub(crate) now_ms: i64,
    pub(crate) audit: crate::port::Audit<Agent>,
}

/// One agent to register, ready to write: its id and audit event are taken beforehand, so a
/// re-run transaction writes the same values.
pub(crate) struct Registration {
    project_id: u64,
    id: u64,
    name: String,
    encoded: Vec<u8>,
    audit_event: Option<([u8; 16], Vec<u8>)>,
}

/// A write applied together with others failed; the first of them got the cause.
#[derive(Debug, thiserror::Error)]
#[error("a write applied together with this one failed")]
struct SharedWriteFailed;

fn shared_write_failed() -> StoreError {
    StoreError::Engine(EngineError::new(SharedWriteFailed))
}

/// The outcomes of a batch that failed as a whole: the first registration gets the cause, the
/// others that they shared its failure.
fn shared_failure(n_items: usize, error: StoreError) -> Vec<Result<(), CreateAgentError>> {
    std::iter::once(Err(CreateAgentError::Store(error)))
        .chain((1..n_items).map(|_| Err(CreateAgentError::Store(shared_write_failed()))))
        .collect()
}

impl Store {
    /// Registers an agent and returns once it is durable. Name uniqueness is enforced
    /// atomically by the name index.
    pub fn create_agent(
        &self,
        project_id: u64,
        name: &AgentName,
        created_by_user_id: Option<u64>,
        now_ms: i64,
        audit: Audit<'_, Agent>,
    ) -> Result<Agent, CreateAgentError> {
        let (agent, registration) =
            self.prepare_registration(project_id, name, created_by_user_id, now_ms, audit)?;
        let outcome = self.register_batch(std::slice::from_ref(&registration));
        outcome
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(CreateAgentError::Store(shared_write_failed())))
            .map(|()| agent)
    }

    /// Registers an agent like [`Store::create_agent`], applied together with the registrations
    /// that arrive while others are being written (see [`crate::combine`]): one transaction and
    /// one flush per batch. The caller waits without holding a thread.
    pub(crate) async fn register_together(
        &self,
        registration: NewRegistration,
    ) -> Result<Agent, CreateAgentError> {
        self.registrations
            .submit(
                registration,
                || {
                    let store = self.clone();
                    move |batch| store.register_new(batch)
                },
                || Err(CreateAgentError::Store(shared_write_failed())),
            )
            .await
    }

    /// Takes the ids of a batch of registrations, in order, and applies them together.
    fn register_new(&self, batch: Vec<NewRegistration>) -> Vec<Result<Agent, CreateAgentError>> {
        let mut outcomes: Vec<Result<Agent, CreateAgentError>> = Vec::with_capacity(batch.len());
        let mut prepared = Vec::with_capacity(batch.len());
        // Where each prepared registration's outcome goes in `outcomes`.
        let mut slots = Vec::with_capacity(batch.len());
        for new in &batch {
            match self.prepare_registration(
                new.project_id,
                &new.name,
                new.created_by_user_id,
                new.now_ms,
                new.audit.as_deref().map(|audit| audit as _),
            ) {
                Ok((agent, registration)) => {
                    slots.push(outcomes.len());
                    outcomes.push(Ok(agent));
                    prepared.push(registration);
                }
                Err(error) => outcomes.push(Err(CreateAgentError::Store(error))),
            }
        }
        if prepared.is_empty() {
            return outcomes;
        }
        for (slot, applied) in slots.into_iter().zip(self.register_batch(&prepared)) {
            if let Err(error) = applied {
                outcomes[slot] = Err(error);
            }
        }
        outcomes
    }

    /// Takes an agent's id and audit event id, and encodes what its registration writes.
    fn prepare_registration(
        &self,
        project_id: u64,
        name: &AgentName,
        created_by_user_id: Option<u64>,
        now_ms: i64,
        audit: Audit<'_, Agent>,
    ) -> Result<(Agent, Registration), StoreError> {
        let id = self.next_id(IdKind::Agent)?;
        let audit_id = self.audit_id(audit)?;
        let record = v1::Agent {
            project_id,
            name: name.as_str().to_owned(),
            created_by_user_id,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            url_configuration_id: None,
        };
        let encoded = encode(&record);
        let agent = agent_from_record(id, record);
        let audit_event = audit_id
            .zip(audit)
            .map(|(audit_id, audit)| audit_entry(audit(&agent), audit_id, now_ms));
        let registration = Registration {
            project_id,
            id,
            name: name.as_str().to_owned(),
            encoded,
            audit_event,
        };
        Ok((agent, registration))
    }

    /// Applies registrations in one transaction, then makes them durable; one outcome each, in
    /// order. A name taken before or earlier in the batch refuses only its own registration.
    fn register_batch(&self, batch: &[Registration]) -> Vec<Result<(), CreateAgentError>> {
        let token_set = encode(&v1::AgentTokenSet::default());
        let writing = self.writing();
        let mut positions = self.positions.writer();
        let trees = &self.trees;
        let applied = finish_tx::<_, StoreError>(
            (
                &trees.agents,
                &trees.agent_names,
                &trees.project_agent_counts,
                &trees.agent_token_sets,
                &trees.audit_events,
            )
                .transaction(|(agents, names, counts, token_sets, audit_events)| {
                    let mut taken = Vec::with_capacity(batch.len());
                    for registration in batch {
                        let project_id = registration.project_id;
                        let name_key = agent_name_key(project_id, &registration.name);
                        // The transaction reads its own writes, so an earlier registration of
                        // the batch counts here.
                        if names.get(&name_key)?.is_some() {
                            taken.push(true);
                            continue;
                        }
                        let count = counts
                            .get(id_key(project_id))?
                            .as_deref()
                            .and_then(schema::decode_u64)
                            .unwrap_or(0);
                        let id = id_key(registration.id);
                        names.insert(name_key.as_slice(), &id)?;
                        counts.insert(&id_key(project_id), &(count + 1).to_be_bytes())?;
                        agents.insert(&id, registration.encoded.as_slice())?;
                        token_sets.insert(&id, token_set.as_slice())?;
                        if let Some((key, value)) = &registration.audit_event {
                            audit_events.insert(key, value.as_slice())?;
                        }
                        taken.push(false);
                    }
                    Ok(taken)
                }),
        );
        let taken = match applied {
            Ok(taken) => taken,
            Err(error) => return shared_failure(batch.len(), error),
        };
        let registered =
            batch
                .iter()
                .zip(&taken)
                .filter(|(_, taken)| !**taken)
                .map(|(registration, _)| {
                    (
                        registration.project_id,
                        registration.name.as_str(),
                        registration.id,
                    )
                });
        positions.added(registered, &self.trees.agent_names);
        drop(positions);
        if let Err(error) = self.commit(writing) {
            return shared_failure(batch.len(), error);
        }
        taken
            .into_iter()
            .map(|taken| match taken {
                true => Err(CreateAgentError::NameTaken),
                false => Ok(()),
            })
            .collect()
    }

    /// The agent with this id, if it belongs to `project_id`.
    pub fn agent(&self, project_id: u64, agent_id: u64) -> Result<Option<Agent>, StoreError> {
        let agent = match self.decoded_agents.get(agent_id) {
            Some(agent) => agent,
            None => {
                let generation = self.decoded_agents.generation();
                let Some(bytes) = self.trees.agents.get(id_key(agent_id)).map_err(engine)? else {
                    return Ok(None);
                };
                let record: v1::Agent = decode(schema::AGENTS, &bytes)?;
                let agent = agent_from_record(agent_id, record);
                self.decoded_agents.insert(generation, &agent);
                agent
            }
        };
        Ok((agent.project_id.get() == project_id).then_some(agent))
    }

    /// Every agent, ordered by id, with its project and tokens.
    pub fn all_agents(&self) -> Result<Vec<InventoryAgent>, StoreError> {
        let mut projects: BTreeMap<u64, Project> = BTreeMap::new();
        let mut inventory = Vec::new();
        for entry in self.trees.agents.iter() {
            let (key, bytes) = entry.map_err(engine)?;
            let agent_id = schema::decode_u64(&key).ok_or(StoreError::Dangling {
                tree: schema::AGENTS,
            })?;
            let record: v1::Agent = decode(schema::AGENTS, &bytes)?;
            let project_id = record.project_id;
            let project = match projects.get(&project_id) {
                Some(project) => project.clone(),
                None => {
                    let project = self.project(project_id)?.ok_or(StoreError::Dangling {
                        tree: schema::AGENTS,
                    })?;
                    projects.insert(project_id, project.clone());
                    project
                }
            };
            let tokens = self
                .all_agent_tokens(project_id, agent_id)?
                .unwrap_or_default();
            inventory.push(InventoryAgent {
                agent: agent_from_record(agent_id, record),
                project,
                tokens,
            });
        }
        Ok(inventory)
    }

    /// A page of a project's agents ordered by name, in O(log n + page): the positions give the
    /// bucket of the name index that holds `offset`, and the page is read from there after
    /// skipping fewer than `MAX_NAMES_PER_BUCKET` entries; the total comes from the
    /// per-project counter.
    pub fn agents_page(
        &self,
        project_id: u64,
        window: PageWindow,
    ) -> Result<Page<Agent>, StoreError> {
        let total = self
            .trees
            .project_agent_counts
            .get(id_key(project_id))
            .map_err(engine)?
            .as_deref()
            .and_then(schema::decode_u64)
            .unwrap_or(0);
        let limit = usize::try_from(window.limit).unwrap_or(usize::MAX);
        let Some((lower_bound, n_skipped)) = self.positions.name_start(project_id, window.offset)
        else {
            return Ok(Page {
                items: Vec::new(),
                total,
            });
        };
        let mut start = agent_name_key(project_id, "");
        start.extend_from_slice(&lower_bound);
        let entries = self
            .trees
            .agent_names
            .range((Bound::Included(start), project_end(project_id)))
            .skip(usize::try_from(n_skipped).unwrap_or(usize::MAX));
        let items = self.named_agents(project_id, entries, limit)?;
        Ok(Page { items, total })
    }

    /// Up to `limit` of a project's agents from a keyset position, in O(log n + limit): a range
    /// of the name index, or of the project's ids in the positions.
    pub fn agents_keyset_page(
        &self,
        project_id: u64,
        seek: &AgentSeek,
        limit: usize,
    ) -> Result<Vec<Agent>, StoreError> {
        match seek {
            AgentSeek::Name { direction, after } => {
                let after = after
                    .as_deref()
                    .map(|name| Bound::Excluded(agent_name_key(project_id, name)));
                let names = &self.trees.agent_names;
                match direction {
                    Direction::Ascending => {
                        let from = after.unwrap_or_else(|| project_start(project_id));
                        let entries = names.range((from, project_end(project_id)));
                        self.named_agents(project_id, entries, limit)
                    }
                    Direction::Descending => {
                        let to = after.unwrap_or_else(|| project_end(project_id));
                        let entries = names.range((project_start(project_id), to)).rev();
                        self.named_agents(project_id, entries, limit)
                    }
                }
            }
            AgentSeek::Id { direction, after } => {
                let walk = match direction {
                    Direction::Ascending => Walk::Up,
                    Direction::Descending => Walk::Down,
                };
                let mut after = after.map(AgentId::get);
                let mut agents = Vec::new();
                // An id whose agent was deleted since it was read is passed over, and more are
                // read, so that a short page always means the end of the list.
                while agents.len() < limit {
                    let ids =
                        self.positions
                            .ids_after(project_id, after, walk, limit - agents.len());
                    let Some(last) = ids.last().copied() else {
                        break;
                    };
                    for agent_id in ids {
                        agents.extend(self.agent(project_id, agent_id)?);
                    }
                    after = Some(last);
                }
                Ok(agents)
            }
        }
    }

    /// Reads the agents that name-index entries point at, up to `limit`, stopping at the end of
    /// the project's range. An entry whose agent was deleted since the index was read is passed
    /// over, so a short page always means the end of the list.
    fn named_agents(
        &self,
        project_id: u64,
        entries: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
        limit: usize,
    ) -> Result<Vec<Agent>, StoreError> {
        let mut agents = Vec::new();
        for entry in entries {
            if agents.len() >= limit {
                break;
            }
            let (_, id_bytes) = entry.map_err(engine)?;
            let agent_id = schema::decode_u64(&id_bytes).ok_or(StoreError::Dangling {
                tree: schema::AGENT_NAMES,
            })?;
            agents.extend(self.agent(project_id, agent_id)?);
        }
        Ok(agents)
    }

    /// Deletes an agent with its tokens (active and revoked), their last-use times and its URL
    /// configuration, in one transaction.
    pub fn delete_agent(
        &self,
        project_id: u64,
        agent_id: u64,
        precondition: Option<UnmodifiedSince>,
        now_ms: i64,
        audit: Audit<'_, DeletedAgent>,
    ) -> Result<DeletedAgent, DeleteAgentError> {
        let audit_id = self.audit_id(audit)?;
        let writing = self.writing();
        let mut positions = self.positions.writer();
        let trees = &self.trees;
        let deleted = finish_tx(
            (
                &trees.agents,
                &trees.agent_names,
                &trees.project_agent_counts,
                &trees.agent_token_sets,
                &trees.agent_tokens,
                &trees.agent_token_handles,
                &trees.agent_token_last_used,
                &trees.url_configurations,
                &trees.audit_events,
            )
                .transaction(
                    |(
                        agents,
                        names,
                        counts,
                        token_sets,
                        tokens,
                        handles,
                        last_used,
                        url_configs,
                        audit_events,
                    )| {
                        let Some(bytes) = agents.get(id_key(agent_id))? else {
                            return Err(abort(DeleteAgentError::NotFound));
                        };
                        let record: v1::Agent = decode_in_tx(schema::AGENTS, &bytes)?;
                        if record.project_id != project_id {
                            return Err(abort(DeleteAgentError::NotFound));
                        }
                        if let Some(precondition) = precondition
                            && !precondition.holds_for(record.updated_at_ms)
                        {
                            return Err(abort(DeleteAgentError::PreconditionFailed));
                        }
                        let token_set: v1::AgentTokenSet = match token_sets.get(id_key(agent_id))? {
                            Some(bytes) => decode_in_tx(schema::AGENT_TOKEN_SETS, &bytes)?,
                            None => v1::AgentTokenSet::default(),
                        };
                        let token_ids: Vec<u64> = token_set
                            .active
                            .iter()
                            .chain(token_set.revoked.iter())
                            .copied()
                            .collect();
                        for token_id in &token_ids {
                            if let Some(bytes) = tokens.remove(&id_key(*token_id))? {
                                let token: v1::AgentToken =
                                    decode_in_tx(schema::AGENT_TOKENS, &bytes)?;
                                handles.remove(token.handle.as_bytes())?;
                            }
                            last_used.remove(&id_key(*token_id))?;
                        }
                        if let Some(url_configuration_id) = record.url_configuration_id {
                            url_configs.remove(&id_key(url_configuration_id))?;
                        }
                        token_sets.remove(&id_key(agent_id))?;
                        names.remove(agent_name_key(project_id, &record.name))?;
                        let count = counts
                            .get(id_key(project_id))?
                            .as_deref()
                            .and_then(schema::decode_u64)
                            .unwrap_or(1);
                        counts
                            .insert(&id_key(project_id), &count.saturating_sub(1).to_be_bytes())?;
                        agents.remove(&id_key(agent_id))?;
                        let deleted = DeletedAgent {
                            agent: agent_from_record(agent_id, record),
                            token_ids: token_ids.iter().copied().map(AgentTokenId::new).collect(),
                        };
                        if let Some((audit_id, audit)) = audit_id.zip(audit) {
                            let (key, value) = audit_entry(audit(&deleted), audit_id, now_ms);
                            audit_events.insert(&key, value)?;
                        }
                        Ok(deleted)
                    },
                ),
        );
        self.decoded_agents.forget(agent_id);
        let deleted = deleted?;
        positions.removed(project_id, &deleted.agent.name, agent_id);
        drop(positions);
        self.commit(writing)?;
        Ok(deleted)
    }

    /// The number of agents in every project together, for metrics.
    pub fn count_agents(&self) -> usize {
        self.trees.agents.len()
    }
}

/// Where the project's part of the name index starts.
fn project_start(project_id: u64) -> Bound<Vec<u8>> {
    Bound::Included(id_key(project_id).to_vec())
}

/// Where the project's part of the name index ends.
fn project_end(project_id: u64) -> Bound<Vec<u8>> {
    match project_id.checked_add(1) {
        Some(next) => Bound::Excluded(id_key(next).to_vec()),
        None => Bound::Unbounded,
    }
}

pub(crate) fn agent_from_record(id: u64, record: v1::Agent) -> Agent {
    Agent {
        id: AgentId::new(id),
        project_id: ProjectId::new(record.project_id),
        name: record.name,
        created_by_user_id: record.created_by_user_id.map(UserId::new),
        created_at_ms: record.created_at_ms,
        updated_at_ms: record.updated_at_ms,
        url_configuration_id: record.url_configuration_id.map(UrlConfigurationId::new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use agentreg_domain::entities::AuditScope;

    fn name(text: &str) -> AgentName {
        AgentName::parse(text).unwrap()
    }

    #[test]
    fn names_are_unique_within_a_project() {
        let store = fixtures::store();
        let (user_id, project_id) = fixtures::project(&store);
        store
            .create_agent(project_id, &name("a"), Some(user_id), 1, None)
            .unwrap();
        assert!(matches!(
            store.create_agent(project_id, &name("a"), Some(user_id), 2, None),
            Err(CreateAgentError::NameTaken)
        ));
        store
            .create_agent(project_id + 1, &name("a"), Some(user_id), 2, None)
            .unwrap();
    }

    #[test]
    fn pages_are_ordered_by_name_with_a_total() {
        let store = fixtures::store();
        let (_, project_id) = fixtures::project(&store);
        for agent_name in ["c", "a", "d", "b"] {
            store
                .create_agent(project_id, &name(agent_name), None, 1, None)
                .unwrap();
        }
        let page = store
            .agents_page(
                project_id,
                PageWindow {
                    offset: 1,
                    limit: 2,
                },
            )
            .unwrap();
        let names: Vec<_> = page.items.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, vec!["b", "c"]);
        assert_eq!(page.total, 4);
    }

    #[test]
    fn agents_of_other_projects_are_invisible() {
        let store = fixtures::store();
        let (_, project_id) = fixtures::project(&store);
        let agent = store
            .create_agent(project_id, &name("a"), None, 1, None)
            .unwrap();
        assert_eq!(store.agent(project_id + 1, agent.id.get()).unwrap(), None);
        assert!(matches!(
            store.delete_agent(project_id + 1, agent.id.get(), None, 0, None),
            Err(DeleteAgentError::NotFound)
        ));
    }

    #[test]
    fn delete_frees_the_name_and_the_count() {
        let store = fixtures::store();
        let (_, project_id) = fixtures::project(&store);
        let agent = store
            .create_agent(project_id, &name("a"), None, 1, None)
            .unwrap();
        store
            .delete_agent(project_id, agent.id.get(), None, 0, None)
            .unwrap();
        assert_eq!(store.agent(project_id, agent.id.get()).unwrap(), None);
        let page = store
            .agents_page(
                project_id,
                PageWindow {
                    offset: 0,
                    limit: 20,
                },
            )
            .unwrap();
        assert_eq!((page.items.len(), page.total), (0, 0));
        let again = store
            .create_agent(project_id, &name("a"), None, 2, None)
            .unwrap();
        assert!(again.id > agent.id);
    }

    #[test]
    fn an_audited_change_and_its_event_are_written_together() {
        let store = fixtures::store();
        let (_, project_id) = fixtures::project(&store);
        let audit = |agent: &Agent| crate::audit::NewAuditEvent {
            scope: AuditScope::Project(agent.project_id),
            author_id: None,
            entity_id: agent.id.get(),
            entity_type: "Clusters::Agent",
            details: serde_json::json!({"event_name": "cluster_agent_created"}),
        };
        let events = |store: &Store| {
            store
                .audit_events_page(
                    AuditScope::Project(ProjectId::new(project_id)),
                    PageWindow {
                        offset: 0,
                        limit: 10,
                    },
                )
                .unwrap()
                .items
        };

        let agent = store
            .create_agent(project_id, &name("a"), None, 1, Some(&audit))
            .unwrap();
        let refused = store.create_agent(project_id, &name("a"), None, 2, Some(&audit));

        assert!(matches!(refused, Err(CreateAgentError::NameTaken)));
        let recorded = events(&store);
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].entity_id, agent.id.get());
        assert_eq!(recorded[0].created_at_ms, 1);
    }

    #[test]
    fn delete_honours_the_precondition() {
        let store = fixtures::store();
        let (_, project_id) = fixtures::project(&store);
        let agent = store
            .create_agent(project_id, &name("a"), None, 1_000, None)
            .unwrap();
        let stale = UnmodifiedSince {
            latest_allowed_ms: 999,
        };
        assert!(matches!(
            store.delete_agent(project_id, agent.id.get(), Some(stale), 0, None),
            Err(DeleteAgentError::PreconditionFailed)
        ));
        let fresh = UnmodifiedSince {
            latest_allowed_ms: 1_000,
        };
        store
            .delete_agent(project_id, agent.id.get(), Some(fresh), 0, None)
            .unwrap();
    }

    #[test]
    fn concurrent_registrations_of_one_name_create_exactly_one_agent() {
        let store = fixtures::store();
        let (_, project_id) = fixtures::project(&store);
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    scope.spawn(|| store.create_agent(project_id, &name("same"), None, 1, None))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        let page = store
            .agents_page(
                project_id,
                PageWindow {
                    offset: 0,
                    limit: 20,
                },
            )
            .unwrap();
        assert_eq!(page.total, 1);
    }
}

/// Agents decoded before, by id, so that a read of an agent takes neither sled's lock (which
/// every write's transaction holds exclusively) nor a decode. Every write that changes or
/// removes an agent record calls [`DecodedAgents::forget`] once its transaction is over; a read
/// that missed keeps what it decoded only if no such write ended since it began, so an entry is
/// never older than the last write acknowledged. Bounded: past [`DecodedAgents::MAX_ENTRIES`]
/// it starts over.
#[derive(Default)]
pub(crate) struct DecodedAgents {
    entries: std::sync::RwLock<std::collections::HashMap<u64, Agent>>,
    /// Bumped, under the write lock, by every forget.
    generation: std::sync::atomic::AtomicU64,
}

impl DecodedAgents {
    const MAX_ENTRIES: usize = 16_384;

    fn get(&self, agent_id: u64) -> Option<Agent> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&agent_id)
            .cloned()
    }

    /// Taken before reading the record that a later [`DecodedAgents::insert`] keeps.
    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Keeps `agent`, read after `generation` was taken, unless an agent was forgotten since.
    fn insert(&self, generation: u64, agent: &Agent) {
        let mut entries = self.write();
        if self.generation.load(std::sync::atomic::Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(agent.id.get(), agent.clone());
    }

    /// Drops the agent's entry, and keeps any read that began before from filling it again.
    pub(crate) fn forget(&self, agent_id: u64) {
        let mut entries = self.write();
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        entries.remove(&agent_id);
    }

    /// Drops every entry (a restore replaced the records).
    pub(crate) fn clear(&self) {
        let mut entries = self.write();
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        entries.clear();
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, std::collections::HashMap<u64, Agent>> {
        // Every update is complete before the guard drops.
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod decoded_agents_tests {
    use super::*;

    /// Agent `id` of project 1, as a read decodes it.
    fn agent(id: u64, name: &str) -> Agent {
        let mut record: v1::Agent =
            serde_json::from_str(r#"{"project_id":1,"name":"","created_by_user_id":null,"created_at_ms":0,"updated_at_ms":0,"url_configuration_id":null}"#).unwrap();
        record.name = name.to_owned();
        agent_from_record(id, record)
    }

    #[test]
    fn a_read_that_began_before_a_forget_keeps_nothing() {
        let decoded = DecodedAgents::default();
        let generation = decoded.generation();
        // A write changes agent 7 and forgets it while the read decodes the old record.
        decoded.forget(7);
        decoded.insert(generation, &agent(7, "old"));
        assert!(decoded.get(7).is_none(), "a stale record was kept");

        let generation = decoded.generation();
        decoded.insert(generation, &agent(7, "new"));
        assert_eq!(decoded.get(7).unwrap().name, "new");
        decoded.forget(7);
        assert!(decoded.get(7).is_none());
    }

    #[test]
    fn past_the_bound_it_starts_over() {
        let decoded = DecodedAgents::default();
        for id in 0..=DecodedAgents::MAX_ENTRIES as u64 {
            decoded.insert(decoded.generation(), &agent(id, "a"));
        }
        assert!(decoded.get(0).is_none());
        assert!(decoded.get(DecodedAgents::MAX_ENTRIES as u64).is_some());
    }
}
