//! Tests of the PostgreSQL backend against a real server. They run only when
//! `AGENTREG_TEST_DATABASE_URL` names an administrator connection (for example
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test creates a database of its own and
//! drops it at the end.

use super::*;
use crate::dataset::sample;
use crate::embedded::SledStorage;
use crate::hashing::SecretHasher;
use crate::port::{Invalidation, NewPersonalAccessToken, RevokeAgentToken};
use crate::records::DecodeError;
use agentreg_domain::access::{ExpiryDate, Scope};
use agentreg_domain::tokens::{TokenKind, generate_token};
use futures::StreamExt as _;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::sync::Arc;

/// A database created for one test.
struct TestDatabase {
    admin: PostgresOptions,
    name: String,
    options: PostgresOptions,
}

impl TestDatabase {
    /// A fresh, empty database, or `None` when no server is configured.
    async fn create() -> Option<TestDatabase> {
        let admin_url = std::env::var("AGENTREG_TEST_DATABASE_URL").ok()?;
        let admin = options(admin_url.clone());
        let name = format!("agentreg_test_{:016x}", rand::random::<u64>());
        let client = admin_client(&admin).await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let (base, query) = match admin_url.split_once('?') {
            Some((base, query)) => (base.to_owned(), format!("?{query}")),
            None => (admin_url.clone(), String::new()),
        };
        let (server, _) = base.rsplit_once('/').unwrap();
        let options = options(format!("{server}/{name}{query}"));
        Some(TestDatabase {
            admin,
            name,
            options,
        })
    }

    async fn connect(&self) -> PostgresStorage {
        PostgresStorage::connect(self.options.clone())
            .await
            .unwrap()
    }

    async fn drop_database(self) {
        let client = admin_client(&self.admin).await;
        client
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .await
            .unwrap();
    }
}

fn options(url: String) -> PostgresOptions {
    PostgresOptions {
        url,
        password: None,
        pool_size: 8,
        statement_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
    }
}

/// A connection for creating and dropping databases. Those wait on the disk, which can take
/// long on a busy machine, so this connection has no statement timeout.
async fn admin_client(admin: &PostgresOptions) -> tokio_postgres::Client {
    let settings = tls::settings(admin).await.unwrap();
    let client = connect_one(&settings).await.unwrap();
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .unwrap();
    client
}

async fn project(storage: &PostgresStorage) -> (UserId, ProjectId) {
    let identity = UserIdentity::parse("owner", "Owner", "owner@example.com").unwrap();
    let user = storage.create_user(identity, false, 1).await.unwrap();
    let naming = ProjectNaming::parse(Some("app"), None).unwrap();
    let project = storage
        .create_project(user.id, naming, None, 2)
        .await
        .unwrap();
    (user.id, project.id)
}

async fn agent(storage: &PostgresStorage, project_id: ProjectId, name: &str) -> Agent {
    storage
        .create_agent(project_id, AgentName::parse(name).unwrap(), None, 3, None)
        .await
        .unwrap()
}

