//! `/projects/:id/cluster_agents/:agent_id/url_configurations[/:url_configuration_id]`.
//! The app checks the project and the instance setting before the other parameters, as GitLab
//! does, so handlers hand over parameters as they parsed them, errors included.

use super::bodies::NewUrlConfigurationBody;
use super::dto::UrlConfigurationJson;
use super::extract::{Authenticated, Ids, Params, unmodified_since};
use super::openapi::schemas::{
    AgentPath, BadRequest, Forbidden, InvalidParameter, NotFound, PayloadTooLarge,
    PreconditionFailed, TooManyRequests, Unauthorized, UnmodifiedSinceHeader, UnsupportedMediaType,
    UrlConfigurationPath, WriteForbidden,
};
use super::{ApiError, RestState};
use agentreg_domain::ids::{AgentId, UrlConfigurationId};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// The agent's URL configurations: none or one (Developer and above).
#[utoipa::path(
    get,
    path = "/api/v4/projects/{id}/cluster_agents/{agent_id}/url_configurations",
    operation_id = "list_url_configurations",
    tag = "url_configurations",
    params(AgentPath),
    responses(
        (
            status = 200,
            description = "The configurations (not paginated).",
            body = [UrlConfigurationJson],
        ),
        (status = 400, response = InvalidParameter),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn list(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    ids: Ids,
    _params: Params,
) -> Result<Response, ApiError> {
    let agent_id = ids.integer("agent_id").map(AgentId::from_wire);
    let configs = state
        .app
        .url_configurations()
        .list(&caller, &ids.project(), agent_id)
        .await?;
    let body: Vec<UrlConfigurationJson> = configs
        .into_iter()
        .map(UrlConfigurationJson::from)
        .collect();
    Ok(Json(body).into_response())
}

/// One URL configuration (Developer and above).
#[utoipa::path(
    get,
    path = "/api/v4/projects/{id}/cluster_agents/{agent_id}/url_configurations/{url_configuration_id}",
    operation_id = "get_url_configuration",
    tag = "url_configurations",
    params(UrlConfigurationPath),
    responses(
        (status = 200, description = "The configuration.", body = UrlConfigurationJson),
        (status = 400, response = InvalidParameter),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
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
    let agent_id = ids.integer("agent_id").map(AgentId::from_wire);
    let config_id = ids
        .integer("url_configuration_id")
        .map(UrlConfigurationId::from_wire);
    let config = state
        .app
        .url_configurations()
        .get(&caller, &ids.project(), agent_id, config_id)
        .await?;
    Ok(Json(UrlConfigurationJson::from(config)).into_response())
}

/// Makes the agent receptive (Maintainer and above; one per agent). Without a client
/// certificate the service generates an Ed25519 key pair (JWT mode).
#[utoipa::path(
    post,
    path = "/api/v4/projects/{id}/cluster_agents/{agent_id}/url_configurations",
    operation_id = "create_url_configuration",
    tag = "url_configurations",
    params(AgentPath),
    request_body(content(
        (NewUrlConfigurationBody = "application/json"),
        (NewUrlConfigurationBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 201, description = "The new configuration.", body = UrlConfigurationJson,
            links(
                ("GetUrlConfiguration" = (
                    operation_id = "get_url_configuration",
                    parameters(
                        ("id" = "$request.path.id"),
                        ("agent_id" = "$request.path.agent_id"),
                        ("url_configuration_id" = "$response.body#/id"),
                    )
                )),
                ("DeleteUrlConfiguration" = (
                    operation_id = "delete_url_configuration",
                    parameters(
                        ("id" = "$request.path.id"),
                        ("agent_id" = "$request.path.agent_id"),
                        ("url_configuration_id" = "$response.body#/id"),
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
    let agent_id = ids.integer("agent_id").map(AgentId::from_wire);
    let body = NewUrlConfigurationBody::from_params(&params).map(Into::into);
    let config = state
        .app
        .url_configurations()
        .create(&caller, &ids.project(), agent_id, body)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(UrlConfigurationJson::from(config)),
    )
        .into_response())
}

/// Deletes a URL configuration (Maintainer and above).
#[utoipa::path(
    delete,
    path = "/api/v4/projects/{id}/cluster_agents/{agent_id}/url_configurations/{url_configuration_id}",
    operation_id = "delete_url_configuration",
    tag = "url_configurations",
    params(UrlConfigurationPath, UnmodifiedSinceHeader),
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
    let agent_id = ids.integer("agent_id").map(AgentId::from_wire);
    let config_id = ids
        .integer("url_configuration_id")
        .map(UrlConfigurationId::from_wire);
    let since = unmodified_since(&headers);
    state
        .app
        .url_configurations()
        .delete(&caller, &ids.project(), agent_id, config_id, since)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
