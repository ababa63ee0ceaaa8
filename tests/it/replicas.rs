//! Many replicas, one truth: two or three application instances on one PostgreSQL database,
//! used interchangeably. These run only when `AGENTREG_TEST_DATABASE_URL` names a PostgreSQL
//! server; otherwise each says so once and passes.

use crate::helpers::{
    ROOT_TOKEN, TestApp, backup_when_unlocked, create_database, grpc_error, postgres_admin_url,
    postgres_settings,
};
use agentreg::grpc::pb;
use base64::Engine as _;
use futures::FutureExt as _;
use reqwest::StatusCode;
use serde_json::json;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

/// The admin URL, or `None` after saying once that these tests were skipped.
fn postgres() -> Option<String> {
    static SAID: std::sync::Once = std::sync::Once::new();
    let url = postgres_admin_url();
    if url.is_none() {
        SAID.call_once(|| {
            // Written to the process's stderr directly, so that it shows despite test capture.
            let _ = writeln!(
                std::io::stderr(),
                "note: the PostgreSQL suites (storage contract, end-to-end, replicas) were not run; set AGENTREG_TEST_DATABASE_URL=postgres://... to run them"
            );
        });
    }
    url
}

/// Instances sharing one database and one instance key, each with its own data directory.
struct Replicas {
    apps: Vec<TestApp>,
    _dir: tempfile::TempDir,
}

impl Replicas {
    async fn start(database_url: &str, count: usize) -> Replicas {
        let dir = tempfile::tempdir().unwrap();
        let key_file = shared_key_file(dir.path());
        let starts = (0..count).map(|index| {
            let data_dir = dir.path().join(format!("replica-{index}"));
            let database_url = database_url.to_owned();
            let key_file = key_file.clone();
            async move {
                TestApp::start(&data_dir, move |settings| {
                    settings.database = Some(postgres_settings(database_url));
                    settings.encryption_key_file = Some(key_file);
                })
                .await
            }
        });
        let apps = futures::future::join_all(starts).await;
        Replicas { apps, _dir: dir }
    }
}

