//! The Agents API (reference §2 and §7.1) over REST and gRPC: GitLab's status codes, exact error
//! bodies, order of checks, roles, pagination, request bodies, concurrency and durability.

use crate::helpers::{ROOT_TOKEN, TestApp, grpc_error, read};
use agentreg::grpc::pb;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::fmt::Display;

/// GitLab's format rule for agent names, as its full validation message.
const NAME_FORMAT_MESSAGE: &str =
    "Name can contain only lowercase letters, digits, and '-', but cannot start or end with '-'";

/// `If-Unmodified-Since` from GitLab's own spec: long before any agent exists.
const LONG_AGO: &str = "1990-01-12T00:00:48-0600";

/// An id that no project, agent or user has.
const UNKNOWN_ID: i64 = 999_999;

const GUEST: i64 = 10;
const REPORTER: i64 = 20;
const DEVELOPER: i64 = 30;
const MAINTAINER: i64 = 40;

// §7.1 — the request specs, case by case.

#[tokio::test]
async fn maintainer_registers_and_lists_an_agent() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;

    let (status, agent) = app
        .post(
            &format!("/projects/{project_id}/cluster_agents"),
            ROOT_TOKEN,
            json!({"name": "some-agent"}),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(agent["name"], "some-agent");
    let (status, agents) = app
        .get(
            &format!("/projects/{project_id}/cluster_agents"),
            ROOT_TOKEN,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(agents[0]["name"], "some-agent");
}

#[tokio::test]
async fn maintainer_lists_agents_with_every_pagination_header() {
    let fixture = Fixture::with_agent().await;

    let (status, headers, agents) = send(fixture.app.request(
        Method::GET,
        &agents_path(fixture.project_id),
        Some(&fixture.maintainer),
    ))
    .await;

    assert_eq!(status, StatusCode::OK);
    for name in [
        "x-total",
        "x-total-pages",
        "x-per-page",
        "x-page",
        "x-next-page",
        "x-prev-page",
        "link",
    ] {
        assert!(headers.contains_key(name), "missing header {name}");
    }
    assert_eq!(header(&headers, "x-total"), "1");
    assert_eq!(header(&headers, "x-per-page"), "20");
    let agents = agents.as_array().expect("an array");
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["name"], "some-agent");
    assert_eq!(agents[0]["id"], fixture.agent_id);
}

#[tokio::test]
async fn listing_a_project_without_agents_returns_an_empty_array_with_headers() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;

    let (status, headers, agents) =
        send(app.request(Method::GET, &agents_path(project_id), Some(ROOT_TOKEN))).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(agents, json!([]));
    assert_eq!(header(&headers, "x-total"), "0");
    assert_eq!(header(&headers, "x-total-pages"), "1");
    assert_eq!(header(&headers, "x-page"), "1");
    assert_eq!(header(&headers, "x-next-page"), "");
    assert_eq!(header(&headers, "x-prev-page"), "");
    assert!(headers.contains_key("link"));
}

#[tokio::test]
async fn guest_listing_agents_gets_cluster_agents_not_found() {
    let fixture = Fixture::with_agent().await;
    let guest = fixture.app.member(fixture.project_id, "guest", GUEST).await;

    let (status, body) = fixture
        .app
        .get(&agents_path(fixture.project_id), &guest)
        .await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"message": "404 ClusterAgents Not Found"}));
}

#[tokio::test]
async fn maintainer_gets_one_agent_by_id() {
    let fixture = Fixture::with_agent().await;

    let (status, agent) = fixture
        .app
        .get(
            &agent_path(fixture.project_id, fixture.agent_id),
            &fixture.maintainer,
        )
        .await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(agent["id"], fixture.agent_id);
    assert_eq!(agent["name"], "some-agent");
}

#[tokio::test]
async fn getting_an_unknown_agent_id_is_record_not_found() {
    let fixture = Fixture::with_agent().await;

    let (status, body) = fixture
        .app
        .get(
            &agent_path(fixture.project_id, UNKNOWN_ID),
            &fixture.maintainer,
        )
        .await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"message": "404 Not found"}));
}

#[tokio::test]
async fn guest_getting_an_agent_is_record_not_found() {
    let fixture = Fixture::with_agent().await;
    let guest = fixture.app.member(fixture.project_id, "guest", GUEST).await;

    let (status, body) = fixture
        .app
        .get(&agent_path(fixture.project_id, fixture.agent_id), &guest)
        .await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"message": "404 Not found"}));
}

#[tokio::test]
async fn maintainer_registration_adds_one_agent_created_by_them() {
    let fixture = Fixture::with_agent().await;

    let (status, agent) = fixture
        .app
        .post(
            &agents_path(fixture.project_id),
            &fixture.maintainer,
            json!({"name": "another-agent"}),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(agent["name"], "another-agent");
    assert_eq!(agent["created_by_user_id"], fixture.maintainer_id);
    assert_eq!(agent["is_receptive"], false);
    assert_eq!(agent_names(&fixture.app, fixture.project_id).await.len(), 2);
}

#[tokio::test]
async fn registering_without_a_name_is_a_missing_parameter() {
    let fixture = Fixture::with_agent().await;

    let (status, body) = fixture
        .app
        .post(
            &agents_path(fixture.project_id),
            &fixture.maintainer,
            json!({}),
        )
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"error": "name is missing"}));
}

#[tokio::test]
async fn registering_a_name_with_symbols_reports_the_format_rule() {
    let fixture = Fixture::with_agent().await;

    let (status, body) = fixture
        .app
        .post(
            &agents_path(fixture.project_id),
            &fixture.maintainer,
            json!({"name": "#4^x"}),
        )
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["message"].as_str().expect("a message");
    assert!(message.contains(NAME_FORMAT_MESSAGE), "{message}");
    assert_eq!(
        body,
        json!({"message": format!("400 Bad request - [\"{NAME_FORMAT_MESSAGE}\"]")})
    );
}

#[tokio::test]
async fn registering_in_an_unknown_project_is_project_not_found() {
    let app = TestApp::spawn().await;

    let (status, body) = app
        .post(
            &agents_path(UNKNOWN_ID),
            ROOT_TOKEN,
            json!({"name": "some-agent"}),
        )
        .await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"message": "404 Project Not Found"}));
}

#[tokio::test]
async fn maintainer_deletes_an_agent_with_an_empty_no_content_response() {
    let fixture = Fixture::with_agent().await;

    let (status, _, bytes) = send_raw(fixture.app.request(
        Method::DELETE,
        &agent_path(fixture.project_id, fixture.agent_id),
        Some(&fixture.maintainer),
    ))
    .await;

    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(bytes.is_empty());
    assert!(
        agent_names(&fixture.app, fixture.project_id)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn deleting_an_unknown_agent_is_record_not_found() {
    let fixture = Fixture::with_agent().await;

    let (status, body) = fixture
        .app
        .delete(
            &agent_path(fixture.project_id, UNKNOWN_ID),
            &fixture.maintainer,
        )
        .await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"message": "404 Not found"}));
}

#[tokio::test]
async fn deleting_without_an_agent_id_is_an_unknown_route() {
    let fixture = Fixture::with_agent().await;

    let (status, body) = fixture
        .app
        .delete(&agents_path(fixture.project_id), &fixture.maintainer)
        .await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "404 Not Found"}));
    assert_eq!(agent_names(&fixture.app, fixture.project_id).await.len(), 1);
}

#[tokio::test]
async fn guest_deleting_an_agent_is_forbidden() {
    let fixture = Fixture::with_agent().await;
    let guest = fixture.app.member(fixture.project_id, "guest", GUEST).await;

    let (status, body) = fixture
        .app
        .delete(&agent_path(fixture.project_id, fixture.agent_id), &guest)
        .await;

    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, json!({"message": "403 Forbidden"}));
    assert_eq!(agent_names(&fixture.app, fixture.project_id).await.len(), 1);
}