fn new_token(seed: u64) -> NewAgentToken {
    let generated = generate_token(TokenKind::Agent, &mut StdRng::seed_from_u64(seed));
    NewAgentToken {
        name: agentreg_domain::names::TokenName::parse("t").unwrap(),
        description: None,
        handle: generated.handle,
        secret_hash: SecretHasher::insecure_for_tests()
            .hash(&generated.plaintext)
            .unwrap(),
        created_by_user_id: None,
        expires_at_ms: None,
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_each_version_once() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let runs: Vec<_> = (0..10)
        .map(|_| {
            let options = database.options.clone();
            tokio::spawn(async move { migrate(&options).await.unwrap() })
        })
        .collect();

    let mut applied = Vec::new();
    for run in runs {
        applied.extend(run.await.unwrap());
    }

    assert_eq!(applied, migrations::versions());
    assert_eq!(migrate(&database.options).await.unwrap(), Vec::<u32>::new());
    let storage = database.connect().await;
    let client = storage.client().await.unwrap();
    let rows = client
        .query("SELECT version FROM agentreg_schema_migrations", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), migrations::versions().len());
    drop(client);
    drop(storage);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_token_creates_leave_exactly_two_active() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let storage = Arc::new(database.connect().await);
    let (_, project_id) = project(&storage).await;
    let agent = agent(&storage, project_id, "a").await;

    let creates: Vec<_> = (0..50)
        .map(|seed| {
            let storage = Arc::clone(&storage);
            let token = new_token(seed);
            tokio::spawn(async move {
                storage
                    .create_agent_token(project_id, agent.id, token, 4, None)
                    .await
            })
        })
        .collect();
    let mut n_created = 0;
    let mut n_refused = 0;
    for create in creates {
        match create.await.unwrap() {
            Ok(_) => n_created += 1,
            Err(CreateAgentTokenError::LimitReached(_)) => n_refused += 1,
            Err(error) => panic!("unexpected error: {error:?}"),
        }
    }

    assert_eq!((n_created, n_refused), (2, 48));
    let active = storage
        .active_agent_tokens(project_id, agent.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(active.len(), 2);
    assert_eq!(storage.counts().await.unwrap().active_agent_tokens, 2);
    drop(storage);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_registrations_of_one_name_create_one_agent() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let storage = Arc::new(database.connect().await);
    let (_, project_id) = project(&storage).await;

    let creates: Vec<_> = (0..50)
        .map(|_| {
            let storage = Arc::clone(&storage);
            tokio::spawn(async move {
                let name = AgentName::parse("same").unwrap();
                storage.create_agent(project_id, name, None, 1, None).await
            })
        })
        .collect();
    let mut n_created = 0;
    for create in creates {
        match create.await.unwrap() {
            Ok(_) => n_created += 1,
            Err(CreateAgentError::NameTaken) => {}
            Err(error) => panic!("unexpected error: {error:?}"),
        }
    }

    assert_eq!(n_created, 1);
    let window = PageWindow {
        offset: 0,
        limit: 100,
    };
    assert_eq!(
        storage.agents_page(project_id, window).await.unwrap().total,
        1
    );
    drop(storage);
    database.drop_database().await;
}

#[tokio::test]
async fn a_stored_scope_agentreg_does_not_know_is_a_decode_error_not_dropped() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let storage = database.connect().await;
    let (user_id, _) = project(&storage).await;
    let generated = generate_token(TokenKind::PersonalAccess, &mut StdRng::seed_from_u64(3));
    let new = NewPersonalAccessToken {
        user_id,
        name: "ci".to_owned(),
        scopes: vec![Scope::Api],
        expires_at: Some(ExpiryDate::parse("2030-01-01").unwrap()),
        handle: generated.handle.clone(),
        secret_hash: SecretHasher::insecure_for_tests()
            .hash(&generated.plaintext)
            .unwrap(),
    };
    storage.create_personal_access_token(new, 3).await.unwrap();
    let client = storage.client().await.unwrap();
    client
        .batch_execute(
            "UPDATE personal_access_tokens SET scopes = ARRAY['api', 'write_repository']",
        )
        .await
        .unwrap();

    let found = storage
        .personal_access_token_by_handle(&generated.handle)
        .await;

    assert!(matches!(
        found,
        Err(StoreError::Corrupt {
            source: DecodeError::UnknownScope(_),
            ..
        })
    ));
    drop((client, storage));
    database.drop_database().await;
}

#[tokio::test]
async fn deleting_an_agent_cascades_to_its_tokens_and_configuration() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let storage = database.connect().await;
    let (_, project_id) = project(&storage).await;
    let agent = agent(&storage, project_id, "a").await;
    let revoked = storage
        .create_agent_token(project_id, agent.id, new_token(1), 4, None)
        .await
        .unwrap();
    storage
        .revoke_agent_token(
            project_id,
            agent.id,
            revoked.id,
            RevokeAgentToken::default(),
            5,
            None,
        )
        .await
        .unwrap();
    let handle = generate_token(TokenKind::Agent, &mut StdRng::seed_from_u64(2)).handle;
    let active = storage
        .create_agent_token(project_id, agent.id, new_token(2), 6, None)
        .await
        .unwrap();
    storage
        .create_url_configuration(project_id, agent.id, jwt(), 7, None)
        .await
        .unwrap();

    let deleted = storage
        .delete_agent(project_id, agent.id, None, 8, None)
        .await
        .unwrap();

    assert_eq!(deleted.token_ids, vec![active.id, revoked.id]);
    assert_eq!(deleted.agent.updated_at_ms, 7);
    assert!(deleted.agent.is_receptive());
    assert!(
        storage
            .agent_token_by_handle(&handle)
            .await
            .unwrap()
            .is_none()
    );
    assert!(storage.all_url_configurations().await.unwrap().is_empty());
    assert_eq!(storage.counts().await.unwrap(), Counts::default());
    storage
        .record_agent_token_use(vec![(active.id, 9)])
        .await
        .unwrap();
    assert!(matches!(
        storage
            .delete_agent(project_id, agent.id, None, 9, None)
            .await,
        Err(DeleteAgentError::NotFound)
    ));
    drop(storage);
    database.drop_database().await;
}

