//! Snapshots: one restores into an empty storage (of either backend) with every record as it
//! was and ids that go on growing past every id ever issued; restore refuses a storage that holds
//! data and a damaged snapshot, and writes nothing when it refuses.

use crate::fixtures::{self, Secrets};
use agentreg_domain::access::AccessLevel;
use agentreg_domain::entities::RevocationReason;
use agentreg_domain::entities::{
    Agent, AgentToken, AuditEvent, AuditScope, PersonalAccessToken, Project, UrlConfiguration, User,
};
use agentreg_domain::ids::AuditEventId;
use agentreg_domain::names::UserIdentity;
use agentreg_domain::tokens::TokenHandle;
use agentreg_storage::backup::RestoreError;
use agentreg_storage::port::{Counts, NewAgentToken, NewRotation, RevokeAgentToken, Storage};
use agentreg_storage::{Page, SecretHash};

/// Paging a restored storage, beside the other restore cases.
pub(crate) use crate::pages::a_restored_storage_pages_like_its_source;

pub(crate) async fn a_snapshot_restores_every_record_into_an_empty_storage(
    storage: &dyn Storage,
    empty: &dyn Storage,
) {
    let world = populate(storage).await;
    let original = describe(storage, &world).await;

    let snapshot = storage.snapshot().await.unwrap();
    let summary = empty.restore(snapshot).await.unwrap();

    assert!(summary.n_entries > 0);
    assert_eq!(
        original.counts,
        Counts {
            agents: 5,
            // Three active tokens plus a rotation's successor.
            active_agent_tokens: 4,
            url_configurations: 2,
        }
    );
    assert_eq!(describe(empty, &world).await, original);
    ids_continue_past_every_issued_id(empty, &world).await;
}

pub(crate) async fn restore_refuses_a_storage_that_holds_data(
    storage: &dyn Storage,
    empty: &dyn Storage,
) {
    let world = populate(storage).await;
    let original = describe(storage, &world).await;
    let snapshot = storage.snapshot().await.unwrap();
    let someone = fixtures::user(empty, "someone").await;

    let into_itself = storage.restore(snapshot.clone()).await;
    let into_a_storage_with_one_user = empty.restore(snapshot).await;

    assert!(
        matches!(into_itself, Err(RestoreError::TargetNotEmpty(_))),
        "{into_itself:?}"
    );
    assert!(
        matches!(
            into_a_storage_with_one_user,
            Err(RestoreError::TargetNotEmpty(_))
        ),
        "{into_a_storage_with_one_user:?}"
    );
    assert_eq!(describe(storage, &world).await, original);
    assert_eq!(empty.user(someone.id).await.unwrap(), Some(someone));
    assert_eq!(empty.user_by_username("owner").await.unwrap(), None);
    assert_eq!(empty.counts().await.unwrap(), Counts::default());
}

pub(crate) async fn restore_refuses_a_damaged_snapshot_and_writes_nothing(
    storage: &dyn Storage,
    empty: &dyn Storage,
) {
    let world = populate(storage).await;
    let snapshot = storage.snapshot().await.unwrap();
    let mut altered = snapshot.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 1;
    let truncated = snapshot[..snapshot.len() - 5].to_vec();

    let restored_altered = empty.restore(altered).await;
    let restored_truncated = empty.restore(truncated).await;
    let restored_other_bytes = empty.restore(b"hello, world".to_vec()).await;
    let after_refusals = (
        empty.has_users().await.unwrap(),
        empty.counts().await.unwrap(),
    );
    let restored_intact = empty.restore(snapshot).await;

    assert!(
        matches!(restored_altered, Err(RestoreError::ChecksumMismatch)),
        "{restored_altered:?}"
    );
    assert!(restored_truncated.is_err(), "{restored_truncated:?}");
    assert!(
        matches!(restored_other_bytes, Err(RestoreError::NotASnapshot)),
        "{restored_other_bytes:?}"
    );
    assert_eq!(after_refusals, (false, Counts::default()));
    assert!(restored_intact.is_ok(), "{restored_intact:?}");
    assert_eq!(
        describe(empty, &world).await,
        describe(storage, &world).await
    );
}

