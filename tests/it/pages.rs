//! Pages of a project's agents over REST and gRPC: offset pages at any depth agree with the name
//! order and with each other, keyset pages (`pagination=keyset`) follow GitLab's conventions (a
//! `Link` to the next page only, with its `cursor`, and no totals) in every order, and bad input
//! is refused with GitLab's answers, in GitLab's order of checks, on both protocols.

use crate::agents::{link_relations, names_of, send};
use crate::helpers::{ROOT_TOKEN, TestApp, grpc_error};
use agentreg::grpc::pb;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Enough agents for several of sled's buckets (they split past 64 names).
const N_AGENTS: usize = 150;

const KEYSET_UNAVAILABLE: &str = "Keyset pagination is not yet available for this type of request";

#[tokio::test]
async fn deep_offset_pages_follow_the_name_order_on_rest_and_grpc() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let names = register_shuffled(&app, project_id, N_AGENTS).await;
    let mut grpc = app.grpc_agents(ROOT_TOKEN);

    for page in [1, 4, 5, 8, 9] {
        let path = format!("/projects/{project_id}/cluster_agents?page={page}&per_page=20");
        let (status, headers, body) = send(app.request(Method::GET, &path, Some(ROOT_TOKEN))).await;
        let grpc_page = grpc
            .list_agents(offset_request(project_id, page, 20))
            .await
            .expect("a gRPC page")
            .into_inner();

        let expected: Vec<String> = names
            .iter()
            .skip((page as usize - 1) * 20)
            .take(20)
            .cloned()
            .collect();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(names_of(&body), expected, "page {page}");
        assert_eq!(headers["x-total"], N_AGENTS.to_string().as_str());
        assert_eq!(grpc_names(&grpc_page.agents), expected, "gRPC page {page}");
        assert_eq!(
            grpc_page.page_info.expect("page info").total,
            N_AGENTS as i64
        );
        assert_eq!(grpc_page.next_cursor, None);
    }
}

#[tokio::test]
async fn keyset_pages_by_name_follow_next_links_to_the_end() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let names = register_shuffled(&app, project_id, 45).await;
    let first = app.url(&format!(
        "/projects/{project_id}/cluster_agents?pagination=keyset&order_by=name&sort=asc&per_page=20"
    ));

    let pages = follow(&app, &first).await;

    let walked: Vec<String> = pages.iter().flat_map(|(_, names)| names.clone()).collect();
    assert_eq!(walked, names);
    assert_eq!(pages.len(), 3);
    let (first_headers, _) = &pages[0];
    for absent in [
        "x-total",
        "x-total-pages",
        "x-page",
        "x-per-page",
        "x-next-page",
        "x-prev-page",
    ] {
        assert!(
            !first_headers.contains_key(absent),
            "{absent} is an offset header"
        );
    }
    let relations = link_relations(first_headers);
    assert_eq!(relations.len(), 1);
    let (relation, next) = &relations[0];
    assert_eq!(relation, "next");
    let base = format!(
        "{}/api/v4/projects/{project_id}/cluster_agents",
        app.base_url
    );
    let cursor = next
        .strip_prefix(&format!("{base}?cursor="))
        .and_then(|rest| rest.split_once('&'))
        .map(|(cursor, rest)| (cursor.to_owned(), rest.to_owned()))
        .expect("an absolute link that starts with the cursor");
    assert_eq!(
        cursor.1,
        format!("id={project_id}&order_by=name&pagination=keyset&per_page=20&sort=asc")
    );
    assert!(!pages[2].0.contains_key("link"), "no link on the last page");
}

#[tokio::test]
async fn keyset_pages_default_to_the_newest_id_first_and_go_either_way() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let mut by_id = Vec::new();
    for name in ["delta", "alpha", "echo", "charlie", "bravo"] {
        app.agent(project_id, name).await;
        by_id.push(name.to_owned());
    }
    let list = |query: &str| {
        app.url(&format!(
            "/projects/{project_id}/cluster_agents?pagination=keyset&per_page=2{query}"
        ))
    };

    let newest_first = walked_names(&follow(&app, &list("")).await);
    let oldest_first = walked_names(&follow(&app, &list("&order_by=id&sort=asc")).await);
    let names_down = walked_names(&follow(&app, &list("&order_by=name&sort=desc")).await);

    let mut reversed = by_id.clone();
    reversed.reverse();
    assert_eq!(newest_first, reversed);
    assert_eq!(oldest_first, by_id);
    assert_eq!(names_down, ["echo", "delta", "charlie", "bravo", "alpha"]);
}