#[tokio::test]
async fn ids_are_monotonic_and_never_reused() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let storage = database.connect().await;
    let (_, project_id) = project(&storage).await;
    let first = agent(&storage, project_id, "a").await;
    storage
        .delete_agent(project_id, first.id, None, 4, None)
        .await
        .unwrap();
    let second = storage
        .create_agent(project_id, AgentName::parse("b").unwrap(), None, 5, None)
        .await
        .unwrap();
    let duplicate = storage
        .create_agent(project_id, AgentName::parse("b").unwrap(), None, 6, None)
        .await;

    let again = agent(&storage, project_id, "a").await;

    assert!(matches!(duplicate, Err(CreateAgentError::NameTaken)));
    assert!(second.id > first.id);
    assert!(
        again.id.get() > second.id.get() + 1,
        "the refused create left a gap"
    );
    drop(storage);
    let reconnected = database.connect().await;
    let later = agent(&reconnected, project_id, "c").await;
    assert!(later.id > again.id);
    drop(reconnected);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_another_replica_within_a_second() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let writer = database.connect().await;
    let reader = database.connect().await;
    let mut feed = reader.invalidations().unwrap();
    assert!(reader.invalidations().is_none());
    let (_, project_id) = project(&writer).await;
    let agent = agent(&writer, project_id, "a").await;
    let first = writer
        .create_agent_token(project_id, agent.id, new_token(1), 4, None)
        .await
        .unwrap();
    let second = writer
        .create_agent_token(project_id, agent.id, new_token(2), 4, None)
        .await
        .unwrap();

    writer
        .revoke_agent_token(
            project_id,
            agent.id,
            first.id,
            RevokeAgentToken::default(),
            5,
            None,
        )
        .await
        .unwrap();
    let revoked = tokio::time::timeout(Duration::from_secs(1), feed.recv()).await;
    writer
        .delete_agent(project_id, agent.id, None, 6, None)
        .await
        .unwrap();
    let deleted = tokio::time::timeout(Duration::from_secs(1), feed.recv()).await;

    assert_eq!(
        revoked.unwrap(),
        Some(Invalidation::AgentTokens(vec![first.id]))
    );
    assert_eq!(
        deleted.unwrap(),
        Some(Invalidation::AgentTokens(vec![second.id]))
    );
    drop(writer);
    drop(reader);
    database.drop_database().await;
}

#[tokio::test]
async fn a_refused_change_notifies_nothing() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let storage = database.connect().await;
    let mut feed = storage.invalidations().unwrap();
    let (_, project_id) = project(&storage).await;
    let agent = agent(&storage, project_id, "a").await;
    storage
        .create_agent_token(project_id, agent.id, new_token(1), 4, None)
        .await
        .unwrap();
    let stale = UnmodifiedSince {
        latest_allowed_ms: 0,
    };

    let refused = storage
        .delete_agent(project_id, agent.id, Some(stale), 5, None)
        .await;

    assert!(matches!(refused, Err(DeleteAgentError::PreconditionFailed)));
    let heard = tokio::time::timeout(Duration::from_millis(300), feed.recv()).await;
    assert!(heard.is_err(), "heard {heard:?}");
    drop(storage);
    database.drop_database().await;
}

