//! The agent tokens API (reference §3, §4.2 and §7.2) over REST and gRPC, the agent-server
//! authentication that uses those tokens (§6), and the promises of issue 3: the two-token limit
//! under concurrency, secrets shown once and never stored, and state that survives a restart.

use crate::helpers::{
    KAS_SECRET, ROOT_TOKEN, TestApp, data_dir_contains, grpc_error, kas_jwt_signed_with, read,
    status_name,
};
use agentreg::grpc::pb;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const GUEST: i64 = 10;
const DEVELOPER: i64 = 30;
const MAINTAINER: i64 = 40;
/// An id that no record in a fresh instance has.
const NONEXISTENT_ID: i64 = 999_999;
const LIMIT_MESSAGE: &str = "400 Bad request - An agent can have only two active tokens at a time";
const TOKEN_PREFIX: &str = "glagent-";
const AGENT_INFO_PATH: &str = "/internal/agents/agentk/agent_info";
const LEGACY_AGENT_INFO_PATH: &str = "/internal/kubernetes/agent_info";

// §7.2: reading tokens.

#[tokio::test]
async fn token_list_shows_only_active_tokens_in_the_basic_shape() {
    let fixture = fixture().await;

    let (status, headers, tokens) =
        get_with_headers(&fixture.app, &fixture.tokens_path(), &fixture.user_token).await;

    assert_eq!(status, StatusCode::OK, "{tokens}");
    let tokens = tokens.as_array().expect("a JSON array");
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let token = &tokens[0];
    assert_eq!(
        keys(token),
        [
            "id",
            "name",
            "description",
            "agent_id",
            "status",
            "created_at",
            "created_by_user_id",
            "expires_at",
            "revoked_at",
            "revoked_by_user_id",
            "revoked_reason",
            "retiring_until",
            "successor_id",
        ]
    );
    assert_eq!(token["id"], fixture.active_token_id);
    assert_eq!(token["name"], "t1");
    assert_eq!(token["description"], Value::Null);
    assert_eq!(token["agent_id"], fixture.agent_id);
    assert_eq!(token["status"], "active");
    assert_gitlab_timestamp(&token["created_at"]);
    assert_eq!(token["created_by_user_id"], fixture.user_id);
    assert_eq!(header(&headers, "x-total"), "1");
    assert_eq!(header(&headers, "x-total-pages"), "1");
    assert_eq!(header(&headers, "x-per-page"), "20");
    assert_eq!(header(&headers, "x-page"), "1");
    assert_eq!(header(&headers, "x-next-page"), "");
    assert_eq!(header(&headers, "x-prev-page"), "");
    let page_url = format!(
        "{}/api/v4{}?agent_id={}&id={}&page=1&per_page=20",
        fixture.app.base_url,
        fixture.tokens_path(),
        fixture.agent_id,
        fixture.project_id
    );
    assert_eq!(
        header(&headers, "link"),
        format!("<{page_url}>; rel=\"first\", <{page_url}>; rel=\"last\"")
    );
}

#[tokio::test]
async fn token_list_pages_with_per_page() {
    let fixture = root_fixture().await;
    let (second_token_id, _) = fixture.create_token("t2").await;
    let path = format!("{}?per_page=1", fixture.tokens_path());

    let (status, headers, tokens) =
        get_with_headers(&fixture.app, &path, &fixture.user_token).await;

    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(ids(&tokens), [fixture.active_token_id]);
    assert_eq!(header(&headers, "x-total"), "2");
    assert_eq!(header(&headers, "x-total-pages"), "2");
    assert_eq!(header(&headers, "x-next-page"), "2");
    let (status, tokens) = fixture
        .app
        .get(
            &format!("{}?per_page=1&page=2", fixture.tokens_path()),
            &fixture.user_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(ids(&tokens), [second_token_id]);
}

#[tokio::test]
async fn token_list_of_an_unknown_agent_is_not_found() {
    let fixture = fixture().await;
    let path = tokens_path(fixture.project_id, NONEXISTENT_ID);

    let (status, body) = fixture.app.get(&path, &fixture.user_token).await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"message": "404 Not found"}));
}

#[tokio::test]
async fn token_routes_without_a_token_are_unauthorized() {
    let fixture = root_fixture().await;

    let (status, body) = fixture
        .app
        .call(Method::GET, &fixture.tokens_path(), None, None)
        .await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"message": "401 Unauthorized"}));
    let (status, body) = fixture
        .app
        .call(
            Method::POST,
            &fixture.tokens_path(),
            Some("glpat-not-a-real-token"),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"message": "401 Unauthorized"}));
}

#[tokio::test]
async fn single_token_has_last_used_at_which_is_null_before_use() {
    let fixture = fixture().await;

    let (status, token) = fixture
        .app
        .get(
            &fixture.token_path(fixture.active_token_id),
            &fixture.user_token,
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{token}");
    assert_eq!(
        keys(&token),
        [
            "id",
            "name",
            "description",
            "agent_id",
            "status",
            "created_at",
            "created_by_user_id",
            "last_used_at",
            "expires_at",
            "revoked_at",
            "revoked_by_user_id",
            "revoked_reason",
            "retiring_until",
            "successor_id",
        ]
    );
    assert_eq!(token["id"], fixture.active_token_id);
    assert_eq!(token["name"], "t1");
    assert_eq!(token["agent_id"], fixture.agent_id);
    assert_eq!(token["status"], "active");
    assert_eq!(token["last_used_at"], Value::Null);
}

#[tokio::test]
async fn revoked_token_is_not_found() {
    let fixture = fixture().await;

    let (status, body) = fixture
        .app
        .get(
            &fixture.token_path(fixture.revoked_token_id),
            &fixture.user_token,
        )
        .await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"message": "404 Not found"}));
}

#[tokio::test]
async fn unknown_agent_or_token_is_not_found() {
    let fixture = fixture().await;
    let paths = [
        token_path(fixture.project_id, NONEXISTENT_ID, NONEXISTENT_ID),
        fixture.token_path(NONEXISTENT_ID),
        token_path(fixture.project_id, NONEXISTENT_ID, fixture.active_token_id),
    ];

    for path in paths {
        let (status, body) = fixture.app.get(&path, &fixture.user_token).await;

        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body, json!({"message": "404 Not found"}), "{path}");
    }
}

#[tokio::test]
async fn token_of_an_unknown_project_is_not_found() {
    let fixture = root_fixture().await;
    let path = tokens_path(NONEXISTENT_ID, fixture.agent_id);

    let (status, body) = fixture.app.get(&path, &fixture.user_token).await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"message": "404 Project Not Found"}));
}

#[tokio::test]
async fn non_integer_ids_are_invalid_parameters() {
    let fixture = root_fixture().await;

    let (agent_status, agent_body) = fixture
        .app
        .get(
            &format!("/projects/{}/cluster_agents/abc/tokens", fixture.project_id),
            &fixture.user_token,
        )
        .await;
    let (token_status, token_body) = fixture
        .app
        .get(
            &format!("{}/abc", fixture.tokens_path()),
            &fixture.user_token,
        )
        .await;

    assert_eq!(agent_status, StatusCode::BAD_REQUEST);
    assert_eq!(agent_body, json!({"error": "agent_id is invalid"}));
    assert_eq!(token_status, StatusCode::BAD_REQUEST);
    assert_eq!(token_body, json!({"error": "token_id is invalid"}));
}

#[tokio::test]
async fn guest_gets_not_found_on_reads_and_forbidden_on_writes() {
    let fixture = fixture().await;
    let guest = &fixture.guest().await;

    let (list_status, list_body) = fixture.app.get(&fixture.tokens_path(), guest).await;
    let (get_status, get_body) = fixture
        .app
        .get(&fixture.token_path(fixture.active_token_id), guest)
        .await;
    let (create_status, create_body) = fixture
        .app
        .post(&fixture.tokens_path(), guest, json!({"name": "some"}))
        .await;
    let (revoke_status, revoke_body) = fixture
        .app
        .delete(&fixture.token_path(fixture.active_token_id), guest)
        .await;

    assert_eq!(list_status, StatusCode::NOT_FOUND);
    assert_eq!(list_body, json!({"message": "404 Not found"}));
    assert_eq!(get_status, StatusCode::NOT_FOUND);
    assert_eq!(get_body, json!({"message": "404 Not found"}));
    assert_eq!(create_status, StatusCode::FORBIDDEN);
    assert_eq!(create_body, json!({"message": "403 Forbidden"}));
    assert_eq!(revoke_status, StatusCode::FORBIDDEN);
    assert_eq!(revoke_body, json!({"message": "403 Forbidden"}));
    assert_eq!(fixture.active_token_ids().await, [fixture.active_token_id]);
}