#[tokio::test]
async fn delete_with_an_older_if_unmodified_since_fails_the_precondition() {
    let fixture = Fixture::with_agent().await;

    let (status, _, bytes) = send_raw(
        fixture
            .app
            .request(
                Method::DELETE,
                &agent_path(fixture.project_id, fixture.agent_id),
                Some(&fixture.maintainer),
            )
            .header("If-Unmodified-Since", LONG_AGO),
    )
    .await;

    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        r#"{"message":"412 Precondition Failed"}"#
    );
    assert_eq!(agent_names(&fixture.app, fixture.project_id).await.len(), 1);
}

#[tokio::test]
async fn delete_with_if_unmodified_since_now_succeeds() {
    let fixture = Fixture::with_agent().await;
    let now = httpdate::fmt_http_date(std::time::SystemTime::now());

    let (status, _, bytes) = send_raw(
        fixture
            .app
            .request(
                Method::DELETE,
                &agent_path(fixture.project_id, fixture.agent_id),
                Some(&fixture.maintainer),
            )
            .header("If-Unmodified-Since", now),
    )
    .await;

    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(bytes.is_empty());
    assert!(
        agent_names(&fixture.app, fixture.project_id)
            .await
            .is_empty()
    );
}

// Roles and authentication.

#[tokio::test]
async fn guest_and_reporter_reads_are_not_found_and_writes_are_forbidden() {
    let fixture = Fixture::with_agent().await;
    let app = &fixture.app;
    let project_id = fixture.project_id;

    for (username, access_level) in [("guest", GUEST), ("reporter", REPORTER)] {
        let token = app.member(project_id, username, access_level).await;

        let list = app.get(&agents_path(project_id), &token).await;
        let get = app
            .get(&agent_path(project_id, fixture.agent_id), &token)
            .await;
        let create = app
            .post(&agents_path(project_id), &token, json!({"name": "mine"}))
            .await;
        let delete = app
            .delete(&agent_path(project_id, fixture.agent_id), &token)
            .await;

        assert_eq!(
            list,
            (
                StatusCode::NOT_FOUND,
                json!({"message": "404 ClusterAgents Not Found"})
            ),
            "{username}"
        );
        assert_eq!(
            get,
            (StatusCode::NOT_FOUND, json!({"message": "404 Not found"})),
            "{username}"
        );
        assert_eq!(
            create,
            (StatusCode::FORBIDDEN, json!({"message": "403 Forbidden"})),
            "{username}"
        );
        assert_eq!(
            delete,
            (StatusCode::FORBIDDEN, json!({"message": "403 Forbidden"})),
            "{username}"
        );
    }
    assert_eq!(agent_names(app, project_id).await, ["some-agent"]);
}

#[tokio::test]
async fn developer_reads_agents_but_cannot_register_or_delete_them() {
    let fixture = Fixture::with_agent().await;
    let app = &fixture.app;
    let developer = app.member(fixture.project_id, "dev", DEVELOPER).await;

    let (list_status, agents) = app.get(&agents_path(fixture.project_id), &developer).await;
    let (get_status, agent) = app
        .get(
            &agent_path(fixture.project_id, fixture.agent_id),
            &developer,
        )
        .await;
    let create = app
        .post(
            &agents_path(fixture.project_id),
            &developer,
            json!({"name": "mine"}),
        )
        .await;
    let delete = app
        .delete(
            &agent_path(fixture.project_id, fixture.agent_id),
            &developer,
        )
        .await;

    assert_eq!(list_status, StatusCode::OK);
    assert_eq!(agents[0]["name"], "some-agent");
    assert_eq!(get_status, StatusCode::OK);
    assert_eq!(agent["id"], fixture.agent_id);
    assert_eq!(
        create,
        (StatusCode::FORBIDDEN, json!({"message": "403 Forbidden"}))
    );
    assert_eq!(
        delete,
        (StatusCode::FORBIDDEN, json!({"message": "403 Forbidden"}))
    );
    assert_eq!(agent_names(app, fixture.project_id).await, ["some-agent"]);
}

#[tokio::test]
async fn non_member_sees_project_not_found_on_every_route() {
    let fixture = Fixture::with_agent().await;
    let app = &fixture.app;
    let (_, outsider) = app.user("outsider").await;
    let not_found = (
        StatusCode::NOT_FOUND,
        json!({"message": "404 Project Not Found"}),
    );

    let list = app.get(&agents_path(fixture.project_id), &outsider).await;
    let get = app
        .get(&agent_path(fixture.project_id, fixture.agent_id), &outsider)
        .await;
    let create = app
        .post(
            &agents_path(fixture.project_id),
            &outsider,
            json!({"name": "mine"}),
        )
        .await;
    let delete = app
        .delete(&agent_path(fixture.project_id, fixture.agent_id), &outsider)
        .await;

    assert_eq!(list, not_found);
    assert_eq!(get, not_found);
    assert_eq!(create, not_found);
    assert_eq!(delete, not_found);
}

#[tokio::test]
async fn anonymous_requests_are_unauthorized() {
    let fixture = Fixture::with_agent().await;
    let app = &fixture.app;
    let unauthorized = (
        StatusCode::UNAUTHORIZED,
        json!({"message": "401 Unauthorized"}),
    );

    let list = app
        .call(Method::GET, &agents_path(fixture.project_id), None, None)
        .await;
    let get = app
        .call(
            Method::GET,
            &agent_path(fixture.project_id, fixture.agent_id),
            None,
            None,
        )
        .await;
    let create = app
        .call(
            Method::POST,
            &agents_path(fixture.project_id),
            None,
            Some(json!({"name": "mine"})),
        )
        .await;
    let delete = app
        .call(
            Method::DELETE,
            &agent_path(fixture.project_id, fixture.agent_id),
            None,
            None,
        )
        .await;

    assert_eq!(list, unauthorized);
    assert_eq!(get, unauthorized);
    assert_eq!(create, unauthorized);
    assert_eq!(delete, unauthorized);
}

#[tokio::test]
async fn unknown_token_is_unauthorized_even_for_invalid_requests() {
    let fixture = Fixture::with_agent().await;
    let app = &fixture.app;
    let unknown = "glpat-this-token-does-not-exist-000000";
    let unauthorized = (
        StatusCode::UNAUTHORIZED,
        json!({"message": "401 Unauthorized"}),
    );

    let list = app.get(&agents_path(fixture.project_id), unknown).await;
    let missing_name = app.post(&agents_path(UNKNOWN_ID), unknown, json!({})).await;
    let bad_id = app
        .get(&format!("{}/abc", agents_path(fixture.project_id)), unknown)
        .await;

    assert_eq!(list, unauthorized);
    assert_eq!(missing_name, unauthorized);
    assert_eq!(bad_id, unauthorized);
}

#[tokio::test]
async fn read_api_token_reads_agents_but_writes_are_insufficient_scope() {
    let fixture = Fixture::with_agent().await;
    let app = &fixture.app;
    let (user_id, reader) = app.user_with_scopes("reader", &["read_api"]).await;
    app.add_member(fixture.project_id, user_id, MAINTAINER)
        .await;

    let (list_status, agents) = app.get(&agents_path(fixture.project_id), &reader).await;
    let (create_status, create_body) = app
        .post(
            &agents_path(fixture.project_id),
            &reader,
            json!({"name": "mine"}),
        )
        .await;
    let (delete_status, delete_body) = app
        .delete(&agent_path(fixture.project_id, fixture.agent_id), &reader)
        .await;

    assert_eq!(list_status, StatusCode::OK);
    assert_eq!(agents[0]["name"], "some-agent");
    for (status, body) in [(create_status, create_body), (delete_status, delete_body)] {
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"], "insufficient_scope");
        assert_eq!(
            body["error_description"],
            "The request requires higher privileges than provided by the access token."
        );
        assert!(body.get("message").is_none(), "{body}");
    }
    assert_eq!(agent_names(app, fixture.project_id).await, ["some-agent"]);
}

