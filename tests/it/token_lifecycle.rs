//! Issue 11's token lifecycle over REST and gRPC: tokens that expire, revocation with who, when
//! and why, and the `status=revoked` list, with both protocols agreeing.

use crate::helpers::{ROOT_TOKEN, TestApp, grpc_error};
use agentreg::grpc::pb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// How long a test waits for a token to pass its expiry.
const EXPIRY_WAIT: Duration = Duration::from_secs(10);
/// A `TokenStatus` number the enum does not name, as a newer client might send.
const UNKNOWN_TOKEN_STATUS: i32 = 99;

struct Agent {
    app: TestApp,
    project_id: i64,
    agent_id: i64,
}

impl Agent {
    async fn spawn_with(configure: impl FnOnce(&mut agentreg::config::Settings)) -> Agent {
        let app = TestApp::spawn_with(configure).await;
        let project_id = app.project(ROOT_TOKEN, "lifecycle").await;
        let agent_id = app.agent(project_id, "agent").await;
        Agent {
            app,
            project_id,
            agent_id,
        }
    }

    async fn spawn() -> Agent {
        Agent::spawn_with(|_| {}).await
    }

    fn tokens_path(&self) -> String {
        format!(
            "/projects/{}/cluster_agents/{}/tokens",
            self.project_id, self.agent_id
        )
    }

    fn token_path(&self, token_id: i64) -> String {
        format!("{}/{token_id}", self.tokens_path())
    }

    async fn create(&self, body: Value) -> (StatusCode, Value) {
        self.app.post(&self.tokens_path(), ROOT_TOKEN, body).await
    }