pub(crate) async fn restore_refuses_a_record_that_does_not_decode_and_writes_nothing(
    storage: &dyn Storage,
    empty: &dyn Storage,
) {
    populate(storage).await;
    let snapshot = storage.snapshot().await.unwrap();
    let undecodable = with_first_record_of(&snapshot, "users", |value| value[0] = 0xff);

    let restored = empty.restore(undecodable).await;
    let after_refusal = (
        empty.has_users().await.unwrap(),
        empty.counts().await.unwrap(),
    );

    assert!(restored.is_err(), "{restored:?}");
    assert_eq!(after_refusal, (false, Counts::default()));
}

/// A copy of `snapshot` whose first record in `tree` is changed by `change`, with the checksum
/// recomputed, as a forger without the instance key would do.
fn with_first_record_of(snapshot: &[u8], tree: &str, change: impl Fn(&mut [u8])) -> Vec<u8> {
    use sha2::Digest as _;
    let mut body = snapshot[..snapshot.len() - 32].to_vec();
    let read_u32 = |bytes: &[u8], at: usize| {
        usize::try_from(u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())).unwrap()
    };
    let mut position = b"AGENTREG-SNAPSHOT".len() + 4;
    loop {
        let name_len = read_u32(&body, position);
        let name = body[position + 4..position + 4 + name_len].to_vec();
        position += 4 + name_len;
        let n_entries = u64::from_be_bytes(body[position..position + 8].try_into().unwrap());
        position += 8;
        for entry_idx in 0..n_entries {
            let key_len = read_u32(&body, position);
            position += 4 + key_len;
            let value_len = read_u32(&body, position);
            if name == tree.as_bytes() && entry_idx == 0 {
                change(&mut body[position + 4..position + 4 + value_len]);
                let digest = sha2::Sha256::digest(&body);
                body.extend_from_slice(&digest);
                return body;
            }
            position += 4 + value_len;
        }
    }
}

/// What [`populate`] wrote, with the ids and handles to read it back by, deleted records
/// included.
struct World {
    users: Vec<User>,
    projects: Vec<Project>,
    agents: Vec<Agent>,
    agent_tokens: Vec<(AgentToken, TokenHandle)>,
    url_configurations: Vec<UrlConfiguration>,
    personal_access_token_handles: Vec<TokenHandle>,
    last_audit_event_id: AuditEventId,
}

/// Everything a storage answers about a [`World`], through every read of the port. Sets the
/// port leaves unordered are sorted, so that two storages holding the same records compare
/// equal.
#[derive(Debug, PartialEq)]
struct Description {
    has_users: bool,
    users: Vec<Option<User>>,
    users_by_username: Vec<Option<User>>,
    projects: Vec<Option<Project>>,
    projects_by_full_path: Vec<Option<Project>>,
    access_levels: Vec<Option<AccessLevel>>,
    personal_access_tokens: Vec<Option<(PersonalAccessToken, User, SecretHash)>>,
    agent_pages: Vec<Page<Agent>>,
    agents: Vec<Option<Agent>>,
    token_sets: Vec<Option<TokenSetDescription>>,
    active_agent_tokens: Vec<Option<Vec<AgentToken>>>,
    url_configurations_by_agent: Vec<Option<Vec<UrlConfiguration>>>,
    agent_tokens: Vec<Option<AgentToken>>,
    agent_tokens_by_handle: Vec<Option<(AgentToken, SecretHash)>>,
    url_configurations: Vec<Option<UrlConfiguration>>,
    all_url_configurations: Vec<UrlConfiguration>,
    audit_pages: Vec<Page<AuditEvent>>,
    counts: Counts,
}