#[tokio::test]
async fn agent_id_that_is_not_an_integer_is_invalid() {
    let fixture = Fixture::with_agent().await;
    let path = format!("{}/abc", agents_path(fixture.project_id));
    let invalid = (
        StatusCode::BAD_REQUEST,
        json!({"error": "agent_id is invalid"}),
    );

    let get = fixture.app.get(&path, &fixture.maintainer).await;
    let delete = fixture.app.delete(&path, &fixture.maintainer).await;
    let in_unknown_project = fixture
        .app
        .get(
            &format!("{}/abc", agents_path(UNKNOWN_ID)),
            &fixture.maintainer,
        )
        .await;

    assert_eq!(get, invalid);
    assert_eq!(delete, invalid);
    assert_eq!(in_unknown_project, invalid);
}

#[tokio::test]
async fn unknown_route_is_gitlabs_catch_all_not_found() {
    let app = TestApp::spawn().await;

    let (status, body) = app.get("/projects/1/cluster_agent", ROOT_TOKEN).await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "404 Not Found"}));
}

// Order of checks.

#[tokio::test]
async fn missing_name_is_reported_before_the_unknown_project() {
    let app = TestApp::spawn().await;

    let (status, body) = app
        .post(&agents_path(UNKNOWN_ID), ROOT_TOKEN, json!({}))
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"error": "name is missing"}));
}

#[tokio::test]
async fn developer_deleting_an_unknown_agent_is_forbidden_before_the_lookup() {
    let fixture = Fixture::with_agent().await;
    let developer = fixture
        .app
        .member(fixture.project_id, "dev", DEVELOPER)
        .await;

    let (status, body) = fixture
        .app
        .delete(&agent_path(fixture.project_id, UNKNOWN_ID), &developer)
        .await;

    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, json!({"message": "403 Forbidden"}));
}

#[tokio::test]
async fn agent_of_another_project_is_record_not_found() {
    let fixture = Fixture::with_agent().await;
    let other_project_id = fixture.app.project(&fixture.maintainer, "other").await;

    let get = fixture
        .app
        .get(
            &agent_path(other_project_id, fixture.agent_id),
            &fixture.maintainer,
        )
        .await;
    let delete = fixture
        .app
        .delete(
            &agent_path(other_project_id, fixture.agent_id),
            &fixture.maintainer,
        )
        .await;

    let not_found = (StatusCode::NOT_FOUND, json!({"message": "404 Not found"}));
    assert_eq!(get, not_found);
    assert_eq!(delete, not_found);
    assert_eq!(
        agent_names(&fixture.app, fixture.project_id).await,
        ["some-agent"]
    );
}

// Names.

#[tokio::test]
async fn name_of_sixty_four_characters_is_too_long_and_sixty_three_is_fine() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;

    let (long_status, long_body) = app
        .post(
            &agents_path(project_id),
            ROOT_TOKEN,
            json!({"name": "a".repeat(64)}),
        )
        .await;
    let (fit_status, fit_body) = app
        .post(
            &agents_path(project_id),
            ROOT_TOKEN,
            json!({"name": "a".repeat(63)}),
        )
        .await;

    assert_eq!(long_status, StatusCode::BAD_REQUEST);
    assert_eq!(
        long_body,
        json!({"message": "400 Bad request - [\"Name is too long (maximum is 63 characters)\"]"})
    );
    assert_eq!(fit_status, StatusCode::CREATED);
    assert_eq!(fit_body["name"], "a".repeat(63));
}

#[tokio::test]
async fn empty_or_null_name_reports_blank_then_format() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let expected = json!({
        "message": format!("400 Bad request - [\"Name can't be blank\", \"{NAME_FORMAT_MESSAGE}\"]")
    });

    let empty = app
        .post(&agents_path(project_id), ROOT_TOKEN, json!({"name": ""}))
        .await;
    let null = app
        .post(&agents_path(project_id), ROOT_TOKEN, json!({"name": null}))
        .await;

    assert_eq!(empty, (StatusCode::BAD_REQUEST, expected.clone()));
    assert_eq!(null, (StatusCode::BAD_REQUEST, expected));
}

#[tokio::test]
async fn names_that_start_or_end_with_a_dash_or_have_capitals_are_rejected() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let expected = json!({"message": format!("400 Bad request - [\"{NAME_FORMAT_MESSAGE}\"]")});

    for name in ["-agent", "agent-", "Agent", "my_agent", "my.agent"] {
        let outcome = app
            .post(&agents_path(project_id), ROOT_TOKEN, json!({"name": name}))
            .await;

        assert_eq!(
            outcome,
            (StatusCode::BAD_REQUEST, expected.clone()),
            "{name}"
        );
    }
    assert!(agent_names(&app, project_id).await.is_empty());
}

#[tokio::test]
async fn duplicate_name_in_one_project_is_taken_but_another_project_may_reuse_it() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let other_project_id = app.project(ROOT_TOKEN, "other").await;
    app.agent(project_id, "some-agent").await;

    let duplicate = app
        .post(
            &agents_path(project_id),
            ROOT_TOKEN,
            json!({"name": "some-agent"}),
        )
        .await;
    let (other_status, _) = app
        .post(
            &agents_path(other_project_id),
            ROOT_TOKEN,
            json!({"name": "some-agent"}),
        )
        .await;

    assert_eq!(
        duplicate,
        (
            StatusCode::BAD_REQUEST,
            json!({"message": "400 Bad request - [\"Name has already been taken\"]"})
        )
    );
    assert_eq!(other_status, StatusCode::CREATED);
}

// Project ids.

#[tokio::test]
async fn project_is_found_by_its_url_encoded_path_in_any_case() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;

    let (create_status, agent) = app
        .post(
            "/projects/root%2Ftest/cluster_agents",
            ROOT_TOKEN,
            json!({"name": "by-path"}),
        )
        .await;
    let (list_status, agents) = app
        .get("/projects/ROOT%2FTest/cluster_agents", ROOT_TOKEN)
        .await;
    let (get_status, fetched) = app
        .get(
            &format!("/projects/root%2Ftest/cluster_agents/{}", agent["id"]),
            ROOT_TOKEN,
        )
        .await;

    assert_eq!(create_status, StatusCode::CREATED);
    assert_eq!(agent["config_project"]["id"], project_id);
    assert_eq!(list_status, StatusCode::OK);
    assert_eq!(agents[0]["name"], "by-path");
    assert_eq!(get_status, StatusCode::OK);
    assert_eq!(fetched["name"], "by-path");
}

#[tokio::test]
async fn bare_project_path_without_namespace_is_project_not_found() {
    let app = TestApp::spawn().await;
    app.project(ROOT_TOKEN, "test").await;

    let list = app.get("/projects/test/cluster_agents", ROOT_TOKEN).await;
    let unknown_path = app
        .get("/projects/root%2Fnope/cluster_agents", ROOT_TOKEN)
        .await;

    let not_found = (
        StatusCode::NOT_FOUND,
        json!({"message": "404 Project Not Found"}),
    );
    assert_eq!(list, not_found);
    assert_eq!(unknown_path, not_found);
}

// The entity.

