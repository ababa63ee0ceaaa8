//! The identity API the agent API stands on (version, current user, users, personal access
//! tokens, projects, members) over REST and gRPC, with GitLab's status codes and bodies.

use crate::helpers::{ROOT_TOKEN, TestApp, grpc_error, read};
use agentreg::grpc::pb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// An id that no user or project has.
const UNKNOWN_ID: i64 = 999_999;

const DEVELOPER: i64 = 30;
const MAINTAINER: i64 = 40;

// Version and current user.

#[tokio::test]
async fn version_is_served_to_authenticated_callers_only() {
    let app = TestApp::spawn().await;

    let (status, version) = app.get("/version", ROOT_TOKEN).await;
    let anonymous = app.call(Method::GET, "/version", None, None).await;

    assert_eq!(status, StatusCode::OK);
    assert!(version["version"].is_string(), "{version}");
    assert!(version["revision"].is_string(), "{version}");
    assert_eq!(
        anonymous,
        (
            StatusCode::UNAUTHORIZED,
            json!({"message": "401 Unauthorized"})
        )
    );
}

#[tokio::test]
async fn current_user_is_the_holder_of_the_token() {
    let app = TestApp::spawn().await;
    let (alice_id, alice) = app.user("alice").await;

    let (root_status, root_user) = app.get("/user", ROOT_TOKEN).await;
    let (alice_status, alice_user) = app.get("/user", &alice).await;
    let anonymous = app.call(Method::GET, "/user", None, None).await;

    assert_eq!(root_status, StatusCode::OK);
    assert_eq!(root_user["username"], "root");
    assert_eq!(root_user["name"], "Administrator");
    assert_eq!(root_user["is_admin"], true);
    assert_eq!(alice_status, StatusCode::OK);
    assert_eq!(alice_user["id"], alice_id);
    assert_eq!(alice_user["username"], "alice");
    assert_eq!(alice_user["email"], "alice@example.com");
    assert_eq!(alice_user["is_admin"], false);
    assert_eq!(anonymous.0, StatusCode::UNAUTHORIZED);
}

// Users.

#[tokio::test]
async fn administrator_creates_a_user() {
    let app = TestApp::spawn().await;

    let (status, user) = app
        .post(
            "/users",
            ROOT_TOKEN,
            json!({"username": "alice", "name": "Alice", "email": "alice@example.com"}),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED);
    assert!(user["id"].is_i64());
    assert_eq!(user["username"], "alice");
    assert_eq!(user["name"], "Alice");
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["state"], "active");
    assert_eq!(user["is_admin"], false);
}

#[tokio::test]
async fn non_administrator_cannot_create_users() {
    let app = TestApp::spawn().await;
    let (_, alice) = app.user("alice").await;

    let outcome = app
        .post(
            "/users",
            &alice,
            json!({"username": "bob", "name": "Bob", "email": "bob@example.com"}),
        )
        .await;

    assert_eq!(
        outcome,
        (StatusCode::FORBIDDEN, json!({"message": "403 Forbidden"}))
    );
}

#[tokio::test]
async fn creating_a_user_without_fields_names_every_missing_one() {
    let app = TestApp::spawn().await;

    let outcome = app.post("/users", ROOT_TOKEN, json!({})).await;

    assert_eq!(
        outcome,
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "email is missing, name is missing, username is missing"})
        )
    );
}

#[tokio::test]
async fn duplicate_username_is_a_conflict() {
    let app = TestApp::spawn().await;
    app.user("alice").await;

    let outcome = app
        .post(
            "/users",
            ROOT_TOKEN,
            json!({"username": "alice", "name": "Other", "email": "other@example.com"}),
        )
        .await;

    assert_eq!(
        outcome,
        (
            StatusCode::CONFLICT,
            json!({"message": "Username has already been taken"})
        )
    );
}

// Personal access tokens.