/// Writes some of every record: users (one an administrator), projects in two namespaces,
/// members, personal access tokens, agents with active, revoked and used tokens, URL
/// configurations of both kinds, audit events of both scopes, and a deleted agent that took a
/// token and a URL configuration with it and holds the highest ids of its kinds.
async fn populate(storage: &dyn Storage) -> World {
    let mut secrets = Secrets::seeded(7);
    let owner_identity = UserIdentity::parse("owner", "Owner", "Owner@Example.com").unwrap();
    let owner = storage.create_user(owner_identity, true, 1).await.unwrap();
    let bob = fixtures::user(storage, "bob").await;
    let carol = fixtures::user(storage, "carol").await;
    let app = fixtures::project(storage, &owner, "app").await;
    let other = fixtures::project(storage, &owner, "other").await;
    let bobs_app = fixtures::project(storage, &bob, "app").await;
    for (project, user, access_level) in [
        (&app, &bob, AccessLevel::Developer),
        (&app, &carol, AccessLevel::Guest),
        (&bobs_app, &owner, AccessLevel::Maintainer),
    ] {
        storage
            .add_member(project.id, user.id, access_level, 3)
            .await
            .unwrap();
    }
    let mut personal_access_token_handles = Vec::new();
    for user in [&owner, &bob] {
        let new = secrets.personal_access_token(user.id);
        personal_access_token_handles.push(new.handle.clone());
        storage.create_personal_access_token(new, 4).await.unwrap();
    }

    let mut agents = Vec::new();
    for (project, name) in [
        (&app, "a-1"),
        (&app, "a-10"),
        (&app, "b"),
        (&other, "a-1"),
        (&bobs_app, "x"),
    ] {
        let audit = fixtures::audit(
            owner.id,
            "Clusters::Agent",
            "agent_created",
            |agent: &Agent| (agent.project_id, agent.id.get()),
        );
        let agent = storage
            .create_agent(
                project.id,
                fixtures::agent_name(name),
                Some(owner.id),
                5,
                audit,
            )
            .await
            .unwrap();
        agents.push(agent);
    }
    let mut agent_tokens = Vec::new();
    for (agent_idx, described) in [(0, false), (0, false), (2, true), (3, false)] {
        let agent = &agents[agent_idx];
        let new = if described {
            // Token lifecycle fields travel in snapshots too.
            NewAgentToken {
                expires_at_ms: Some(1_000_000),
                ..secrets.described_agent_token(bob.id)
            }
        } else {
            secrets.agent_token()
        };
        let handle = new.handle.clone();
        let token = storage
            .create_agent_token(agent.project_id, agent.id, new, 6, None)
            .await
            .unwrap();
        agent_tokens.push((token, handle));
    }
    let (revoked, _) = &agent_tokens[1];
    storage
        .revoke_agent_token(
            revoked.project_id,
            revoked.agent_id,
            revoked.id,
            RevokeAgentToken {
                by_user_id: Some(bob.id),
                reason: RevocationReason::parse("leaked in a build log").unwrap(),
            },
            7,
            None,
        )
        .await
        .unwrap();
    // A rotation in progress travels in snapshots too: the retiring token and its successor.
    let (rotating, _) = &agent_tokens[3];
    let successor = secrets.agent_token();
    let successor_handle = successor.handle.clone();
    let rotated = storage
        .rotate_agent_token(
            rotating.project_id,
            rotating.agent_id,
            rotating.id,
            NewRotation {
                successor,
                retiring_until_ms: 1_000_000,
            },
            8,
            None,
        )
        .await
        .unwrap();
    agent_tokens.push((rotated.successor, successor_handle));
    storage
        .record_agent_token_use(vec![
            (agent_tokens[0].0.id, 500),
            (agent_tokens[3].0.id, 900),
        ])
        .await
        .unwrap();
    let mut url_configurations = Vec::new();
    for (agent_idx, new) in [
        (1, fixtures::jwt_url_configuration()),
        (3, fixtures::mtls_url_configuration(owner.id)),
    ] {
        let agent = &agents[agent_idx];
        let config = storage
            .create_url_configuration(agent.project_id, agent.id, new, 8, None)
            .await
            .unwrap();
        url_configurations.push(config);
    }
    storage
        .record_audit_event(
            fixtures::standalone_event(AuditScope::Project(app.id), 1),
            9,
        )
        .await
        .unwrap();

    let gone = fixtures::agent(storage, app.id, "gone").await;
    let gone_token_new = secrets.agent_token();
    let gone_handle = gone_token_new.handle.clone();
    let gone_token = storage
        .create_agent_token(app.id, gone.id, gone_token_new, 10, None)
        .await
        .unwrap();
    let gone_config = storage
        .create_url_configuration(app.id, gone.id, fixtures::jwt_url_configuration(), 10, None)
        .await
        .unwrap();
    let audit = fixtures::audit(
        owner.id,
        "Clusters::Agent",
        "agent_deleted",
        |deleted: &agentreg_storage::agents::DeletedAgent| {
            (deleted.agent.project_id, deleted.agent.id.get())
        },
    );
    storage
        .delete_agent(app.id, gone.id, None, 11, audit)
        .await
        .unwrap();
    agents.push(gone);
    agent_tokens.push((gone_token, gone_handle));
    url_configurations.push(gone_config);
    let last_event = storage
        .record_audit_event(fixtures::standalone_event(AuditScope::Instance, 2), 12)
        .await
        .unwrap();

    World {
        users: vec![owner, bob, carol],
        projects: vec![app, other, bobs_app],
        agents,
        agent_tokens,
        url_configurations,
        personal_access_token_handles,
        last_audit_event_id: last_event.id,
    }
}

