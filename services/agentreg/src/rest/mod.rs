//! The REST edge: GitLab's `/api/v4` paths, parameters, JSON entities, status codes, error
//! bodies and pagination headers over the app layer. Handlers decode, call one app operation and
//! render; `ApiError` is the one mapping from app errors to GitLab's error responses. `routes`
//! is the one list of routes, and `openapi` describes every one of them.

mod admin;
mod agent_tokens;
mod agents;
mod bodies;
mod dto;
mod extract;
pub mod health;
mod identity;
mod internal;
mod openapi;
mod pagination;
mod url_configs;

use crate::app::{App, Error};
use crate::telemetry;
use axum::Router;
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use dto::{AttributeErrorsJson, InsufficientScopeJson, MessageErrorJson, ParameterErrorJson};

/// What every REST handler shares.
#[derive(Clone)]
pub struct RestState {
    pub app: App,
    /// Base of absolute URLs in `Link` headers; `None` means the request's Host.
    pub external_url: Option<String>,
}

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Every GitLab route agentreg serves, built from [`routes`]. Anything else is GitLab's
/// catch-all 404.
pub fn router(state: RestState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path, route.handler)
        })
        .fallback(route_not_found)
        .method_not_allowed_fallback(route_not_found)
        .with_state(state)
}

/// One REST route: a method, a path in OpenAPI's `{name}` syntax (which is also axum's) and
/// its handler. The OpenAPI document's tests compare it with this table both ways, so a route
/// cannot be served without being described, or described without being served.
struct Route {
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "only the OpenAPI tests read it; the handler has the method"
        )
    )]
    method: Method,
    path: &'static str,
    handler: MethodRouter<RestState>,
}

impl Route {
    fn get<H: Handler<T, RestState>, T: 'static>(path: &'static str, handler: H) -> Route {
        Route {
            method: Method::GET,
            path,
            handler: axum::routing::get(handler),
        }
    }

    fn post<H: Handler<T, RestState>, T: 'static>(path: &'static str, handler: H) -> Route {
        Route {
            method: Method::POST,
            path,
            handler: axum::routing::post(handler),
        }
    }

    fn delete<H: Handler<T, RestState>, T: 'static>(path: &'static str, handler: H) -> Route {
        Route {
            method: Method::DELETE,
            path,
            handler: axum::routing::delete(handler),
        }
    }
}

/// The one list of routes.
fn routes() -> Vec<Route> {
    const AGENTS: &str = "/api/v4/projects/{id}/cluster_agents";
    const AGENT: &str = "/api/v4/projects/{id}/cluster_agents/{agent_id}";
    const TOKENS: &str = "/api/v4/projects/{id}/cluster_agents/{agent_id}/tokens";
    const TOKEN: &str = "/api/v4/projects/{id}/cluster_agents/{agent_id}/tokens/{token_id}";
    const TOKEN_ROTATE: &str =
        "/api/v4/projects/{id}/cluster_agents/{agent_id}/tokens/{token_id}/rotate";
    const URL_CONFIGS: &str = "/api/v4/projects/{id}/cluster_agents/{agent_id}/url_configurations";
    const URL_CONFIG: &str =
        "/api/v4/projects/{id}/cluster_agents/{agent_id}/url_configurations/{url_configuration_id}";
    vec![
        Route::get("/api/v4/openapi.json", openapi::document),
        Route::get("/api/v4/version", identity::version),
        Route::get("/api/v4/admin/snapshot", admin::snapshot),
        Route::post("/api/v4/admin/token", admin::identify_token),
        Route::get("/api/v4/admin/cluster_agents", admin::agent_inventory),
        Route::delete("/api/v4/admin/token", admin::revoke_token),
        Route::get("/api/v4/user", identity::current_user),
        Route::post("/api/v4/users", identity::create_user),
        Route::post(
            "/api/v4/users/{user_id}/personal_access_tokens",
            identity::create_personal_access_token,
        ),
        Route::post("/api/v4/projects", identity::create_project),
        Route::get("/api/v4/projects/{id}", identity::project),
        Route::post("/api/v4/projects/{id}/members", identity::add_member),
        Route::get("/api/v4/audit_events", identity::instance_audit_events),
        Route::get("/api/v4/projects/{id}/audit_events", identity::audit_events),
        Route::get(AGENTS, agents::list),
        Route::post(AGENTS, agents::create),
        Route::get(AGENT, agents::show),
        Route::delete(AGENT, agents::delete),
        Route::get(TOKENS, agent_tokens::list),
        Route::post(TOKENS, agent_tokens::create),
        Route::get(TOKEN, agent_tokens::show),
        Route::delete(TOKEN, agent_tokens::revoke),
        Route::post(TOKEN_ROTATE, agent_tokens::rotate),
        Route::get(URL_CONFIGS, url_configs::list),
        Route::post(URL_CONFIGS, url_configs::create),
        Route::get(URL_CONFIG, url_configs::show),
        Route::delete(URL_CONFIG, url_configs::delete),
        Route::get(
            "/api/v4/internal/agents/agentk/agent_info",
            internal::agent_info,
        ),
        Route::get(
            "/api/v4/internal/kubernetes/agent_info",
            internal::legacy_agent_info,
        ),
        Route::get(
            "/api/v4/internal/kubernetes/receptive_agents",
            internal::receptive_agents,
        ),
    ]
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
                axum::Json(ParameterErrorJson::new("404 Not Found")),
            )
                .into_response(),
            ApiError::UnsupportedContentType(content_type) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                axum::Json(ParameterErrorJson::new(format!(
                    "The provided content-type '{content_type}' is not supported."
                ))),
            )
                .into_response(),
            ApiError::MalformedBody => (
                StatusCode::BAD_REQUEST,
                axum::Json(ParameterErrorJson::new(
                    "message body does not match declared format",
                )),
            )
                .into_response(),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(MessageErrorJson::new("413 Request Entity Too Large")),
            )
                .into_response(),
            ApiError::MalformedPath => (
                StatusCode::BAD_REQUEST,
                axum::Json(ParameterErrorJson::new("path is invalid")),
            )
                .into_response(),
        }
    }
}