#[tokio::test]
async fn guest_is_forbidden_to_write_before_the_agent_is_looked_up() {
    let fixture = fixture().await;
    let guest = &fixture.guest().await;

    let (create_status, create_body) = fixture
        .app
        .post(
            &tokens_path(fixture.project_id, NONEXISTENT_ID),
            guest,
            json!({"name": "some"}),
        )
        .await;
    let (revoke_status, revoke_body) = fixture
        .app
        .delete(
            &token_path(fixture.project_id, NONEXISTENT_ID, NONEXISTENT_ID),
            guest,
        )
        .await;

    assert_eq!(create_status, StatusCode::FORBIDDEN);
    assert_eq!(create_body, json!({"message": "403 Forbidden"}));
    assert_eq!(revoke_status, StatusCode::FORBIDDEN);
    assert_eq!(revoke_body, json!({"message": "403 Forbidden"}));
}

#[tokio::test]
async fn developer_reads_tokens_but_cannot_create_or_revoke_them() {
    let fixture = fixture().await;
    let developer = fixture
        .app
        .member(fixture.project_id, "developer", DEVELOPER)
        .await;

    let (list_status, tokens) = fixture.app.get(&fixture.tokens_path(), &developer).await;
    let (get_status, token) = fixture
        .app
        .get(&fixture.token_path(fixture.active_token_id), &developer)
        .await;
    let (create_status, create_body) = fixture
        .app
        .post(&fixture.tokens_path(), &developer, json!({"name": "some"}))
        .await;
    let (revoke_status, revoke_body) = fixture
        .app
        .delete(&fixture.token_path(fixture.active_token_id), &developer)
        .await;

    assert_eq!(list_status, StatusCode::OK, "{tokens}");
    assert_eq!(ids(&tokens), [fixture.active_token_id]);
    assert_eq!(get_status, StatusCode::OK, "{token}");
    assert_eq!(token["id"], fixture.active_token_id);
    assert_eq!(create_status, StatusCode::FORBIDDEN);
    assert_eq!(create_body, json!({"message": "403 Forbidden"}));
    assert_eq!(revoke_status, StatusCode::FORBIDDEN);
    assert_eq!(revoke_body, json!({"message": "403 Forbidden"}));
}

#[tokio::test]
async fn guest_owning_another_project_cannot_reach_a_token_through_their_own_agent() {
    let fixture = fixture().await;
    let guest_token = fixture.guest().await;
    let other_project_id = fixture.app.project(&guest_token, "project-q").await;
    let other_agent_id = fixture.app.agent(other_project_id, "agent-b").await;
    let path = token_path(other_project_id, other_agent_id, fixture.active_token_id);

    let (get_status, get_body) = fixture.app.get(&path, &guest_token).await;
    let (revoke_status, revoke_body) = fixture.app.delete(&path, &guest_token).await;

    assert_eq!(get_status, StatusCode::NOT_FOUND);
    assert_eq!(get_body, json!({"message": "404 Not found"}));
    assert_eq!(revoke_status, StatusCode::NOT_FOUND);
    assert_eq!(revoke_body, json!({"message": "404 Not found"}));
    assert_eq!(fixture.active_token_ids().await, [fixture.active_token_id]);
}

// §7.2: creating tokens.

#[tokio::test]
async fn maintainer_creates_a_token_and_receives_its_secret() {
    let fixture = fixture().await;

    let (status, token) = fixture
        .app
        .post(
            &fixture.tokens_path(),
            &fixture.user_token,
            json!({"name": "test-token", "description": "Test description"}),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED, "{token}");
    assert_eq!(
        keys(&token),
        [
            "id",
            "name",
            "description",
            "agent_id",
            "status",
            "created_at",
            "created_by_user_id",
            "last_used_at",
            "token",
            "expires_at",
            "revoked_at",
            "revoked_by_user_id",
            "revoked_reason",
            "retiring_until",
            "successor_id",
        ]
    );
    assert_eq!(token["name"], "test-token");
    assert_eq!(token["description"], "Test description");
    assert_eq!(token["agent_id"], fixture.agent_id);
    assert_eq!(token["status"], "active");
    assert_eq!(token["created_by_user_id"], fixture.user_id);
    assert_eq!(token["last_used_at"], Value::Null);
    assert_gitlab_timestamp(&token["created_at"]);
    assert_well_formed_secret(token["token"].as_str().expect("a secret"));
    let token_id = token["id"].as_i64().expect("token id");
    assert_eq!(
        fixture.active_token_ids().await,
        [fixture.active_token_id, token_id]
    );
}

#[tokio::test]
async fn every_created_secret_is_different() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "project-p").await;
    let agent_id = app.agent(project_id, "agent-a").await;

    let (_, first_secret) = app.agent_token(project_id, agent_id, "first").await;
    let (_, second_secret) = app.agent_token(project_id, agent_id, "second").await;

    assert_well_formed_secret(&first_secret);
    assert_well_formed_secret(&second_secret);
    assert_ne!(first_secret, second_secret);
}

#[tokio::test]
async fn creating_a_token_without_parameters_is_rejected() {
    let fixture = fixture().await;

    let (status, body) = fixture
        .app
        .post(&fixture.tokens_path(), &fixture.user_token, json!({}))
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"error": "name is missing"}));
}

#[tokio::test]
async fn creating_a_token_without_an_agent_id_matches_no_route() {
    let fixture = fixture().await;
    let path = format!("/projects/{}/cluster_agents/tokens", fixture.project_id);

    let (status, body) = fixture
        .app
        .post(&path, &fixture.user_token, json!({"name": "some"}))
        .await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "404 Not Found"}));
}

#[tokio::test]
async fn creating_a_token_for_an_unknown_agent_or_project_is_not_found() {
    let fixture = fixture().await;

    let (agent_status, agent_body) = fixture
        .app
        .post(
            &tokens_path(fixture.project_id, NONEXISTENT_ID),
            &fixture.user_token,
            json!({"name": "some"}),
        )
        .await;
    let (project_status, project_body) = fixture
        .app
        .post(
            &tokens_path(NONEXISTENT_ID, fixture.agent_id),
            &fixture.user_token,
            json!({"name": "some"}),
        )
        .await;

    assert_eq!(agent_status, StatusCode::NOT_FOUND);
    assert_eq!(agent_body, json!({"message": "404 Not found"}));
    assert_eq!(project_status, StatusCode::NOT_FOUND);
    assert_eq!(project_body, json!({"message": "404 Project Not Found"}));
}

#[tokio::test]
async fn missing_name_is_reported_before_the_project_is_looked_up() {
    let fixture = fixture().await;

    let (status, body) = fixture
        .app
        .post(
            &tokens_path(NONEXISTENT_ID, NONEXISTENT_ID),
            &fixture.user_token,
            json!({"description": "no name"}),
        )
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"error": "name is missing"}));
}

#[tokio::test]
async fn third_active_token_is_rejected() {
    let fixture = fixture().await;
    fixture.create_token("t2").await;

    let (status, body) = fixture
        .app
        .post(
            &fixture.tokens_path(),
            &fixture.user_token,
            json!({"name": "t3"}),
        )
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"message": LIMIT_MESSAGE}));
    assert_eq!(fixture.active_token_ids().await.len(), 2);
}

#[tokio::test]
async fn token_name_of_255_characters_is_accepted() {
    let fixture = root_fixture().await;
    let name = "n".repeat(255);

    let (status, token) = fixture
        .app
        .post(
            &fixture.tokens_path(),
            &fixture.user_token,
            json!({"name": name, "description": "d".repeat(1024)}),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED, "{token}");
    assert_eq!(token["name"], name);
    assert_eq!(token["description"], "d".repeat(1024));
}

#[tokio::test]
async fn token_name_longer_than_255_characters_is_rejected() {
    let fixture = root_fixture().await;

    let (status, body) = fixture
        .app
        .post(
            &fixture.tokens_path(),
            &fixture.user_token,
            json!({"name": "n".repeat(256)}),
        )
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"message": "400 Bad request - [\"Name is too long (maximum is 255 characters)\"]"})
    );
    assert_eq!(fixture.active_token_ids().await, [fixture.active_token_id]);
}