#[tokio::test]
async fn administrator_creates_a_personal_access_token_that_authenticates_its_user() {
    let app = TestApp::spawn().await;
    let (alice_id, _) = app.user("alice").await;

    let (status, created) = app
        .post(
            &format!("/users/{alice_id}/personal_access_tokens"),
            ROOT_TOKEN,
            json!({"name": "ci", "scopes": ["api"]}),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED);
    let token = created["token"].as_str().expect("the secret");
    assert!(token.starts_with("glpat-"), "{token}");
    assert_eq!(created["name"], "ci");
    assert_eq!(created["scopes"], json!(["api"]));
    assert_eq!(created["user_id"], alice_id);
    assert_eq!(created["revoked"], false);
    assert_eq!(created["active"], true);
    let (user_status, user) = app.get("/user", token).await;
    assert_eq!(user_status, StatusCode::OK);
    assert_eq!(user["username"], "alice");
}

#[tokio::test]
async fn each_personal_access_token_secret_is_new() {
    let app = TestApp::spawn().await;
    let (alice_id, first) = app.user("alice").await;

    let (_, second) = app
        .post(
            &format!("/users/{alice_id}/personal_access_tokens"),
            ROOT_TOKEN,
            json!({"name": "again", "scopes": ["api"]}),
        )
        .await;

    let second = second["token"].as_str().expect("the secret");
    assert_ne!(first, second);
    assert_eq!(app.get("/user", &first).await.0, StatusCode::OK);
    assert_eq!(app.get("/user", second).await.0, StatusCode::OK);
}

#[tokio::test]
async fn personal_access_token_with_an_unknown_scope_is_rejected() {
    let app = TestApp::spawn().await;
    let (alice_id, _) = app.user("alice").await;

    let outcome = app
        .post(
            &format!("/users/{alice_id}/personal_access_tokens"),
            ROOT_TOKEN,
            json!({"name": "ci", "scopes": ["bogus"]}),
        )
        .await;

    assert_eq!(
        outcome,
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "scopes does not have a valid value"})
        )
    );
}

#[tokio::test]
async fn personal_access_token_for_an_unknown_user_is_user_not_found() {
    let app = TestApp::spawn().await;

    let outcome = app
        .post(
            &format!("/users/{UNKNOWN_ID}/personal_access_tokens"),
            ROOT_TOKEN,
            json!({"name": "ci", "scopes": ["api"]}),
        )
        .await;

    assert_eq!(
        outcome,
        (
            StatusCode::NOT_FOUND,
            json!({"message": "404 User Not Found"})
        )
    );
}

#[tokio::test]
async fn non_administrator_cannot_create_personal_access_tokens() {
    let app = TestApp::spawn().await;
    let (alice_id, alice) = app.user("alice").await;

    let outcome = app
        .post(
            &format!("/users/{alice_id}/personal_access_tokens"),
            &alice,
            json!({"name": "ci", "scopes": ["api"]}),
        )
        .await;

    assert_eq!(
        outcome,
        (StatusCode::FORBIDDEN, json!({"message": "403 Forbidden"}))
    );
}