#[tokio::test]
async fn last_use_never_moves_backwards() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let storage = database.connect().await;
    let (_, project_id) = project(&storage).await;
    let agent = agent(&storage, project_id, "a").await;
    let token = storage
        .create_agent_token(project_id, agent.id, new_token(1), 4, None)
        .await
        .unwrap();

    storage
        .record_agent_token_use(vec![(token.id, 50), (token.id, 40)])
        .await
        .unwrap();
    storage
        .record_agent_token_use(vec![(token.id, 30)])
        .await
        .unwrap();

    let stored = storage
        .agent_token(project_id, agent.id, token.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.last_used_at_ms, Some(50));
    drop(storage);
    database.drop_database().await;
}

#[tokio::test]
async fn a_postgres_snapshot_restores_into_another_database_identically() {
    let Some(source) = TestDatabase::create().await else {
        return;
    };
    let Some(target) = TestDatabase::create().await else {
        return;
    };
    let original = source.connect().await;
    sample::populate(&original).await;
    let snapshot = original.snapshot().await.unwrap();
    let restored = target.connect().await;

    let summary = restored.restore(snapshot.clone()).await.unwrap();

    assert_eq!(summary.n_trees, schema::ALL_TREES.len());
    assert_eq!(restored.snapshot().await.unwrap(), snapshot);
    let (_, project) = restored
        .project_by_full_path("OWNER/app")
        .await
        .unwrap()
        .map(|project| ((), project))
        .unwrap();
    let next = agent(&restored, project.id, "after-restore").await;
    let before = original
        .agents_page(
            project.id,
            PageWindow {
                offset: 0,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert!(before.items.iter().all(|agent| agent.id < next.id));
    assert!(next.id.get() > 4, "the deleted agent's id is not reused");
    drop(original);
    drop(restored);
    source.drop_database().await;
    target.drop_database().await;
}

#[tokio::test]
async fn a_sled_snapshot_restores_into_postgres_and_back() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let sled = SledStorage::temporary().unwrap();
    sample::populate(&sled).await;
    let from_sled = sled.snapshot().await.unwrap();
    let storage = database.connect().await;

    storage.restore(from_sled.clone()).await.unwrap();

    let from_postgres = storage.snapshot().await.unwrap();
    // sled keeps a zero agent count for a project whose agents were all deleted; PostgreSQL
    // counts rows, so only that entry may differ.
    let without_zero_counts = |bytes: &[u8]| {
        let trees = crate::backup::parse(bytes).unwrap();
        let mut dataset = crate::dataset::Dataset::from_trees(&trees).unwrap();
        dataset.counted_projects.clear();
        dataset.to_trees()
    };
    assert_eq!(
        without_zero_counts(&from_postgres),
        without_zero_counts(&from_sled)
    );
    let restored_in_sled = SledStorage::temporary().unwrap();
    restored_in_sled.restore(from_postgres).await.unwrap();
    assert_eq!(
        restored_in_sled.counts().await.unwrap(),
        sled.counts().await.unwrap()
    );
    drop(storage);
    database.drop_database().await;
}

#[tokio::test]
async fn restore_refuses_a_database_that_holds_data() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let storage = database.connect().await;
    let snapshot = storage.snapshot().await.unwrap();
    project(&storage).await;

    let refused = storage.restore(snapshot).await;

    assert!(matches!(refused, Err(RestoreError::TargetNotEmpty(_))));
    drop(storage);
    database.drop_database().await;
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_quickly() {
    if std::env::var("AGENTREG_TEST_DATABASE_URL").is_err() {
        return;
    }
    let mut unreachable = options("postgres://postgres@127.0.0.1:1/postgres".to_owned());
    unreachable.connect_timeout = Duration::from_millis(500);
    let started = std::time::Instant::now();

    let refused = PostgresStorage::connect(unreachable).await;

    assert!(matches!(refused, Err(ConnectError::Unavailable(_))));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_statement_past_the_timeout_is_unavailable() {
    let Some(mut database) = TestDatabase::create().await else {
        return;
    };
    database.options.statement_timeout = Duration::from_millis(100);
    let storage = database.connect().await;
    let client = storage.client().await.unwrap();

    let cancelled = client.simple_query("SELECT pg_sleep(2)").await.map_err(pg);

    assert!(matches!(cancelled, Err(StoreError::Unavailable(_))));
    storage.ping().await.unwrap();
    drop(client);
    drop(storage);
    database.drop_database().await;
}

#[tokio::test]
async fn usernames_emails_and_paths_are_unique_case_insensitively() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let storage = database.connect().await;
    let (owner_id, _) = project(&storage).await;

    let same_name = UserIdentity::parse("OWNER", "x", "other@example.com").unwrap();
    let same_email = UserIdentity::parse("other", "x", "OWNER@example.com").unwrap();
    let same_path = ProjectNaming::parse(Some("APP"), Some("App")).unwrap();

    assert!(matches!(
        storage.create_user(same_name, false, 1).await,
        Err(CreateUserError::UsernameTaken)
    ));
    assert!(matches!(
        storage.create_user(same_email, false, 1).await,
        Err(CreateUserError::EmailTaken)
    ));
    assert!(matches!(
        storage.create_project(owner_id, same_path, None, 1).await,
        Err(CreateProjectError::PathTaken)
    ));
    assert!(storage.user_by_username("Owner").await.unwrap().is_some());
    drop(storage);
    database.drop_database().await;
}

#[tokio::test]
async fn agents_are_listed_in_byte_order() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let storage = database.connect().await;
    let (_, project_id) = project(&storage).await;
    for name in ["b", "a1", "a", "a-1", "a0"] {
        agent(&storage, project_id, name).await;
    }

    let page = storage
        .agents_page(
            project_id,
            PageWindow {
                offset: 0,
                limit: 10,
            },
        )
        .await
        .unwrap();

    let names: Vec<_> = page.items.iter().map(|agent| agent.name.as_str()).collect();
    // A linguistic collation would ignore the dash and put "a-1" after "a0".
    assert_eq!(names, vec!["a", "a-1", "a0", "a1", "b"]);
    drop(storage);
    database.drop_database().await;
}

