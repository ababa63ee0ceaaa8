//! `/projects/:id/cluster_agents/:agent_id/tokens` and `.../tokens/:token_id`.

use super::bodies::{NewAgentTokenBody, RotateAgentTokenBody};
use super::dto::{AgentTokenBasicJson, AgentTokenJson, AgentTokenWithTokenJson};
use super::extract::{Authenticated, Ids, Params, RequestTarget};
use super::openapi::schemas::{
    AgentPath, AgentTokenPage, AgentTokenPath, BadRequest, InvalidParameter, NotFound, PageQuery,
    PayloadTooLarge, RevocationReasonQuery, TokenStatusQuery, TooManyRequests, Unauthorized,
    UnsupportedMediaType, WriteForbidden,
};
use super::{ApiError, RestState, paginated};
use crate::app::agent_tokens::TokenListStatus;
use agentreg_domain::ids::{AgentId, AgentTokenId};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The agent's active tokens (Developer and above).
#[utoipa::path(
    get,
    path = "/api/v4/projects/{id}/cluster_agents/{agent_id}/tokens",
    operation_id = "list_agent_tokens",
    tag = "agent_tokens",
    params(AgentPath, PageQuery, TokenStatusQuery),
    responses(
        (status = 200, response = AgentTokenPage),
        (status = 400, response = InvalidParameter),
        (status = 401, response = Unauthorized),
                (status = 404, response = NotFound),
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
    let agent_id = AgentId::from_wire(ids.integer("agent_id")?);
    let pagination = params.pagination()?;
    let status = params
        .optional_text("status")?
        .map(|text| TokenListStatus::parse(&text))
        .transpose()?
        .unwrap_or_default();
    let (tokens, info) = state
        .app
        .agent_tokens()
        .list(&caller, &ids.project(), agent_id, status, pagination)
        .await?;
    let body: Vec<AgentTokenBasicJson> = tokens.iter().map(AgentTokenBasicJson::from).collect();
    Ok(paginated(&state, &target, &ids, &params, &info, body))
}

/// One of the agent's tokens, active or revoked (Developer and above).
#[utoipa::path(
    get,
    path = "/api/v4/projects/{id}/cluster_agents/{agent_id}/tokens/{token_id}",
    operation_id = "get_agent_token",
    tag = "agent_tokens",
    params(AgentTokenPath),
    responses(
        (status = 200, description = "The token.", body = AgentTokenJson),
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
    let token_id = AgentTokenId::from_wire(ids.integer("token_id")?);
    let token = state
        .app
        .agent_tokens()
        .get(&caller, &ids.project(), agent_id, token_id)
        .await?;
    Ok(Json(AgentTokenJson::from(&token)).into_response())
}

/// Creates a token for the agent (Maintainer and above; at most two active).
#[utoipa::path(
    post,
    path = "/api/v4/projects/{id}/cluster_agents/{agent_id}/tokens",
    operation_id = "create_agent_token",
    tag = "agent_tokens",
    params(AgentPath),
    request_body(content(
        (NewAgentTokenBody = "application/json"),
        (NewAgentTokenBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (
            status = 201,
            description = "The token, with its secret shown this once.",
            body = AgentTokenWithTokenJson,
            links(
                ("GetAgentToken" = (
                    operation_id = "get_agent_token",
                    parameters(
                        ("id" = "$request.path.id"),
                        ("agent_id" = "$request.path.agent_id"),
                        ("token_id" = "$response.body#/id"),
                    )
                )),
                ("RevokeAgentToken" = (
                    operation_id = "revoke_agent_token",
                    parameters(
                        ("id" = "$request.path.id"),
                        ("agent_id" = "$request.path.agent_id"),
                        ("token_id" = "$response.body#/id"),
                    )
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
    let agent_id = AgentId::from_wire(ids.integer("agent_id")?);
    let body = NewAgentTokenBody::from_params(&params)?;
    let created = state
        .app
        .agent_tokens()
        .create(&caller, &ids.project(), agent_id, body.into())
        .await?;
    let body = AgentTokenWithTokenJson::new(&created.token, &created.plaintext);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Revokes one of the agent's tokens (Maintainer and above).
#[utoipa::path(
    delete,
    path = "/api/v4/projects/{id}/cluster_agents/{agent_id}/tokens/{token_id}",
    operation_id = "revoke_agent_token",
    tag = "agent_tokens",
    params(AgentTokenPath, RevocationReasonQuery),
    responses(
        (status = 204, description = "Revoked."),
        (status = 400, response = InvalidParameter),
        (status = 401, response = Unauthorized),
        (status = 403, response = WriteForbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn revoke(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    ids: Ids,
    params: Params,
) -> Result<Response, ApiError> {
    let agent_id = AgentId::from_wire(ids.integer("agent_id")?);
    let token_id = AgentTokenId::from_wire(ids.integer("token_id")?);
    let reason = params.optional_text("reason")?;
    state
        .app
        .agent_tokens()
        .revoke(&caller, &ids.project(), agent_id, token_id, reason)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Rotates a token (Maintainer and above; agentreg extension): creates its successor, shown
/// once with its secret, and marks the token retiring. The token keeps working until the
/// successor's first use by an agent, or until `overlap_seconds` pass. With
/// `--rotation-retrieve-window`, repeating the call with the same `Idempotency-Key` fetches the
/// same successor and secret once more, for the caller who rotated, within the window.
#[utoipa::path(
    post,
    path = "/api/v4/projects/{id}/cluster_agents/{agent_id}/tokens/{token_id}/rotate",
    operation_id = "rotate_agent_token",
    tag = "agent_tokens",
    params(
        AgentTokenPath,
        (
            "Idempotency-Key" = Option<String>,
            Header,
            description = "With --rotation-retrieve-window: repeat the rotation with the same key to fetch the same successor and secret once more.",
        ),
    ),
    request_body(content(
        (RotateAgentTokenBody = "application/json"),
        (RotateAgentTokenBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (
            status = 201,
            description = "The successor, with its secret shown this once.",
            body = AgentTokenWithTokenJson,
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
pub(super) async fn rotate(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    ids: Ids,
    headers: axum::http::HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    let agent_id = AgentId::from_wire(ids.integer("agent_id")?);
    let token_id = AgentTokenId::from_wire(ids.integer("token_id")?);
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let input = RotateAgentTokenBody::from_params(&params)?.into_input(idempotency_key);
    let rotated = state
        .app
        .agent_tokens()
        .rotate(&caller, &ids.project(), agent_id, token_id, input)
        .await?;
    let successor = &rotated.successor;
    let body = AgentTokenWithTokenJson::new(&successor.token, &successor.plaintext);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