#[tokio::test]
async fn agent_entity_has_gitlabs_keys_in_order_with_millisecond_timestamps() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;

    let (_, created) = app
        .post(
            &agents_path(project_id),
            ROOT_TOKEN,
            json!({"name": "shape"}),
        )
        .await;
    let (_, listed) = app.get(&agents_path(project_id), ROOT_TOKEN).await;
    let (_, fetched) = app
        .get(&agent_path(project_id, &created["id"]), ROOT_TOKEN)
        .await;

    for agent in [&created, &listed[0], &fetched] {
        assert_eq!(
            keys(agent),
            [
                "id",
                "name",
                "config_project",
                "created_at",
                "created_by_user_id",
                "is_receptive"
            ]
        );
        let project = &agent["config_project"];
        assert_eq!(
            keys(project),
            [
                "id",
                "description",
                "name",
                "name_with_namespace",
                "path",
                "path_with_namespace",
                "created_at"
            ]
        );
        assert!(agent["id"].is_i64());
        assert_eq!(agent["name"], "shape");
        assert!(agent["created_by_user_id"].is_i64());
        assert_eq!(agent["is_receptive"], false);
        assert_eq!(project["id"], project_id);
        assert_eq!(project["description"], Value::Null);
        assert_eq!(project["name"], "test");
        assert_eq!(project["name_with_namespace"], "Administrator / test");
        assert_eq!(project["path"], "test");
        assert_eq!(project["path_with_namespace"], "root/test");
        assert!(is_gitlab_timestamp(&agent["created_at"]), "{agent}");
        assert!(is_gitlab_timestamp(&project["created_at"]), "{agent}");
    }
    assert_eq!(created, fetched);
    assert_eq!(created, listed[0]);
}

// Pagination.

#[tokio::test]
async fn list_is_ordered_by_name_and_paged_with_gitlab_headers() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    register_five_agents_out_of_order(&app, project_id).await;
    let base = format!(
        "{}/api/v4/projects/{project_id}/cluster_agents",
        app.base_url
    );

    let first = list_page(&app, &format!("{}?per_page=2", agents_path(project_id))).await;
    let second = list_page(
        &app,
        &format!("{}?per_page=2&page=2", agents_path(project_id)),
    )
    .await;
    let last = list_page(
        &app,
        &format!("{}?per_page=2&page=3", agents_path(project_id)),
    )
    .await;

    for (headers, _) in [&first, &second, &last] {
        assert_eq!(header(headers, "x-total"), "5");
        assert_eq!(header(headers, "x-total-pages"), "3");
        assert_eq!(header(headers, "x-per-page"), "2");
    }
    assert_eq!(first.1, ["alpha", "bravo"]);
    assert_eq!(header(&first.0, "x-page"), "1");
    assert_eq!(header(&first.0, "x-prev-page"), "");
    assert_eq!(header(&first.0, "x-next-page"), "2");
    assert_eq!(
        header(&first.0, "link"),
        format!(
            "<{base}?id={project_id}&page=2&per_page=2>; rel=\"next\", \
             <{base}?id={project_id}&page=1&per_page=2>; rel=\"first\", \
             <{base}?id={project_id}&page=3&per_page=2>; rel=\"last\""
        )
    );
    assert_eq!(second.1, ["charlie", "delta"]);
    assert_eq!(header(&second.0, "x-page"), "2");
    assert_eq!(header(&second.0, "x-prev-page"), "1");
    assert_eq!(header(&second.0, "x-next-page"), "3");
    assert_eq!(
        header(&second.0, "link"),
        format!(
            "<{base}?id={project_id}&page=1&per_page=2>; rel=\"prev\", \
             <{base}?id={project_id}&page=3&per_page=2>; rel=\"next\", \
             <{base}?id={project_id}&page=1&per_page=2>; rel=\"first\", \
             <{base}?id={project_id}&page=3&per_page=2>; rel=\"last\""
        )
    );
    assert_eq!(last.1, ["echo"]);
    assert_eq!(header(&last.0, "x-page"), "3");
    assert_eq!(header(&last.0, "x-prev-page"), "2");
    assert_eq!(header(&last.0, "x-next-page"), "");
    assert_eq!(
        link_relations(&last.0),
        [
            (
                "prev".to_owned(),
                format!("{base}?id={project_id}&page=2&per_page=2")
            ),
            (
                "first".to_owned(),
                format!("{base}?id={project_id}&page=1&per_page=2")
            ),
            (
                "last".to_owned(),
                format!("{base}?id={project_id}&page=3&per_page=2")
            )
        ]
    );
}

#[tokio::test]
async fn following_next_links_returns_every_agent_in_name_order() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    register_five_agents_out_of_order(&app, project_id).await;
    let mut next_url = Some(app.url(&format!("{}?per_page=2", agents_path(project_id))));
    let mut names = Vec::new();
    let mut n_pages = 0;

    while let Some(url) = next_url.take() {
        let (status, headers, body) =
            send(app.http.get(&url).header("PRIVATE-TOKEN", ROOT_TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{url}");
        names.extend(names_of(&body));
        n_pages += 1;
        assert!(n_pages <= 3, "the next links never end");
        next_url = link_relations(&headers)
            .into_iter()
            .find(|(relation, _)| relation == "next")
            .map(|(_, url)| url);
    }

    assert_eq!(n_pages, 3);
    assert_eq!(names, ["alpha", "bravo", "charlie", "delta", "echo"]);
}

#[tokio::test]
async fn link_repeats_an_encoded_path_id() {
    let app = TestApp::spawn().await;
    app.project(ROOT_TOKEN, "test").await;
    let base = format!(
        "{}/api/v4/projects/root%2Ftest/cluster_agents",
        app.base_url
    );

    let (headers, _) = list_page(&app, "/projects/root%2Ftest/cluster_agents").await;

    assert_eq!(
        header(&headers, "link"),
        format!(
            "<{base}?id=root%2Ftest&page=1&per_page=20>; rel=\"first\", \
             <{base}?id=root%2Ftest&page=1&per_page=20>; rel=\"last\""
        )
    );
}

#[tokio::test]
async fn link_starts_with_the_configured_external_url() {
    let app = TestApp::spawn_with(|settings| {
        settings.external_url = Some("https://gitlab.example.com".into());
    })
    .await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    register_five_agents_out_of_order(&app, project_id).await;

    let (headers, _) = list_page(&app, &format!("{}?per_page=2", agents_path(project_id))).await;

    let relations = link_relations(&headers);
    assert_eq!(relations.len(), 3);
    for (_, url) in &relations {
        assert!(
            url.starts_with(&format!(
                "https://gitlab.example.com/api/v4/projects/{project_id}/cluster_agents?"
            )),
            "{url}"
        );
    }
    assert!(
        header(&headers, "link").starts_with(&format!(
            "<https://gitlab.example.com/api/v4/projects/{project_id}/cluster_agents?id={project_id}&page=2&per_page=2>; rel=\"next\""
        ))
    );
}

#[tokio::test]
async fn per_page_zero_is_not_allowed() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;

    let outcome = app
        .get(
            &format!("{}?per_page=0", agents_path(project_id)),
            ROOT_TOKEN,
        )
        .await;

    assert_eq!(
        outcome,
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "per_page has a value not allowed"})
        )
    );
}

#[tokio::test]
async fn huge_per_page_is_clamped_to_one_hundred() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    app.agent(project_id, "only").await;

    let (status, headers, body) = send(app.request(
        Method::GET,
        &format!("{}?per_page=1000000000000", agents_path(project_id)),
        Some(ROOT_TOKEN),
    ))
    .await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "x-per-page"), "100");
    assert_eq!(names_of(&body), ["only"]);
}

#[tokio::test]
async fn page_past_the_end_is_an_empty_array() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    app.agent(project_id, "only").await;

    let (status, headers, body) = send(app.request(
        Method::GET,
        &format!("{}?page=5", agents_path(project_id)),
        Some(ROOT_TOKEN),
    ))
    .await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!([]));
    assert_eq!(header(&headers, "x-total"), "1");
    assert_eq!(header(&headers, "x-page"), "5");
    assert_eq!(header(&headers, "x-next-page"), "");
}

#[tokio::test]
async fn page_that_is_not_an_integer_is_invalid() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;

    let outcome = app
        .get(&format!("{}?page=abc", agents_path(project_id)), ROOT_TOKEN)
        .await;

    assert_eq!(
        outcome,
        (StatusCode::BAD_REQUEST, json!({"error": "page is invalid"}))
    );
}

