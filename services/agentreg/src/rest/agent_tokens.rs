//! `/projects/:id/cluster_agents/:agent_id/tokens` and `.../tokens/:token_id`.

use super::dto::{AgentTokenBasicJson, AgentTokenJson, agent_token_with_token};
use super::extract::{Authenticated, Ids, Params, RequestTarget};
use super::{ApiError, RestState, paginated};
use crate::app::agent_tokens::NewAgentTokenInput;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub(super) async fn list(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
    ids: Ids,
    params: Params,
) -> Result<Response, ApiError> {
    let agent_id = ids.integer("agent_id")?;
    let pagination = params.pagination()?;
    let (tokens, info) = state
        .app
        .list_agent_tokens(&caller, ids.project(), agent_id, pagination)
        .await?;
    let body: Vec<AgentTokenBasicJson> = tokens.iter().map(AgentTokenBasicJson::from).collect();
    Ok(paginated(&state, &target, &ids, &params, &info, body))
}

pub(super) async fn show(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    ids: Ids,
    _params: Params,
) -> Result<Response, ApiError> {
    let agent_id = ids.integer("agent_id")?;
    let token_id = ids.integer("token_id")?;
    let token = state
        .app
        .agent_token(&caller, ids.project(), agent_id, token_id)
        .await?;
    Ok(Json(AgentTokenJson::from(&token)).into_response())
}

pub(super) async fn create(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    ids: Ids,
    params: Params,
) -> Result<Response, ApiError> {
    let agent_id = ids.integer("agent_id")?;
    let input = NewAgentTokenInput {
        name: params.required_text("name")?,
        description: params.optional_text("description")?,
    };
    let created = state
        .app
        .create_agent_token(&caller, ids.project(), agent_id, input)
        .await?;
    let body = agent_token_with_token(&created.token, &created.plaintext);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(super) async fn revoke(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    ids: Ids,
    _params: Params,
) -> Result<Response, ApiError> {
    let agent_id = ids.integer("agent_id")?;
    let token_id = ids.integer("token_id")?;
    state
        .app
        .revoke_agent_token(&caller, ids.project(), agent_id, token_id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
