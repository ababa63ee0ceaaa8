//! `/projects/:id/cluster_agents` and `/projects/:id/cluster_agents/:agent_id`.

use super::bodies::NewAgentBody;
use super::dto::AgentJson;
use super::extract::{Authenticated, Ids, Paging, Params, RequestTarget, unmodified_since};
use super::openapi::schemas::{
    AgentListQuery, AgentPage, AgentPath, BadRequest, InvalidParameter, KeysetUnavailable,
    NotFound, PayloadTooLarge, PreconditionFailed, ProjectPath, TooManyRequests, Unauthorized,
    UnmodifiedSinceHeader, UnsupportedMediaType, WriteForbidden,
};
use super::{ApiError, RestState, json_entity, keyset_paginated, paginated};
use agentreg_domain::ids::AgentId;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// The project's agents (Developer and above).
#[utoipa::path(
    get,
    path = "/api/v4/projects/{id}/cluster_agents",
    operation_id = "list_cluster_agents",
    tag = "cluster_agents",
    params(ProjectPath, AgentListQuery),
    responses(
        (status = 200, response = AgentPage),
        (status = 400, response = InvalidParameter),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 405, response = KeysetUnavailable),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn list(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
    ids: Ids,
    params: Params,
) -> Result<Response, ApiError> {
    let project = ids.project();
    match params.paging()? {
        Paging::Offset(pagination) => {
            let (agents, info) = state
                .app
                .agents()
                .list(&caller, &project, pagination)
                .await?;
            let body: Vec<AgentJson> = agents.iter().map(AgentJson::from).collect();
            Ok(paginated(&state, &target, &ids, &params, &info, body))
        }
        Paging::Keyset(request) => {
            let (agents, info) = state
                .app
                .agents()
                .list_keyset(&caller, &project, &request)
                .await?;
            let body: Vec<AgentJson> = agents.iter().map(AgentJson::from).collect();
            Ok(keyset_paginated(
                &state, &target, &ids, &params, &info, body,
            ))
        }
    }
}

/// One agent (Developer and above).
#[utoipa::path(
    get,
    path = "/api/v4/projects/{id}/cluster_agents/{agent_id}",
    operation_id = "get_cluster_agent",
    tag = "cluster_agents",
    params(AgentPath),
    responses(
        (status = 200, description = "The agent.", body = AgentJson),
        (status = 400, response = InvalidParameter),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn show(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    ids: Ids,
    _params: Params,
) -> Result<Response, ApiError> {
    let agent_id = AgentId::from_wire(ids.integer("agent_id")?);
    let agent = state
        .app
        .agents()
        .get(&caller, &ids.project(), agent_id)
        .await?;
    Ok(json_entity(StatusCode::OK, &AgentJson::from(&agent)))
}

/// Registers an agent (Maintainer and above).
#[utoipa::path(
    post,
    path = "/api/v4/projects/{id}/cluster_agents",
    operation_id = "create_cluster_agent",
    tag = "cluster_agents",
    params(ProjectPath),
    request_body(content(
        (NewAgentBody = "application/json"),
        (NewAgentBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 201, description = "The new agent.", body = AgentJson,
            links(
                ("GetClusterAgent" = (
                    operation_id = "get_cluster_agent",
                    parameters(("id" = "$request.path.id"), ("agent_id" = "$response.body#/id"))
                )),
                ("DeleteClusterAgent" = (
                    operation_id = "delete_cluster_agent",
                    parameters(("id" = "$request.path.id"), ("agent_id" = "$response.body#/id"))
                )),
                ("CreateAgentToken" = (
                    operation_id = "create_agent_token",
                    parameters(("id" = "$request.path.id"), ("agent_id" = "$response.body#/id"))
                )),
                ("ListAgentTokens" = (
                    operation_id = "list_agent_tokens",
                    parameters(("id" = "$request.path.id"), ("agent_id" = "$response.body#/id"))
                )),
                ("CreateUrlConfiguration" = (
                    operation_id = "create_url_configuration",
                    parameters(("id" = "$request.path.id"), ("agent_id" = "$response.body#/id"))
                )),
                ("ListUrlConfigurations" = (
                    operation_id = "list_url_configurations",
                    parameters(("id" = "$request.path.id"), ("agent_id" = "$response.body#/id"))
                )),
            ),
        ),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = WriteForbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn create(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    ids: Ids,
    params: Params,
) -> Result<Response, ApiError> {
    let name = NewAgentBody::from_params(&params)?.into_name();
    let agent = state
        .app
        .agents()
        .create(&caller, &ids.project(), name)
        .await?;
    Ok(json_entity(StatusCode::CREATED, &AgentJson::from(&agent)))
}

/// Deletes an agent with its tokens and URL configuration (Maintainer and above).
#[utoipa::path(
    delete,
    path = "/api/v4/projects/{id}/cluster_agents/{agent_id}",
    operation_id = "delete_cluster_agent",
    tag = "cluster_agents",
    params(AgentPath, UnmodifiedSinceHeader),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, response = InvalidParameter),
        (status = 401, response = Unauthorized),
        (status = 403, response = WriteForbidden),
        (status = 404, response = NotFound),
        (status = 412, response = PreconditionFailed),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn delete(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    ids: Ids,
    _params: Params,
) -> Result<Response, ApiError> {
    let agent_id = AgentId::from_wire(ids.integer("agent_id")?);
    let since = unmodified_since(&headers);
    state
        .app
        .agents()
        .delete(&caller, &ids.project(), agent_id, since)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