#[tokio::test]
async fn expired_personal_access_token_is_unauthorized() {
    let app = TestApp::spawn().await;
    let (alice_id, _) = app.user("alice").await;
    // A token expires at the start of its expiry day, so one that expires today never works.
    let (status, created) = app
        .post(
            &format!("/users/{alice_id}/personal_access_tokens"),
            ROOT_TOKEN,
            json!({"name": "old", "scopes": ["api"], "expires_at": today()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let expired = created["token"].as_str().expect("the secret");

    let outcome = app.get("/user", expired).await;

    assert_eq!(
        outcome,
        (
            StatusCode::UNAUTHORIZED,
            json!({"message": "401 Unauthorized"})
        )
    );
}

#[tokio::test]
async fn personal_access_token_expiring_in_the_past_is_refused() {
    let app = TestApp::spawn().await;
    let (alice_id, _) = app.user("alice").await;

    let outcome = app
        .post(
            &format!("/users/{alice_id}/personal_access_tokens"),
            ROOT_TOKEN,
            json!({"name": "old", "scopes": ["api"], "expires_at": "2000-01-01"}),
        )
        .await;

    assert_eq!(
        outcome,
        (
            StatusCode::BAD_REQUEST,
            json!({"message": "400 Bad request - [\"Expires at cannot be in the past\"]"})
        )
    );
}

/// Today's date in UTC, `YYYY-MM-DD`.
fn today() -> String {
    let today = time::OffsetDateTime::now_utc().date();
    format!(
        "{:04}-{:02}-{:02}",
        today.year(),
        u8::from(today.month()),
        today.day()
    )
}

// Projects.

#[tokio::test]
async fn project_is_created_in_the_callers_namespace() {
    let app = TestApp::spawn().await;

    let (status, project) = app
        .post("/projects", ROOT_TOKEN, json!({"name": "test"}))
        .await;

    assert_eq!(status, StatusCode::CREATED);
    assert!(project["id"].is_i64());
    assert_eq!(project["name"], "test");
    assert_eq!(project["path"], "test");
    assert_eq!(project["name_with_namespace"], "Administrator / test");
    assert_eq!(project["path_with_namespace"], "root/test");
    assert_eq!(project["description"], Value::Null);
}

#[tokio::test]
async fn project_with_a_taken_path_is_rejected_with_attribute_errors() {
    let app = TestApp::spawn().await;
    app.project(ROOT_TOKEN, "test").await;

    let outcome = app
        .post("/projects", ROOT_TOKEN, json!({"name": "test"}))
        .await;

    assert_eq!(
        outcome,
        (
            StatusCode::BAD_REQUEST,
            json!({"message": {"path": ["has already been taken"]}})
        )
    );
}

#[tokio::test]
async fn another_user_may_use_the_same_project_path_in_their_namespace() {
    let app = TestApp::spawn().await;
    app.project(ROOT_TOKEN, "test").await;
    let (_, alice) = app.user("alice").await;

    let (status, project) = app.post("/projects", &alice, json!({"name": "test"})).await;

    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(project["path_with_namespace"], "alice/test");
}

#[tokio::test]
async fn project_without_name_or_path_names_both_parameters() {
    let app = TestApp::spawn().await;

    let outcome = app.post("/projects", ROOT_TOKEN, json!({})).await;

    assert_eq!(
        outcome,
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "name, path are missing, at least one parameter must be provided"})
        )
    );
}

#[tokio::test]
async fn project_is_found_by_id_and_by_encoded_path() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;

    let (by_id_status, by_id) = app
        .get(&format!("/projects/{project_id}"), ROOT_TOKEN)
        .await;
    let (by_path_status, by_path) = app.get("/projects/root%2Ftest", ROOT_TOKEN).await;
    let (upper_status, upper) = app.get("/projects/ROOT%2FTEST", ROOT_TOKEN).await;
    let bare = app.get("/projects/test", ROOT_TOKEN).await;

    assert_eq!(by_id_status, StatusCode::OK);
    assert_eq!(by_id["id"], project_id);
    assert_eq!(by_id["path_with_namespace"], "root/test");
    assert_eq!(by_path_status, StatusCode::OK);
    assert_eq!(by_path, by_id);
    assert_eq!(upper_status, StatusCode::OK);
    assert_eq!(upper["id"], project_id);
    assert_eq!(
        bare,
        (
            StatusCode::NOT_FOUND,
            json!({"message": "404 Project Not Found"})
        )
    );
}

#[tokio::test]
async fn non_member_cannot_see_a_project() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let (_, outsider) = app.user("outsider").await;
    let not_found = (
        StatusCode::NOT_FOUND,
        json!({"message": "404 Project Not Found"}),
    );

    let by_id = app.get(&format!("/projects/{project_id}"), &outsider).await;
    let by_path = app.get("/projects/root%2Ftest", &outsider).await;
    let unknown = app
        .get(&format!("/projects/{UNKNOWN_ID}"), ROOT_TOKEN)
        .await;

    assert_eq!(by_id, not_found);
    assert_eq!(by_path, not_found);
    assert_eq!(unknown, not_found);
}