    async fn grpc_create(&self, expires_at: Option<&str>) -> Result<pb::AgentToken, tonic::Status> {
        self.app
            .grpc_tokens(ROOT_TOKEN)
            .create_agent_token(pb::CreateAgentTokenRequest {
                project: self.project_id.to_string(),
                agent_id: self.agent_id,
                name: Some("grpc".to_owned()),
                description: None,
                expires_at: expires_at.map(str::to_owned),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn revoked_list(&self) -> Vec<Value> {
        let (status, body) = self
            .app
            .get(
                &format!("{}?status=revoked", self.tokens_path()),
                ROOT_TOKEN,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body.as_array().expect("a JSON array").clone()
    }

    async fn grpc_list(&self, status: Option<i32>) -> Result<Vec<pb::AgentToken>, tonic::Status> {
        self.app
            .grpc_tokens(ROOT_TOKEN)
            .list_agent_tokens(pb::ListAgentTokensRequest {
                project: self.project_id.to_string(),
                agent_id: self.agent_id,
                page: None,
                status,
            })
            .await
            .map(|response| response.into_inner().tokens)
    }
}

/// An RFC 3339 time `ahead` from now.
fn time_from_now(ahead: Duration) -> String {
    let moment = time::OffsetDateTime::now_utc()
        + time::Duration::try_from(ahead).expect("a short duration");
    moment
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

fn seconds(timestamp: &Option<prost_types::Timestamp>) -> Option<i64> {
    timestamp.as_ref().map(|timestamp| timestamp.seconds)
}

#[tokio::test]
async fn a_token_created_with_an_expiry_shows_it_on_both_protocols() {
    let agent = Agent::spawn().await;

    let (status, created) = agent
        .create(json!({"name": "dated", "expires_at": "2099-01-31"}))
        .await;
    let grpc_created = agent
        .grpc_create(Some("2099-01-31"))
        .await
        .expect("created");
    let (_, shown) = agent
        .app
        .get(
            &agent.token_path(created["id"].as_i64().expect("id")),
            ROOT_TOKEN,
        )
        .await;
    let (_, listed) = agent.app.get(&agent.tokens_path(), ROOT_TOKEN).await;

    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["expires_at"], "2099-01-31T00:00:00.000Z");
    assert_eq!(created["status"], "active");
    assert_eq!(created["revoked_at"], Value::Null);
    assert_eq!(created["revoked_reason"], Value::Null);
    assert_eq!(shown["expires_at"], "2099-01-31T00:00:00.000Z");
    assert_eq!(
        seconds(&grpc_created.expires_at),
        Some(4_073_500_800),
        "{grpc_created:?}"
    );
    let listed = listed.as_array().expect("a JSON array");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|token| token["expires_at"] == "2099-01-31T00:00:00.000Z")
    );
}

#[tokio::test]
async fn a_token_without_an_expiry_reads_null() {
    let agent = Agent::spawn().await;

    let (status, created) = agent.create(json!({"name": "forever"})).await;

    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["expires_at"], Value::Null);
    assert_eq!(
        agent.grpc_create(None).await.expect("created").expires_at,
        None
    );
}

#[tokio::test]
async fn malformed_past_and_too_distant_expiries_are_refused_alike_on_both_protocols() {
    let agent = Agent::spawn_with(|settings| {
        settings.agent_token_max_lifetime = Some(Duration::from_secs(30 * 86_400));
    })
    .await;
    let cases = [
        ("next tuesday", json!({"error": "expires_at is invalid"})),
        (
            "2001-01-01",
            json!({"message": "400 Bad request - [\"Expires at must be in the future\"]"}),
        ),
        (
            "2099-01-01",
            json!({"message": "400 Bad request - [\"Expires at must be at most 2592000 seconds ahead\"]"}),
        ),
    ];

    for (expires_at, expected) in cases {
        let (status, body) = agent
            .create(json!({"name": "t", "expires_at": expires_at}))
            .await;
        let (code, message) = grpc_error(agent.grpc_create(Some(expires_at)).await);

        assert_eq!(status, StatusCode::BAD_REQUEST, "{expires_at}: {body}");
        assert_eq!(body, expected, "{expires_at}");
        assert_eq!(
            code,
            tonic::Code::InvalidArgument,
            "{expires_at}: {message}"
        );
    }
    let (status, body) = agent
        .create(json!({"name": "t", "expires_at": time_from_now(Duration::from_secs(86_400))}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn required_expiry_refuses_a_token_without_one_on_both_protocols() {
    let agent = Agent::spawn_with(|settings| settings.require_agent_token_expiry = true).await;

    let (status, body) = agent.create(json!({"name": "forever"})).await;
    let (code, message) = grpc_error(agent.grpc_create(None).await);
    let (dated_status, dated) = agent
        .create(json!({"name": "dated", "expires_at": "2099-01-01"}))
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body,
        json!({"message": "400 Bad request - [\"Expires at can't be blank\"]"})
    );
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert_eq!(dated_status, StatusCode::CREATED, "{dated}");
}

#[tokio::test]
async fn an_expired_token_fails_agent_info_reads_as_revoked_and_frees_its_slot() {
    let agent = Agent::spawn().await;
    let (status, expiring) = agent
        .create(json!({"name": "short", "expires_at": time_from_now(Duration::from_secs(2))}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{expiring}");
    let expiring_id = expiring["id"].as_i64().expect("id");
    let secret = expiring["token"].as_str().expect("secret").to_owned();
    let (status, _) = agent.create(json!({"name": "long"})).await;
    assert_eq!(status, StatusCode::CREATED);
    // The first use verifies the token and caches it: expiry must hold on the cached path too.
    let (before_status, before) = agent.app.agent_info(&secret).await;
    let (full_status, _) = agent.create(json!({"name": "third"})).await;

    // The wall clock has to pass the expiry; nothing in the server is waited for.
    let deadline = tokio::time::Instant::now() + EXPIRY_WAIT;
    let mut after = agent.app.agent_info(&secret).await;
    while after.0 == StatusCode::OK && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = agent.app.agent_info(&secret).await;
    }
    let (shown_status, _) = agent
        .app
        .get(&agent.token_path(expiring_id), ROOT_TOKEN)
        .await;
    let (_, active) = agent.app.get(&agent.tokens_path(), ROOT_TOKEN).await;
    let revoked = agent.revoked_list().await;
    let grpc_revoked = agent
        .grpc_list(Some(pb::TokenStatus::Revoked.into()))
        .await
        .expect("listed");
    let (replacement_status, replacement) = agent.create(json!({"name": "replacement"})).await;

    assert_eq!(before_status, StatusCode::OK, "{before}");
    assert_eq!(full_status, StatusCode::BAD_REQUEST);
    assert_eq!(
        after,
        (
            StatusCode::UNAUTHORIZED,
            json!({"message": "401 Unauthorized"})
        )
    );
    assert_eq!(shown_status, StatusCode::NOT_FOUND);
    let active = active.as_array().expect("a JSON array");
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["id"], expiring_id);
    assert_eq!(revoked[0]["status"], "revoked");
    assert_eq!(revoked[0]["revoked_reason"], "expired");
    assert_eq!(revoked[0]["revoked_by_user_id"], Value::Null);
    assert_eq!(revoked[0]["revoked_at"], revoked[0]["expires_at"]);
    assert_eq!(grpc_revoked.len(), 1, "{grpc_revoked:?}");
    assert_eq!(grpc_revoked[0].id, expiring_id);
    assert_eq!(grpc_revoked[0].status(), pb::TokenStatus::Revoked);
    assert_eq!(grpc_revoked[0].revoked_reason.as_deref(), Some("expired"));
    assert_eq!(replacement_status, StatusCode::CREATED, "{replacement}");
    // Every replica records ended tokens in the background: the expiry becomes an audit event.
    let audit_path = format!("/projects/{}/audit_events", agent.project_id);
    let deadline = tokio::time::Instant::now() + EXPIRY_WAIT;
    let mut audit_events = agent.app.get(&audit_path, ROOT_TOKEN).await.1;
    while !audit_events
        .to_string()
        .contains("cluster_agent_token_expired")
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        audit_events = agent.app.get(&audit_path, ROOT_TOKEN).await.1;
    }
    let expired_event = audit_events
        .as_array()
        .expect("a JSON array")
        .iter()
        .find(|event| event["details"]["event_name"] == "cluster_agent_token_expired")
        .cloned();
    let expired_event = expired_event.expect("the expiry is audited");
    assert_eq!(expired_event["entity_id"], expiring_id);
    assert_eq!(expired_event["details"]["revoked_reason"], "expired");
}

#[tokio::test]
async fn revoking_with_a_reason_keeps_who_when_and_why_on_both_protocols() {
    let agent = Agent::spawn().await;
    let (_, leaked) = agent.create(json!({"name": "leaked"})).await;
    let leaked_id = leaked["id"].as_i64().expect("id");
    let rotated = agent.grpc_create(None).await.expect("created");

    let (status, body) = agent
        .app
        .delete(
            &format!(
                "{}?reason=found%20in%20a%20build%20log",
                agent.token_path(leaked_id)
            ),
            ROOT_TOKEN,
        )
        .await;
    agent
        .app
        .grpc_tokens(ROOT_TOKEN)
        .revoke_agent_token(pb::RevokeAgentTokenRequest {
            project: agent.project_id.to_string(),
            agent_id: agent.agent_id,
            token_id: rotated.id,
            reason: Some("moved to vault".to_owned()),
        })
        .await
        .expect("revoked");
    let (again_status, _) = agent
        .app
        .delete(
            &format!("{}?reason=second", agent.token_path(leaked_id)),
            ROOT_TOKEN,
        )
        .await;
    let (shown_status, _) = agent
        .app
        .get(&agent.token_path(leaked_id), ROOT_TOKEN)
        .await;
    let revoked = agent.revoked_list().await;
    let grpc_revoked = agent
        .grpc_list(Some(pb::TokenStatus::Revoked.into()))
        .await
        .expect("listed");
    let (_, audit_events) = agent
        .app
        .get(
            &format!("/projects/{}/audit_events", agent.project_id),
            ROOT_TOKEN,
        )
        .await;

    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(again_status, StatusCode::NO_CONTENT);
    assert_eq!(shown_status, StatusCode::NOT_FOUND);
    let reasons: Vec<(i64, &str)> = revoked
        .iter()
        .map(|token| {
            (
                token["id"].as_i64().expect("id"),
                token["revoked_reason"].as_str().expect("reason"),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (leaked_id, "found in a build log"),
            (rotated.id, "moved to vault")
        ]
    );
    assert!(revoked.iter().all(|token| token["revoked_by_user_id"] == 1
        && token["revoked_at"].is_string()
        && token["status"] == "revoked"));
    let grpc_reasons: Vec<(i64, Option<String>, Option<i64>)> = grpc_revoked
        .iter()
        .map(|token| {
            (
                token.id,
                token.revoked_reason.clone(),
                token.revoked_by_user_id,
            )
        })
        .collect();
    assert_eq!(
        grpc_reasons,
        [
            (leaked_id, Some("found in a build log".to_owned()), Some(1)),
            (rotated.id, Some("moved to vault".to_owned()), Some(1)),
        ]
    );
    let audit_text = audit_events.to_string();
    assert!(audit_text.contains("found in a build log"), "{audit_text}");
}

#[tokio::test]
async fn a_reason_over_255_characters_is_refused_on_both_protocols() {
    let agent = Agent::spawn().await;
    let (_, token) = agent.create(json!({"name": "t"})).await;
    let token_id = token["id"].as_i64().expect("id");
    let long = "x".repeat(256);

    let (status, body) = agent
        .app
        .delete(
            &format!("{}?reason={long}", agent.token_path(token_id)),
            ROOT_TOKEN,
        )
        .await;
    let (code, message) = grpc_error(
        agent
            .app
            .grpc_tokens(ROOT_TOKEN)
            .revoke_agent_token(pb::RevokeAgentTokenRequest {
                project: agent.project_id.to_string(),
                agent_id: agent.agent_id,
                token_id,
                reason: Some(long.clone()),
            })
            .await,
    );
    let (_, still_active) = agent.app.get(&agent.token_path(token_id), ROOT_TOKEN).await;

    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body,
        json!({"error": "reason is too long (maximum is 255 characters)"})
    );
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert_eq!(message, "reason is too long (maximum is 255 characters)");
    assert_eq!(still_active["status"], "active");
}

#[tokio::test]
async fn an_unknown_status_filter_is_refused_on_both_protocols() {
    let agent = Agent::spawn().await;

    let (status, body) = agent
        .app
        .get(
            &format!("{}?status=retired", agent.tokens_path()),
            ROOT_TOKEN,
        )
        .await;
    let (code, message) = grpc_error(agent.grpc_list(Some(UNKNOWN_TOKEN_STATUS)).await);
    let (active_status, _) = agent
        .app
        .get(
            &format!("{}?status=active", agent.tokens_path()),
            ROOT_TOKEN,
        )
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body, json!({"error": "status does not have a valid value"}));
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert_eq!(message, "status does not have a valid value");
    assert_eq!(active_status, StatusCode::OK);
}

impl Agent {
    async fn rotate(&self, token_id: i64, body: Value) -> (StatusCode, Value) {
        self.app
            .post(
                &format!("{}/rotate", self.token_path(token_id)),
                ROOT_TOKEN,
                body,
            )
            .await
    }

