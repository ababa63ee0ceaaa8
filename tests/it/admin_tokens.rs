//! GitLab's admin token API (`POST` and `DELETE /admin/token`, GitLab 17.5+) over REST and its
//! gRPC twin `AdminTokenService`: finding a token by its value and revoking it.

use crate::helpers::{ROOT_TOKEN, TestApp, grpc_error};
use agentreg::grpc::pb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Setup {
    app: TestApp,
    project_id: i64,
    agent_id: i64,
    token_id: i64,
    secret: String,
}

async fn setup() -> Setup {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "admin-tokens").await;
    let agent_id = app.agent(project_id, "agent").await;
    let (token_id, secret) = app.agent_token(project_id, agent_id, "leaky").await;
    Setup {
        app,
        project_id,
        agent_id,
        token_id,
        secret,
    }
}

async fn identify(app: &TestApp, caller: &str, value: Value) -> (StatusCode, Value) {
    app.call(Method::POST, "/admin/token", Some(caller), Some(value))
        .await
}

async fn revoke(app: &TestApp, caller: &str, value: Value) -> (StatusCode, Value) {
    app.call(Method::DELETE, "/admin/token", Some(caller), Some(value))
        .await
}

async fn grpc_identify(
    app: &TestApp,
    caller: &str,
    value: Option<&str>,
) -> Result<pb::IdentifiedToken, tonic::Status> {
    app.grpc_admin_tokens(caller)
        .identify_token(pb::IdentifyTokenRequest {
            token: value.map(str::to_owned),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn an_administrator_finds_an_agent_token_by_its_value_on_both_protocols() {
    let setup = setup().await;

    let (status, body) = identify(&setup.app, ROOT_TOKEN, json!({"token": setup.secret})).await;
    let grpc = grpc_identify(&setup.app, ROOT_TOKEN, Some(&setup.secret))
        .await
        .expect("identified");
    let (_, audit_events) = setup
        .app
        .get(
            &format!("/projects/{}/audit_events", setup.project_id),
            ROOT_TOKEN,
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], setup.token_id);
    assert_eq!(body["agent_id"], setup.agent_id);
    assert_eq!(body["name"], "leaky");
    assert_eq!(body["status"], "active");
    assert!(
        body.get("token").is_none(),
        "the secret is never shown again"
    );
    match grpc.token {
        Some(pb::identified_token::Token::AgentToken(token)) => {
            assert_eq!(token.id, setup.token_id);
            assert_eq!(token.token, None);
        }
        other => panic!("not an agent token: {other:?}"),
    }
    let audit_text = audit_events.to_string();
    assert!(
        audit_text.contains("admin_token_identified"),
        "{audit_text}"
    );
    assert!(!audit_text.contains(&setup.secret));
}

#[tokio::test]
async fn an_administrator_finds_a_personal_access_token_by_its_value() {
    let setup = setup().await;
    let (user_id, user_token) = setup.app.user_with_scopes("someone", &["read_api"]).await;

    let (status, body) = identify(&setup.app, ROOT_TOKEN, json!({"token": user_token})).await;
    let grpc = grpc_identify(&setup.app, ROOT_TOKEN, Some(&user_token))
        .await
        .expect("identified");

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], user_id);
    assert_eq!(body["scopes"], json!(["read_api"]));
    assert_eq!(body["active"], true);
    assert!(body.get("token").is_none());
    match grpc.token {
        Some(pb::identified_token::Token::PersonalAccessToken(token)) => {
            assert_eq!(token.user_id, user_id);
            assert_eq!(token.token, "");
        }
        other => panic!("not a personal access token: {other:?}"),
    }
}

#[tokio::test]
async fn unknown_values_and_kinds_get_gitlabs_errors_on_both_protocols() {
    let setup = setup().await;
    let unknown_agent_token = format!("glagent-{}", "A".repeat(59));
    let cases = [
        (
            json!({"token": unknown_agent_token}),
            Some(unknown_agent_token.as_str()),
            StatusCode::NOT_FOUND,
            json!({"message": {"error": "Not found"}}),
            tonic::Code::NotFound,
        ),
        (
            json!({"token": "glpat-not-a-token-of-this-instance"}),
            Some("glpat-not-a-token-of-this-instance"),
            StatusCode::NOT_FOUND,
            json!({"message": {"error": "Not found"}}),
            tonic::Code::NotFound,
        ),
        (
            json!({"token": "ghp_somebody_elses_token"}),
            Some("ghp_somebody_elses_token"),
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "Token type not supported."}),
            tonic::Code::InvalidArgument,
        ),
        (
            json!({}),
            None,
            StatusCode::BAD_REQUEST,
            json!({"error": "token is missing"}),
            tonic::Code::InvalidArgument,
        ),
    ];

    for (body, grpc_value, expected_status, expected_body, expected_code) in cases {
        let rest = identify(&setup.app, ROOT_TOKEN, body.clone()).await;
        let rest_revoke = revoke(&setup.app, ROOT_TOKEN, body.clone()).await;
        let (code, _) = grpc_error(grpc_identify(&setup.app, ROOT_TOKEN, grpc_value).await);

        assert_eq!(rest, (expected_status, expected_body.clone()), "{body}");
        assert_eq!(rest_revoke, (expected_status, expected_body), "{body}");
        assert_eq!(code, expected_code, "{body}");
    }
}