// Members.

#[tokio::test]
async fn maintainer_adds_a_member_who_then_sees_the_project() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let maintainer = app.member(project_id, "maintainer", MAINTAINER).await;
    let (bob_id, bob) = app.user("bob").await;

    let (status, member) = app
        .post(
            &format!("/projects/{project_id}/members"),
            &maintainer,
            json!({"user_id": bob_id, "access_level": DEVELOPER}),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED, "{member}");
    assert_eq!(member["id"], bob_id);
    assert_eq!(member["username"], "bob");
    assert_eq!(member["access_level"], DEVELOPER);
    let (project_status, _) = app.get(&format!("/projects/{project_id}"), &bob).await;
    assert_eq!(project_status, StatusCode::OK);
}

#[tokio::test]
async fn access_level_that_is_not_a_gitlab_role_is_invalid() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let (bob_id, _) = app.user("bob").await;

    let outcome = app
        .post(
            &format!("/projects/{project_id}/members"),
            ROOT_TOKEN,
            json!({"user_id": bob_id, "access_level": 35}),
        )
        .await;

    assert_eq!(
        outcome,
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "access_level does not have a valid value"})
        )
    );
}

#[tokio::test]
async fn adding_an_existing_member_is_a_conflict() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let (bob_id, _) = app.user("bob").await;
    app.add_member(project_id, bob_id, DEVELOPER).await;

    let outcome = app
        .post(
            &format!("/projects/{project_id}/members"),
            ROOT_TOKEN,
            json!({"user_id": bob_id, "access_level": MAINTAINER}),
        )
        .await;

    assert_eq!(
        outcome,
        (
            StatusCode::CONFLICT,
            json!({"message": "Member already exists"})
        )
    );
}

#[tokio::test]
async fn adding_an_unknown_user_is_user_not_found() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;

    let outcome = app
        .post(
            &format!("/projects/{project_id}/members"),
            ROOT_TOKEN,
            json!({"user_id": UNKNOWN_ID, "access_level": DEVELOPER}),
        )
        .await;

    assert_eq!(
        outcome,
        (
            StatusCode::NOT_FOUND,
            json!({"message": "404 User Not Found"})
        )
    );
}

#[tokio::test]
async fn developer_cannot_add_members() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let developer = app.member(project_id, "dev", DEVELOPER).await;
    let (bob_id, _) = app.user("bob").await;

    let outcome = app
        .post(
            &format!("/projects/{project_id}/members"),
            &developer,
            json!({"user_id": bob_id, "access_level": DEVELOPER}),
        )
        .await;

    assert_eq!(
        outcome,
        (StatusCode::FORBIDDEN, json!({"message": "403 Forbidden"}))
    );
}

// Credentials.

#[tokio::test]
async fn bearer_header_and_private_token_query_both_authenticate() {
    let app = TestApp::spawn().await;

    let (bearer_status, bearer_user) = read(
        app.http
            .get(app.url("/user"))
            .header("Authorization", format!("Bearer {ROOT_TOKEN}"))
            .send()
            .await
            .expect("request sent"),
    )
    .await;
    let (query_status, query_user) = read(
        app.http
            .get(app.url(&format!("/user?private_token={ROOT_TOKEN}")))
            .send()
            .await
            .expect("request sent"),
    )
    .await;
    let (bad_bearer_status, _) = read(
        app.http
            .get(app.url("/user"))
            .header("Authorization", "Bearer glpat-not-a-real-token-000000")
            .send()
            .await
            .expect("request sent"),
    )
    .await;

    assert_eq!(bearer_status, StatusCode::OK);
    assert_eq!(bearer_user["username"], "root");
    assert_eq!(query_status, StatusCode::OK);
    assert_eq!(query_user["username"], "root");
    assert_eq!(bad_bearer_status, StatusCode::UNAUTHORIZED);
}

// gRPC.

