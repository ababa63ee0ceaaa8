//! `GET /api/v4/admin/snapshot`: an online, consistent backup for administrators, in the format
//! `agentreg restore` reads; GitLab's admin token API, `POST` and `DELETE /api/v4/admin/token`;
//! and the instance inventory of agents, `GET /api/v4/admin/cluster_agents`.

use super::bodies::AdminTokenBody;
use super::dto::{
    AgentTokenJson, IdentifiedTokenJson, InventoryAgentJson, MessageErrorJson, NestedErrorJson,
    PersonalAccessTokenInfoJson,
};
use super::extract::{Authenticated, Ids, Params, RequestTarget};
use super::openapi::schemas::{
    Forbidden, InvalidParameter, InventoryPage, InventoryQuery, PageQuery, PayloadTooLarge,
    Snapshot, TooManyRequests, Unauthorized, UnsupportedMediaType, WriteForbidden,
};
use super::{ApiError, RestState, paginated};
use crate::app::admin_tokens::IdentifiedToken;
use crate::app::inventory::InventoryFilters;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A consistent snapshot of the whole store, taken while the service runs (administrators only).
/// It is built in memory and sent in one body: agentreg's records are small (under 1 KiB per
/// agent), so even 100,000 agents make a snapshot of about 100 MiB.
#[utoipa::path(
    get,
    path = "/api/v4/admin/snapshot",
    operation_id = "get_snapshot",
    tag = "meta",
    responses(
        (status = 200, response = Snapshot),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn snapshot(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
) -> Result<Response, ApiError> {
    let bytes = state.app.snapshot(&caller).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"agentreg.snapshot\"",
            ),
        ],
        bytes,
    )
        .into_response())
}

/// The token whose value is given, an agent token or a personal access token, in its own
/// shape (administrators with the `api` scope; audited).
#[utoipa::path(
    post,
    path = "/api/v4/admin/token",
    operation_id = "identify_token",
    tag = "meta",
    request_body(content(
        (AdminTokenBody = "application/json"),
        (AdminTokenBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The token.", body = IdentifiedTokenJson),
        (status = 400, response = InvalidParameter),
        (status = 401, response = Unauthorized),
        (status = 403, response = WriteForbidden),
        (status = 404, description = "No token has this value.", body = NestedErrorJson),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (
            status = 422,
            description = "The value is of no known kind: `Token type not supported.`",
            body = MessageErrorJson,
        ),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn identify_token(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    params: Params,
) -> Result<Response, ApiError> {
    let token = AdminTokenBody::from_params(&params)?.into_token();
    let identified = state.app.admin_tokens().identify(&caller, token).await?;
    let body = match &identified {
        IdentifiedToken::Agent(token) => IdentifiedTokenJson::Agent(AgentTokenJson::from(token)),
        IdentifiedToken::PersonalAccess(token) => {
            IdentifiedTokenJson::PersonalAccess(PersonalAccessTokenInfoJson::from(token))
        }
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// Revokes the token whose value is given, an agent token or a personal access token
/// (administrators with the `api` scope; audited). It stops working at once on every replica.
#[utoipa::path(
    delete,
    path = "/api/v4/admin/token",
    operation_id = "revoke_token",
    tag = "meta",
    request_body(content(
        (AdminTokenBody = "application/json"),
        (AdminTokenBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 204, description = "Revoked."),
        (status = 400, response = InvalidParameter),
        (status = 401, response = Unauthorized),
        (status = 403, response = WriteForbidden),
        (status = 404, description = "No token has this value.", body = NestedErrorJson),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (
            status = 422,
            description = "The value is of no known kind: `Token type not supported.`",
            body = MessageErrorJson,
        ),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn revoke_token(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    params: Params,
) -> Result<Response, ApiError> {
    let token = AdminTokenBody::from_params(&params)?.into_token();
    state.app.admin_tokens().revoke(&caller, token).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Every agent of the instance with its project path and a summary of its tokens, ordered by id
/// (administrators; agentreg extension).
#[utoipa::path(
    get,
    path = "/api/v4/admin/cluster_agents",
    operation_id = "list_instance_agents",
    tag = "cluster_agents",
    params(PageQuery, InventoryQuery),
    responses(
        (status = 200, response = InventoryPage),
        (status = 400, response = InvalidParameter),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn agent_inventory(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
    ids: Ids,
    params: Params,
) -> Result<Response, ApiError> {
    let pagination = params.pagination()?;
    let filters = InventoryFilters {
        unused_since: params.optional_text("unused_since")?,
        token_expires_before: params.optional_text("token_expires_before")?,
        project: params.optional_text("project")?,
    };
    let (entries, info) = state
        .app
        .agent_inventory(&caller, filters, pagination)
        .await?;
    let body: Vec<InventoryAgentJson> = entries.iter().map(InventoryAgentJson::from).collect();
    Ok(paginated(&state, &target, &ids, &params, &info, body))
}
