//! The Agents API (reference §7.1) over REST and gRPC.

use crate::helpers::{ROOT_TOKEN, TestApp};
use reqwest::StatusCode;
use serde_json::json;

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