    async fn grpc_rotate(
        &self,
        token_id: i64,
        overlap_seconds: Option<i64>,
    ) -> Result<pb::RotateAgentTokenResponse, tonic::Status> {
        self.app
            .grpc_tokens(ROOT_TOKEN)
            .rotate_agent_token(pb::RotateAgentTokenRequest {
                project: self.project_id.to_string(),
                agent_id: self.agent_id,
                token_id,
                name: None,
                description: None,
                expires_at: None,
                overlap_seconds,
            })
            .await
            .map(tonic::Response::into_inner)
    }
}

#[tokio::test]
async fn a_rotated_token_works_until_its_successors_first_use_then_reads_as_rotated() {
    let agent = Agent::spawn().await;
    let (_, old) = agent
        .create(json!({"name": "deploy", "description": "the pipeline"}))
        .await;
    let old_id = old["id"].as_i64().expect("id");
    let old_secret = old["token"].as_str().expect("secret").to_owned();
    let (_, _other) = agent.create(json!({"name": "other"})).await;
    let (status, _) = agent.app.agent_info(&old_secret).await;
    assert_eq!(status, StatusCode::OK);

    let (status, successor) = agent.rotate(old_id, json!({})).await;
    let successor_id = successor["id"].as_i64().expect("id");
    let successor_secret = successor["token"].as_str().expect("secret").to_owned();
    let (_, retiring) = agent.app.get(&agent.token_path(old_id), ROOT_TOKEN).await;
    let (old_during_overlap, _) = agent.app.agent_info(&old_secret).await;
    let (third_status, _) = agent.create(json!({"name": "third"})).await;
    let (successor_status, _) = agent.app.agent_info(&successor_secret).await;
    let (old_after_first_use, _) = agent.app.agent_info(&old_secret).await;
    let (old_shown_status, _) = agent.app.get(&agent.token_path(old_id), ROOT_TOKEN).await;
    let (_, successor_shown) = agent
        .app
        .get(&agent.token_path(successor_id), ROOT_TOKEN)
        .await;
    let revoked = agent.revoked_list().await;
    let (_, audit_events) = agent
        .app
        .get(
            &format!("/projects/{}/audit_events", agent.project_id),
            ROOT_TOKEN,
        )
        .await;

    assert_eq!(status, StatusCode::CREATED, "{successor}");
    assert_eq!(successor["name"], "deploy");
    assert_eq!(successor["description"], "the pipeline");
    assert_eq!(successor["status"], "active");
    assert!(successor_secret.starts_with("glagent-"));
    assert_eq!(retiring["status"], "active");
    assert_eq!(retiring["successor_id"], successor_id);
    assert!(retiring["retiring_until"].is_string(), "{retiring}");
    assert_eq!(old_during_overlap, StatusCode::OK);
    assert_eq!(
        third_status,
        StatusCode::BAD_REQUEST,
        "a rotation keeps its slot"
    );
    assert_eq!(successor_status, StatusCode::OK);
    assert_eq!(old_after_first_use, StatusCode::UNAUTHORIZED);
    assert_eq!(old_shown_status, StatusCode::NOT_FOUND);
    assert!(
        successor_shown["last_used_at"].is_string(),
        "{successor_shown}"
    );
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["id"], old_id);
    assert_eq!(revoked[0]["revoked_reason"], "rotated");
    assert_eq!(revoked[0]["revoked_by_user_id"], Value::Null);
    let events = audit_events.as_array().expect("a JSON array");
    let old_trail: Vec<&Value> = events
        .iter()
        .filter(|event| event["entity_id"] == old_id)
        .collect();
    let trail_text = format!("{old_trail:?}");
    assert!(
        trail_text.contains("cluster_agent_token_rotated"),
        "{trail_text}"
    );
    assert!(
        trail_text.contains("successor_first_used_at_ms"),
        "{trail_text}"
    );
}