#[tokio::test]
async fn token_description_longer_than_1024_characters_is_rejected() {
    let fixture = root_fixture().await;

    let (status, body) = fixture
        .app
        .post(
            &fixture.tokens_path(),
            &fixture.user_token,
            json!({"name": "t2", "description": "d".repeat(1025)}),
        )
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"message": "400 Bad request - [\"Description is too long (maximum is 1024 characters)\"]"})
    );
}

#[tokio::test]
async fn empty_token_name_is_rejected_as_blank() {
    let fixture = root_fixture().await;

    let (status, body) = fixture
        .app
        .post(
            &fixture.tokens_path(),
            &fixture.user_token,
            json!({"name": ""}),
        )
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"message": "400 Bad request - [\"Name can't be blank\"]"})
    );
}

#[tokio::test]
async fn invalid_name_and_description_are_reported_together() {
    let fixture = root_fixture().await;

    let (status, body) = fixture
        .app
        .post(
            &fixture.tokens_path(),
            &fixture.user_token,
            json!({"name": "n".repeat(256), "description": "d".repeat(1025)}),
        )
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"message": "400 Bad request - [\"Name is too long (maximum is 255 characters)\", \"Description is too long (maximum is 1024 characters)\"]"})
    );
}

#[tokio::test]
async fn token_without_description_has_a_null_description() {
    let fixture = root_fixture().await;

    let (status, token) = fixture
        .app
        .post(
            &fixture.tokens_path(),
            &fixture.user_token,
            json!({"name": "t2"}),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED, "{token}");
    assert_eq!(token["description"], Value::Null);
    let token_id = token["id"].as_i64().expect("token id");
    let (_, shown) = fixture
        .app
        .get(&fixture.token_path(token_id), &fixture.user_token)
        .await;
    assert_eq!(shown["description"], Value::Null);
}

#[tokio::test]
async fn empty_description_is_kept_as_an_empty_string() {
    let fixture = root_fixture().await;

    let (status, token) = fixture
        .app
        .post(
            &fixture.tokens_path(),
            &fixture.user_token,
            json!({"name": "t2", "description": ""}),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED, "{token}");
    assert_eq!(token["description"], "");
}

// §7.2: revoking tokens.

#[tokio::test]
async fn revoking_a_token_leaves_it_revoked() {
    let fixture = fixture().await;
    let path = fixture.token_path(fixture.active_token_id);

    let (status, body) = fixture.app.delete(&path, &fixture.user_token).await;

    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    let (status, body) = fixture.app.get(&path, &fixture.user_token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"message": "404 Not found"}));
    assert_eq!(fixture.active_token_ids().await, Vec::<i64>::new());
    let (status, body) = fixture.app.agent_info(&fixture.active_secret).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"message": "401 Unauthorized"}));
}

#[tokio::test]
async fn revoking_an_already_revoked_token_succeeds_again() {
    let fixture = fixture().await;

    let (status, body) = fixture
        .app
        .delete(
            &fixture.token_path(fixture.revoked_token_id),
            &fixture.user_token,
        )
        .await;

    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    assert_eq!(fixture.active_token_ids().await, [fixture.active_token_id]);
    let (status, _) = fixture.app.agent_info(&fixture.revoked_secret).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revoking_an_unknown_agent_or_token_is_not_found() {
    let fixture = fixture().await;
    let paths = [
        token_path(fixture.project_id, NONEXISTENT_ID, NONEXISTENT_ID),
        fixture.token_path(NONEXISTENT_ID),
    ];

    for path in paths {
        let (status, body) = fixture.app.delete(&path, &fixture.user_token).await;

        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body, json!({"message": "404 Not found"}), "{path}");
    }
}

#[tokio::test]
async fn revoking_a_token_of_another_agent_is_not_found() {
    let fixture = fixture().await;
    let (status, other_agent) = fixture
        .app
        .post(
            &format!("/projects/{}/cluster_agents", fixture.project_id),
            &fixture.user_token,
            json!({"name": "agent-other"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{other_agent}");
    let other_agent_id = other_agent["id"].as_i64().expect("agent id");
    let path = token_path(fixture.project_id, other_agent_id, fixture.active_token_id);

    let (get_status, _) = fixture.app.get(&path, &fixture.user_token).await;
    let (revoke_status, revoke_body) = fixture.app.delete(&path, &fixture.user_token).await;

    assert_eq!(get_status, StatusCode::NOT_FOUND);
    assert_eq!(revoke_status, StatusCode::NOT_FOUND);
    assert_eq!(revoke_body, json!({"message": "404 Not found"}));
    assert_eq!(fixture.active_token_ids().await, [fixture.active_token_id]);
}

// Ordering of the list.

#[tokio::test]
async fn token_list_puts_the_most_recently_used_token_first() {
    let fixture = root_fixture().await;
    let (second_token_id, second_secret) = fixture.create_token("t2").await;
    assert_eq!(
        fixture.active_token_ids().await,
        [fixture.active_token_id, second_token_id],
        "unused tokens are ordered by id"
    );

    let (status, _) = fixture.app.agent_info(&second_secret).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        fixture.active_token_ids().await,
        [second_token_id, fixture.active_token_id],
        "a used token comes before an unused one"
    );
    let (status, _) = fixture.app.agent_info(&fixture.active_secret).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        fixture.active_token_ids().await,
        [fixture.active_token_id, second_token_id],
        "the latest use comes first"
    );
}

// The limit under concurrency.

#[tokio::test]
async fn fifty_parallel_creates_leave_exactly_two_active_tokens() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "project-p").await;
    let agent_id = app.agent(project_id, "agent-a").await;
    let path = tokens_path(project_id, agent_id);

    let responses = futures::future::join_all((0..50).map(|attempt| {
        app.post(
            &path,
            ROOT_TOKEN,
            json!({"name": format!("parallel-{attempt}")}),
        )
    }))
    .await;

    let created: Vec<&Value> = responses
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .map(|(_, body)| body)
        .collect();
    let refused = responses
        .iter()
        .filter(|(status, body)| {
            *status == StatusCode::BAD_REQUEST && *body == json!({"message": LIMIT_MESSAGE})
        })
        .count();
    assert_eq!(created.len(), 2, "{responses:?}");
    assert_eq!(refused, 48, "{responses:?}");
    let mut created_ids: Vec<i64> = created
        .iter()
        .map(|body| body["id"].as_i64().expect("token id"))
        .collect();
    created_ids.sort_unstable();
    let (_, tokens) = app.get(&path, ROOT_TOKEN).await;
    let mut listed_ids = ids(&tokens);
    listed_ids.sort_unstable();
    assert_eq!(listed_ids, created_ids);
}

#[tokio::test]
async fn revoking_one_of_two_active_tokens_frees_exactly_one_slot() {
    let fixture = root_fixture().await;
    fixture.create_token("t2").await;
    let (status, _) = fixture
        .app
        .delete(
            &fixture.token_path(fixture.active_token_id),
            &fixture.user_token,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let path = fixture.tokens_path();
    let responses = futures::future::join_all((0..10).map(|attempt| {
        fixture.app.post(
            &path,
            &fixture.user_token,
            json!({"name": format!("after-revoke-{attempt}")}),
        )
    }))
    .await;

    let n_created = responses
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .count();
    let n_refused = responses
        .iter()
        .filter(|(status, body)| {
            *status == StatusCode::BAD_REQUEST && *body == json!({"message": LIMIT_MESSAGE})
        })
        .count();
    assert_eq!((n_created, n_refused), (1, 9), "{responses:?}");
    let (status, body) = fixture
        .app
        .post(
            &fixture.tokens_path(),
            &fixture.user_token,
            json!({"name": "one-too-many"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"message": LIMIT_MESSAGE}));
    assert_eq!(fixture.active_token_ids().await.len(), 2);
}

#[tokio::test]
async fn sequential_creates_after_a_revoke_get_one_slot() {
    let fixture = root_fixture().await;
    fixture.create_token("t2").await;
    let (status, _) = fixture
        .app
        .delete(
            &fixture.token_path(fixture.active_token_id),
            &fixture.user_token,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (first_status, _) = fixture
        .app
        .post(
            &fixture.tokens_path(),
            &fixture.user_token,
            json!({"name": "t3"}),
        )
        .await;
    let (second_status, second_body) = fixture
        .app
        .post(
            &fixture.tokens_path(),
            &fixture.user_token,
            json!({"name": "t4"}),
        )
        .await;

    assert_eq!(first_status, StatusCode::CREATED);
    assert_eq!(second_status, StatusCode::BAD_REQUEST);
    assert_eq!(second_body, json!({"message": LIMIT_MESSAGE}));
}

#[tokio::test]
async fn twenty_parallel_grpc_creates_leave_exactly_two_active_tokens() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "project-p").await;
    let agent_id = app.agent(project_id, "agent-a").await;
    let client = app.grpc_tokens(ROOT_TOKEN);

    let results = futures::future::join_all((0..20).map(|attempt| {
        let mut client = client.clone();
        async move {
            client
                .create_agent_token(pb::CreateAgentTokenRequest {
                    expires_at: None,
                    project: project_id.to_string(),
                    agent_id,
                    name: Some(format!("parallel-{attempt}")),
                    description: None,
                })
                .await
        }
    }))
    .await;

    let n_created = results.iter().filter(|result| result.is_ok()).count();
    let n_refused = results
        .iter()
        .filter(|result| {
            result.as_ref().is_err_and(|status| {
                status.code() == tonic::Code::InvalidArgument && status.message() == LIMIT_MESSAGE
            })
        })
        .count();
    assert_eq!((n_created, n_refused), (2, 18), "{results:?}");
    let (_, tokens) = app
        .get(&tokens_path(project_id, agent_id), ROOT_TOKEN)
        .await;
    assert_eq!(ids(&tokens).len(), 2);
}