#[tokio::test]
async fn a_keyset_walk_sees_every_agent_that_stays_despite_changes_between_pages() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let names = register_shuffled(&app, project_id, 30).await;
    let first = app.url(&format!(
        "/projects/{project_id}/cluster_agents?pagination=keyset&order_by=name&sort=asc&per_page=10"
    ));
    let (status, headers, body) =
        send(app.http.get(&first).header("PRIVATE-TOKEN", ROOT_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let next = link_relations(&headers).remove(0).1;

    // A name before the cursor is deleted and one before it is added: offset pages would shift.
    let first_id = app
        .get(
            &format!("/projects/{project_id}/cluster_agents?per_page=1"),
            ROOT_TOKEN,
        )
        .await
        .1[0]["id"]
        .as_i64()
        .expect("an id");
    let (status, _) = app
        .delete(
            &format!("/projects/{project_id}/cluster_agents/{first_id}"),
            ROOT_TOKEN,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.agent(project_id, "aaa").await;
    let rest = walked_names(&follow(&app, &next).await);

    let mut walked = names_of(&body);
    walked.extend(rest);
    assert_eq!(walked, names, "every agent once, in order");
}

#[tokio::test]
async fn rest_and_grpc_keyset_pages_agree_and_share_cursors() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let names = register_shuffled(&app, project_id, 25).await;
    let mut grpc = app.grpc_agents(ROOT_TOKEN);

    let mut grpc_walk = Vec::new();
    let mut cursor = None;
    let mut n_pages = 0;
    loop {
        let page = grpc
            .list_agents(keyset_request(
                project_id,
                Some("name"),
                Some("asc"),
                cursor,
                Some(10),
            ))
            .await
            .expect("a gRPC keyset page")
            .into_inner();
        assert_eq!(page.page_info, None, "keyset pages have no totals");
        grpc_walk.extend(grpc_names(&page.agents));
        n_pages += 1;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let second_grpc = grpc
        .list_agents(keyset_request(
            project_id,
            Some("name"),
            Some("asc"),
            None,
            Some(10),
        ))
        .await
        .expect("the first gRPC page")
        .into_inner()
        .next_cursor
        .expect("a cursor");
    let (status, body) = app
        .get(
            &format!(
                "/projects/{project_id}/cluster_agents?pagination=keyset&order_by=name&sort=asc\
                 &per_page=10&cursor={second_grpc}"
            ),
            ROOT_TOKEN,
        )
        .await;

    assert_eq!(grpc_walk, names);
    assert_eq!(n_pages, 3);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names_of(&body), names[10..20]);
}

#[tokio::test]
async fn keyset_bad_input_is_refused_like_gitlab_on_rest_and_grpc() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    app.agent(project_id, "alpha").await;
    let mut grpc = app.grpc_agents(ROOT_TOKEN);
    let garbage = "not-a-cursor!";
    let unknown_direction = base64_url(r#"{"name":"alpha","_kd":"p"}"#);
    // (query, gRPC request, status, body, gRPC code)
    let cases = [
        (
            "pagination=keyset&order_by=created_at".to_owned(),
            keyset_request(project_id, Some("created_at"), None, None, None),
            StatusCode::METHOD_NOT_ALLOWED,
            KEYSET_UNAVAILABLE,
            tonic::Code::Unimplemented,
        ),
        (
            "pagination=keyset&order_by=name&sort=sideways".to_owned(),
            keyset_request(project_id, Some("name"), Some("sideways"), None, None),
            StatusCode::METHOD_NOT_ALLOWED,
            KEYSET_UNAVAILABLE,
            tonic::Code::Unimplemented,
        ),
        (
            format!("pagination=keyset&cursor={garbage}"),
            keyset_request(project_id, None, None, Some(garbage.to_owned()), None),
            StatusCode::BAD_REQUEST,
            "cursor is invalid",
            tonic::Code::InvalidArgument,
        ),
        (
            format!("pagination=keyset&order_by=name&cursor={unknown_direction}"),
            keyset_request(
                project_id,
                Some("name"),
                None,
                Some(unknown_direction.clone()),
                None,
            ),
            StatusCode::BAD_REQUEST,
            "cursor is invalid",
            tonic::Code::InvalidArgument,
        ),
        (
            "pagination=keyset&per_page=0".to_owned(),
            keyset_request(project_id, None, None, None, Some(0)),
            StatusCode::BAD_REQUEST,
            "per_page has a value not allowed",
            tonic::Code::InvalidArgument,
        ),
    ];

    for (query, grpc_request, status, message, code) in cases {
        let rest = app
            .get(
                &format!("/projects/{project_id}/cluster_agents?{query}"),
                ROOT_TOKEN,
            )
            .await;
        let grpc_outcome = grpc_error(grpc.list_agents(grpc_request).await);

        assert_eq!(rest, (status, json!({"error": message})), "{query}");
        assert_eq!(grpc_outcome, (code, message.to_owned()), "{query}");
    }
    let unknown_mode = app
        .get(
            &format!("/projects/{project_id}/cluster_agents?pagination=cursor"),
            ROOT_TOKEN,
        )
        .await;
    let both = grpc_error(
        grpc.list_agents(pb::ListAgentsRequest {
            page: Some(pb::PageRequest::default()),
            ..keyset_request(project_id, None, None, None, None)
        })
        .await,
    );
    assert_eq!(
        unknown_mode,
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "pagination does not have a valid value"})
        )
    );
    assert_eq!(
        both,
        (
            tonic::Code::InvalidArgument,
            "page, keyset are mutually exclusive".to_owned()
        )
    );
}