#[tokio::test]
async fn a_retiring_token_stops_when_its_overlap_ends_even_from_the_cache() {
    let agent = Agent::spawn().await;
    let (_, old) = agent.create(json!({"name": "deploy"})).await;
    let old_id = old["id"].as_i64().expect("id");
    let old_secret = old["token"].as_str().expect("secret").to_owned();
    let (status, _) = agent.app.agent_info(&old_secret).await;
    assert_eq!(status, StatusCode::OK);

    let rotated = agent.grpc_rotate(old_id, Some(1)).await.expect("rotated");
    let (during, _) = agent.app.agent_info(&old_secret).await;
    // The wall clock has to pass the overlap; nothing in the server is waited for.
    let deadline = tokio::time::Instant::now() + EXPIRY_WAIT;
    let mut after = agent.app.agent_info(&old_secret).await;
    while after.0 == StatusCode::OK && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = agent.app.agent_info(&old_secret).await;
    }
    let revoked = agent
        .grpc_list(Some(pb::TokenStatus::Revoked.into()))
        .await
        .expect("listed");
    let rotate_again = agent.rotate(old_id, json!({})).await;

    let predecessor = rotated.predecessor.expect("predecessor");
    let successor = rotated.successor.expect("successor");
    assert_eq!(predecessor.successor_id, Some(successor.id));
    assert!(predecessor.retiring_until.is_some());
    assert!(successor.token.is_some());
    assert_eq!(during, StatusCode::OK);
    assert_eq!(after.0, StatusCode::UNAUTHORIZED);
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0].revoked_reason.as_deref(), Some("rotated"));
    assert_eq!(
        seconds(&revoked[0].revoked_at),
        seconds(&predecessor.retiring_until)
    );
    assert_eq!(rotate_again.0, StatusCode::NOT_FOUND, "{}", rotate_again.1);
}