/// Checks the invariant of migration 0005 against the agents themselves: the project's buckets
/// partition its names, and each bucket's count plus its range's pending changes is the number
/// of agents in its range. Returns the number of buckets.
async fn assert_buckets_count_the_agents(
    storage: &PostgresStorage,
    project_id: ProjectId,
) -> usize {
    let client = storage.client().await.unwrap();
    let buckets = client
        .query(
            "SELECT lower_name, upper_name, n_agents, \
                    (SELECT count(*) FROM agents a WHERE a.project_id = b.project_id \
                     AND a.name >= b.lower_name \
                     AND (b.upper_name IS NULL OR a.name < b.upper_name)), \
                    (SELECT coalesce(sum(c.delta), 0)::BIGINT FROM agent_name_changes c \
                     WHERE c.project_id = b.project_id AND c.name >= b.lower_name \
                     AND (b.upper_name IS NULL OR c.name < b.upper_name)) \
             FROM agent_name_buckets b WHERE project_id = $1 ORDER BY lower_name",
            &[&key(project_id.get())],
        )
        .await
        .unwrap();
    if let Some(first) = buckets.first() {
        assert_eq!(
            first.get::<_, String>(0),
            "",
            "the first bucket is below every name"
        );
    }
    for (idx, bucket) in buckets.iter().enumerate() {
        let upper: Option<String> = bucket.get(1);
        let next_lower: Option<String> = buckets.get(idx + 1).map(|next| next.get(0));
        assert_eq!(upper, next_lower, "bucket {idx} ends where the next starts");
        let (folded, actual, pending): (i64, i64, i64) =
            (bucket.get(2), bucket.get(3), bucket.get(4));
        assert_eq!(folded + pending, actual, "bucket {idx} counts its agents");
    }
    buckets.len()
}

