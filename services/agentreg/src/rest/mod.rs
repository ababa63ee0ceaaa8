//! The REST edge: GitLab's `/api/v4` paths, parameters, JSON entities, status codes, error
//! bodies and pagination headers over the app layer. Handlers decode, call one app operation and
//! render; `ApiError` is the one mapping from app errors to GitLab's error responses.

mod admin;
mod agent_tokens;
mod agents;
mod dto;
mod extract;
mod identity;
mod internal;
mod pagination;
mod url_configs;

use crate::app::{App, Error};
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

/// What every REST handler shares.
#[derive(Clone)]
pub struct RestState {
    pub app: App,
    /// Base of absolute URLs in `Link` headers; `None` means the request's Host.
    pub external_url: Option<String>,
}

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Every GitLab route agentreg serves. Anything else is GitLab's catch-all 404.
pub fn router(state: RestState) -> Router {
    let agents = "/api/v4/projects/{id}/cluster_agents";
    Router::new()
        .route("/api/v4/version", get(identity::version))
        .route("/api/v4/admin/snapshot", get(admin::snapshot))
        .route("/api/v4/user", get(identity::current_user))
        .route("/api/v4/users", axum::routing::post(identity::create_user))
        .route(
            "/api/v4/users/{user_id}/personal_access_tokens",
            axum::routing::post(identity::create_personal_access_token),
        )
        .route(
            "/api/v4/projects",
            axum::routing::post(identity::create_project),
        )
        .route("/api/v4/projects/{id}", get(identity::project))
        .route(
            "/api/v4/projects/{id}/members",
            axum::routing::post(identity::add_member),
        )
        .route("/api/v4/audit_events", get(identity::instance_audit_events))
        .route(
            "/api/v4/projects/{id}/audit_events",
            get(identity::audit_events),
        )
        .route(agents, get(agents::list).post(agents::create))
        .route(
            &format!("{agents}/{{agent_id}}"),
            get(agents::show).delete(agents::delete),
        )
        .route(
            &format!("{agents}/{{agent_id}}/tokens"),
            get(agent_tokens::list).post(agent_tokens::create),
        )
        .route(
            &format!("{agents}/{{agent_id}}/tokens/{{token_id}}"),
            get(agent_tokens::show).delete(agent_tokens::revoke),
        )
        .route(
            &format!("{agents}/{{agent_id}}/url_configurations"),
            get(url_configs::list).post(url_configs::create),
        )
        .route(
            &format!("{agents}/{{agent_id}}/url_configurations/{{url_configuration_id}}"),
            get(url_configs::show).delete(url_configs::delete),
        )
        .route(
            "/api/v4/internal/agents/agentk/agent_info",
            get(internal::agent_info),
        )
        .route(
            "/api/v4/internal/kubernetes/agent_info",
            get(internal::agent_info),
        )
        .route(
            "/api/v4/internal/kubernetes/receptive_agents",
            get(internal::receptive_agents),
        )
        .fallback(route_not_found)
        .method_not_allowed_fallback(route_not_found)
        .with_state(state)
}

async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

/// A REST failure: an app error, or one that only HTTP has.
#[derive(Debug)]
pub enum ApiError {
    App(Error),
    /// No route matched (GitLab's catch-all).
    RouteNotFound,
    /// A body in a format other than JSON or form data.
    UnsupportedContentType(String),
    /// A body that does not parse in its declared format.
    MalformedBody,
    /// A body over [`MAX_BODY_BYTES`].
    PayloadTooLarge,
    /// A path segment that is not valid UTF-8 once decoded.
    MalformedPath,
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        ApiError::App(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::App(error) => app_error_response(error),
            ApiError::RouteNotFound => (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": "404 Not Found"})),
            )
                .into_response(),
            ApiError::UnsupportedContentType(content_type) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                axum::Json(json!({
                    "error": format!("The provided content-type '{content_type}' is not supported.")
                })),
            )
                .into_response(),
            ApiError::MalformedBody => (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "message body does not match declared format"})),
            )
                .into_response(),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(json!({"message": "413 Request Entity Too Large"})),
            )
                .into_response(),
            ApiError::MalformedPath => (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "path is invalid"})),
            )
                .into_response(),
        }
    }
}

/// The one mapping from app errors to GitLab's status codes and bodies.
fn app_error_response(error: Error) -> Response {
    let (status, body) = match &error {
        Error::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            json!({"message": "401 Unauthorized"}),
        ),
        Error::InsufficientScope => {
            let body = json!({
                "error": "insufficient_scope",
                "error_description": "The request requires higher privileges than provided by the access token.",
                "scope": "api",
            });
            let mut response = (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"\", error=\"insufficient_scope\", error_description=\"The request requires higher privileges than provided by the access token.\", scope=\"api\"",
                ),
            );
            return response;
        }
        Error::Forbidden => (StatusCode::FORBIDDEN, json!({"message": "403 Forbidden"})),
        Error::ProjectNotFound => (
            StatusCode::NOT_FOUND,
            json!({"message": "404 Project Not Found"}),
        ),
        Error::ClusterAgentsNotFound => (
            StatusCode::NOT_FOUND,
            json!({"message": "404 ClusterAgents Not Found"}),
        ),
        Error::RecordNotFound => (StatusCode::NOT_FOUND, json!({"message": "404 Not found"})),
        Error::NotFound => (StatusCode::NOT_FOUND, json!({"message": "404 Not Found"})),
        Error::UserNotFound => (
            StatusCode::NOT_FOUND,
            json!({"message": "404 User Not Found"}),
        ),
        Error::InvalidParameter(message) => (StatusCode::BAD_REQUEST, json!({"error": message})),
        Error::BadRequest(_) | Error::Invalid(_) => (
            StatusCode::BAD_REQUEST,
            json!({"message": error.to_string()}),
        ),
        Error::InvalidAttributes(errors) => {
            let messages: serde_json::Map<String, serde_json::Value> = errors
                .by_attribute()
                .into_iter()
                .map(|(attribute, messages)| (attribute.to_owned(), json!(messages)))
                .collect();
            (StatusCode::BAD_REQUEST, json!({"message": messages}))
        }
        Error::Conflict(message) => (StatusCode::CONFLICT, json!({"message": message})),
        Error::PreconditionFailed => (
            StatusCode::PRECONDITION_FAILED,
            json!({"message": "412 Precondition Failed"}),
        ),
        Error::KasUnauthorized => (
            StatusCode::UNAUTHORIZED,
            json!({"message": "KAS JWT authentication invalid"}),
        ),
        Error::TooManyRequests { retry_after_secs } => {
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"message": "429 Too Many Requests"})),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            return response;
        }
        Error::Internal(cause) => {
            tracing::error!(error = %error_chain(cause), "request failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"message": "500 Internal Server Error"}),
            )
        }
    };
    (status, axum::Json(body)).into_response()
}

/// An error and all its causes, for one log line.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A JSON array with GitLab's pagination headers.
fn paginated<T: serde::Serialize>(
    state: &RestState,
    target: &extract::RequestTarget,
    ids: &extract::Ids,
    params: &extract::Params,
    info: &crate::app::pagination::PageInfo,
    items: Vec<T>,
) -> Response {
    let mut link_params = params.link_pairs();
    link_params.extend(ids.pairs().iter().cloned());
    let base = pagination::LinkBase {
        origin: target.origin(state),
        path: &target.path,
        params: link_params,
    };
    (pagination::headers(&base, info), axum::Json(items)).into_response()
}