// Agent authentication (reference §6).

#[tokio::test]
async fn agent_info_identifies_the_agent_of_a_valid_token_on_both_paths() {
    let fixture = root_fixture().await;
    let expected = json!({
        "project_id": fixture.project_id,
        "agent_id": fixture.agent_id,
        "agent_name": "agent-a",
    });

    for path in [AGENT_INFO_PATH, LEGACY_AGENT_INFO_PATH] {
        let (status, body) = agent_info_at(
            &fixture.app,
            path,
            Some(fixture.app.kas_jwt()),
            Some(&fixture.active_secret),
        )
        .await;

        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body, expected, "{path}");
        assert_eq!(
            keys(&body),
            ["project_id", "agent_id", "agent_name"],
            "{path}"
        );
    }
}

#[tokio::test]
async fn agent_info_without_a_valid_kas_jwt_is_unauthorized() {
    let fixture = root_fixture().await;
    let bad_jwts = [
        ("missing", None),
        ("empty", Some(String::new())),
        ("garbage", Some("not-a-jwt".to_owned())),
        ("other secret", Some(kas_jwt_signed_with(&[7; 32]))),
        (
            "wrong issuer",
            Some(kas_jwt_with(&KAS_SECRET, "someone-else", "gitlab", 60)),
        ),
        (
            "wrong audience",
            Some(kas_jwt_with(&KAS_SECRET, "gitlab-kas", "elsewhere", 60)),
        ),
        (
            "expired",
            Some(kas_jwt_with(&KAS_SECRET, "gitlab-kas", "gitlab", -600)),
        ),
    ];

    for path in [AGENT_INFO_PATH, LEGACY_AGENT_INFO_PATH] {
        for (case, jwt) in &bad_jwts {
            let (status, body) = agent_info_at(
                &fixture.app,
                path,
                jwt.clone(),
                Some(&fixture.active_secret),
            )
            .await;

            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}, {case}");
            assert_eq!(
                body,
                json!({"message": "KAS JWT authentication invalid"}),
                "{path}, {case}"
            );
        }
    }
    let (_, token) = fixture
        .app
        .get(
            &fixture.token_path(fixture.active_token_id),
            &fixture.user_token,
        )
        .await;
    assert_eq!(
        token["last_used_at"],
        Value::Null,
        "a rejected call is not a use"
    );
}

#[tokio::test]
async fn agent_info_without_a_valid_agent_token_is_unauthorized() {
    let fixture = root_fixture().await;
    let unknown_token = format!(
        "{TOKEN_PREFIX}{}",
        "A".repeat(fixture.active_secret.len() - TOKEN_PREFIX.len())
    );
    let mut wrong_secret = fixture.active_secret.clone();
    let last = wrong_secret.pop().expect("a non-empty secret");
    wrong_secret.push(if last == 'x' { 'y' } else { 'x' });
    let bad_tokens = [
        ("missing", None),
        ("empty", Some(String::new())),
        ("NONEXISTENT", Some("NONEXISTENT".to_owned())),
        ("well-formed but unknown", Some(unknown_token)),
        ("known handle, wrong secret", Some(wrong_secret)),
        ("revoked", Some(fixture.revoked_secret.clone())),
        ("personal access token", Some(ROOT_TOKEN.to_owned())),
    ];

    for path in [AGENT_INFO_PATH, LEGACY_AGENT_INFO_PATH] {
        for (case, agent_token) in &bad_tokens {
            let (status, body) = agent_info_at(
                &fixture.app,
                path,
                Some(fixture.app.kas_jwt()),
                agent_token.as_deref(),
            )
            .await;

            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}, {case}");
            assert_eq!(
                body,
                json!({"message": "401 Unauthorized"}),
                "{path}, {case}"
            );
        }
    }
}

#[tokio::test]
async fn kas_jwt_is_checked_before_the_agent_token() {
    let fixture = root_fixture().await;

    let (status, body) =
        agent_info_at(&fixture.app, AGENT_INFO_PATH, None, Some("NONEXISTENT")).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"message": "KAS JWT authentication invalid"}));
}

#[tokio::test]
async fn authentication_sets_last_used_at_which_the_token_api_shows_at_once() {
    let fixture = root_fixture().await;
    let path = fixture.token_path(fixture.active_token_id);
    let (_, before) = fixture.app.get(&path, &fixture.user_token).await;
    assert_eq!(before["last_used_at"], Value::Null);

    let (status, _) = fixture.app.agent_info(&fixture.active_secret).await;

    assert_eq!(status, StatusCode::OK);
    let (_, after_first) = fixture.app.get(&path, &fixture.user_token).await;
    assert_gitlab_timestamp(&after_first["last_used_at"]);
    assert!(
        after_first["last_used_at"].as_str() >= after_first["created_at"].as_str(),
        "{after_first}"
    );
    let (status, _) = agent_info_at(
        &fixture.app,
        LEGACY_AGENT_INFO_PATH,
        Some(fixture.app.kas_jwt()),
        Some(&fixture.active_secret),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, after_second) = fixture.app.get(&path, &fixture.user_token).await;
    assert_gitlab_timestamp(&after_second["last_used_at"]);
    assert!(
        after_second["last_used_at"].as_str() >= after_first["last_used_at"].as_str(),
        "last_used_at went backwards: {after_first} then {after_second}"
    );
}

#[tokio::test]
async fn authentication_leaves_other_tokens_unused() {
    let fixture = root_fixture().await;
    let (second_token_id, _) = fixture.create_token("t2").await;

    let (status, _) = fixture.app.agent_info(&fixture.active_secret).await;

    assert_eq!(status, StatusCode::OK);
    let (_, second) = fixture
        .app
        .get(&fixture.token_path(second_token_id), &fixture.user_token)
        .await;
    assert_eq!(second["last_used_at"], Value::Null);
}

#[tokio::test]
async fn grpc_authentication_identifies_the_agent_of_a_valid_token() {
    let fixture = root_fixture().await;
    let mut internal = fixture
        .app
        .grpc_internal(Some(fixture.app.kas_jwt()), Some(&fixture.active_secret));

    let agent_info = internal
        .authenticate_agent_token(pb::AuthenticateAgentTokenRequest {})
        .await
        .expect("authenticated")
        .into_inner();

    assert_eq!(
        agent_info,
        pb::AgentInfo {
            project_id: fixture.project_id,
            agent_id: fixture.agent_id,
            agent_name: "agent-a".to_owned(),
        }
    );
    let token = fixture
        .grpc_get_token(&fixture.user_token, fixture.active_token_id)
        .await
        .expect("token");
    assert!(token.last_used_at.is_some(), "{token:?}");
}

#[tokio::test]
async fn grpc_authentication_without_a_valid_kas_jwt_is_unauthenticated() {
    let fixture = root_fixture().await;
    let bad_jwts = [
        ("missing", None),
        ("empty", Some(String::new())),
        ("other secret", Some(kas_jwt_signed_with(&[7; 32]))),
        (
            "wrong issuer",
            Some(kas_jwt_with(&KAS_SECRET, "someone-else", "gitlab", 60)),
        ),
        (
            "wrong audience",
            Some(kas_jwt_with(&KAS_SECRET, "gitlab-kas", "elsewhere", 60)),
        ),
    ];

    for (case, jwt) in bad_jwts {
        let mut internal = fixture.app.grpc_internal(jwt, Some(&fixture.active_secret));

        let result = internal
            .authenticate_agent_token(pb::AuthenticateAgentTokenRequest {})
            .await;

        assert_eq!(
            grpc_error(result),
            (
                tonic::Code::Unauthenticated,
                "KAS JWT authentication invalid".to_owned()
            ),
            "{case}"
        );
    }
}

