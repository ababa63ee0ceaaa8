//! Pages of a project's agents at any depth. Offset pages match a sorted list of the names at the
//! boundaries of each backend's buckets (sled splits past 64 names, PostgreSQL past 512), after
//! inserts and deletes in the middle, under concurrent registrations and deletions, after random
//! changes, and after a restore; keyset pages walk every agent once, in each order, from any
//! cursor.

use crate::fixtures;
use agentreg_domain::entities::Agent;
use agentreg_domain::ids::{AgentId, ProjectId};
use agentreg_storage::agents::{AgentSeek, CreateAgentError, Direction};
use agentreg_storage::port::Storage;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use std::collections::BTreeMap;

/// More than two full PostgreSQL buckets, and many sled ones.
const N_AGENTS: usize = 1_100;

/// How many writes run at once when a test fills a project.
const N_CONCURRENT_WRITES: usize = 32;

pub(crate) async fn offset_pages_match_a_sorted_list_at_bucket_boundaries(storage: &dyn Storage) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let mut names = numbered_names(0..N_AGENTS);
    names.shuffle(&mut StdRng::seed_from_u64(1));

    let model = register(storage, project.id, &names).await;

    assert_offset_pages_match(storage, project.id, &model).await;
}

pub(crate) async fn offset_pages_stay_exact_after_inserts_and_deletes_in_the_middle(
    storage: &dyn Storage,
) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let mut model = register(storage, project.id, &numbered_names(0..N_AGENTS)).await;
    // A run of 600 names from the middle goes, which empties buckets on every backend, then
    // new names land between the survivors.
    let deleted: Vec<String> = model.keys().skip(250).take(600).cloned().collect();

    delete(storage, project.id, &mut model, &deleted).await;
    assert_offset_pages_match(storage, project.id, &model).await;
    let inserted: Vec<String> = (300..700).map(|idx| format!("agent-{idx:05}-b")).collect();
    model.extend(register(storage, project.id, &inserted).await);

    assert_offset_pages_match(storage, project.id, &model).await;
}

pub(crate) async fn concurrent_registrations_and_deletions_keep_every_offset_page_exact(
    storage: &dyn Storage,
) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let even: Vec<String> = (0..N_AGENTS)
        .step_by(2)
        .map(|idx| format!("agent-{idx:05}"))
        .collect();
    let mut model = register(storage, project.id, &even).await;
    let odd: Vec<String> = (1..N_AGENTS)
        .step_by(2)
        .map(|idx| format!("agent-{idx:05}"))
        .collect();
    let doomed: Vec<(String, AgentId)> = model
        .iter()
        .step_by(3)
        .map(|(name, id)| (name.clone(), *id))
        .collect();

    // Every registration and deletion at once: they land in the same buckets, split and
    // merge them.
    let creates = odd.iter().map(|name| async move {
        let agent = storage
            .create_agent(project.id, fixtures::agent_name(name), None, 1, None)
            .await
            .unwrap();
        (agent.name, Some(agent.id))
    });
    let deletes = doomed.iter().map(|(name, agent_id)| async move {
        storage
            .delete_agent(project.id, *agent_id, None, 1, None)
            .await
            .unwrap();
        (name.clone(), None)
    });
    let writes: Vec<_> = creates
        .map(futures::FutureExt::boxed)
        .chain(deletes.map(futures::FutureExt::boxed))
        .collect();
    let outcomes = futures::future::join_all(writes).await;

    for (name, created) in outcomes {
        match created {
            Some(agent_id) => model.insert(name, agent_id),
            None => model.remove(&name),
        };
    }
    assert_offset_pages_match(storage, project.id, &model).await;
}