#[tokio::test]
async fn grpc_meta_serves_version_and_current_user_to_authenticated_callers() {
    let app = TestApp::spawn().await;
    let mut meta = app.grpc_meta(ROOT_TOKEN);
    let mut anonymous = pb::meta_service_client::MetaServiceClient::new(app.channel.clone());
    let (_, rest_version) = app.get("/version", ROOT_TOKEN).await;

    let version = meta
        .get_version(pb::GetVersionRequest {})
        .await
        .expect("version")
        .into_inner();
    let user = meta
        .get_current_user(pb::GetCurrentUserRequest {})
        .await
        .expect("user")
        .into_inner();
    let anonymous_version = anonymous.get_version(pb::GetVersionRequest {}).await;
    let anonymous_user = anonymous
        .get_current_user(pb::GetCurrentUserRequest {})
        .await;

    assert_eq!(version.version, rest_version["version"]);
    assert_eq!(version.revision, rest_version["revision"]);
    assert_eq!(user.username, "root");
    assert_eq!(user.name, "Administrator");
    assert!(user.is_admin);
    let unauthenticated = (tonic::Code::Unauthenticated, "401 Unauthorized".to_owned());
    assert_eq!(grpc_error(anonymous_version), unauthenticated);
    assert_eq!(grpc_error(anonymous_user), unauthenticated);
}

#[tokio::test]
async fn grpc_accepts_a_bearer_token_in_the_authorization_metadata() {
    let app = TestApp::spawn().await;
    let bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {ROOT_TOKEN}")
            .parse()
            .expect("ascii metadata");
    let mut meta = pb::meta_service_client::MetaServiceClient::with_interceptor(
        app.channel.clone(),
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        },
    );

    let user = meta.get_current_user(pb::GetCurrentUserRequest {}).await;

    assert_eq!(user.expect("user").into_inner().username, "root");
}

#[tokio::test]
async fn grpc_users_follow_the_rest_rules() {
    let app = TestApp::spawn().await;
    let (_, alice) = app.user("alice").await;
    let mut users = app.grpc_users(ROOT_TOKEN);
    let bob = || pb::CreateUserRequest {
        username: Some("bob".to_owned()),
        name: Some("Bob".to_owned()),
        email: Some("bob@example.com".to_owned()),
    };

    let by_alice = app.grpc_users(&alice).create_user(bob()).await;
    let created = users.create_user(bob()).await;
    let duplicate = users.create_user(bob()).await;
    let missing = users
        .create_user(pb::CreateUserRequest {
            username: None,
            name: None,
            email: None,
        })
        .await;

    assert_eq!(
        grpc_error(by_alice),
        (tonic::Code::PermissionDenied, "403 Forbidden".to_owned())
    );
    let created = created.expect("created").into_inner();
    assert_eq!(created.username, "bob");
    assert_eq!(created.email, "bob@example.com");
    assert!(!created.is_admin);
    assert_eq!(
        grpc_error(duplicate),
        (
            tonic::Code::AlreadyExists,
            "Username has already been taken".to_owned()
        )
    );
    assert_eq!(
        grpc_error(missing),
        (
            tonic::Code::InvalidArgument,
            "email is missing, name is missing, username is missing".to_owned()
        )
    );
}