/// Active and revoked ids, expiries and overlap deadlines.
type TokenSetDescription = (
    Vec<u64>,
    Vec<u64>,
    std::collections::BTreeMap<u64, i64>,
    std::collections::BTreeMap<u64, i64>,
);

async fn describe(storage: &dyn Storage, world: &World) -> Description {
    let mut description = Description {
        has_users: storage.has_users().await.unwrap(),
        users: Vec::new(),
        users_by_username: Vec::new(),
        projects: Vec::new(),
        projects_by_full_path: Vec::new(),
        access_levels: Vec::new(),
        personal_access_tokens: Vec::new(),
        agent_pages: Vec::new(),
        agents: Vec::new(),
        token_sets: Vec::new(),
        active_agent_tokens: Vec::new(),
        url_configurations_by_agent: Vec::new(),
        agent_tokens: Vec::new(),
        agent_tokens_by_handle: Vec::new(),
        url_configurations: Vec::new(),
        all_url_configurations: storage.all_url_configurations().await.unwrap(),
        audit_pages: Vec::new(),
        counts: storage.counts().await.unwrap(),
    };
    let everything = fixtures::window(0, 1_000);
    for user in &world.users {
        description.users.push(storage.user(user.id).await.unwrap());
        let by_username = storage
            .user_by_username(&user.username.to_uppercase())
            .await
            .unwrap();
        description.users_by_username.push(by_username);
    }
    for project in &world.projects {
        description
            .projects
            .push(storage.project(project.id).await.unwrap());
        let by_full_path = storage
            .project_by_full_path(&project.path_with_namespace())
            .await
            .unwrap();
        description.projects_by_full_path.push(by_full_path);
        for user in &world.users {
            let access_level = storage.access_level(project.id, user.id).await.unwrap();
            description.access_levels.push(access_level);
        }
        let agent_page = storage.agents_page(project.id, everything).await.unwrap();
        description.agent_pages.push(agent_page);
        let audit_page = storage
            .audit_events_page(AuditScope::Project(project.id), everything)
            .await
            .unwrap();
        description.audit_pages.push(audit_page);
    }
    let instance_page = storage
        .audit_events_page(AuditScope::Instance, everything)
        .await
        .unwrap();
    description.audit_pages.push(instance_page);
    for handle in &world.personal_access_token_handles {
        let credential = storage
            .personal_access_token_by_handle(handle)
            .await
            .unwrap()
            .map(|credential| (credential.token, credential.user, credential.secret_hash));
        description.personal_access_tokens.push(credential);
    }
    for agent in &world.agents {
        description
            .agents
            .push(storage.agent(agent.project_id, agent.id).await.unwrap());
        let token_set = storage
            .agent_token_set(agent.project_id, agent.id)
            .await
            .unwrap()
            .map(|token_set| {
                (
                    sorted(token_set.active()),
                    sorted(token_set.revoked()),
                    token_set.expiries().clone(),
                    token_set.retiring_deadlines().clone(),
                )
            });
        description.token_sets.push(token_set);
        // Every token, revoked ones with their revocation details, not just the active ones.
        let active_agent_tokens = storage
            .all_agent_tokens(agent.project_id, agent.id)
            .await
            .unwrap()
            .map(|mut tokens| {
                tokens.sort_by_key(|token| token.id);
                tokens
            });
        description.active_agent_tokens.push(active_agent_tokens);
        let url_configurations = storage
            .url_configurations(agent.project_id, agent.id)
            .await
            .unwrap();
        description
            .url_configurations_by_agent
            .push(url_configurations);
    }
    for (token, handle) in &world.agent_tokens {
        let stored = storage
            .agent_token(token.project_id, token.agent_id, token.id)
            .await
            .unwrap();
        description.agent_tokens.push(stored);
        let credential = storage
            .agent_token_by_handle(handle)
            .await
            .unwrap()
            .map(|credential| (credential.token, credential.secret_hash));
        description.agent_tokens_by_handle.push(credential);
    }
    for config in &world.url_configurations {
        let stored = storage
            .url_configuration(config.project_id, config.agent_id, config.id)
            .await
            .unwrap();
        description.url_configurations.push(stored);
    }
    description
}