pub(crate) async fn random_changes_keep_offset_pages_equal_to_a_sorted_list(storage: &dyn Storage) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let mut rng = StdRng::seed_from_u64(42);
    let mut model: BTreeMap<String, AgentId> = BTreeMap::new();

    for _ in 0..12 {
        // A few hundred names from a small space, so that some are taken and deletes hit
        // names that come back later.
        let candidates: Vec<String> = (0..150)
            .map(|_| format!("n{}", rng.random_range(0..2_000)))
            .collect();
        for chunk in candidates.chunks(N_CONCURRENT_WRITES) {
            let creates = chunk.iter().map(|name| {
                storage.create_agent(project.id, fixtures::agent_name(name), None, 1, None)
            });
            let outcomes = futures::future::join_all(creates).await;
            // A name may come twice in a chunk: exactly one of its registrations wins.
            for (name, created) in chunk.iter().zip(&outcomes) {
                if let Ok(agent) = created {
                    assert!(model.insert(name.clone(), agent.id).is_none(), "{name}");
                }
            }
            for (name, created) in chunk.iter().zip(&outcomes) {
                match created {
                    Ok(_) => {}
                    Err(CreateAgentError::NameTaken) => assert!(model.contains_key(name)),
                    Err(error) => panic!("registering {name}: {error:?}"),
                }
            }
        }
        let n_doomed = rng.random_range(0..=model.len() / 2);
        let mut existing: Vec<String> = model.keys().cloned().collect();
        existing.shuffle(&mut rng);
        delete(storage, project.id, &mut model, &existing[..n_doomed]).await;

        for _ in 0..8 {
            let offset = rng.random_range(0..=model.len() as u64 + 2);
            let limit = rng.random_range(1..=100);
            assert_window_matches(storage, project.id, &model, offset, limit).await;
        }
    }
    assert_offset_pages_match(storage, project.id, &model).await;
}

pub(crate) async fn keyset_pages_walk_every_agent_once_in_each_order(storage: &dyn Storage) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let other_project = fixtures::project(storage, &owner, "other").await;
    fixtures::agent(storage, other_project.id, "agent-00000").await;
    let mut names = numbered_names(0..N_AGENTS);
    names.shuffle(&mut StdRng::seed_from_u64(7));
    let model = register(storage, project.id, &names).await;
    let by_name: Vec<(String, AgentId)> = model.iter().map(|(n, id)| (n.clone(), *id)).collect();
    let mut by_id = by_name.clone();
    by_id.sort_by_key(|(_, id)| *id);

    for direction in [Direction::Ascending, Direction::Descending] {
        let mut expected_by_name = by_name.clone();
        let mut expected_by_id = by_id.clone();
        if direction == Direction::Descending {
            expected_by_name.reverse();
            expected_by_id.reverse();
        }

        let walked_by_name = walk(storage, project.id, 97, |last| AgentSeek::Name {
            direction,
            after: last.map(|agent| agent.name.clone()),
        })
        .await;
        let walked_by_id = walk(storage, project.id, 97, |last| AgentSeek::Id {
            direction,
            after: last.map(|agent| agent.id),
        })
        .await;

        assert_eq!(walked_by_name, expected_by_name, "by name, {direction:?}");
        assert_eq!(walked_by_id, expected_by_id, "by id, {direction:?}");
    }
}

pub(crate) async fn a_keyset_page_continues_after_a_deleted_cursor(storage: &dyn Storage) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    // One at a time, so that ids follow names.
    let mut model = BTreeMap::new();
    for name in numbered_names(0..10) {
        let agent = fixtures::agent(storage, project.id, &name).await;
        model.insert(name, agent.id);
    }
    let (cursor_name, cursor_id) = model
        .iter()
        .nth(4)
        .map(|(name, id)| (name.clone(), *id))
        .unwrap();
    delete(
        storage,
        project.id,
        &mut model,
        std::slice::from_ref(&cursor_name),
    )
    .await;

    let after_name = storage
        .agents_keyset_page(
            project.id,
            AgentSeek::Name {
                direction: Direction::Ascending,
                after: Some(cursor_name),
            },
            2,
        )
        .await
        .unwrap();
    let before_id = storage
        .agents_keyset_page(
            project.id,
            AgentSeek::Id {
                direction: Direction::Descending,
                after: Some(cursor_id),
            },
            10,
        )
        .await
        .unwrap();

    assert_eq!(names_of(&after_name), ["agent-00005", "agent-00006"]);
    assert_eq!(
        names_of(&before_id),
        ["agent-00003", "agent-00002", "agent-00001", "agent-00000"]
    );
}

pub(crate) async fn a_restored_storage_pages_like_its_source(
    storage: &dyn Storage,
    empty: &dyn Storage,
) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let mut names = numbered_names(0..N_AGENTS);
    names.shuffle(&mut StdRng::seed_from_u64(3));
    let mut model = register(storage, project.id, &names).await;
    let deleted: Vec<String> = model.keys().skip(100).take(300).cloned().collect();
    delete(storage, project.id, &mut model, &deleted).await;

    let snapshot = storage.snapshot().await.unwrap();
    empty.restore(snapshot.clone()).await.unwrap();

    assert_offset_pages_match(empty, project.id, &model).await;
    assert_eq!(
        empty.snapshot().await.unwrap(),
        snapshot,
        "restore then snapshot gives the same bytes"
    );
}