/// Folds a project's pending changes, as a writer does now and then.
async fn fold(storage: &PostgresStorage, project_id: ProjectId) {
    let mut client = storage.client().await.unwrap();
    let transaction = client.transaction().await.unwrap();
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('agentreg.agent_name_buckets', $1))",
            &[&key(project_id.get())],
        )
        .await
        .unwrap();
    transaction
        .execute(
            "SELECT agent_name_buckets_fold($1)",
            &[&key(project_id.get())],
        )
        .await
        .unwrap();
    transaction.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn name_buckets_split_merge_and_count_exactly_under_concurrent_writers() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let storage = database.connect().await;
    let (_, project_id) = project(&storage).await;
    let mut names: Vec<String> = (0..2_000).map(|idx| format!("agent-{idx:05}")).collect();
    rand::seq::SliceRandom::shuffle(names.as_mut_slice(), &mut StdRng::seed_from_u64(5));

    // As many writers at once as the pool has connections, so that they contend in the
    // database rather than in the pool.
    let creates = names.iter().map(|name| {
        let name = AgentName::parse(name).unwrap();
        storage.create_agent(project_id, name, None, 3, None)
    });
    let mut agents: Vec<Agent> = futures::stream::iter(creates)
        .buffer_unordered(8)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_buckets_count_the_agents(&storage, project_id).await;
    fold(&storage, project_id).await;
    let n_buckets_full = assert_buckets_count_the_agents(&storage, project_id).await;
    // Seven in eight of the first 1,600 names go, concurrently: buckets shrink and merge.
    agents.sort_by(|a, b| a.name.cmp(&b.name));
    let deletes = agents
        .iter()
        .take(1_600)
        .enumerate()
        .filter(|(idx, _)| idx % 8 != 0)
        .map(|(_, agent)| storage.delete_agent(project_id, agent.id, None, 4, None));
    let deleted: Vec<_> = futures::stream::iter(deletes)
        .buffer_unordered(8)
        .collect()
        .await;
    for outcome in &deleted {
        assert!(outcome.is_ok(), "{outcome:?}");
    }
    assert_buckets_count_the_agents(&storage, project_id).await;
    fold(&storage, project_id).await;
    let n_buckets_after = assert_buckets_count_the_agents(&storage, project_id).await;

    assert!(n_buckets_full >= 2_000 / 512, "{n_buckets_full} buckets");
    assert!(
        n_buckets_full <= 2_000 / 256 + 1,
        "{n_buckets_full} buckets after a fold"
    );
    assert!(
        n_buckets_after < n_buckets_full,
        "{n_buckets_after} buckets"
    );
    drop(storage);
    database.drop_database().await;
}

#[tokio::test]
async fn migrating_to_name_buckets_counts_the_agents_already_registered() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let settings = tls::settings(&database.options).await.unwrap();
    let mut client = connect_one(&settings).await.unwrap();
    migrations::apply_through(&mut client, 4).await.unwrap();
    client
        .batch_execute(
            "INSERT INTO agents (project_id, name, created_at_ms, updated_at_ms) \
             SELECT 7, 'agent-' || lpad(n::text, 5, '0'), 1, 1 FROM generate_series(1, 700) n; \
             INSERT INTO agents (project_id, name, created_at_ms, updated_at_ms) \
             VALUES (8, 'only', 1, 1)",
        )
        .await
        .unwrap();
    drop(client);

    let storage = database.connect().await;
    let page = storage
        .agents_page(
            ProjectId::new(7),
            PageWindow {
                offset: 690,
                limit: 20,
            },
        )
        .await
        .unwrap();

    assert_eq!(
        assert_buckets_count_the_agents(&storage, ProjectId::new(7)).await,
        3
    );
    assert_eq!(
        assert_buckets_count_the_agents(&storage, ProjectId::new(8)).await,
        1
    );
    assert_eq!(page.total, 700);
    assert_eq!(page.items.len(), 10);
    assert_eq!(page.items[0].name, "agent-00691");
    drop(storage);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_interrupt_the_feed_and_both_recover() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let storage = database.connect().await;
    let mut feed = storage.invalidations().unwrap();
    storage.ping().await.unwrap();
    let admin = admin_client(&database.admin).await;

    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&database.name],
        )
        .await
        .unwrap();

    let interrupted = tokio::time::timeout(Duration::from_secs(5), feed.recv()).await;
    assert_eq!(interrupted.unwrap(), Some(Invalidation::Interrupted));
    let resumed = tokio::time::timeout(Duration::from_secs(5), feed.recv()).await;
    assert_eq!(resumed.unwrap(), Some(Invalidation::Resumed));
    // The pooled connection that was killed fails once (as unavailable) and is replaced.
    let first = storage.ping().await;
    assert!(
        matches!(first, Ok(()) | Err(StoreError::Unavailable(_))),
        "{first:?}"
    );
    storage.ping().await.unwrap();
    assert!(!storage.has_users().await.unwrap());
    drop(admin);
    drop(storage);
    database.drop_database().await;
}