#[tokio::test]
async fn grpc_authentication_without_a_valid_agent_token_is_unauthenticated() {
    let fixture = root_fixture().await;
    let unknown_token = format!(
        "{TOKEN_PREFIX}{}",
        "A".repeat(fixture.active_secret.len() - TOKEN_PREFIX.len())
    );
    let bad_tokens = [
        ("missing", None),
        ("NONEXISTENT", Some("NONEXISTENT".to_owned())),
        ("well-formed but unknown", Some(unknown_token)),
        ("revoked", Some(fixture.revoked_secret.clone())),
    ];

    for (case, agent_token) in bad_tokens {
        let mut internal = fixture
            .app
            .grpc_internal(Some(fixture.app.kas_jwt()), agent_token.as_deref());

        let result = internal
            .authenticate_agent_token(pb::AuthenticateAgentTokenRequest {})
            .await;

        assert_eq!(
            grpc_error(result),
            (tonic::Code::Unauthenticated, "401 Unauthorized".to_owned()),
            "{case}"
        );
    }
}

// The authentication cache forgets revoked tokens and deleted agents at once.

#[tokio::test]
async fn revoked_token_stops_authenticating_at_once() {
    let fixture = root_fixture().await;
    for _ in 0..2 {
        let (status, _) = fixture.app.agent_info(&fixture.active_secret).await;
        assert_eq!(status, StatusCode::OK);
    }

    let (status, _) = fixture
        .app
        .delete(
            &fixture.token_path(fixture.active_token_id),
            &fixture.user_token,
        )
        .await;

    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = fixture.app.agent_info(&fixture.active_secret).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"message": "401 Unauthorized"}));
    let (status, _) = agent_info_at(
        &fixture.app,
        LEGACY_AGENT_INFO_PATH,
        Some(fixture.app.kas_jwt()),
        Some(&fixture.active_secret),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn deleting_the_agent_stops_its_tokens_authenticating_at_once() {
    let fixture = root_fixture().await;
    let (_, second_secret) = fixture.create_token("t2").await;
    for secret in [&fixture.active_secret, &second_secret] {
        let (status, _) = fixture.app.agent_info(secret).await;
        assert_eq!(status, StatusCode::OK);
    }

    let (status, _) = fixture
        .app
        .delete(
            &format!(
                "/projects/{}/cluster_agents/{}",
                fixture.project_id, fixture.agent_id
            ),
            &fixture.user_token,
        )
        .await;

    assert_eq!(status, StatusCode::NO_CONTENT);
    for secret in [&fixture.active_secret, &second_secret] {
        let (status, body) = fixture.app.agent_info(secret).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, json!({"message": "401 Unauthorized"}));
    }
}

