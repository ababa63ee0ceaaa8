//! `/projects/:id/cluster_agents/:agent_id/url_configurations[/:url_configuration_id]`.
//! The project and the instance setting are checked before the other parameters, as in GitLab.

use super::dto::UrlConfigurationJson;
use super::extract::{Authenticated, Ids, Params, unmodified_since};
use super::{ApiError, RestState};
use crate::app::url_configs::NewUrlConfigurationInput;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;

pub(super) async fn list(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    ids: Ids,
    _params: Params,
) -> Result<Response, ApiError> {
    let project = state.app.receptive_project(&caller, ids.project()).await?;
    let agent_id = ids.integer("agent_id")?;
    let configs = state
        .app
        .list_url_configurations(&project, agent_id)
        .await?;
    let body: Vec<UrlConfigurationJson> = configs
        .into_iter()
        .map(UrlConfigurationJson::from)
        .collect();
    Ok(Json(body).into_response())
}

pub(super) async fn show(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    ids: Ids,
    _params: Params,
) -> Result<Response, ApiError> {
    let project = state.app.receptive_project(&caller, ids.project()).await?;
    let agent_id = ids.integer("agent_id")?;
    let config_id = ids.integer("url_configuration_id")?;
    let config = state
        .app
        .url_configuration(&project, agent_id, config_id)
        .await?;
    Ok(Json(UrlConfigurationJson::from(config)).into_response())
}

pub(super) async fn create(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    ids: Ids,
    params: Params,
) -> Result<Response, ApiError> {
    let project = state.app.receptive_project(&caller, ids.project()).await?;
    let agent_id = ids.integer("agent_id")?;
    let input = NewUrlConfigurationInput {
        url: params.required_text("url")?,
        client_cert: params.optional_text("client_cert")?,
        client_key: params.optional_text("client_key")?.map(SecretString::from),
        ca_cert: params.optional_text("ca_cert")?,
        tls_host: params.optional_text("tls_host")?,
    };
    let config = state
        .app
        .create_url_configuration(&project, agent_id, input)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(UrlConfigurationJson::from(config)),
    )
        .into_response())
}

pub(super) async fn delete(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    ids: Ids,
    _params: Params,
) -> Result<Response, ApiError> {
    let project = state.app.receptive_project(&caller, ids.project()).await?;
    let agent_id = ids.integer("agent_id")?;
    let config_id = ids.integer("url_configuration_id")?;
    let since = unmodified_since(&headers);
    state
        .app
        .delete_url_configuration(&project, agent_id, config_id, since)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
