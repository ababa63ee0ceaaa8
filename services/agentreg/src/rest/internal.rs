//! The agent-server (KAS) routes: `agent_info` (current and legacy paths) and
//! `receptive_agents`. They authenticate with the KAS JWT, not a personal access token.

use super::dto::{AgentInfoJson, ReceptiveAgentsJson};
use super::extract::{AGENT_TOKEN, ClientAddress, KAS_JWT, header_text};
use super::openapi::schemas::{KasUnauthorized, NotFound, TooManyRequests};
use super::{ApiError, RestState, json_entity};
use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;

/// The agent a token belongs to, for the agent server; records the token's use.
#[utoipa::path(
    get,
    path = "/api/v4/internal/agents/agentk/agent_info",
    operation_id = "get_agent_info",
    tag = "internal",
    security(("kas_jwt" = [], "agent_token" = [])),
    responses(
        (status = 200, description = "The agent.", body = AgentInfoJson),
        (status = 401, response = KasUnauthorized),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn agent_info(
    state: State<RestState>,
    client: ClientAddress,
    request: Request,
) -> Result<Response, ApiError> {
    authenticate_agent(state, client, request).await
}

/// The agent a token belongs to, at GitLab's older path.
#[utoipa::path(
    get,
    path = "/api/v4/internal/kubernetes/agent_info",
    operation_id = "get_agent_info_legacy",
    tag = "internal",
    security(("kas_jwt" = [], "agent_token" = [])),
    responses(
        (status = 200, description = "The agent.", body = AgentInfoJson),
        (status = 401, response = KasUnauthorized),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn legacy_agent_info(
    state: State<RestState>,
    client: ClientAddress,
    request: Request,
) -> Result<Response, ApiError> {
    authenticate_agent(state, client, request).await
}

/// Every receptive agent's configuration, private keys in clear, for the agent server.
#[utoipa::path(
    get,
    path = "/api/v4/internal/kubernetes/receptive_agents",
    operation_id = "list_receptive_agents",
    tag = "internal",
    security(("kas_jwt" = [])),
    responses(
        (status = 200, description = "The receptive agents.", body = ReceptiveAgentsJson),
        (status = 401, response = KasUnauthorized),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn receptive_agents(
    State(state): State<RestState>,
    ClientAddress(client): ClientAddress,
    request: Request,
) -> Result<Response, ApiError> {
    let jwt = header_text(request.headers(), &KAS_JWT);
    let agents = state.app.receptive_agents(jwt, client).await?;
    Ok(Json(ReceptiveAgentsJson::new(&agents)).into_response())
}

async fn authenticate_agent(
    State(state): State<RestState>,
    ClientAddress(client): ClientAddress,
    request: Request,
) -> Result<Response, ApiError> {
    // Read in place: the `HeaderMap` extractor would copy every header.
    let headers = request.headers();
    let jwt = header_text(headers, &KAS_JWT);
    let token =
        header_text(headers, &AGENT_TOKEN).map(|value| SecretString::from(value.trim().to_owned()));
    let agent = state.app.authenticate_agent(jwt, token, client).await?;
    Ok(json_entity(StatusCode::OK, &AgentInfoJson::from(&agent)))
}