#[tokio::test]
async fn rotation_refusals_agree_on_both_protocols() {
    let agent = Agent::spawn().await;
    let (_, first) = agent.create(json!({"name": "first"})).await;
    let first_id = first["id"].as_i64().expect("id");
    let (_, second) = agent.create(json!({"name": "second"})).await;
    let second_id = second["id"].as_i64().expect("id");
    let (_, gone) = agent.create(json!({"name": "gone"})).await;
    assert_eq!(
        gone["message"],
        "400 Bad request - An agent can have only two active tokens at a time"
    );
    let (status, _) = agent.rotate(first_id, json!({"overlap_seconds": 60})).await;
    assert_eq!(status, StatusCode::CREATED);

    let rest_again = agent.rotate(first_id, json!({})).await;
    let grpc_again = grpc_error(agent.grpc_rotate(first_id, None).await);
    let rest_other = agent.rotate(second_id, json!({})).await;
    let grpc_other = grpc_error(agent.grpc_rotate(second_id, None).await);
    let rest_unknown = agent.rotate(999_999, json!({})).await;
    let grpc_unknown = grpc_error(agent.grpc_rotate(999_999, None).await);
    let rest_bad_overlap = agent.rotate(second_id, json!({"overlap_seconds": 0})).await;
    let grpc_bad_overlap = grpc_error(agent.grpc_rotate(second_id, Some(0)).await);

    assert_eq!(
        rest_again,
        (
            StatusCode::BAD_REQUEST,
            json!({"message": "400 Bad request - Token is already being rotated"})
        )
    );
    assert_eq!(grpc_again.0, tonic::Code::InvalidArgument);
    assert_eq!(
        rest_other,
        (
            StatusCode::BAD_REQUEST,
            json!({"message": "400 Bad request - An agent can rotate only one token at a time"})
        )
    );
    assert_eq!(grpc_other.0, tonic::Code::InvalidArgument);
    assert_eq!(
        rest_unknown,
        (StatusCode::NOT_FOUND, json!({"message": "404 Not found"}))
    );
    assert_eq!(grpc_unknown.0, tonic::Code::NotFound);
    assert_eq!(
        rest_bad_overlap,
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "overlap_seconds is invalid"})
        )
    );
    assert_eq!(grpc_bad_overlap.0, tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn concurrent_rotations_of_one_token_create_one_successor() {
    let agent = Agent::spawn().await;
    let (_, token) = agent.create(json!({"name": "deploy"})).await;
    let token_id = token["id"].as_i64().expect("id");

    let outcomes =
        futures::future::join_all((0..10).map(|_| agent.rotate(token_id, json!({})))).await;

    let n_created = outcomes
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .count();
    assert_eq!(n_created, 1, "{outcomes:?}");
    let (_, active) = agent.app.get(&agent.tokens_path(), ROOT_TOKEN).await;
    assert_eq!(active.as_array().expect("a JSON array").len(), 2);
}

#[tokio::test]
async fn metrics_report_time_to_expiry_rotations_and_retiring_tokens() {
    let agent = Agent::spawn().await;
    let (_, expiring) = agent
        .create(json!({"name": "dated", "expires_at": time_from_now(Duration::from_secs(7_200))}))
        .await;
    let (status, _) = agent
        .rotate(expiring["id"].as_i64().expect("id"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let text = agent
        .app
        .http
        .get(format!("{}/metrics", agent.app.base_url))
        .send()
        .await
        .expect("scraped")
        .text()
        .await
        .expect("text");

    assert!(
        text.contains("\nagentreg_agent_tokens_retiring 1\n"),
        "{text}"
    );
    assert!(
        text.contains("\nagentreg_agent_token_rotations_total 1\n"),
        "{text}"
    );
    // The retiring token and its successor (which inherits the two-hour lifetime) both expire
    // between one and six hours from now.
    assert!(
        text.contains("agentreg_agent_tokens_expiring_seconds_bucket{le=\"3600.0\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("agentreg_agent_tokens_expiring_seconds_bucket{le=\"21600.0\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("agentreg_agent_tokens_expiring_seconds_count 2\n"),
        "{text}"
    );
}

impl Agent {
    /// A REST rotation with an `Idempotency-Key`, as `token` (the caller who rotates).
    async fn rotate_with_key(&self, token: &str, token_id: i64, key: &str) -> (StatusCode, Value) {
        let response = self
            .app
            .request(
                reqwest::Method::POST,
                &format!("{}/rotate", self.token_path(token_id)),
                Some(token),
            )
            .header("Idempotency-Key", key)
            .json(&json!({}))
            .send()
            .await
            .expect("request sent");
        crate::helpers::read(response).await
    }

    async fn grpc_rotate_with_key(
        &self,
        token_id: i64,
        key: &str,
    ) -> Result<pb::RotateAgentTokenResponse, tonic::Status> {
        let mut request = tonic::Request::new(pb::RotateAgentTokenRequest {
            project: self.project_id.to_string(),
            agent_id: self.agent_id,
            token_id,
            name: None,
            description: None,
            expires_at: None,
            overlap_seconds: None,
        });
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().expect("ascii key"));
        self.app
            .grpc_tokens(ROOT_TOKEN)
            .rotate_agent_token(request)
            .await
            .map(tonic::Response::into_inner)
    }
}

#[tokio::test]
async fn a_lost_rotation_response_is_fetched_once_more_with_the_same_key_on_both_protocols() {
    let agent = Agent::spawn_with(|settings| {
        settings.rotation_retrieve_window = Some(Duration::from_secs(60));
    })
    .await;
    let (_, rest_token) = agent.create(json!({"name": "rest"})).await;
    let rest_id = rest_token["id"].as_i64().expect("id");
    let (_, grpc_token) = agent.create(json!({"name": "grpc"})).await;
    let grpc_id = grpc_token["id"].as_i64().expect("id");
    let maintainer = agent.app.member(agent.project_id, "maintainer", 40).await;

    let (status, first) = agent
        .rotate_with_key(ROOT_TOKEN, rest_id, "deploy-42")
        .await;
    let other_caller = agent
        .rotate_with_key(&maintainer, rest_id, "deploy-42")
        .await;
    let (again_status, again) = agent
        .rotate_with_key(ROOT_TOKEN, rest_id, "deploy-42")
        .await;
    let third = agent
        .rotate_with_key(ROOT_TOKEN, rest_id, "deploy-42")
        .await;

    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(
        other_caller.0,
        StatusCode::BAD_REQUEST,
        "only the caller who rotated may fetch the secret: {}",
        other_caller.1
    );
    assert_eq!(again_status, StatusCode::CREATED, "{again}");
    assert_eq!(again["id"], first["id"], "the same successor");
    assert_eq!(again["token"], first["token"], "the same secret");
    assert_eq!(
        third,
        (
            StatusCode::BAD_REQUEST,
            json!({"message": "400 Bad request - Token is already being rotated"})
        ),
        "the secret is fetched once more, not again"
    );
    let secret = first["token"].as_str().expect("secret");
    assert_eq!(agent.app.agent_info(secret).await.0, StatusCode::OK);
    let (_, revoked) = agent
        .app
        .delete(&agent.token_path(rest_id), ROOT_TOKEN)
        .await;
    assert!(revoked.is_null());

    let grpc_first = agent
        .grpc_rotate_with_key(grpc_id, "deploy-43")
        .await
        .expect("rotated");
    let grpc_again = agent
        .grpc_rotate_with_key(grpc_id, "deploy-43")
        .await
        .expect("fetched again");
    let grpc_third = grpc_error(agent.grpc_rotate_with_key(grpc_id, "deploy-43").await);
    let first_successor = grpc_first.successor.expect("successor");
    let again_successor = grpc_again.successor.expect("successor");
    assert_eq!(again_successor.id, first_successor.id);
    assert_eq!(again_successor.token, first_successor.token);
    assert!(first_successor.token.is_some());
    assert_eq!(grpc_third.0, tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn without_a_retrieve_window_a_repeated_key_is_an_ordinary_second_rotation() {
    let agent = Agent::spawn().await;
    let (_, token) = agent.create(json!({"name": "deploy"})).await;
    let token_id = token["id"].as_i64().expect("id");

    let (status, _) = agent.rotate_with_key(ROOT_TOKEN, token_id, "k").await;
    let again = agent.rotate_with_key(ROOT_TOKEN, token_id, "k").await;

    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        again,
        (
            StatusCode::BAD_REQUEST,
            json!({"message": "400 Bad request - Token is already being rotated"})
        )
    );
}
