//! `/projects/:id/cluster_agents` and `/projects/:id/cluster_agents/:agent_id`.

use super::dto::AgentJson;
use super::extract::{Authenticated, Ids, Params, RequestTarget, unmodified_since};
use super::{ApiError, RestState, paginated};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

pub(super) async fn list(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
    ids: Ids,
    params: Params,
) -> Result<Response, ApiError> {
    let pagination = params.pagination()?;
    let (agents, info) = state
        .app
        .list_agents(&caller, ids.project(), pagination)
        .await?;
    let body: Vec<AgentJson> = agents.iter().map(AgentJson::from).collect();
    Ok(paginated(&state, &target, &ids, &params, &info, body))
}

pub(super) async fn show(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    ids: Ids,
    _params: Params,
) -> Result<Response, ApiError> {
    let agent_id = ids.integer("agent_id")?;
    let agent = state.app.agent(&caller, ids.project(), agent_id).await?;
    Ok(Json(AgentJson::from(&agent)).into_response())
}

pub(super) async fn create(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    ids: Ids,
    params: Params,
) -> Result<Response, ApiError> {
    let name = params.required_text("name")?;
    let agent = state.app.create_agent(&caller, ids.project(), name).await?;
    Ok((StatusCode::CREATED, Json(AgentJson::from(&agent))).into_response())
}

pub(super) async fn delete(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    ids: Ids,
    _params: Params,
) -> Result<Response, ApiError> {
    let agent_id = ids.integer("agent_id")?;
    let since = unmodified_since(&headers);
    state
        .app
        .delete_agent(&caller, ids.project(), agent_id, since)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