#[tokio::test]
async fn grpc_personal_access_tokens_follow_the_rest_rules() {
    let app = TestApp::spawn().await;
    let (alice_id, _) = app.user("alice").await;
    let mut users = app.grpc_users(ROOT_TOKEN);
    let request = |user_id: i64, scope: &str, expires_at: Option<&str>| {
        pb::CreatePersonalAccessTokenRequest {
            user_id,
            name: Some("ci".to_owned()),
            scopes: vec![scope.to_owned()],
            expires_at: expires_at.map(str::to_owned),
        }
    };

    let created = users
        .create_personal_access_token(request(alice_id, "api", None))
        .await;
    let bad_scope = users
        .create_personal_access_token(request(alice_id, "bogus", None))
        .await;
    let unknown_user = users
        .create_personal_access_token(request(UNKNOWN_ID, "api", None))
        .await;
    let expired = users
        .create_personal_access_token(request(alice_id, "api", Some(&today())))
        .await;

    let created = created.expect("created").into_inner();
    assert!(created.token.starts_with("glpat-"), "{}", created.token);
    assert_eq!(created.user_id, alice_id);
    assert_eq!(created.scopes, ["api"]);
    assert!(created.active);
    let user = app
        .grpc_meta(&created.token)
        .get_current_user(pb::GetCurrentUserRequest {})
        .await;
    assert_eq!(user.expect("user").into_inner().username, "alice");
    assert_eq!(
        grpc_error(bad_scope),
        (
            tonic::Code::InvalidArgument,
            "scopes does not have a valid value".to_owned()
        )
    );
    assert_eq!(
        grpc_error(unknown_user),
        (tonic::Code::NotFound, "404 User Not Found".to_owned())
    );
    let expired = expired.expect("created").into_inner().token;
    let expired_use = app
        .grpc_meta(&expired)
        .get_current_user(pb::GetCurrentUserRequest {})
        .await;
    assert_eq!(
        grpc_error(expired_use),
        (tonic::Code::Unauthenticated, "401 Unauthorized".to_owned())
    );
}

#[tokio::test]
async fn grpc_projects_follow_the_rest_rules() {
    let app = TestApp::spawn().await;
    let (_, outsider) = app.user("outsider").await;
    let mut projects = app.grpc_projects(ROOT_TOKEN);
    let named = |name: Option<&str>| pb::CreateProjectRequest {
        name: name.map(str::to_owned),
        path: None,
        description: None,
    };

    let created = projects.create_project(named(Some("test"))).await;
    let duplicate = projects.create_project(named(Some("test"))).await;
    let nameless = projects.create_project(named(None)).await;
    let by_path = projects
        .get_project(pb::GetProjectRequest {
            project: "ROOT/test".to_owned(),
        })
        .await;
    let by_outsider = app
        .grpc_projects(&outsider)
        .get_project(pb::GetProjectRequest {
            project: "root/test".to_owned(),
        })
        .await;

    let created = created.expect("created").into_inner();
    assert_eq!(created.name_with_namespace, "Administrator / test");
    assert_eq!(created.path_with_namespace, "root/test");
    assert_eq!(
        grpc_error(duplicate),
        (
            tonic::Code::InvalidArgument,
            r#"{"path":["has already been taken"]}"#.to_owned()
        )
    );
    assert_eq!(
        grpc_error(nameless),
        (
            tonic::Code::InvalidArgument,
            "name, path are missing, at least one parameter must be provided".to_owned()
        )
    );
    assert_eq!(by_path.expect("found").into_inner(), created);
    assert_eq!(
        grpc_error(by_outsider),
        (tonic::Code::NotFound, "404 Project Not Found".to_owned())
    );
}

#[tokio::test]
async fn grpc_members_follow_the_rest_rules() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let developer = app.member(project_id, "dev", DEVELOPER).await;
    let (bob_id, _) = app.user("bob").await;
    let mut projects = app.grpc_projects(ROOT_TOKEN);
    let add = |user_id: i64, access_level: i64| pb::AddProjectMemberRequest {
        project: project_id.to_string(),
        user_id: Some(user_id),
        access_level: Some(access_level),
    };

    let by_developer = app
        .grpc_projects(&developer)
        .add_project_member(add(bob_id, DEVELOPER))
        .await;
    let invalid_level = projects.add_project_member(add(bob_id, 35)).await;
    let added = projects.add_project_member(add(bob_id, DEVELOPER)).await;
    let duplicate = projects.add_project_member(add(bob_id, MAINTAINER)).await;
    let unknown_user = projects
        .add_project_member(add(UNKNOWN_ID, DEVELOPER))
        .await;

    assert_eq!(
        grpc_error(by_developer),
        (tonic::Code::PermissionDenied, "403 Forbidden".to_owned())
    );
    assert_eq!(
        grpc_error(invalid_level),
        (
            tonic::Code::InvalidArgument,
            "access_level does not have a valid value".to_owned()
        )
    );
    let added = added.expect("added").into_inner();
    assert_eq!(added.id, bob_id);
    assert_eq!(added.username, "bob");
    assert_eq!(added.access_level, DEVELOPER);
    assert_eq!(
        grpc_error(duplicate),
        (
            tonic::Code::AlreadyExists,
            "Member already exists".to_owned()
        )
    );
    assert_eq!(
        grpc_error(unknown_user),
        (tonic::Code::NotFound, "404 User Not Found".to_owned())
    );
}