#[tokio::test]
async fn token_revoked_over_grpc_stops_authenticating_over_grpc_at_once() {
    let fixture = root_fixture().await;
    let mut internal = fixture
        .app
        .grpc_internal(Some(fixture.app.kas_jwt()), Some(&fixture.active_secret));
    for _ in 0..2 {
        internal
            .authenticate_agent_token(pb::AuthenticateAgentTokenRequest {})
            .await
            .expect("authenticated");
    }

    fixture
        .app
        .grpc_tokens(&fixture.user_token)
        .revoke_agent_token(pb::RevokeAgentTokenRequest {
            reason: None,
            project: fixture.project_id.to_string(),
            agent_id: fixture.agent_id,
            token_id: fixture.active_token_id,
        })
        .await
        .expect("revoked");

    let result = internal
        .authenticate_agent_token(pb::AuthenticateAgentTokenRequest {})
        .await;
    assert_eq!(
        grpc_error(result),
        (tonic::Code::Unauthenticated, "401 Unauthorized".to_owned())
    );
    let (status, _) = fixture.app.agent_info(&fixture.active_secret).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn agent_deleted_over_grpc_stops_its_token_authenticating_over_grpc_at_once() {
    let fixture = root_fixture().await;
    let mut internal = fixture
        .app
        .grpc_internal(Some(fixture.app.kas_jwt()), Some(&fixture.active_secret));
    internal
        .authenticate_agent_token(pb::AuthenticateAgentTokenRequest {})
        .await
        .expect("authenticated");

    fixture
        .app
        .grpc_agents(&fixture.user_token)
        .delete_agent(pb::DeleteAgentRequest {
            project: fixture.project_id.to_string(),
            agent_id: fixture.agent_id,
            if_unmodified_since: None,
        })
        .await
        .expect("deleted");

    let result = internal
        .authenticate_agent_token(pb::AuthenticateAgentTokenRequest {})
        .await;
    assert_eq!(
        grpc_error(result),
        (tonic::Code::Unauthenticated, "401 Unauthorized".to_owned())
    );
}

// Secrets.

#[tokio::test]
async fn token_secret_appears_in_the_create_response_only() {
    let fixture = fixture().await;
    let (status, created) = fixture
        .app
        .post(
            &fixture.tokens_path(),
            &fixture.user_token,
            json!({"name": "t2", "description": "shown once"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["token"].as_str().expect("secret").to_owned();
    let token_id = created["id"].as_i64().expect("token id");
    let (status, _) = fixture.app.agent_info(&secret).await;
    assert_eq!(status, StatusCode::OK);

    let mut responses = Vec::new();
    for path in [
        fixture.tokens_path(),
        fixture.token_path(token_id),
        format!("/projects/{}/cluster_agents", fixture.project_id),
        format!(
            "/projects/{}/cluster_agents/{}",
            fixture.project_id, fixture.agent_id
        ),
        format!("/projects/{}/audit_events", fixture.project_id),
        format!("/projects/{}", fixture.project_id),
    ] {
        let (status, body) = fixture.app.get(&path, ROOT_TOKEN).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        responses.push((path, body.to_string()));
    }
    let (_, agent_info) = fixture.app.agent_info(&secret).await;
    responses.push(("agent_info".to_owned(), agent_info.to_string()));
    let (_, revoked) = fixture
        .app
        .delete(&fixture.token_path(token_id), &fixture.user_token)
        .await;
    responses.push(("revoke".to_owned(), revoked.to_string()));
    let (_, audit_events) = fixture
        .app
        .get(
            &format!("/projects/{}/audit_events", fixture.project_id),
            ROOT_TOKEN,
        )
        .await;
    responses.push((
        "audit events after revoke".to_owned(),
        audit_events.to_string(),
    ));
    let grpc_list = fixture
        .app
        .grpc_tokens(ROOT_TOKEN)
        .list_agent_tokens(pb::ListAgentTokensRequest {
            status: None,
            project: fixture.project_id.to_string(),
            agent_id: fixture.agent_id,
            page: None,
        })
        .await
        .expect("listed");
    responses.push(("grpc list".to_owned(), format!("{grpc_list:?}")));

    assert!(
        audit_events
            .as_array()
            .is_some_and(|events| !events.is_empty()),
        "token operations are audited: {audit_events}"
    );
    for (source, text) in responses {
        assert!(!text.contains(&secret), "{source} shows the secret: {text}");
        assert!(!text.contains("$argon2"), "{source} shows a hash: {text}");
    }
}

#[tokio::test]
async fn grpc_create_returns_the_secret_which_get_and_list_do_not() {
    let fixture = fixture().await;
    let mut tokens = fixture.app.grpc_tokens(&fixture.user_token);

    let created = tokens
        .create_agent_token(pb::CreateAgentTokenRequest {
            expires_at: None,
            project: fixture.project_id.to_string(),
            agent_id: fixture.agent_id,
            name: Some("test-token".to_owned()),
            description: Some("Test description".to_owned()),
        })
        .await
        .expect("created")
        .into_inner();

    let secret = created.token.clone().expect("the secret");
    assert_well_formed_secret(&secret);
    assert_eq!(created.name, "test-token");
    assert_eq!(created.description.as_deref(), Some("Test description"));
    assert_eq!(created.agent_id, fixture.agent_id);
    assert_eq!(created.status(), pb::TokenStatus::Active);
    assert_eq!(created.created_by_user_id, Some(fixture.user_id));
    assert_eq!(created.last_used_at, None);
    let shown = fixture
        .grpc_get_token(&fixture.user_token, created.id)
        .await
        .expect("token");
    assert_eq!(shown.token, None);
    let listed = fixture
        .grpc_list_tokens(&fixture.user_token)
        .await
        .expect("tokens");
    assert!(listed.tokens.iter().all(|token| token.token.is_none()));
    assert!(!format!("{shown:?}{listed:?}").contains(&secret));
    let (status, _) = fixture.app.agent_info(&secret).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn secrets_are_not_in_the_data_directory_but_argon2id_hashes_are() {
    let fixture = fixture().await;
    let (_, second_secret) = fixture.create_token("t2").await;
    let (status, _) = fixture.app.agent_info(&second_secret).await;
    assert_eq!(status, StatusCode::OK);
    let data_dir = fixture.app.data_dir.clone();
    let secrets = [
        fixture.active_secret.clone(),
        fixture.revoked_secret.clone(),
        second_secret,
        fixture.user_token.clone(),
        ROOT_TOKEN.to_owned(),
    ];

    let _temp_dir = fixture.app.stop().await;

    for secret in &secrets {
        assert!(
            !data_dir_contains(&data_dir, secret.as_bytes()).await,
            "the data directory contains {secret}"
        );
    }
    assert!(
        data_dir_contains(&data_dir, b"$argon2id$v=19$m=19456,t=2,p=1$").await,
        "no argon2id hash with the production parameters is stored"
    );
}

// Durability.

#[tokio::test]
async fn tokens_survive_a_graceful_restart() {
    let fixture = root_fixture().await;
    let (second_token_id, second_secret) = fixture.create_token("t2").await;
    let (status, _) = fixture.app.agent_info(&fixture.active_secret).await;
    assert_eq!(status, StatusCode::OK);
    let (_, before) = fixture
        .app
        .get(
            &fixture.token_path(fixture.active_token_id),
            &fixture.user_token,
        )
        .await;
    assert_gitlab_timestamp(&before["last_used_at"]);
    let (status, _) = fixture
        .app
        .delete(&fixture.token_path(second_token_id), &fixture.user_token)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let data_dir = fixture.app.data_dir.clone();
    let temp_dir = fixture.app.stop().await;

    let app = TestApp::start(&data_dir, |_| {}).await;

    let path = tokens_path(fixture.project_id, fixture.agent_id);
    let (status, tokens) = app.get(&path, &fixture.user_token).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(ids(&tokens), [fixture.active_token_id]);
    let (_, after) = app
        .get(
            &format!("{path}/{}", fixture.active_token_id),
            &fixture.user_token,
        )
        .await;
    assert_eq!(after, before);
    for revoked_token_id in [second_token_id, fixture.revoked_token_id] {
        let (status, _) = app
            .get(&format!("{path}/{revoked_token_id}"), &fixture.user_token)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, agent_info) = app.agent_info(&fixture.active_secret).await;
    assert_eq!(status, StatusCode::OK, "{agent_info}");
    assert_eq!(agent_info["agent_id"], fixture.agent_id);
    for revoked_secret in [&second_secret, &fixture.revoked_secret] {
        let (status, _) = app.agent_info(revoked_secret).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    app.stop().await;
    drop(temp_dir);
}

#[tokio::test]
async fn the_limit_still_holds_after_a_restart() {
    let fixture = root_fixture().await;
    fixture.create_token("t2").await;
    let data_dir = fixture.app.data_dir.clone();
    let temp_dir = fixture.app.stop().await;

    let app = TestApp::start(&data_dir, |_| {}).await;
    let (status, body) = app
        .post(
            &tokens_path(fixture.project_id, fixture.agent_id),
            &fixture.user_token,
            json!({"name": "t3"}),
        )
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"message": LIMIT_MESSAGE}));
    app.stop().await;
    drop(temp_dir);
}

// Token scopes.

#[tokio::test]
async fn read_api_token_lists_tokens_but_cannot_create_or_revoke_them() {
    let fixture = fixture().await;
    let (reader_id, reader_token) = fixture.app.user_with_scopes("reader", &["read_api"]).await;
    fixture
        .app
        .add_member(fixture.project_id, reader_id, MAINTAINER)
        .await;

    let (list_status, tokens) = fixture.app.get(&fixture.tokens_path(), &reader_token).await;
    let (create_status, create_body) = fixture
        .app
        .post(&fixture.tokens_path(), &reader_token, json!({"name": "t2"}))
        .await;
    let (revoke_status, revoke_body) = fixture
        .app
        .delete(&fixture.token_path(fixture.active_token_id), &reader_token)
        .await;

    assert_eq!(list_status, StatusCode::OK, "{tokens}");
    assert_eq!(ids(&tokens), [fixture.active_token_id]);
    for (status, body) in [(create_status, create_body), (revoke_status, revoke_body)] {
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"], "insufficient_scope", "{body}");
        assert_eq!(
            body["error_description"],
            "The request requires higher privileges than provided by the access token."
        );
    }
    assert_eq!(fixture.active_token_ids().await, [fixture.active_token_id]);
}

#[tokio::test]
async fn grpc_read_api_token_lists_tokens_but_cannot_create_or_revoke_them() {
    let fixture = fixture().await;
    let (reader_id, reader_token) = fixture.app.user_with_scopes("reader", &["read_api"]).await;
    fixture
        .app
        .add_member(fixture.project_id, reader_id, MAINTAINER)
        .await;
    let mut tokens = fixture.app.grpc_tokens(&reader_token);

    let listed = fixture.grpc_list_tokens(&reader_token).await;
    let created = tokens
        .create_agent_token(pb::CreateAgentTokenRequest {
            expires_at: None,
            project: fixture.project_id.to_string(),
            agent_id: fixture.agent_id,
            name: Some("t2".to_owned()),
            description: None,
        })
        .await;
    let revoked = tokens
        .revoke_agent_token(pb::RevokeAgentTokenRequest {
            reason: None,
            project: fixture.project_id.to_string(),
            agent_id: fixture.agent_id,
            token_id: fixture.active_token_id,
        })
        .await;

    let listed = listed.expect("listed");
    assert_eq!(
        listed
            .tokens
            .iter()
            .map(|token| token.id)
            .collect::<Vec<_>>(),
        [fixture.active_token_id]
    );
    for (code, message) in [grpc_error(created), grpc_error(revoked)] {
        assert_eq!(code, tonic::Code::PermissionDenied, "{message}");
        assert!(message.starts_with("insufficient_scope"), "{message}");
    }
}

// gRPC twins of §7.2.

#[tokio::test]
async fn grpc_token_list_shows_only_active_tokens_without_secrets_or_last_use() {
    let fixture = fixture().await;
    let (status, _) = fixture.app.agent_info(&fixture.active_secret).await;
    assert_eq!(status, StatusCode::OK);

    let listed = fixture
        .grpc_list_tokens(&fixture.user_token)
        .await
        .expect("listed");

    assert_eq!(listed.tokens.len(), 1, "{listed:?}");
    let token = &listed.tokens[0];
    assert_eq!(token.id, fixture.active_token_id);
    assert_eq!(token.name, "t1");
    assert_eq!(token.description, None);
    assert_eq!(token.agent_id, fixture.agent_id);
    assert_eq!(token.status(), pb::TokenStatus::Active);
    assert!(token.created_at.is_some());
    assert_eq!(token.created_by_user_id, Some(fixture.user_id));
    assert_eq!(token.last_used_at, None, "the basic shape has no last use");
    assert_eq!(token.token, None);
    assert_eq!(
        listed.page_info,
        Some(pb::PageInfo {
            total: 1,
            total_pages: 1,
            per_page: 20,
            page: 1,
            next_page: None,
            prev_page: None,
        })
    );
}

#[tokio::test]
async fn grpc_single_token_matches_rest() {
    let fixture = fixture().await;
    let (_, rest_token) = fixture
        .app
        .get(
            &fixture.token_path(fixture.active_token_id),
            &fixture.user_token,
        )
        .await;

    let token = fixture
        .grpc_get_token(&fixture.user_token, fixture.active_token_id)
        .await
        .expect("token");

    assert_eq!(token.id, rest_token["id"]);
    assert_eq!(token.name, rest_token["name"]);
    assert_eq!(token.agent_id, rest_token["agent_id"]);
    assert_eq!(status_name(token.status()), rest_token["status"]);
    assert_eq!(
        token.created_by_user_id,
        rest_token["created_by_user_id"].as_i64()
    );
    assert_eq!(token.last_used_at, None);
    assert_eq!(token.token, None);
}

#[tokio::test]
async fn grpc_reads_of_revoked_unknown_or_foreign_tokens_are_not_found() {
    let fixture = fixture().await;
    let guest_token = fixture.guest().await;
    let other_project_id = fixture.app.project(&guest_token, "project-q").await;
    let other_agent_id = fixture.app.agent(other_project_id, "agent-b").await;
    let not_found = (tonic::Code::NotFound, "404 Not found".to_owned());

    let revoked = fixture
        .grpc_get_token(&fixture.user_token, fixture.revoked_token_id)
        .await;
    let unknown_token = fixture
        .grpc_get_token(&fixture.user_token, NONEXISTENT_ID)
        .await;
    let unknown_agent = fixture
        .app
        .grpc_tokens(&fixture.user_token)
        .get_agent_token(pb::GetAgentTokenRequest {
            project: fixture.project_id.to_string(),
            agent_id: NONEXISTENT_ID,
            token_id: NONEXISTENT_ID,
        })
        .await;
    let unknown_agent_list = fixture
        .app
        .grpc_tokens(&fixture.user_token)
        .list_agent_tokens(pb::ListAgentTokensRequest {
            status: None,
            project: fixture.project_id.to_string(),
            agent_id: NONEXISTENT_ID,
            page: None,
        })
        .await;
    let through_own_agent = fixture
        .app
        .grpc_tokens(&guest_token)
        .get_agent_token(pb::GetAgentTokenRequest {
            project: other_project_id.to_string(),
            agent_id: other_agent_id,
            token_id: fixture.active_token_id,
        })
        .await;
    let revoke_through_own_agent = fixture
        .app
        .grpc_tokens(&guest_token)
        .revoke_agent_token(pb::RevokeAgentTokenRequest {
            reason: None,
            project: other_project_id.to_string(),
            agent_id: other_agent_id,
            token_id: fixture.active_token_id,
        })
        .await;
    let unknown_project = fixture
        .app
        .grpc_tokens(&fixture.user_token)
        .list_agent_tokens(pb::ListAgentTokensRequest {
            status: None,
            project: NONEXISTENT_ID.to_string(),
            agent_id: fixture.agent_id,
            page: None,
        })
        .await;

    assert_eq!(grpc_error(revoked), not_found);
    assert_eq!(grpc_error(unknown_token), not_found);
    assert_eq!(grpc_error(unknown_agent), not_found);
    assert_eq!(grpc_error(unknown_agent_list), not_found);
    assert_eq!(grpc_error(through_own_agent), not_found);
    assert_eq!(grpc_error(revoke_through_own_agent), not_found);
    assert_eq!(
        grpc_error(unknown_project),
        (tonic::Code::NotFound, "404 Project Not Found".to_owned())
    );
}

#[tokio::test]
async fn grpc_guest_gets_not_found_on_reads_and_permission_denied_on_writes() {
    let fixture = fixture().await;
    let guest_token = fixture.guest().await;
    let mut tokens = fixture.app.grpc_tokens(&guest_token);

    let listed = fixture.grpc_list_tokens(&guest_token).await;
    let shown = fixture
        .grpc_get_token(&guest_token, fixture.active_token_id)
        .await;
    let created = tokens
        .create_agent_token(pb::CreateAgentTokenRequest {
            expires_at: None,
            project: fixture.project_id.to_string(),
            agent_id: fixture.agent_id,
            name: Some("some".to_owned()),
            description: None,
        })
        .await;
    let revoked = tokens
        .revoke_agent_token(pb::RevokeAgentTokenRequest {
            reason: None,
            project: fixture.project_id.to_string(),
            agent_id: fixture.agent_id,
            token_id: fixture.active_token_id,
        })
        .await;

    let not_found = (tonic::Code::NotFound, "404 Not found".to_owned());
    let denied = (tonic::Code::PermissionDenied, "403 Forbidden".to_owned());
    assert_eq!(grpc_error(listed), not_found);
    assert_eq!(grpc_error(shown), not_found);
    assert_eq!(grpc_error(created), denied);
    assert_eq!(grpc_error(revoked), denied);
}

#[tokio::test]
async fn grpc_calls_without_a_valid_token_are_unauthenticated() {
    let fixture = root_fixture().await;

    let result = fixture.grpc_list_tokens("glpat-not-a-real-token").await;

    assert_eq!(
        grpc_error(result),
        (tonic::Code::Unauthenticated, "401 Unauthorized".to_owned())
    );
}

#[tokio::test]
async fn grpc_create_rejects_like_rest() {
    let fixture = root_fixture().await;
    let cases = [
        (None, None, "name is missing".to_owned()),
        (
            Some("n".repeat(256)),
            None,
            "400 Bad request - [\"Name is too long (maximum is 255 characters)\"]".to_owned(),
        ),
        (
            Some("t2".to_owned()),
            Some("d".repeat(1025)),
            "400 Bad request - [\"Description is too long (maximum is 1024 characters)\"]"
                .to_owned(),
        ),
        (
            Some(String::new()),
            None,
            "400 Bad request - [\"Name can't be blank\"]".to_owned(),
        ),
    ];

    for (name, description, message) in cases {
        let result = fixture
            .app
            .grpc_tokens(&fixture.user_token)
            .create_agent_token(pb::CreateAgentTokenRequest {
                expires_at: None,
                project: fixture.project_id.to_string(),
                agent_id: fixture.agent_id,
                name,
                description,
            })
            .await;

        assert_eq!(grpc_error(result), (tonic::Code::InvalidArgument, message));
    }
    assert_eq!(fixture.active_token_ids().await, [fixture.active_token_id]);
}

#[tokio::test]
async fn grpc_create_for_an_unknown_agent_is_not_found() {
    let fixture = root_fixture().await;

    let result = fixture
        .app
        .grpc_tokens(&fixture.user_token)
        .create_agent_token(pb::CreateAgentTokenRequest {
            expires_at: None,
            project: fixture.project_id.to_string(),
            agent_id: NONEXISTENT_ID,
            name: Some("some".to_owned()),
            description: None,
        })
        .await;

    assert_eq!(
        grpc_error(result),
        (tonic::Code::NotFound, "404 Not found".to_owned())
    );
}

#[tokio::test]
async fn grpc_third_active_token_is_rejected_with_the_rest_message() {
    let fixture = fixture().await;
    fixture.create_token("t2").await;

    let result = fixture
        .app
        .grpc_tokens(&fixture.user_token)
        .create_agent_token(pb::CreateAgentTokenRequest {
            expires_at: None,
            project: fixture.project_id.to_string(),
            agent_id: fixture.agent_id,
            name: Some("t3".to_owned()),
            description: None,
        })
        .await;

    assert_eq!(
        grpc_error(result),
        (tonic::Code::InvalidArgument, LIMIT_MESSAGE.to_owned())
    );
}

#[tokio::test]
async fn grpc_revoke_is_idempotent_and_hides_the_token() {
    let fixture = fixture().await;
    let mut tokens = fixture.app.grpc_tokens(&fixture.user_token);
    let request = |token_id| pb::RevokeAgentTokenRequest {
        reason: None,
        project: fixture.project_id.to_string(),
        agent_id: fixture.agent_id,
        token_id,
    };

    let first = tokens
        .revoke_agent_token(request(fixture.active_token_id))
        .await;
    let again = tokens
        .revoke_agent_token(request(fixture.active_token_id))
        .await;
    let already_revoked = tokens
        .revoke_agent_token(request(fixture.revoked_token_id))
        .await;
    let unknown = tokens.revoke_agent_token(request(NONEXISTENT_ID)).await;

    assert!(first.is_ok(), "{first:?}");
    assert!(again.is_ok(), "{again:?}");
    assert!(already_revoked.is_ok(), "{already_revoked:?}");
    assert_eq!(
        grpc_error(unknown),
        (tonic::Code::NotFound, "404 Not found".to_owned())
    );
    let shown = fixture
        .grpc_get_token(&fixture.user_token, fixture.active_token_id)
        .await;
    assert_eq!(
        grpc_error(shown),
        (tonic::Code::NotFound, "404 Not found".to_owned())
    );
    assert_eq!(fixture.active_token_ids().await, Vec::<i64>::new());
}

#[tokio::test]
async fn grpc_last_used_at_moves_with_authentications() {
    let fixture = root_fixture().await;
    let mut internal = fixture
        .app
        .grpc_internal(Some(fixture.app.kas_jwt()), Some(&fixture.active_secret));
    let before = fixture
        .grpc_get_token(&fixture.user_token, fixture.active_token_id)
        .await
        .expect("token");
    assert_eq!(before.last_used_at, None);

    internal
        .authenticate_agent_token(pb::AuthenticateAgentTokenRequest {})
        .await
        .expect("authenticated");
    let after_first = fixture
        .grpc_get_token(&fixture.user_token, fixture.active_token_id)
        .await
        .expect("token");
    internal
        .authenticate_agent_token(pb::AuthenticateAgentTokenRequest {})
        .await
        .expect("authenticated");
    let after_second = fixture
        .grpc_get_token(&fixture.user_token, fixture.active_token_id)
        .await
        .expect("token");

    let first = after_first.last_used_at.expect("last used");
    let second = after_second.last_used_at.expect("last used");
    assert!(
        (second.seconds, second.nanos) >= (first.seconds, first.nanos),
        "{first:?} then {second:?}"
    );
    let (_, rest_token) = fixture
        .app
        .get(
            &fixture.token_path(fixture.active_token_id),
            &fixture.user_token,
        )
        .await;
    assert_gitlab_timestamp(&rest_token["last_used_at"]);
}

/// Reference §7.2's setup: project P with agent A registered by user U, an active token T1 and
/// a revoked token TR, both created by U. The guest G is created on demand by [`Fixture::guest`].
struct Fixture {
    app: TestApp,
    project_id: i64,
    agent_id: i64,
    /// U, who registered agent A.
    user_id: i64,
    user_token: String,
    active_token_id: i64,
    active_secret: String,
    revoked_token_id: i64,
    revoked_secret: String,
}

/// Who plays U in the fixture.
enum Registrar {
    Maintainer,
    Root,
}

impl Fixture {
    fn tokens_path(&self) -> String {
        tokens_path(self.project_id, self.agent_id)
    }

    fn token_path(&self, token_id: i64) -> String {
        token_path(self.project_id, self.agent_id, token_id)
    }

    /// Creates a token on agent A as U; returns (token id, secret).
    async fn create_token(&self, name: &str) -> (i64, String) {
        create_token(
            &self.app,
            &self.user_token,
            self.project_id,
            self.agent_id,
            name,
        )
        .await
    }

    /// A new guest of project P; returns their token. Only the tests that need one pay for it.
    async fn guest(&self) -> String {
        self.app.member(self.project_id, "guest", GUEST).await
    }

    /// The ids of agent A's listed tokens, in list order.
    async fn active_token_ids(&self) -> Vec<i64> {
        let (status, tokens) = self.app.get(&self.tokens_path(), ROOT_TOKEN).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        ids(&tokens)
    }

    async fn grpc_get_token(
        &self,
        token: &str,
        token_id: i64,
    ) -> Result<pb::AgentToken, tonic::Status> {
        self.app
            .grpc_tokens(token)
            .get_agent_token(pb::GetAgentTokenRequest {
                project: self.project_id.to_string(),
                agent_id: self.agent_id,
                token_id,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn grpc_list_tokens(
        &self,
        token: &str,
    ) -> Result<pb::ListAgentTokensResponse, tonic::Status> {
        self.app
            .grpc_tokens(token)
            .list_agent_tokens(pb::ListAgentTokensRequest {
                status: None,
                project: self.project_id.to_string(),
                agent_id: self.agent_id,
                page: None,
            })
            .await
            .map(tonic::Response::into_inner)
    }
}

/// Reference §7.2's setup with a maintainer U who is not an administrator.
async fn fixture() -> Fixture {
    fixture_registered_by(Registrar::Maintainer).await
}

/// The same setup with root as U, for tests in which the caller's role plays no part: it saves
/// creating and verifying a personal access token.
async fn root_fixture() -> Fixture {
    fixture_registered_by(Registrar::Root).await
}

async fn fixture_registered_by(registrar: Registrar) -> Fixture {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "project-p").await;
    let user_token = match registrar {
        Registrar::Maintainer => app.member(project_id, "maintainer", MAINTAINER).await,
        Registrar::Root => ROOT_TOKEN.to_owned(),
    };
    let (status, agent) = app
        .post(
            &format!("/projects/{project_id}/cluster_agents"),
            &user_token,
            json!({"name": "agent-a"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    let agent_id = agent["id"].as_i64().expect("agent id");
    let user_id = agent["created_by_user_id"].as_i64().expect("registrar id");
    let (active_token_id, active_secret) =
        create_token(&app, &user_token, project_id, agent_id, "t1").await;
    let (revoked_token_id, revoked_secret) =
        create_token(&app, &user_token, project_id, agent_id, "tr").await;
    let (status, body) = app
        .delete(
            &token_path(project_id, agent_id, revoked_token_id),
            &user_token,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    Fixture {
        app,
        project_id,
        agent_id,
        user_id,
        user_token,
        active_token_id,
        active_secret,
        revoked_token_id,
        revoked_secret,
    }
}

async fn create_token(
    app: &TestApp,
    user_token: &str,
    project_id: i64,
    agent_id: i64,
    name: &str,
) -> (i64, String) {
    let (status, token) = app
        .post(
            &tokens_path(project_id, agent_id),
            user_token,
            json!({"name": name}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    (
        token["id"].as_i64().expect("token id"),
        token["token"].as_str().expect("secret").to_owned(),
    )
}

fn tokens_path(project_id: i64, agent_id: i64) -> String {
    format!("/projects/{project_id}/cluster_agents/{agent_id}/tokens")
}

fn token_path(project_id: i64, agent_id: i64, token_id: i64) -> String {
    format!("/projects/{project_id}/cluster_agents/{agent_id}/tokens/{token_id}")
}

/// A GET that also returns the response headers.
async fn get_with_headers(
    app: &TestApp,
    path: &str,
    token: &str,
) -> (StatusCode, HeaderMap, Value) {
    let response = app
        .request(Method::GET, path, Some(token))
        .send()
        .await
        .expect("request sent");
    let headers = response.headers().clone();
    let (status, body) = read(response).await;
    (status, headers, body)
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("header {name} is missing"))
        .to_str()
        .expect("a text header")
        .to_owned()
}

/// An agent-info call with the given KAS JWT and agent token headers, each optional.
async fn agent_info_at(
    app: &TestApp,
    path: &str,
    kas_jwt: Option<String>,
    agent_token: Option<&str>,
) -> (StatusCode, Value) {
    let mut builder = app.http.get(app.url(path));
    if let Some(jwt) = kas_jwt {
        builder = builder.header("Gitlab-Kas-Api-Request", jwt);
    }
    if let Some(token) = agent_token {
        builder = builder.header("Gitlab-Agent-Api-Request", token);
    }
    read(builder.send().await.expect("request sent")).await
}

/// An HS256 JWT with the given issuer and audience that expires `expires_in_seconds` from now.
fn kas_jwt_with(secret: &[u8], issuer: &str, audience: &str, expires_in_seconds: i64) -> String {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("a sane clock");
    let claims = json!({
        "iss": issuer,
        "aud": audience,
        "iat": now.min(now + expires_in_seconds) - 60,
        "exp": now + expires_in_seconds,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("jwt encodes")
}

fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("{value} is not an object"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn ids(tokens: &Value) -> Vec<i64> {
    tokens
        .as_array()
        .unwrap_or_else(|| panic!("{tokens} is not an array"))
        .iter()
        .map(|token| token["id"].as_i64().expect("token id"))
        .collect()
}

/// GitLab's time format: UTC with exactly three fractional digits, e.g.
/// `2022-03-25T14:12:11.497Z`.
fn assert_gitlab_timestamp(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a timestamp"));
    let bytes = text.as_bytes();
    let well_formed = bytes.len() == 24
        && bytes[10] == b'T'
        && bytes[19] == b'.'
        && bytes[23] == b'Z'
        && bytes[20..23].iter().all(u8::is_ascii_digit);
    assert!(well_formed, "{text} is not in GitLab's time format");
}

/// `glagent-` followed by at least 50 URL-safe characters.
fn assert_well_formed_secret(secret: &str) {
    let rest = secret
        .strip_prefix(TOKEN_PREFIX)
        .unwrap_or_else(|| panic!("{secret} does not start with {TOKEN_PREFIX}"));
    assert!(rest.len() >= 50, "{secret} is too short");
    assert!(
        rest.bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'),
        "{secret} is not URL-safe"
    );
}