#[tokio::test]
async fn only_administrators_with_the_api_scope_may_use_it() {
    let setup = setup().await;
    let (_, developer) = setup.app.user_with_scopes("developer", &["api"]).await;
    let (status, read_only_root) = setup
        .app
        .post(
            "/users/1/personal_access_tokens",
            ROOT_TOKEN,
            json!({"name": "read only", "scopes": ["read_api"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{read_only_root}");
    let read_only_root = read_only_root["token"].as_str().expect("token").to_owned();
    let body = json!({"token": setup.secret});

    let not_admin = identify(&setup.app, &developer, body.clone()).await;
    let not_admin_revoke = revoke(&setup.app, &developer, body.clone()).await;
    let read_only = identify(&setup.app, &read_only_root, body.clone()).await;
    let anonymous = setup
        .app
        .call(Method::POST, "/admin/token", None, Some(body))
        .await;
    let (grpc_not_admin, _) =
        grpc_error(grpc_identify(&setup.app, &developer, Some(&setup.secret)).await);
    let (grpc_read_only, _) =
        grpc_error(grpc_identify(&setup.app, &read_only_root, Some(&setup.secret)).await);

    assert_eq!(
        not_admin,
        (StatusCode::FORBIDDEN, json!({"message": "403 Forbidden"}))
    );
    assert_eq!(not_admin_revoke.0, StatusCode::FORBIDDEN);
    assert_eq!(read_only.0, StatusCode::FORBIDDEN, "{}", read_only.1);
    assert_eq!(read_only.1["error"], "insufficient_scope");
    assert_eq!(anonymous.0, StatusCode::UNAUTHORIZED);
    assert_eq!(grpc_not_admin, tonic::Code::PermissionDenied);
    assert_eq!(grpc_read_only, tonic::Code::PermissionDenied);
    let (status, _) = setup.app.agent_info(&setup.secret).await;
    assert_eq!(status, StatusCode::OK, "nothing was revoked");
}

#[tokio::test]
async fn revoking_by_value_stops_the_agent_token_at_once_and_is_audited() {
    let setup = setup().await;
    let (status, _) = setup.app.agent_info(&setup.secret).await;
    assert_eq!(status, StatusCode::OK);
    let (second_id, second_secret) = setup
        .app
        .agent_token(setup.project_id, setup.agent_id, "second")
        .await;
    let (_, user_token) = setup.app.user_with_scopes("someone", &["api"]).await;

    let (status, body) = revoke(&setup.app, ROOT_TOKEN, json!({"token": setup.secret})).await;
    setup
        .app
        .grpc_admin_tokens(ROOT_TOKEN)
        .revoke_token(pb::RevokeTokenRequest {
            token: Some(second_secret.clone()),
        })
        .await
        .expect("revoked");
    let (after, _) = setup.app.agent_info(&setup.secret).await;
    let (second_after, _) = setup.app.agent_info(&second_secret).await;
    let (_, revoked) = setup
        .app
        .get(
            &format!(
                "/projects/{}/cluster_agents/{}/tokens?status=revoked",
                setup.project_id, setup.agent_id
            ),
            ROOT_TOKEN,
        )
        .await;
    let (_, identified) = identify(&setup.app, ROOT_TOKEN, json!({"token": setup.secret})).await;
    let pat_revoke = revoke(&setup.app, ROOT_TOKEN, json!({"token": user_token})).await;
    let (_, audit_events) = setup
        .app
        .get(
            &format!("/projects/{}/audit_events", setup.project_id),
            ROOT_TOKEN,
        )
        .await;

    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(after, StatusCode::UNAUTHORIZED);
    assert_eq!(second_after, StatusCode::UNAUTHORIZED);
    let revoked = revoked.as_array().expect("a JSON array");
    let ids: Vec<i64> = revoked
        .iter()
        .map(|token| token["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, [setup.token_id, second_id]);
    assert!(revoked.iter().all(|token| token["revoked_by_user_id"] == 1));
    assert_eq!(
        revoked[0]["revoked_reason"],
        "revoked by an administrator through the admin token API"
    );
    assert_eq!(identified["status"], "revoked");
    assert_eq!(pat_revoke.0, StatusCode::NO_CONTENT, "{}", pat_revoke.1);
    let (pat_status, _) = setup.app.get("/user", &user_token).await;
    assert_eq!(
        pat_status,
        StatusCode::UNAUTHORIZED,
        "a revoked personal access token"
    );
    let (_, instance_events) = setup.app.get("/audit_events", ROOT_TOKEN).await;
    assert!(
        instance_events
            .to_string()
            .contains("personal_access_token_revoked"),
        "{instance_events}"
    );
    let audit_text = audit_events.to_string();
    assert!(
        audit_text.contains("through the admin token API"),
        "{audit_text}"
    );
}

// The instance inventory, `GET /admin/cluster_agents`.

#[tokio::test]
async fn the_inventory_lists_every_agent_with_its_token_summary_and_filters_on_both_protocols() {
    let app = TestApp::spawn().await;
    let alpha = app.project(ROOT_TOKEN, "alpha").await;
    let beta = app.project(ROOT_TOKEN, "beta").await;
    let used_agent = app.agent(alpha, "used").await;
    let dead_agent = app.agent(alpha, "dead").await;
    let expiring_agent = app.agent(beta, "expiring").await;
    let (_, used_secret) = app.agent_token(alpha, used_agent, "t").await;
    let (status, _) = app.agent_info(&used_secret).await;
    assert_eq!(status, StatusCode::OK);
    app.agent_token(alpha, dead_agent, "t").await;
    let (status, expiring) = app
        .post(
            &format!("/projects/{beta}/cluster_agents/{expiring_agent}/tokens"),
            ROOT_TOKEN,
            json!({"name": "t", "expires_at": "2090-01-01"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{expiring}");
    let (_, user_token) = app.user_with_scopes("someone", &["api"]).await;

    let (status, all) = app.get("/admin/cluster_agents", ROOT_TOKEN).await;
    let (_, unused) = app
        .get("/admin/cluster_agents?unused_since=2000-01-01", ROOT_TOKEN)
        .await;
    let (_, expiring_soon) = app
        .get(
            "/admin/cluster_agents?token_expires_before=2095-01-01",
            ROOT_TOKEN,
        )
        .await;
    let (_, in_beta) = app
        .get("/admin/cluster_agents?project=ROOT/BE", ROOT_TOKEN)
        .await;
    let (bad_status, bad) = app
        .get("/admin/cluster_agents?unused_since=yesterday", ROOT_TOKEN)
        .await;
    let (forbidden, _) = app.get("/admin/cluster_agents", &user_token).await;
    let grpc = app
        .grpc_agents(ROOT_TOKEN)
        .list_instance_agents(pb::ListInstanceAgentsRequest {
            page: None,
            unused_since: None,
            token_expires_before: Some("2095-01-01".to_owned()),
            project: None,
        })
        .await
        .expect("listed")
        .into_inner();
    let (grpc_forbidden, _) = grpc_error(
        app.grpc_agents(&user_token)
            .list_instance_agents(pb::ListInstanceAgentsRequest::default())
            .await,
    );

    let names = |body: &Value| -> Vec<String> {
        body.as_array()
            .expect("a JSON array")
            .iter()
            .map(|agent| agent["name"].as_str().expect("name").to_owned())
            .collect()
    };
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(names(&all), ["used", "dead", "expiring"]);
    assert_eq!(all[0]["project_path"], "root/alpha");
    assert_eq!(all[0]["token_summary"]["active"], 1);
    assert!(all[0]["token_summary"]["last_used_at"].is_string(), "{all}");
    assert_eq!(all[1]["token_summary"]["last_used_at"], Value::Null);
    assert_eq!(
        all[2]["token_summary"]["earliest_expires_at"],
        "2090-01-01T00:00:00.000Z"
    );
    assert_eq!(names(&unused), ["dead", "expiring"]);
    assert_eq!(names(&expiring_soon), ["expiring"]);
    assert_eq!(names(&in_beta), ["expiring"]);
    assert_eq!(bad_status, StatusCode::BAD_REQUEST);
    assert_eq!(bad, json!({"error": "unused_since is invalid"}));
    assert_eq!(forbidden, StatusCode::FORBIDDEN);
    let grpc_names: Vec<String> = grpc
        .agents
        .iter()
        .map(|entry| entry.agent.as_ref().expect("agent").name.clone())
        .collect();
    assert_eq!(grpc_names, ["expiring"]);
    assert_eq!(grpc.agents[0].project_path, "root/beta");
    assert_eq!(grpc.agents[0].active_tokens, 1);
    assert_eq!(grpc_forbidden, tonic::Code::PermissionDenied);
}
