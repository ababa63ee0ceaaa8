//! The agent-server (KAS) routes: `agent_info` (current and legacy paths) and
//! `receptive_agents`. They authenticate with the KAS JWT, not a personal access token.

use super::dto;
use super::extract::{ClientAddress, header_text};
use super::{ApiError, RestState};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;

/// The header carrying the agent-server JWT.
pub(crate) const KAS_HEADER: &str = "gitlab-kas-api-request";
/// The header carrying the agent's token.
pub(crate) const AGENT_TOKEN_HEADER: &str = "gitlab-agent-api-request";

pub(super) async fn agent_info(
    State(state): State<RestState>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let jwt = header_text(&headers, KAS_HEADER);
    let token = header_text(&headers, AGENT_TOKEN_HEADER)
        .map(|value| SecretString::from(value.trim().to_owned()));
    let agent = state.app.authenticate_agent(jwt, token, client).await?;
    Ok(Json(dto::agent_info(&agent)).into_response())
}

pub(super) async fn receptive_agents(
    State(state): State<RestState>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let jwt = header_text(&headers, KAS_HEADER);
    let agents = state.app.receptive_agents(jwt, client).await?;
    Ok(Json(dto::receptive_agents(&agents)).into_response())
}