#[tokio::test]
async fn rest_and_grpc_agree_on_identity_failures() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let (alice_id, alice) = app.user("alice").await;

    let rest = [
        app.post(
            "/users",
            &alice,
            json!({"username": "x", "name": "X", "email": "x@example.com"}),
        )
        .await,
        app.post("/users", ROOT_TOKEN, json!({})).await,
        app.post(
            &format!("/users/{UNKNOWN_ID}/personal_access_tokens"),
            ROOT_TOKEN,
            json!({"name": "ci", "scopes": ["api"]}),
        )
        .await,
        app.post(
            &format!("/users/{alice_id}/personal_access_tokens"),
            ROOT_TOKEN,
            json!({"name": "ci", "scopes": ["bogus"]}),
        )
        .await,
        app.post("/projects", ROOT_TOKEN, json!({})).await,
        app.get(&format!("/projects/{project_id}"), &alice).await,
        app.post(
            &format!("/projects/{project_id}/members"),
            ROOT_TOKEN,
            json!({"user_id": alice_id, "access_level": 35}),
        )
        .await,
    ];
    let grpc = [
        grpc_error(
            app.grpc_users(&alice)
                .create_user(pb::CreateUserRequest {
                    username: Some("x".to_owned()),
                    name: Some("X".to_owned()),
                    email: Some("x@example.com".to_owned()),
                })
                .await,
        ),
        grpc_error(
            app.grpc_users(ROOT_TOKEN)
                .create_user(pb::CreateUserRequest::default())
                .await,
        ),
        grpc_error(
            app.grpc_users(ROOT_TOKEN)
                .create_personal_access_token(pb::CreatePersonalAccessTokenRequest {
                    user_id: UNKNOWN_ID,
                    name: Some("ci".to_owned()),
                    scopes: vec!["api".to_owned()],
                    expires_at: None,
                })
                .await,
        ),
        grpc_error(
            app.grpc_users(ROOT_TOKEN)
                .create_personal_access_token(pb::CreatePersonalAccessTokenRequest {
                    user_id: alice_id,
                    name: Some("ci".to_owned()),
                    scopes: vec!["bogus".to_owned()],
                    expires_at: None,
                })
                .await,
        ),
        grpc_error(
            app.grpc_projects(ROOT_TOKEN)
                .create_project(pb::CreateProjectRequest::default())
                .await,
        ),
        grpc_error(
            app.grpc_projects(&alice)
                .get_project(pb::GetProjectRequest {
                    project: project_id.to_string(),
                })
                .await,
        ),
        grpc_error(
            app.grpc_projects(ROOT_TOKEN)
                .add_project_member(pb::AddProjectMemberRequest {
                    project: project_id.to_string(),
                    user_id: Some(alice_id),
                    access_level: Some(35),
                })
                .await,
        ),
    ];

    for ((status, body), (code, message)) in rest.iter().zip(&grpc) {
        assert_eq!(grpc_code_for(*status), *code, "{body} vs {message}");
        let rest_message = body
            .get("message")
            .or_else(|| body.get("error"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert_eq!(rest_message, message, "{body}");
    }
}

/// The gRPC code that carries the same meaning as a REST failure status.
fn grpc_code_for(status: StatusCode) -> tonic::Code {
    match status.as_u16() {
        400 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::NotFound,
        409 => tonic::Code::AlreadyExists,
        412 => tonic::Code::FailedPrecondition,
        other => panic!("no gRPC counterpart for REST status {other}"),
    }
}