fn shared_key_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("encryption_key");
    std::fs::write(
        &path,
        base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_created_on_one_replica_is_read_on_another() {
    let Some(admin_url) = postgres() else { return };
    let database_url = create_database(&admin_url).await;
    let replicas = Replicas::start(&database_url, 2).await;
    let (a, b) = (&replicas.apps[0], &replicas.apps[1]);
    let project_id = a.project(ROOT_TOKEN, "shared").await;
    let agent_id = a.agent(project_id, "agent-1").await;

    let (status, agent) = b
        .get(
            &format!("/projects/{project_id}/cluster_agents/{agent_id}"),
            ROOT_TOKEN,
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{agent}");
    assert_eq!(agent["name"], "agent-1");
    let found = b
        .grpc_agents(ROOT_TOKEN)
        .get_agent(pb::GetAgentRequest {
            project: project_id.to_string(),
            agent_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.name, "agent-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_revoked_on_one_replica_is_refused_on_another_within_a_second() {
    let Some(admin_url) = postgres() else { return };
    let database_url = create_database(&admin_url).await;
    let replicas = Replicas::start(&database_url, 2).await;
    let (a, b) = (&replicas.apps[0], &replicas.apps[1]);
    let project_id = a.project(ROOT_TOKEN, "shared").await;
    let agent_id = a.agent(project_id, "agent-1").await;
    let (token_id, secret) = a.agent_token(project_id, agent_id, "t").await;
    // B verifies the token once, so that it sits in B's cache.
    let (status, _) = b.agent_info(&secret).await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = a
        .delete(
            &format!("/projects/{project_id}/cluster_agents/{agent_id}/tokens/{token_id}"),
            ROOT_TOKEN,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let revoked_at = Instant::now();
    let refused_after = loop {
        let (status, _) = b.agent_info(&secret).await;
        if status == StatusCode::UNAUTHORIZED {
            break revoked_at.elapsed();
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(3),
            "replica B still accepts a token revoked on A"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    let _ = writeln!(
        std::io::stderr(),
        "revocation reached the other replica in {} ms",
        refused_after.as_millis()
    );
    assert!(refused_after < Duration::from_secs(1), "{refused_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_on_one_replica_completes_on_another_and_every_cache_drops_the_old_token() {
    let Some(admin_url) = postgres() else { return };
    let database_url = create_database(&admin_url).await;
    let replicas = Replicas::start(&database_url, 3).await;
    let (a, b, c) = (&replicas.apps[0], &replicas.apps[1], &replicas.apps[2]);
    let project_id = a.project(ROOT_TOKEN, "shared").await;
    let agent_id = a.agent(project_id, "agent-1").await;
    let (old_id, old_secret) = a.agent_token(project_id, agent_id, "t").await;
    // Every replica verifies the old token once, so that it sits in every cache.
    for replica in [a, b, c] {
        let (status, _) = replica.agent_info(&old_secret).await;
        assert_eq!(status, StatusCode::OK);
    }
    let tokens_path = format!("/projects/{project_id}/cluster_agents/{agent_id}/tokens");

    // A rotates; the old token still works everywhere during the overlap.
    let (status, successor) = a
        .post(
            &format!("{tokens_path}/{old_id}/rotate"),
            ROOT_TOKEN,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{successor}");
    let successor_secret = successor["token"].as_str().unwrap().to_owned();
    for replica in [a, b, c] {
        let (status, _) = replica.agent_info(&old_secret).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the old token works during the overlap"
        );
    }
    // B sees the successor's first use; A and C must stop accepting the old token.
    let (status, _) = b.agent_info(&successor_secret).await;
    assert_eq!(status, StatusCode::OK);
    let first_used = Instant::now();
    for replica in [a, c, b] {
        loop {
            let (status, _) = replica.agent_info(&old_secret).await;
            if status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(
                first_used.elapsed() < Duration::from_secs(3),
                "a replica still accepts the rotated token"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    let (_, revoked) = c
        .get(&format!("{tokens_path}?status=revoked"), ROOT_TOKEN)
        .await;
    assert_eq!(revoked[0]["id"], old_id, "{revoked}");
    assert_eq!(revoked[0]["revoked_reason"], "rotated");
    let (status, _) = c.agent_info(&successor_secret).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        first_used.elapsed() < Duration::from_secs(1),
        "{:?}",
        first_used.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_personal_access_token_revoked_by_value_on_one_replica_is_refused_on_another() {
    let Some(admin_url) = postgres() else { return };
    let database_url = create_database(&admin_url).await;
    let replicas = Replicas::start(&database_url, 2).await;
    let (a, b) = (&replicas.apps[0], &replicas.apps[1]);
    let (_, user_token) = a.user_with_scopes("leaky", &["api"]).await;
    // B verifies the token once, so that it sits in B's cache.
    let (status, _) = b.get("/user", &user_token).await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = a
        .call(
            reqwest::Method::DELETE,
            "/admin/token",
            Some(ROOT_TOKEN),
            Some(json!({"token": user_token})),
        )
        .await;

    assert_eq!(status, StatusCode::NO_CONTENT);
    let revoked_at = Instant::now();
    loop {
        let (status, _) = b.get("/user", &user_token).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(3),
            "replica B still accepts a personal access token revoked on A"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_deleted_on_one_replica_stops_its_tokens_on_another() {
    let Some(admin_url) = postgres() else { return };
    let database_url = create_database(&admin_url).await;
    let replicas = Replicas::start(&database_url, 2).await;
    let (a, b) = (&replicas.apps[0], &replicas.apps[1]);
    let project_id = a.project(ROOT_TOKEN, "shared").await;
    let agent_id = a.agent(project_id, "agent-1").await;
    let (_, secret) = a.agent_token(project_id, agent_id, "t").await;
    assert_eq!(b.agent_info(&secret).await.0, StatusCode::OK);

    let (status, _) = a
        .delete(
            &format!("/projects/{project_id}/cluster_agents/{agent_id}"),
            ROOT_TOKEN,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if b.agent_info(&secret).await.0 == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B still accepts a deleted agent's token"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_token_creates_across_replicas_leave_exactly_two_active() {
    let Some(admin_url) = postgres() else { return };
    let database_url = create_database(&admin_url).await;
    let replicas = Replicas::start(&database_url, 3).await;
    let project_id = replicas.apps[0].project(ROOT_TOKEN, "shared").await;
    let agent_id = replicas.apps[0].agent(project_id, "agent-1").await;
    let path = format!("/projects/{project_id}/cluster_agents/{agent_id}/tokens");

    let creates = (0..50).map(|index| {
        let app = &replicas.apps[index % replicas.apps.len()];
        let path = path.clone();
        async move {
            app.post(&path, ROOT_TOKEN, json!({"name": format!("t{index}")}))
                .await
        }
    });
    let results = futures::future::join_all(creates).await;

    let created = results
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 2, "{results:?}");
    for (status, body) in &results {
        if *status != StatusCode::CREATED {
            assert_eq!(*status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(
                body["message"],
                "400 Bad request - An agent can have only two active tokens at a time"
            );
        }
    }
    for app in &replicas.apps {
        let (status, tokens) = app.get(&path, ROOT_TOKEN).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(tokens.as_array().unwrap().len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_registrations_of_one_name_across_replicas_create_one_agent() {
    let Some(admin_url) = postgres() else { return };
    let database_url = create_database(&admin_url).await;
    let replicas = Replicas::start(&database_url, 3).await;
    let project_id = replicas.apps[0].project(ROOT_TOKEN, "shared").await;
    let path = format!("/projects/{project_id}/cluster_agents");

    let registrations = (0..50).map(|index| {
        let app = &replicas.apps[index % replicas.apps.len()];
        let path = path.clone();
        async move { app.post(&path, ROOT_TOKEN, json!({"name": "same"})).await }
    });
    let results = futures::future::join_all(registrations).await;

    let created = results
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{results:?}");
    for (status, body) in &results {
        if *status != StatusCode::CREATED {
            assert_eq!(*status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(
                body["message"],
                r#"400 Bad request - ["Name has already been taken"]"#
            );
        }
    }
    let (_, agents) = replicas.apps[1].get(&path, ROOT_TOKEN).await;
    assert_eq!(agents.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registrations_and_deletions_across_replicas_keep_every_page_exact() {
    let Some(admin_url) = postgres() else { return };
    let database_url = create_database(&admin_url).await;
    let replicas = Replicas::start(&database_url, 3).await;
    let project_id = replicas.apps[0].project(ROOT_TOKEN, "shared").await;
    let path = format!("/projects/{project_id}/cluster_agents");
    let register = |index: usize| {
        let app = &replicas.apps[index % replicas.apps.len()];
        let path = path.clone();
        async move {
            let (status, body) = app
                .post(
                    &path,
                    ROOT_TOKEN,
                    json!({"name": format!("agent-{index:04}")}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body["id"].as_i64().unwrap()
        }
    };
    // More than two PostgreSQL buckets (split at 512 names), written through every replica.
    let mut ids = Vec::new();
    for chunk in (0..1_200).step_by(2).collect::<Vec<_>>().chunks(24) {
        ids.extend(futures::future::join_all(chunk.iter().map(|index| register(*index))).await);
    }

    // Odd names arrive while every third even one goes, all at once across the replicas.
    let creates = (1..1_200).step_by(2).map(|index| register(index).boxed());
    let deletes = ids.iter().step_by(3).enumerate().map(|(index, agent_id)| {
        let app = &replicas.apps[index % replicas.apps.len()];
        let agent_path = format!("{path}/{agent_id}");
        async move {
            let (status, _) = app.delete(&agent_path, ROOT_TOKEN).await;
            assert_eq!(status, StatusCode::NO_CONTENT);
            0
        }
        .boxed()
    });
    let mut deletes = deletes.fuse();
    let mut writes = Vec::new();
    for create in creates {
        writes.push(create);
        writes.extend(deletes.next());
    }
    for chunk in writes.chunks_mut(24) {
        futures::future::join_all(chunk.iter_mut()).await;
    }

    let mut expected: Vec<String> = (0..1_200)
        .filter(|index| index % 2 == 1 || (index / 2) % 3 != 0)
        .map(|index| format!("agent-{index:04}"))
        .collect();
    expected.sort();
    for (page_idx, app) in (1..=9).zip(replicas.apps.iter().cycle()) {
        let (status, body) = app
            .get(&format!("{path}?page={page_idx}&per_page=100"), ROOT_TOKEN)
            .await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|agent| agent["name"].as_str().unwrap())
            .collect();
        let start = (page_idx - 1) * 100;
        let wanted: Vec<&str> = expected
            .iter()
            .skip(start)
            .take(100)
            .map(String::as_str)
            .collect();
        assert_eq!(names, wanted, "page {page_idx}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_together_migrate_once() {
    let Some(admin_url) = postgres() else { return };
    let database_url = create_database(&admin_url).await;

    let replicas = Replicas::start(&database_url, 4).await;

    for app in &replicas.apps {
        let (status, _) = app.get("/user", ROOT_TOKEN).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (client, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT version, count(*) FROM agentreg_schema_migrations GROUP BY version",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        let count: i64 = row.get(1);
        assert_eq!(count, 1, "a migration was recorded more than once");
    }
    let users: i64 = client
        .query_one("SELECT count(*) FROM users WHERE username = 'root'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 1, "root was bootstrapped more than once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_answers_503_and_unavailable_then_recovers() {
    let Some(admin_url) = postgres() else { return };
    let database_url = create_database(&admin_url).await;
    let proxy = Proxy::start(&database_url).await;
    let dir = tempfile::tempdir().unwrap();
    let proxied_url = proxy.url.clone();
    let app = TestApp::start(&dir.path().join("data"), move |settings| {
        let mut database = postgres_settings(proxied_url);
        database.statement_timeout = Duration::from_secs(1);
        settings.database = Some(database);
    })
    .await;
    let project_id = app.project(ROOT_TOKEN, "p").await;
    let agent_id = app.agent(project_id, "before").await;
    let agent_path = format!("/projects/{project_id}/cluster_agents/{agent_id}");

    proxy.cut();
    let started = Instant::now();
    let (status, body) = app
        .post(
            &format!("/projects/{project_id}/cluster_agents"),
            ROOT_TOKEN,
            json!({"name": "during"}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body, json!({"message": "503 Service Unavailable"}));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let (status, _) = app.get(&agent_path, ROOT_TOKEN).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (code, _) = grpc_error(
        app.grpc_agents(ROOT_TOKEN)
            .get_agent(pb::GetAgentRequest {
                project: project_id.to_string(),
                agent_id,
            })
            .await,
    );
    assert_eq!(code, tonic::Code::Unavailable);
    let readiness = app
        .http
        .get(format!("{}/-/readiness", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(readiness.status(), StatusCode::SERVICE_UNAVAILABLE);
    let liveness = app
        .http
        .get(format!("{}/-/liveness", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(liveness.status(), StatusCode::OK);
    wait_for_health(
        &app,
        tonic_health::pb::health_check_response::ServingStatus::NotServing,
    )
    .await;

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, agent) = app.get(&agent_path, ROOT_TOKEN).await;
        if status == StatusCode::OK {
            assert_eq!(agent["name"], "before");
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_health(
        &app,
        tonic_health::pb::health_check_response::ServingStatus::Serving,
    )
    .await;
    let (status, _) = app
        .post(
            &format!("/projects/{project_id}/cluster_agents"),
            ROOT_TOKEN,
            json!({"name": "after"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

async fn wait_for_health(
    app: &TestApp,
    wanted: tonic_health::pb::health_check_response::ServingStatus,
) {
    let mut client = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == wanted as i32 {
            return;
        }
        assert!(Instant::now() < deadline, "gRPC health stayed {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP forwarder in front of PostgreSQL that a test can cut and restore, to play an outage.
struct Proxy {
    url: String,
    up: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(database_url: &str) -> Proxy {
        let (prefix, rest) = database_url.split_once("://").unwrap();
        let (authority, path) = rest.split_once('/').unwrap();
        let (userinfo, target) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (format!("{userinfo}@"), host.to_owned()),
            None => (String::new(), authority.to_owned()),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accepting_up = up.clone();
        let accepted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accepting_up.load(Ordering::SeqCst) {
                    continue;
                }
                let target = target.clone();
                let forward = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                accepted.lock().unwrap().push(forward);
            }
        });
        Proxy {
            url: format!("{prefix}://{userinfo}{address}/{path}"),
            up,
            connections,
        }
    }

    /// Drops every connection and refuses new ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Registers an agent with a token and a JWT URL configuration; returns (project id, agent id,
/// token secret).
async fn populate(app: &TestApp) -> (i64, i64, String) {
    let project_id = app.project(ROOT_TOKEN, "moving").await;
    let agent_id = app.agent(project_id, "agent-1").await;
    let (_, secret) = app.agent_token(project_id, agent_id, "t").await;
    let (status, body) = app
        .post(
            &format!("/projects/{project_id}/cluster_agents/{agent_id}/url_configurations"),
            ROOT_TOKEN,
            json!({"url": "grpc://agent.example.com:443"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (project_id, agent_id, secret)
}

/// What a client can read of the populated records.
async fn readable_state(app: &TestApp, project_id: i64, agent_id: i64) -> Vec<serde_json::Value> {
    let mut state = Vec::new();
    for path in [
        format!("/projects/{project_id}/cluster_agents"),
        format!("/projects/{project_id}/cluster_agents/{agent_id}/tokens"),
        format!("/projects/{project_id}/cluster_agents/{agent_id}/url_configurations"),
        format!("/projects/{project_id}/audit_events"),
    ] {
        let (status, body) = app.get(&path, ROOT_TOKEN).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        state.push(body);
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sled_deployment_moves_to_postgres_and_back_by_backup_and_restore() {
    let Some(admin_url) = postgres() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key_file = shared_key_file(dir.path());
    let sled_dir = dir.path().join("sled");
    let sled_key = key_file.clone();
    let sled = TestApp::start(&sled_dir, move |settings| {
        settings.database = None;
        settings.encryption_key_file = Some(sled_key);
    })
    .await;
    let (project_id, agent_id, secret) = populate(&sled).await;
    let before = readable_state(&sled, project_id, agent_id).await;
    sled.stop().await;
    let snapshot = dir.path().join("sled.snapshot");
    backup_when_unlocked(None, &sled_dir, &snapshot, Some(&key_file)).await;

    let database = postgres_settings(create_database(&admin_url).await);
    let restored = agentreg::snapshots::restore(
        &snapshot,
        Some(&database),
        &dir.path().join("x"),
        Some(&key_file),
    )
    .await
    .unwrap();
    assert!(restored.n_entries > 0);
    let refused = agentreg::snapshots::restore(
        &snapshot,
        Some(&database),
        &dir.path().join("x"),
        Some(&key_file),
    )
    .await
    .expect_err("a database that holds agentreg data is refused");
    assert!(format!("{refused:#}").contains("not empty"), "{refused:#}");
    let pg_key = key_file.clone();
    let pg_database = database.clone();
    let on_postgres = TestApp::start(&dir.path().join("pg"), move |settings| {
        settings.database = Some(pg_database);
        settings.encryption_key_file = Some(pg_key);
    })
    .await;
    assert_eq!(
        readable_state(&on_postgres, project_id, agent_id).await,
        before
    );
    assert_eq!(on_postgres.agent_info(&secret).await.0, StatusCode::OK);
    let next_agent = on_postgres.agent(project_id, "agent-2").await;
    assert!(
        next_agent > agent_id,
        "ids continue after the restored ones"
    );
    let (status, receptive) = on_postgres
        .http
        .get(on_postgres.url("/internal/kubernetes/receptive_agents"))
        .header("Gitlab-Kas-Api-Request", on_postgres.kas_jwt())
        .send()
        .await
        .map(|response| (response.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{receptive:?}");
    on_postgres.stop().await;

    let back = dir.path().join("pg.snapshot");
    agentreg::snapshots::backup(
        Some(&database),
        &dir.path().join("pg"),
        &back,
        Some(&key_file),
    )
    .await
    .unwrap();
    let back_dir = dir.path().join("sled-again");
    agentreg::snapshots::restore(&back, None, &back_dir, Some(&key_file))
        .await
        .unwrap();
    let back_key = key_file.clone();
    let sled_again = TestApp::start(&back_dir, move |settings| {
        settings.database = None;
        settings.encryption_key_file = Some(back_key);
    })
    .await;
    let (status, agents) = sled_again
        .get(
            &format!("/projects/{project_id}/cluster_agents"),
            ROOT_TOKEN,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(agents.as_array().unwrap().len(), 2);
    assert_eq!(sled_again.agent_info(&secret).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_applies_the_schema_once_and_then_reports_it_current() {
    let Some(admin_url) = postgres() else { return };
    let database = postgres_settings(create_database(&admin_url).await);

    let first = agentreg::backends::migrate(&database).await.unwrap();
    let second = agentreg::backends::migrate(&database).await.unwrap();

    assert!(!first.is_empty(), "a fresh database gets every migration");
    assert!(first.windows(2).all(|pair| pair[0] < pair[1]), "{first:?}");
    assert_eq!(second, Vec::<u32>::new());
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(&dir.path().join("data"), move |settings| {
        settings.database = Some(database);
    })
    .await;
    assert_eq!(app.get("/user", ROOT_TOKEN).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_password_may_come_from_a_file() {
    let Some(admin_url) = postgres() else { return };
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "not-checked-under-trust-auth\n").unwrap();
    let mut database = postgres_settings(create_database(&admin_url).await);
    database.password_file = Some(password_file);
    let missing = {
        let mut missing = database.clone();
        missing.password_file = Some(dir.path().join("absent"));
        missing
    };

    let app = TestApp::start(&dir.path().join("data"), move |settings| {
        settings.database = Some(database);
    })
    .await;
    let refused = agentreg::backends::open(Some(&missing), dir.path())
        .await
        .err()
        .expect("a missing password file stops the start");

    assert_eq!(app.get("/user", ROOT_TOKEN).await.0, StatusCode::OK);
    assert!(
        format!("{refused:#}").contains("password file"),
        "{refused:#}"
    );
}