// Request bodies.

#[tokio::test]
async fn form_encoded_registration_is_accepted() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;

    let (status, agent) = read(
        app.request(Method::POST, &agents_path(project_id), Some(ROOT_TOKEN))
            .form(&[("name", "from-a-form")])
            .send()
            .await
            .expect("request sent"),
    )
    .await;

    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(agent["name"], "from-a-form");
}

#[tokio::test]
async fn get_and_delete_accept_an_empty_or_empty_object_json_body() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let empty_agent_id = app.agent(project_id, "empty-body").await;
    let object_agent_id = app.agent(project_id, "object-body").await;

    let mut outcomes = Vec::new();
    for (body, agent_id) in [("", empty_agent_id), ("{}", object_agent_id)] {
        for (method, path) in [
            (Method::GET, agents_path(project_id)),
            (Method::GET, agent_path(project_id, agent_id)),
            (Method::DELETE, agent_path(project_id, agent_id)),
        ] {
            let (status, _, _) = send_raw(
                app.request(method.clone(), &path, Some(ROOT_TOKEN))
                    .header("Content-Type", "application/json")
                    .body(body),
            )
            .await;
            outcomes.push((format!("{method} {path} with {body:?}"), status));
        }
    }

    for (request, status) in outcomes {
        let expected = if request.starts_with("DELETE") {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::OK
        };
        assert_eq!(status, expected, "{request}");
    }
    assert!(agent_names(&app, project_id).await.is_empty());
}

#[tokio::test]
async fn malformed_json_is_a_gitlab_bad_request() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;

    let (status, body) = read(
        app.request(Method::POST, &agents_path(project_id), Some(ROOT_TOKEN))
            .header("Content-Type", "application/json")
            .body(r#"{"name": "broken""#)
            .send()
            .await
            .expect("request sent"),
    )
    .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "message body does not match declared format"})
    );
    assert!(agent_names(&app, project_id).await.is_empty());
}

#[tokio::test]
async fn unsupported_content_type_is_rejected() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;

    let (status, body) = read(
        app.request(Method::POST, &agents_path(project_id), Some(ROOT_TOKEN))
            .header("Content-Type", "text/plain")
            .body("name=plain")
            .send()
            .await
            .expect("request sent"),
    )
    .await;

    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body["error"].is_string(), "{body}");
    assert!(agent_names(&app, project_id).await.is_empty());
}

// Cascade, concurrency, durability.

#[tokio::test]
async fn deleting_an_agent_removes_its_tokens_and_frees_its_name() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let agent_id = app.agent(project_id, "doomed").await;
    let (token_id, secret) = app.agent_token(project_id, agent_id, "t1").await;
    let (status, _) = app.agent_info(&secret).await;
    assert_eq!(status, StatusCode::OK);

    let (delete_status, _) = app
        .delete(&agent_path(project_id, agent_id), ROOT_TOKEN)
        .await;

    assert_eq!(delete_status, StatusCode::NO_CONTENT);
    let (token_status, _) = app
        .get(
            &format!("{}/tokens/{token_id}", agent_path(project_id, agent_id)),
            ROOT_TOKEN,
        )
        .await;
    assert_eq!(token_status, StatusCode::NOT_FOUND);
    let (agent_info_status, _) = app.agent_info(&secret).await;
    assert_eq!(agent_info_status, StatusCode::UNAUTHORIZED);
    let (again_status, again) = app
        .post(
            &agents_path(project_id),
            ROOT_TOKEN,
            json!({"name": "doomed"}),
        )
        .await;
    assert_eq!(again_status, StatusCode::CREATED);
    assert_ne!(again["id"], agent_id);
}

#[tokio::test]
async fn concurrent_registrations_of_one_name_create_exactly_one_agent() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let path = agents_path(project_id);

    let outcomes = futures::future::join_all(
        (0..50).map(|_| app.post(&path, ROOT_TOKEN, json!({"name": "racer"}))),
    )
    .await;

    let n_created = outcomes
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .count();
    assert_eq!(n_created, 1);
    for (status, body) in outcomes
        .iter()
        .filter(|(status, _)| *status != StatusCode::CREATED)
    {
        assert_eq!(*status, StatusCode::BAD_REQUEST);
        assert_eq!(
            *body,
            json!({"message": "400 Bad request - [\"Name has already been taken\"]"})
        );
    }
    assert_eq!(agent_names(&app, project_id).await, ["racer"]);
}

#[tokio::test]
async fn concurrent_grpc_registrations_of_one_name_create_exactly_one_agent() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;

    let outcomes = futures::future::join_all((0..20).map(|_| {
        let mut agents = app.grpc_agents(ROOT_TOKEN);
        async move {
            agents
                .create_agent(pb::CreateAgentRequest {
                    project: project_id.to_string(),
                    name: Some("racer".to_owned()),
                })
                .await
        }
    }))
    .await;

    let n_created = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    assert_eq!(n_created, 1);
    for outcome in outcomes.into_iter().filter(Result::is_err) {
        assert_eq!(
            grpc_error(outcome),
            (
                tonic::Code::InvalidArgument,
                "400 Bad request - [\"Name has already been taken\"]".to_owned()
            )
        );
    }
    assert_eq!(agent_names(&app, project_id).await, ["racer"]);
}

#[tokio::test]
async fn agents_survive_a_restart_and_ids_are_never_reused() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let first_id = app.agent(project_id, "first").await;
    let second_id = app.agent(project_id, "second").await;
    let deleted_id = app.agent(project_id, "third").await;
    let (status, _) = app
        .delete(&agent_path(project_id, deleted_id), ROOT_TOKEN)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let data_dir = app.data_dir.clone();
    let _temp_dir = app.stop().await;

    let app = TestApp::start(&data_dir, |_| {}).await;

    let (status, agents) = app.get(&agents_path(project_id), ROOT_TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names_of(&agents), ["first", "second"]);
    assert_eq!(agents[0]["id"], first_id);
    assert_eq!(agents[1]["id"], second_id);
    let new_id = app.agent(project_id, "fourth").await;
    assert!(
        new_id > deleted_id && deleted_id > second_id && second_id > first_id,
        "ids {first_id}, {second_id}, {deleted_id}, then {new_id}"
    );
}

// gRPC.

#[tokio::test]
async fn grpc_maintainer_registers_gets_lists_and_deletes_an_agent() {
    let fixture = Fixture::with_agent().await;
    let mut agents = fixture.app.grpc_agents(&fixture.maintainer);
    let project = fixture.project_id.to_string();

    let created = agents
        .create_agent(pb::CreateAgentRequest {
            project: project.clone(),
            name: Some("grpc-agent".to_owned()),
        })
        .await
        .expect("created")
        .into_inner();
    let fetched = agents
        .get_agent(pb::GetAgentRequest {
            project: project.clone(),
            agent_id: created.id,
        })
        .await
        .expect("fetched")
        .into_inner();
    let listed = agents
        .list_agents(pb::ListAgentsRequest {
            project: project.clone(),
            page: None,
            keyset: None,
        })
        .await
        .expect("listed")
        .into_inner();
    agents
        .delete_agent(pb::DeleteAgentRequest {
            project: project.clone(),
            agent_id: created.id,
            if_unmodified_since: None,
        })
        .await
        .expect("deleted");

    assert_eq!(created.name, "grpc-agent");
    assert_eq!(created.created_by_user_id, Some(fixture.maintainer_id));
    assert!(!created.is_receptive);
    assert!(created.created_at.is_some());
    let config_project = created.config_project.clone().expect("config project");
    assert_eq!(config_project.id, fixture.project_id);
    assert_eq!(config_project.name_with_namespace, "Administrator / test");
    assert_eq!(config_project.path_with_namespace, "root/test");
    assert_eq!(fetched, created);
    let names: Vec<&str> = listed.agents.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["grpc-agent", "some-agent"]);
    assert_eq!(
        agent_names(&fixture.app, fixture.project_id).await,
        ["some-agent"]
    );
    let (status, rest_agent) = fixture
        .app
        .get(
            &agent_path(fixture.project_id, fixture.agent_id),
            &fixture.maintainer,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed.agents[1].id, fixture.agent_id);
    assert_eq!(rest_agent["name"], listed.agents[1].name);
}

