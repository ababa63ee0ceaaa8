//! The argon2 queue: past `--argon2-queue-limit` waiting jobs, a request that needs argon2 is
//! refused at once with 503 and `Retry-After` (gRPC: `UNAVAILABLE` with `retry-after`), nothing
//! of it is written, and cached requests keep being served. A first login passes the token
//! creations queued before it.

use crate::helpers::{ROOT_TOKEN, TestApp};
use agentreg::grpc::pb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Concurrent token creations, one per agent, far more than the queue admits.
const STORM: usize = 24;

async fn storm_fixture() -> (TestApp, i64, Vec<i64>) {
    let app = TestApp::spawn_with(|settings| settings.argon2_queue_limit = 1).await;
    let project_id = app.project(ROOT_TOKEN, "storm").await;
    let mut agents = Vec::new();
    for index in 0..STORM {
        agents.push(app.agent(project_id, &format!("agent-{index}")).await);
    }
    (app, project_id, agents)
}

/// The number of tokens each agent has, through the list route.
async fn tokens_per_agent(app: &TestApp, project_id: i64, agents: &[i64]) -> Vec<usize> {
    let mut counts = Vec::new();
    for agent_id in agents {
        let (status, body) = app
            .get(
                &format!("/projects/{project_id}/cluster_agents/{agent_id}/tokens"),
                ROOT_TOKEN,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        counts.push(body.as_array().expect("a list").len());
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rest_token_creations_past_the_queue_limit_get_503_with_retry_after_and_leave_nothing() {
    let (app, project_id, agents) = storm_fixture().await;
    let agent_path = format!("/projects/{project_id}/cluster_agents/{}", agents[0]);

    let outcomes = futures::future::join_all(agents.iter().map(|agent_id| {
        let request = app
            .request(
                reqwest::Method::POST,
                &format!("/projects/{project_id}/cluster_agents/{agent_id}/tokens"),
                Some(ROOT_TOKEN),
            )
            .json(&json!({"name": "storm"}));
        async move {
            let response = request.send().await.expect("sent");
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|value| value.to_str().expect("ascii").to_owned());
            let status = response.status();
            let body: Value = response.json().await.expect("a JSON body");
            (status, retry_after, body)
        }
    }))
    .await;
    // A cached read right after the storm is still served.
    let (status, _) = app.get(&agent_path, ROOT_TOKEN).await;
    assert_eq!(status, StatusCode::OK);

    let mut created = Vec::new();
    for (status, retry_after, body) in &outcomes {
        match *status {
            StatusCode::CREATED => created.push(true),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body, &json!({"message": "503 Service Unavailable"}));
                let seconds: u64 = retry_after
                    .as_deref()
                    .expect("Retry-After on a 503")
                    .parse()
                    .expect("whole seconds");
                assert!(seconds >= 1);
                created.push(false);
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let n_refused = created.iter().filter(|created| !**created).count();
    assert!(
        n_refused > 0,
        "{STORM} concurrent hashes with a queue of 1 must refuse some"
    );
    assert!(n_refused < STORM, "the first creation is always admitted");
    let counts = tokens_per_agent(&app, project_id, &agents).await;
    let expected: Vec<usize> = created
        .iter()
        .map(|created| usize::from(*created))
        .collect();
    assert_eq!(counts, expected, "a refused creation writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_token_creations_past_the_queue_limit_get_unavailable_with_retry_after() {
    let (app, project_id, agents) = storm_fixture().await;
    let client = app.grpc_tokens(ROOT_TOKEN);

    let outcomes = futures::future::join_all(agents.iter().map(|agent_id| {
        let mut client = client.clone();
        async move {
            client
                .create_agent_token(pb::CreateAgentTokenRequest {
                    expires_at: None,
                    project: project_id.to_string(),
                    agent_id: *agent_id,
                    name: Some("storm".to_owned()),
                    description: None,
                })
                .await
        }
    }))
    .await;
    let mut agent_client = app.grpc_agents(ROOT_TOKEN);
    agent_client
        .get_agent(pb::GetAgentRequest {
            project: project_id.to_string(),
            agent_id: agents[0],
        })
        .await
        .expect("a cached read is still served");

    let mut expected = Vec::new();
    for outcome in &outcomes {
        match outcome {
            Ok(_) => expected.push(1),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert_eq!(status.message(), "503 Service Unavailable");
                let seconds: u64 = status
                    .metadata()
                    .get("retry-after")
                    .expect("retry-after metadata")
                    .to_str()
                    .expect("ascii")
                    .parse()
                    .expect("whole seconds");
                assert!(seconds >= 1);
                expected.push(0);
            }
        }
    }
    assert!(expected.contains(&0), "some creations are refused");
    assert!(
        expected.contains(&1),
        "the first creation is always admitted"
    );
    assert_eq!(tokens_per_agent(&app, project_id, &agents).await, expected);
}

/// Starts two token creations on each of 30 agents per argon2 slot (max(1, cores - 1)) at once,
/// so that hashing them all takes about 60 runs' time on any machine. Returns the number finished
/// so far, as it grows, with their total; the creations are queued when it returns.
async fn creation_storm(app: &TestApp) -> (Arc<AtomicUsize>, usize) {
    let slots = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .saturating_sub(1)
        .max(1);
    let project_id = app.project(ROOT_TOKEN, "creations").await;
    let mut agents = Vec::new();
    for index in 0..30 * slots {
        agents.push(app.agent(project_id, &format!("agent-{index}")).await);
    }
    let finished = Arc::new(AtomicUsize::new(0));
    for agent_id in agents.iter().chain(&agents) {
        let request = app
            .request(
                reqwest::Method::POST,
                &format!("/projects/{project_id}/cluster_agents/{agent_id}/tokens"),
                Some(ROOT_TOKEN),
            )
            .json(&json!({"name": "creation"}));
        let finished = finished.clone();
        tokio::spawn(async move {
            let status = request.send().await.expect("sent").status();
            assert_eq!(status, StatusCode::CREATED);
            finished.fetch_add(1, Ordering::SeqCst);
        });
    }
    // Long enough for every creation to reach the queue, a tenth of hashing them all.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    (finished, 2 * agents.len())
}

/// An instance whose argon2 queue admits a whole [`creation_storm`].
async fn spawn_with_a_long_queue() -> TestApp {
    TestApp::spawn_with(|settings| settings.argon2_queue_limit = 100_000).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rest_first_login_passes_the_token_creations_queued_before_it() {
    let app = spawn_with_a_long_queue().await;
    let (_, token) = app.user("late").await;
    let (finished, total) = creation_storm(&app).await;

    let (status, user) = app.get("/user", &token).await;
    let finished_at_login = finished.load(Ordering::SeqCst);

    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["username"], "late");
    assert!(
        finished_at_login < total / 2,
        "the login waited for {finished_at_login} of {total} creations"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_first_login_passes_the_token_creations_queued_before_it() {
    let app = spawn_with_a_long_queue().await;
    let (_, token) = app.user("late").await;
    let (finished, total) = creation_storm(&app).await;

    let user = app
        .grpc_meta(&token)
        .get_current_user(pb::GetCurrentUserRequest {})
        .await
        .expect("the login is answered")
        .into_inner();
    let finished_at_login = finished.load(Ordering::SeqCst);

    assert_eq!(user.username, "late");
    assert!(
        finished_at_login < total / 2,
        "the login waited for {finished_at_login} of {total} creations"
    );
}