/// `agent-00000`, `agent-00001`, ...
fn numbered_names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|idx| format!("agent-{idx:05}")).collect()
}

/// Registers every name, [`N_CONCURRENT_WRITES`] at a time; returns them with their ids.
async fn register(
    storage: &dyn Storage,
    project_id: ProjectId,
    names: &[String],
) -> BTreeMap<String, AgentId> {
    let mut registered = BTreeMap::new();
    for chunk in names.chunks(N_CONCURRENT_WRITES) {
        let creates = chunk.iter().map(|name| {
            storage.create_agent(project_id, fixtures::agent_name(name), None, 1, None)
        });
        for agent in futures::future::join_all(creates).await {
            let agent = agent.unwrap();
            registered.insert(agent.name, agent.id);
        }
    }
    registered
}

/// Deletes the agents of these names, [`N_CONCURRENT_WRITES`] at a time, and from the model.
async fn delete(
    storage: &dyn Storage,
    project_id: ProjectId,
    model: &mut BTreeMap<String, AgentId>,
    names: &[String],
) {
    for chunk in names.chunks(N_CONCURRENT_WRITES) {
        let deletes = chunk.iter().map(|name| {
            let agent_id = model[name];
            storage.delete_agent(project_id, agent_id, None, 1, None)
        });
        for deleted in futures::future::join_all(deletes).await {
            deleted.unwrap();
        }
        for name in chunk {
            model.remove(name);
        }
    }
}

/// Checks windows around every bucket boundary of both backends, near the end and past it, and
/// a walk over every page of 100.
async fn assert_offset_pages_match(
    storage: &dyn Storage,
    project_id: ProjectId,
    model: &BTreeMap<String, AgentId>,
) {
    let n_agents = model.len() as u64;
    let mut offsets: Vec<u64> = [
        31, 32, 33, 63, 64, 65, 255, 256, 257, 511, 512, 513, 1023, 1024,
    ]
    .into_iter()
    .chain((0..n_agents + 2).step_by(97))
    .chain([n_agents.saturating_sub(1), n_agents, n_agents + 1])
    .collect();
    offsets.sort_unstable();
    offsets.dedup();
    for offset in offsets {
        assert_window_matches(storage, project_id, model, offset, 20).await;
    }
    for page_idx in 0..=n_agents / 100 {
        assert_window_matches(storage, project_id, model, page_idx * 100, 100).await;
    }
}

async fn assert_window_matches(
    storage: &dyn Storage,
    project_id: ProjectId,
    model: &BTreeMap<String, AgentId>,
    offset: u64,
    limit: u64,
) {
    let page = storage
        .agents_page(project_id, fixtures::window(offset, limit))
        .await
        .unwrap();
    let expected: Vec<(&str, AgentId)> = model
        .iter()
        .skip(usize::try_from(offset).unwrap())
        .take(usize::try_from(limit).unwrap())
        .map(|(name, id)| (name.as_str(), *id))
        .collect();
    let found: Vec<(&str, AgentId)> = page
        .items
        .iter()
        .map(|agent| (agent.name.as_str(), agent.id))
        .collect();
    assert_eq!(found, expected, "offset {offset}, limit {limit}");
    assert_eq!(page.total, model.len() as u64, "offset {offset}");
}

/// Every agent, walked in keyset pages of `limit` until a short page, each page seeking from
/// the last agent of the one before.
async fn walk(
    storage: &dyn Storage,
    project_id: ProjectId,
    limit: u64,
    seek: impl Fn(Option<&Agent>) -> AgentSeek,
) -> Vec<(String, AgentId)> {
    let mut walked = Vec::new();
    let mut last: Option<Agent> = None;
    loop {
        let page = storage
            .agents_keyset_page(project_id, seek(last.as_ref()), limit)
            .await
            .unwrap();
        assert!(page.len() as u64 <= limit);
        walked.extend(page.iter().map(|agent| (agent.name.clone(), agent.id)));
        if (page.len() as u64) < limit {
            return walked;
        }
        last = page.last().cloned();
    }
}

fn names_of(agents: &[Agent]) -> Vec<&str> {
    agents.iter().map(|agent| agent.name.as_str()).collect()
}