#[tokio::test]
async fn grpc_guest_and_reporter_reads_are_not_found_and_writes_permission_denied() {
    let fixture = Fixture::with_agent().await;
    let project = fixture.project_id.to_string();

    for (username, access_level) in [("guest", GUEST), ("reporter", REPORTER)] {
        let token = fixture
            .app
            .member(fixture.project_id, username, access_level)
            .await;
        let mut agents = fixture.app.grpc_agents(&token);

        let list = agents
            .list_agents(pb::ListAgentsRequest {
                project: project.clone(),
                page: None,
                keyset: None,
            })
            .await;
        let get = agents
            .get_agent(pb::GetAgentRequest {
                project: project.clone(),
                agent_id: fixture.agent_id,
            })
            .await;
        let create = agents
            .create_agent(pb::CreateAgentRequest {
                project: project.clone(),
                name: Some("mine".to_owned()),
            })
            .await;
        let delete = agents
            .delete_agent(pb::DeleteAgentRequest {
                project: project.clone(),
                agent_id: fixture.agent_id,
                if_unmodified_since: None,
            })
            .await;

        assert_eq!(
            grpc_error(list),
            (
                tonic::Code::NotFound,
                "404 ClusterAgents Not Found".to_owned()
            ),
            "{username}"
        );
        assert_eq!(
            grpc_error(get),
            (tonic::Code::NotFound, "404 Not found".to_owned()),
            "{username}"
        );
        assert_eq!(
            grpc_error(create),
            (tonic::Code::PermissionDenied, "403 Forbidden".to_owned()),
            "{username}"
        );
        assert_eq!(
            grpc_error(delete),
            (tonic::Code::PermissionDenied, "403 Forbidden".to_owned()),
            "{username}"
        );
    }
}

#[tokio::test]
async fn grpc_developer_reads_but_cannot_register_or_delete() {
    let fixture = Fixture::with_agent().await;
    let developer = fixture
        .app
        .member(fixture.project_id, "dev", DEVELOPER)
        .await;
    let mut agents = fixture.app.grpc_agents(&developer);
    let project = fixture.project_id.to_string();

    let listed = agents
        .list_agents(pb::ListAgentsRequest {
            project: project.clone(),
            page: None,
            keyset: None,
        })
        .await;
    let create = agents
        .create_agent(pb::CreateAgentRequest {
            project: project.clone(),
            name: Some("mine".to_owned()),
        })
        .await;
    let delete_unknown = agents
        .delete_agent(pb::DeleteAgentRequest {
            project: project.clone(),
            agent_id: UNKNOWN_ID,
            if_unmodified_since: None,
        })
        .await;

    assert_eq!(listed.expect("listed").into_inner().agents.len(), 1);
    assert_eq!(
        grpc_error(create),
        (tonic::Code::PermissionDenied, "403 Forbidden".to_owned())
    );
    assert_eq!(
        grpc_error(delete_unknown),
        (tonic::Code::PermissionDenied, "403 Forbidden".to_owned())
    );
}

#[tokio::test]
async fn grpc_invalid_names_are_invalid_argument_with_rest_messages() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    app.agent(project_id, "taken").await;
    let mut agents = app.grpc_agents(ROOT_TOKEN);
    let cases = [
        (None, "name is missing".to_owned()),
        (
            Some("#4^x".to_owned()),
            format!("400 Bad request - [\"{NAME_FORMAT_MESSAGE}\"]"),
        ),
        (
            Some("a".repeat(64)),
            "400 Bad request - [\"Name is too long (maximum is 63 characters)\"]".to_owned(),
        ),
        (
            Some(String::new()),
            format!("400 Bad request - [\"Name can't be blank\", \"{NAME_FORMAT_MESSAGE}\"]"),
        ),
        (
            Some("taken".to_owned()),
            "400 Bad request - [\"Name has already been taken\"]".to_owned(),
        ),
    ];

    for (name, message) in cases {
        let outcome = agents
            .create_agent(pb::CreateAgentRequest {
                project: project_id.to_string(),
                name: name.clone(),
            })
            .await;

        assert_eq!(
            grpc_error(outcome),
            (tonic::Code::InvalidArgument, message),
            "{name:?}"
        );
    }
    assert_eq!(agent_names(&app, project_id).await, ["taken"]);
}

#[tokio::test]
async fn grpc_missing_name_is_reported_before_the_unknown_project() {
    let app = TestApp::spawn().await;
    let mut agents = app.grpc_agents(ROOT_TOKEN);

    let missing = agents
        .create_agent(pb::CreateAgentRequest {
            project: UNKNOWN_ID.to_string(),
            name: None,
        })
        .await;
    let unknown_project = agents
        .create_agent(pb::CreateAgentRequest {
            project: UNKNOWN_ID.to_string(),
            name: Some("some-agent".to_owned()),
        })
        .await;

    assert_eq!(
        grpc_error(missing),
        (tonic::Code::InvalidArgument, "name is missing".to_owned())
    );
    assert_eq!(
        grpc_error(unknown_project),
        (tonic::Code::NotFound, "404 Project Not Found".to_owned())
    );
}

#[tokio::test]
async fn grpc_finds_projects_by_path_case_insensitively_but_not_by_bare_name() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    app.agent(project_id, "by-path").await;
    let mut agents = app.grpc_agents(ROOT_TOKEN);

    let by_path = agents
        .list_agents(pb::ListAgentsRequest {
            project: "ROOT/Test".to_owned(),
            page: None,
            keyset: None,
        })
        .await;
    let bare = agents
        .list_agents(pb::ListAgentsRequest {
            project: "test".to_owned(),
            page: None,
            keyset: None,
        })
        .await;

    let by_path = by_path.expect("listed").into_inner();
    assert_eq!(by_path.agents.len(), 1);
    assert_eq!(by_path.agents[0].name, "by-path");
    assert_eq!(
        grpc_error(bare),
        (tonic::Code::NotFound, "404 Project Not Found".to_owned())
    );
}

#[tokio::test]
async fn grpc_delete_honours_if_unmodified_since() {
    let fixture = Fixture::with_agent().await;
    let mut agents = fixture.app.grpc_agents(&fixture.maintainer);
    let request = |seconds: i64| pb::DeleteAgentRequest {
        project: fixture.project_id.to_string(),
        agent_id: fixture.agent_id,
        if_unmodified_since: Some(prost_types::Timestamp { seconds, nanos: 0 }),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    let stale = agents.delete_agent(request(632_124_048)).await;
    let fresh = agents.delete_agent(request(now)).await;
    let again = agents.delete_agent(request(now)).await;

    assert_eq!(
        grpc_error(stale),
        (
            tonic::Code::FailedPrecondition,
            "412 Precondition Failed".to_owned()
        )
    );
    assert!(fresh.is_ok(), "{fresh:?}");
    assert_eq!(
        grpc_error(again),
        (tonic::Code::NotFound, "404 Not found".to_owned())
    );
}

#[tokio::test]
async fn grpc_anonymous_and_unknown_token_callers_are_unauthenticated() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let mut anonymous = pb::agent_service_client::AgentServiceClient::new(app.channel.clone());
    let mut unknown = app.grpc_agents("glpat-this-token-does-not-exist-000000");

    let anonymous_list = anonymous
        .list_agents(pb::ListAgentsRequest {
            project: project_id.to_string(),
            page: None,
            keyset: None,
        })
        .await;
    let anonymous_create = anonymous
        .create_agent(pb::CreateAgentRequest {
            project: project_id.to_string(),
            name: None,
        })
        .await;
    let unknown_list = unknown
        .list_agents(pb::ListAgentsRequest {
            project: project_id.to_string(),
            page: None,
            keyset: None,
        })
        .await;
    let unknown_delete = unknown
        .delete_agent(pb::DeleteAgentRequest {
            project: project_id.to_string(),
            agent_id: 1,
            if_unmodified_since: None,
        })
        .await;

    let unauthenticated = (tonic::Code::Unauthenticated, "401 Unauthorized".to_owned());
    assert_eq!(grpc_error(anonymous_list), unauthenticated);
    assert_eq!(grpc_error(anonymous_create), unauthenticated);
    assert_eq!(grpc_error(unknown_list), unauthenticated);
    assert_eq!(grpc_error(unknown_delete), unauthenticated);
}