#[tokio::test]
async fn the_project_and_the_role_are_checked_before_the_keyset_order() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let (guest_id, guest_token) = app.user("guest").await;
    app.add_member(project_id, guest_id, 10).await;
    let unavailable = "pagination=keyset&order_by=created_at";

    let unknown_project = app
        .get(
            &format!("/projects/999999/cluster_agents?{unavailable}"),
            ROOT_TOKEN,
        )
        .await;
    let guest = app
        .get(
            &format!("/projects/{project_id}/cluster_agents?{unavailable}"),
            &guest_token,
        )
        .await;
    let grpc_guest = grpc_error(
        app.grpc_agents(&guest_token)
            .list_agents(keyset_request(
                project_id,
                Some("created_at"),
                None,
                None,
                None,
            ))
            .await,
    );

    assert_eq!(
        unknown_project,
        (
            StatusCode::NOT_FOUND,
            json!({"message": "404 Project Not Found"})
        )
    );
    assert_eq!(
        guest,
        (
            StatusCode::NOT_FOUND,
            json!({"message": "404 ClusterAgents Not Found"})
        )
    );
    assert_eq!(
        grpc_guest,
        (
            tonic::Code::NotFound,
            "404 ClusterAgents Not Found".to_owned()
        )
    );
}

/// Registers `n` agents `agent-000`... in a shuffled order; returns their names in order.
async fn register_shuffled(app: &TestApp, project_id: i64, n: usize) -> Vec<String> {
    assert_ne!(
        n % 7,
        0,
        "7 must be coprime with n for the order to be a permutation"
    );
    let names: Vec<String> = (0..n).map(|idx| format!("agent-{idx:03}")).collect();
    // A fixed permutation, so that ids and names disagree.
    for idx in (0..n).map(|idx| (idx * 7 + 3) % n) {
        app.agent(project_id, &names[idx]).await;
    }
    names
}

/// Follows `next` links from `url` to the last page: each page's headers and names.
async fn follow(app: &TestApp, url: &str) -> Vec<(reqwest::header::HeaderMap, Vec<String>)> {
    let mut pages = Vec::new();
    let mut next = Some(url.to_owned());
    while let Some(url) = next.take() {
        let (status, headers, body) =
            send(app.http.get(&url).header("PRIVATE-TOKEN", ROOT_TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        assert!(pages.len() < 100, "the next links never end");
        next = headers
            .get("link")
            .map(|_| link_relations(&headers))
            .and_then(|relations| {
                relations
                    .into_iter()
                    .find(|(relation, _)| relation == "next")
            })
            .map(|(_, url)| url);
        pages.push((headers, names_of(&body)));
    }
    pages
}

fn walked_names(pages: &[(reqwest::header::HeaderMap, Vec<String>)]) -> Vec<String> {
    pages.iter().flat_map(|(_, names)| names.clone()).collect()
}

fn offset_request(project_id: i64, page: i64, per_page: i64) -> pb::ListAgentsRequest {
    pb::ListAgentsRequest {
        project: project_id.to_string(),
        page: Some(pb::PageRequest {
            page: Some(page),
            per_page: Some(per_page),
        }),
        keyset: None,
    }
}

fn keyset_request(
    project_id: i64,
    order_by: Option<&str>,
    sort: Option<&str>,
    cursor: Option<String>,
    per_page: Option<i64>,
) -> pb::ListAgentsRequest {
    pb::ListAgentsRequest {
        project: project_id.to_string(),
        page: None,
        keyset: Some(pb::KeysetPageRequest {
            order_by: order_by.map(str::to_owned),
            sort: sort.map(str::to_owned),
            cursor,
            per_page,
        }),
    }
}

fn grpc_names(agents: &[pb::Agent]) -> Vec<String> {
    agents.iter().map(|agent| agent.name.clone()).collect()
}

fn base64_url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE.encode(text)
}
