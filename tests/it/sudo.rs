//! GitLab's `Sudo` (issue 11): an administrator with the `sudo` scope acts as another user, on
//! REST (the `Sudo` header or `sudo` parameter) and gRPC (`sudo` metadata), with GitLab's
//! refusals.

use crate::helpers::{ROOT_TOKEN, TestApp, WithMetadata, grpc_error};
use agentreg::grpc::pb;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

async fn admin_token_with_scopes(app: &TestApp, scopes: &[&str]) -> String {
    let (status, token) = app
        .post(
            "/users/1/personal_access_tokens",
            ROOT_TOKEN,
            json!({"name": "sudo", "scopes": scopes}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    token["token"].as_str().expect("token").to_owned()
}

async fn with_sudo(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    sudo: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let builder = app.request(method, path, Some(token)).header("Sudo", sudo);
    let builder = match body {
        Some(body) => builder.json(&body),
        None => builder,
    };
    crate::helpers::read(builder.send().await.expect("sent")).await
}

fn grpc_agents_as(
    app: &TestApp,
    token: &str,
    sudo: &str,
) -> pb::agent_service_client::AgentServiceClient<InterceptedService<Channel, WithMetadata>> {
    pb::agent_service_client::AgentServiceClient::with_interceptor(
        app.channel.clone(),
        WithMetadata::new(vec![
            ("private-token", token.to_owned()),
            ("sudo", sudo.to_owned()),
        ]),
    )
}

#[tokio::test]
async fn an_administrator_with_the_sudo_scope_acts_as_the_named_user_on_both_protocols() {
    let app = TestApp::spawn().await;
    let sudo_token = admin_token_with_scopes(&app, &["api", "sudo"]).await;
    let (alice_id, _) = app.user_with_scopes("alice", &["api"]).await;
    let project_id = app.project(ROOT_TOKEN, "shared").await;
    app.add_member(project_id, alice_id, 40).await;
    let other_project = app.project(ROOT_TOKEN, "private").await;

    let (status, agent) = with_sudo(
        &app,
        Method::POST,
        &format!("/projects/{project_id}/cluster_agents"),
        &sudo_token,
        "alice",
        Some(json!({"name": "as-alice"})),
    )
    .await;
    let (user_status, user) = with_sudo(
        &app,
        Method::GET,
        "/user",
        &sudo_token,
        &alice_id.to_string(),
        None,
    )
    .await;
    let (hidden_status, _) = with_sudo(
        &app,
        Method::GET,
        &format!("/projects/{other_project}/cluster_agents"),
        &sudo_token,
        "ALICE",
        None,
    )
    .await;
    let grpc = grpc_agents_as(&app, &sudo_token, "alice")
        .create_agent(pb::CreateAgentRequest {
            project: project_id.to_string(),
            name: Some("grpc-as-alice".to_owned()),
        })
        .await
        .expect("created")
        .into_inner();
    let (_, audit_events) = app
        .get(&format!("/projects/{project_id}/audit_events"), ROOT_TOKEN)
        .await;

    assert_eq!(status, StatusCode::CREATED, "{agent}");
    assert_eq!(agent["created_by_user_id"], alice_id);
    assert_eq!(user_status, StatusCode::OK);
    assert_eq!(user["username"], "alice");
    assert_eq!(
        hidden_status,
        StatusCode::NOT_FOUND,
        "authorization is alice's"
    );
    assert_eq!(grpc.created_by_user_id, Some(alice_id));
    let events = audit_events.as_array().expect("a JSON array");
    let created = events
        .iter()
        .find(|event| event["details"]["target_details"] == "as-alice")
        .expect("the create is audited");
    assert_eq!(created["author_id"], alice_id);
    assert_eq!(created["details"]["impersonated_by_user_id"], 1);
}

#[tokio::test]
async fn sudo_is_refused_as_gitlab_refuses_it_on_both_protocols() {
    let app = TestApp::spawn().await;
    let (_, alice_token) = app.user_with_scopes("alice", &["api", "sudo"]).await;
    let api_only = admin_token_with_scopes(&app, &["api"]).await;
    let sudo_token = admin_token_with_scopes(&app, &["api", "sudo"]).await;

    let not_admin = with_sudo(&app, Method::GET, "/user", &alice_token, "root", None).await;
    let no_scope = with_sudo(&app, Method::GET, "/user", &api_only, "alice", None).await;
    let unknown = with_sudo(&app, Method::GET, "/user", &sudo_token, "nobody", None).await;
    let by_query = app.get("/user?sudo=alice", &sudo_token).await;
    let grpc_request = || pb::ListAgentsRequest {
        project: "1".to_owned(),
        page: None,
        keyset: None,
    };
    let (grpc_not_admin, not_admin_message) = grpc_error(
        grpc_agents_as(&app, &alice_token, "root")
            .list_agents(grpc_request())
            .await,
    );
    let (grpc_no_scope, _) = grpc_error(
        grpc_agents_as(&app, &api_only, "alice")
            .list_agents(grpc_request())
            .await,
    );
    let (grpc_unknown, unknown_message) = grpc_error(
        grpc_agents_as(&app, &sudo_token, "nobody")
            .list_agents(grpc_request())
            .await,
    );

    assert_eq!(
        not_admin,
        (
            StatusCode::FORBIDDEN,
            json!({"message": "403 Forbidden - Must be admin to use sudo"})
        )
    );
    assert_eq!(no_scope.0, StatusCode::FORBIDDEN);
    assert_eq!(no_scope.1["error"], "insufficient_scope");
    assert_eq!(no_scope.1["scope"], "sudo");
    assert_eq!(
        unknown,
        (
            StatusCode::NOT_FOUND,
            json!({"message": "404 User with ID or username 'nobody' Not Found"})
        )
    );
    assert_eq!(by_query.0, StatusCode::OK);
    assert_eq!(by_query.1["username"], "alice");
    assert_eq!(grpc_not_admin, tonic::Code::PermissionDenied);
    assert_eq!(
        not_admin_message,
        "403 Forbidden - Must be admin to use sudo"
    );
    assert_eq!(grpc_no_scope, tonic::Code::PermissionDenied);
    assert_eq!(grpc_unknown, tonic::Code::NotFound);
    assert_eq!(
        unknown_message,
        "404 User with ID or username 'nobody' Not Found"
    );
}

#[tokio::test]
async fn a_sudo_only_token_grants_no_access_of_its_own() {
    let app = TestApp::spawn().await;
    let sudo_only = admin_token_with_scopes(&app, &["sudo"]).await;

    let (status, body) = app.get("/user", &sudo_only).await;

    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "insufficient_scope");
}