/// Every kind of id issued after a restore is above every id the source ever issued, deleted
/// records' included.
async fn ids_continue_past_every_issued_id(storage: &dyn Storage, world: &World) {
    let mut secrets = Secrets::seeded(8);
    let owner = &world.users[0];
    let app = &world.projects[0];
    let user = fixtures::user(storage, "after-restore").await;
    let project = fixtures::project(storage, owner, "after-restore").await;
    let agent = fixtures::agent(storage, app.id, "after-restore").await;
    let token = storage
        .create_agent_token(app.id, agent.id, secrets.agent_token(), 20, None)
        .await
        .unwrap();
    let config = storage
        .create_url_configuration(
            app.id,
            agent.id,
            fixtures::jwt_url_configuration(),
            20,
            None,
        )
        .await
        .unwrap();
    let event = storage
        .record_audit_event(fixtures::standalone_event(AuditScope::Instance, 3), 20)
        .await
        .unwrap();

    let max_user_id = world.users.iter().map(|user| user.id).max().unwrap();
    let max_project_id = world
        .projects
        .iter()
        .map(|project| project.id)
        .max()
        .unwrap();
    let max_agent_id = world.agents.iter().map(|agent| agent.id).max().unwrap();
    let max_token_id = world
        .agent_tokens
        .iter()
        .map(|(token, _)| token.id)
        .max()
        .unwrap();
    let max_config_id = world
        .url_configurations
        .iter()
        .map(|config| config.id)
        .max()
        .unwrap();
    assert!(user.id > max_user_id, "{user:?}");
    assert!(project.id > max_project_id, "{project:?}");
    assert!(agent.id > max_agent_id, "{agent:?}");
    assert!(token.id > max_token_id, "{token:?}");
    assert!(config.id > max_config_id, "{config:?}");
    assert!(event.id > world.last_audit_event_id, "{event:?}");
}

fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

pub(crate) async fn the_key_fingerprint_is_recorded_once_and_travels_with_a_snapshot(
    storage: &dyn Storage,
    empty: &dyn Storage,
) {
    let first = storage.record_key_fingerprint("0123abcd").await.unwrap();
    let second = storage.record_key_fingerprint("ffffffff").await.unwrap();
    populate(storage).await;

    let snapshot = storage.snapshot().await.unwrap();
    empty.restore(snapshot).await.unwrap();
    let restored = empty.record_key_fingerprint("ffffffff").await.unwrap();

    assert_eq!(first, "0123abcd");
    assert_eq!(second, "0123abcd", "the first fingerprint recorded stays");
    assert_eq!(
        restored, "0123abcd",
        "a restore brings the fingerprint along"
    );
}