#[tokio::test]
async fn grpc_read_api_token_reads_but_cannot_write() {
    let fixture = Fixture::with_agent().await;
    let (user_id, reader) = fixture.app.user_with_scopes("reader", &["read_api"]).await;
    fixture
        .app
        .add_member(fixture.project_id, user_id, MAINTAINER)
        .await;
    let mut agents = fixture.app.grpc_agents(&reader);
    let project = fixture.project_id.to_string();

    let listed = agents
        .list_agents(pb::ListAgentsRequest {
            project: project.clone(),
            page: None,
            keyset: None,
        })
        .await;
    let create = agents
        .create_agent(pb::CreateAgentRequest {
            project: project.clone(),
            name: Some("mine".to_owned()),
        })
        .await;
    let delete = agents
        .delete_agent(pb::DeleteAgentRequest {
            project: project.clone(),
            agent_id: fixture.agent_id,
            if_unmodified_since: None,
        })
        .await;

    assert_eq!(listed.expect("listed").into_inner().agents.len(), 1);
    for outcome in [grpc_error(create), grpc_error(delete)] {
        assert_eq!(outcome.0, tonic::Code::PermissionDenied);
        assert!(outcome.1.starts_with("insufficient_scope"), "{}", outcome.1);
    }
}

#[tokio::test]
async fn grpc_list_reports_page_info_like_the_rest_headers() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    register_five_agents_out_of_order(&app, project_id).await;
    let mut agents = app.grpc_agents(ROOT_TOKEN);
    let page = |page: i64, per_page: i64| pb::ListAgentsRequest {
        project: project_id.to_string(),
        page: Some(pb::PageRequest {
            page: Some(page),
            per_page: Some(per_page),
        }),
        keyset: None,
    };

    let first = agents
        .list_agents(page(1, 2))
        .await
        .expect("page 1")
        .into_inner();
    let last = agents
        .list_agents(page(3, 2))
        .await
        .expect("page 3")
        .into_inner();
    let past_end = agents
        .list_agents(page(9, 2))
        .await
        .expect("page 9")
        .into_inner();
    let clamped = agents
        .list_agents(page(1, 1_000_000_000_000))
        .await
        .expect("clamped")
        .into_inner();
    let zero = agents.list_agents(page(1, 0)).await;

    let first_names: Vec<&str> = first.agents.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(first_names, ["alpha", "bravo"]);
    assert_eq!(
        first.page_info,
        Some(pb::PageInfo {
            total: 5,
            total_pages: 3,
            per_page: 2,
            page: 1,
            next_page: Some(2),
            prev_page: None,
        })
    );
    assert_eq!(last.agents.len(), 1);
    assert_eq!(last.agents[0].name, "echo");
    assert_eq!(
        last.page_info,
        Some(pb::PageInfo {
            total: 5,
            total_pages: 3,
            per_page: 2,
            page: 3,
            next_page: None,
            prev_page: Some(2),
        })
    );
    assert!(past_end.agents.is_empty());
    assert_eq!(clamped.page_info.expect("page info").per_page, 100);
    assert_eq!(clamped.agents.len(), 5);
    assert_eq!(
        grpc_error(zero),
        (
            tonic::Code::InvalidArgument,
            "per_page has a value not allowed".to_owned()
        )
    );
}

#[tokio::test]
async fn rest_and_grpc_agree_on_every_outcome() {
    let fixture = Fixture::with_agent().await;
    let app = &fixture.app;
    let project = fixture.project_id.to_string();
    let guest = app.member(fixture.project_id, "guest", GUEST).await;
    let developer = app.member(fixture.project_id, "dev", DEVELOPER).await;
    let (_, outsider) = app.user("outsider").await;
    let maintainer = fixture.maintainer.clone();
    let unknown_token = "glpat-this-token-does-not-exist-000000".to_owned();
    let operations = [
        Operation::List {
            token: maintainer.clone(),
            project: project.clone(),
        },
        Operation::List {
            token: guest.clone(),
            project: project.clone(),
        },
        Operation::List {
            token: outsider.clone(),
            project: project.clone(),
        },
        Operation::List {
            token: maintainer.clone(),
            project: UNKNOWN_ID.to_string(),
        },
        Operation::List {
            token: maintainer.clone(),
            project: "test".to_owned(),
        },
        Operation::List {
            token: unknown_token.clone(),
            project: project.clone(),
        },
        Operation::Get {
            token: maintainer.clone(),
            project: project.clone(),
            agent_id: fixture.agent_id,
        },
        Operation::Get {
            token: maintainer.clone(),
            project: project.clone(),
            agent_id: UNKNOWN_ID,
        },
        Operation::Get {
            token: guest.clone(),
            project: project.clone(),
            agent_id: fixture.agent_id,
        },
        Operation::Get {
            token: developer.clone(),
            project: project.clone(),
            agent_id: fixture.agent_id,
        },
        Operation::Create {
            token: maintainer.clone(),
            project: project.clone(),
            name: None,
        },
        Operation::Create {
            token: maintainer.clone(),
            project: UNKNOWN_ID.to_string(),
            name: None,
        },
        Operation::Create {
            token: maintainer.clone(),
            project: project.clone(),
            name: Some("#4^x".to_owned()),
        },
        Operation::Create {
            token: maintainer.clone(),
            project: project.clone(),
            name: Some(String::new()),
        },
        Operation::Create {
            token: maintainer.clone(),
            project: project.clone(),
            name: Some("a".repeat(64)),
        },
        Operation::Create {
            token: maintainer.clone(),
            project: project.clone(),
            name: Some("some-agent".to_owned()),
        },
        Operation::Create {
            token: maintainer.clone(),
            project: UNKNOWN_ID.to_string(),
            name: Some("some-agent".to_owned()),
        },
        Operation::Create {
            token: developer.clone(),
            project: project.clone(),
            name: Some("mine".to_owned()),
        },
        Operation::Create {
            token: guest.clone(),
            project: project.clone(),
            name: Some("mine".to_owned()),
        },
        Operation::Create {
            token: outsider.clone(),
            project: project.clone(),
            name: Some("mine".to_owned()),
        },
        Operation::Delete {
            token: maintainer.clone(),
            project: project.clone(),
            agent_id: UNKNOWN_ID,
            long_ago: false,
        },
        Operation::Delete {
            token: developer.clone(),
            project: project.clone(),
            agent_id: UNKNOWN_ID,
            long_ago: false,
        },
        Operation::Delete {
            token: guest.clone(),
            project: project.clone(),
            agent_id: fixture.agent_id,
            long_ago: false,
        },
        Operation::Delete {
            token: maintainer.clone(),
            project: project.clone(),
            agent_id: fixture.agent_id,
            long_ago: true,
        },
        Operation::Delete {
            token: unknown_token.clone(),
            project: project.clone(),
            agent_id: fixture.agent_id,
            long_ago: false,
        },
    ];

    let mut outcomes = Vec::new();
    for operation in &operations {
        let rest = rest_outcome(app, operation).await;
        let grpc = grpc_outcome(app, operation).await;
        outcomes.push((operation, rest, grpc));
    }

    for (operation, rest, grpc) in &outcomes {
        assert_eq!(rest, grpc, "{operation:?}");
    }
    let successes = outcomes
        .iter()
        .filter(|(_, rest, _)| rest.0 == tonic::Code::Ok)
        .count();
    assert_eq!(
        successes, 3,
        "list and two gets succeed; everything else fails"
    );
    assert_eq!(agent_names(app, fixture.project_id).await, ["some-agent"]);
}