/// The one mapping from app errors to GitLab's status codes and bodies. Every text is the
/// error's `Display`, GitLab's message.
fn app_error_response(error: Error) -> Response {
    let text = error.to_string();
    let message =
        |status: StatusCode| (status, axum::Json(MessageErrorJson::new(&text))).into_response();
    match &error {
        Error::Unauthorized | Error::KasUnauthorized => message(StatusCode::UNAUTHORIZED),
        Error::InsufficientScope => insufficient_scope("api"),
        Error::SudoScopeMissing => insufficient_scope("sudo"),
        Error::Forbidden | Error::SudoForbidden => message(StatusCode::FORBIDDEN),
        Error::ProjectNotFound
        | Error::ClusterAgentsNotFound
        | Error::RecordNotFound
        | Error::NotFound
        | Error::UserNotFound
        | Error::SudoUserNotFound(_) => message(StatusCode::NOT_FOUND),
        Error::AdminTokenNotFound => (
            StatusCode::NOT_FOUND,
            axum::Json(dto::NestedErrorJson::new(&text)),
        )
            .into_response(),
        Error::TokenTypeNotSupported => message(StatusCode::UNPROCESSABLE_ENTITY),
        Error::InvalidParameter(_) => (
            StatusCode::BAD_REQUEST,
            axum::Json(ParameterErrorJson::new(text)),
        )
            .into_response(),
        Error::KeysetUnavailable => (
            StatusCode::METHOD_NOT_ALLOWED,
            axum::Json(ParameterErrorJson::new(text)),
        )
            .into_response(),
        Error::Refused(_) | Error::Invalid(_) => message(StatusCode::BAD_REQUEST),
        Error::InvalidAttributes(errors) => (
            StatusCode::BAD_REQUEST,
            axum::Json(AttributeErrorsJson::from(errors)),
        )
            .into_response(),
        Error::Conflict(_) => message(StatusCode::CONFLICT),
        Error::PreconditionFailed => message(StatusCode::PRECONDITION_FAILED),
        Error::TooManyRequests { retry_after_secs } => {
            with_retry_after(message(StatusCode::TOO_MANY_REQUESTS), *retry_after_secs)
        }
        Error::Unavailable(cause) => {
            tracing::warn!(error = %telemetry::error_chain(cause), "storage unavailable");
            message(StatusCode::SERVICE_UNAVAILABLE)
        }
        Error::Overloaded { retry_after_secs } => {
            with_retry_after(message(StatusCode::SERVICE_UNAVAILABLE), *retry_after_secs)
        }
        Error::Internal(cause) => {
            tracing::error!(error = %telemetry::error_chain(cause), "request failed");
            message(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// An entity as a JSON response with `status`, serialized into a buffer sized for one entity
/// (axum's `Json` starts at 128 bytes and grows it several times for an agent).
pub(crate) fn json_entity<T: serde::Serialize>(status: StatusCode, entity: &T) -> Response {
    let mut body = Vec::with_capacity(1024);
    match serde_json::to_writer(&mut body, entity) {
        Ok(()) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(error) => app_error_response(Error::internal("serializing a response", error)),
    }
}

/// `response` with `Retry-After`: the whole seconds a client should wait.
fn with_retry_after(mut response: Response, retry_after_secs: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

/// GitLab's `insufficient_scope` 403, with its `WWW-Authenticate` challenge, for `scope`.
fn insufficient_scope(scope: &'static str) -> Response {
    let mut response = (
        StatusCode::FORBIDDEN,
        axum::Json(InsufficientScopeJson::for_scope(scope)),
    )
        .into_response();
    let challenge = format!(
        "Bearer realm=\"\", error=\"insufficient_scope\", error_description=\"The request \
         requires higher privileges than provided by the access token.\", scope=\"{scope}\""
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
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
    let base = link_base(state, target, ids, params);
    (pagination::headers(&base, info), axum::Json(items)).into_response()
}

/// A JSON array with GitLab's keyset pagination header: a `Link` to the next page only, absent
/// on the last page, and none of the offset headers.
fn keyset_paginated<T: serde::Serialize>(
    state: &RestState,
    target: &extract::RequestTarget,
    ids: &extract::Ids,
    params: &extract::Params,
    info: &crate::app::pagination::KeysetPageInfo,
    items: Vec<T>,
) -> Response {
    let mut base = link_base(state, target, ids, params);
    // The link sets these itself.
    base.params
        .retain(|(key, _)| !matches!(key.as_str(), "cursor" | "order_by" | "sort"));
    (pagination::keyset_headers(&base, info), axum::Json(items)).into_response()
}

/// Where `Link` URLs point: the list's URL with the request's parameters and route ids.
fn link_base<'a>(
    state: &RestState,
    target: &'a extract::RequestTarget,
    ids: &extract::Ids,
    params: &extract::Params,
) -> pagination::LinkBase<'a> {
    let mut link_params = params.link_pairs();
    link_params.extend(ids.pairs().iter().cloned());
    pagination::LinkBase {
        origin: target.origin(state),
        path: &target.path,
        params: link_params,
    }
}