/// A project with a maintainer (not an administrator) and one agent, `some-agent`, that the
/// maintainer registered: the setup of GitLab's own request specs.
struct Fixture {
    app: TestApp,
    project_id: i64,
    maintainer: String,
    maintainer_id: i64,
    agent_id: i64,
}

impl Fixture {
    async fn with_agent() -> Fixture {
        let app = TestApp::spawn().await;
        let project_id = app.project(ROOT_TOKEN, "test").await;
        let (maintainer_id, maintainer) = app.user("maintainer").await;
        app.add_member(project_id, maintainer_id, MAINTAINER).await;
        let (status, agent) = app
            .post(
                &agents_path(project_id),
                &maintainer,
                json!({"name": "some-agent"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{agent}");
        Fixture {
            app,
            project_id,
            maintainer,
            maintainer_id,
            agent_id: agent["id"].as_i64().expect("agent id"),
        }
    }
}

/// One agent operation, sent once over REST and once over gRPC.
#[derive(Debug)]
enum Operation {
    List {
        token: String,
        project: String,
    },
    Get {
        token: String,
        project: String,
        agent_id: i64,
    },
    Create {
        token: String,
        project: String,
        name: Option<String>,
    },
    Delete {
        token: String,
        project: String,
        agent_id: i64,
        long_ago: bool,
    },
}

/// A REST outcome as the gRPC code it corresponds to, with GitLab's `message` or `error` text.
async fn rest_outcome(app: &TestApp, operation: &Operation) -> (tonic::Code, String) {
    let encode = |project: &str| project.replace('/', "%2F");
    let request = match operation {
        Operation::List { token, project } => {
            app.request(Method::GET, &agents_path(encode(project)), Some(token))
        }
        Operation::Get {
            token,
            project,
            agent_id,
        } => app.request(
            Method::GET,
            &agent_path(encode(project), agent_id),
            Some(token),
        ),
        Operation::Create {
            token,
            project,
            name,
        } => {
            let body = match name {
                Some(name) => json!({"name": name}),
                None => json!({}),
            };
            app.request(Method::POST, &agents_path(encode(project)), Some(token))
                .json(&body)
        }
        Operation::Delete {
            token,
            project,
            agent_id,
            long_ago,
        } => {
            let request = app.request(
                Method::DELETE,
                &agent_path(encode(project), agent_id),
                Some(token),
            );
            if *long_ago {
                request.header("If-Unmodified-Since", LONG_AGO)
            } else {
                request
            }
        }
    };
    let (status, body) = read(request.send().await.expect("request sent")).await;
    let code = match status.as_u16() {
        200..=299 => tonic::Code::Ok,
        400 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::NotFound,
        412 => tonic::Code::FailedPrecondition,
        other => panic!("unexpected REST status {other} for {operation:?}: {body}"),
    };
    let message = if code == tonic::Code::Ok {
        String::new()
    } else {
        body.get("message")
            .or_else(|| body.get("error"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (code, message)
}

/// A gRPC outcome: the code and, for failures, the message.
async fn grpc_outcome(app: &TestApp, operation: &Operation) -> (tonic::Code, String) {
    let outcome = match operation {
        Operation::List { token, project } => app
            .grpc_agents(token)
            .list_agents(pb::ListAgentsRequest {
                project: project.clone(),
                page: None,
                keyset: None,
            })
            .await
            .map(|_| ()),
        Operation::Get {
            token,
            project,
            agent_id,
        } => app
            .grpc_agents(token)
            .get_agent(pb::GetAgentRequest {
                project: project.clone(),
                agent_id: *agent_id,
            })
            .await
            .map(|_| ()),
        Operation::Create {
            token,
            project,
            name,
        } => app
            .grpc_agents(token)
            .create_agent(pb::CreateAgentRequest {
                project: project.clone(),
                name: name.clone(),
            })
            .await
            .map(|_| ()),
        Operation::Delete {
            token,
            project,
            agent_id,
            long_ago,
        } => app
            .grpc_agents(token)
            .delete_agent(pb::DeleteAgentRequest {
                project: project.clone(),
                agent_id: *agent_id,
                if_unmodified_since: long_ago.then_some(prost_types::Timestamp {
                    seconds: 632_124_048,
                    nanos: 0,
                }),
            })
            .await
            .map(|_| ()),
    };
    match outcome {
        Ok(()) => (tonic::Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_owned()),
    }
}

fn agents_path(project: impl Display) -> String {
    format!("/projects/{project}/cluster_agents")
}

fn agent_path(project: impl Display, agent_id: impl Display) -> String {
    format!("/projects/{project}/cluster_agents/{agent_id}")
}

/// Sends a request and returns its status, headers and JSON body (`Null` when empty).
pub(crate) async fn send(request: reqwest::RequestBuilder) -> (StatusCode, HeaderMap, Value) {
    let response = request.send().await.expect("request sent");
    let headers = response.headers().clone();
    let (status, body) = read(response).await;
    (status, headers, body)
}

/// Sends a request and returns its status, headers and the body exactly as sent.
async fn send_raw(request: reqwest::RequestBuilder) -> (StatusCode, HeaderMap, Vec<u8>) {
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body read").to_vec();
    (status, headers, bytes)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .expect("printable header")
}

/// The `Link` header as (relation, URL) pairs, in order.
pub(crate) fn link_relations(headers: &HeaderMap) -> Vec<(String, String)> {
    header(headers, "link")
        .split(", ")
        .map(|link| {
            let (target, relation) = link.split_once("; rel=").expect("a rel parameter");
            let url = target
                .strip_prefix('<')
                .and_then(|rest| rest.strip_suffix('>'))
                .expect("a bracketed URL");
            (relation.trim_matches('"').to_owned(), url.to_owned())
        })
        .collect()
}

/// A list request as root: the headers and the agent names in the body.
async fn list_page(app: &TestApp, path: &str) -> (HeaderMap, Vec<String>) {
    let (status, headers, body) = send(app.request(Method::GET, path, Some(ROOT_TOKEN))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (headers, names_of(&body))
}

/// The names of every agent in the project, as root sees them (one page of up to 100).
async fn agent_names(app: &TestApp, project_id: i64) -> Vec<String> {
    let (status, body) = app
        .get(
            &format!("{}?per_page=100", agents_path(project_id)),
            ROOT_TOKEN,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    names_of(&body)
}

pub(crate) fn names_of(agents: &Value) -> Vec<String> {
    agents
        .as_array()
        .expect("an array of agents")
        .iter()
        .map(|agent| agent["name"].as_str().expect("a name").to_owned())
        .collect()
}

/// Registers five agents in an order that differs from their names' order.
async fn register_five_agents_out_of_order(app: &TestApp, project_id: i64) {
    for name in ["delta", "alpha", "echo", "charlie", "bravo"] {
        app.agent(project_id, name).await;
    }
}

fn keys(object: &Value) -> Vec<&str> {
    object
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

/// Whether `value` is a string shaped like `2022-03-25T14:12:11.497Z`.
fn is_gitlab_timestamp(value: &Value) -> bool {
    const TEMPLATE: &[u8] = b"0000-00-00T00:00:00.000Z";
    value.as_str().is_some_and(|text| {
        text.len() == TEMPLATE.len()
            && text
                .bytes()
                .zip(TEMPLATE.iter())
                .all(|(byte, &expected)| match expected {
                    b'0' => byte.is_ascii_digit(),
                    other => byte == other,
                })
    })
}
