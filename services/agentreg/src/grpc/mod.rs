//! The gRPC edge: `agentreg.v1` services over the app layer, with the same rules and messages
//! as REST. An interceptor lifts the caller's token out of the metadata; `status` is the one
//! mapping from app errors to gRPC codes.

mod agents;
mod audit;
mod identity;
mod internal;
mod url_configs;

pub use agents::{AdminTokenGrpc, AgentGrpc, AgentTokenGrpc};
pub use audit::AuditEventGrpc;
pub use identity::{MetaGrpc, ProjectGrpc, UserGrpc};
pub use internal::InternalGrpc;
pub use url_configs::UrlConfigurationGrpc;

use crate::app::pagination::{KeysetRequest, PageInfo, Pagination};
use crate::app::{App, Caller, Credentials, Error, Intent};
use secrecy::SecretString;
use tonic::{Request, Status};

/// Code generated from `proto/agentreg/v1`.
pub mod pb {
    #![allow(
        unreachable_pub,
        clippy::allow_attributes_without_reason,
        clippy::wildcard_enum_match_arm,
        reason = "generated code"
    )]
    tonic::include_proto!("agentreg.v1");

    /// The encoded descriptors of every agentreg.v1 file, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/agentreg_descriptor.bin"));
}

/// The token a caller presented, put into request extensions by [`extract_credentials`].
#[derive(Clone)]
struct PresentedToken(Option<SecretString>);

/// The peer address of a call (the listeners record it for every request).
fn client_address<T>(request: &Request<T>) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

/// Reads `private-token` or `authorization: Bearer` metadata into the request's extensions.
/// A call without any token is refused here, before its message is read.
pub fn extract_credentials(mut request: Request<()>) -> Result<Request<()>, Status> {
    let metadata = request.metadata();
    let token = metadata
        .get("private-token")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            metadata
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| {
                    value
                        .strip_prefix("Bearer ")
                        .or_else(|| value.strip_prefix("bearer "))
                })
                .map(str::to_owned)
        })
        .map(|token| token.trim().to_owned())
        .filter(|token| !token.is_empty())
        .map(SecretString::from);
    if token.is_none() {
        return Err(status(Error::Unauthorized));
    }
    request.extensions_mut().insert(PresentedToken(token));
    Ok(request)
}

/// Refuses an agent-server call without a KAS JWT before its message is read.
pub fn require_kas_jwt(request: Request<()>) -> Result<Request<()>, Status> {
    let present = request
        .metadata()
        .get("gitlab-kas-api-request")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| !value.trim().is_empty());
    if !present {
        return Err(status(Error::KasUnauthorized));
    }
    Ok(request)
}

/// Authenticates the caller of a request that passed through [`extract_credentials`].
async fn caller<T>(app: &App, request: &Request<T>, intent: Intent) -> Result<Caller, Status> {
    let token = request
        .extensions()
        .get::<PresentedToken>()
        .and_then(|presented| presented.0.clone());
    let client = client_address(request);
    let sudo = request
        .metadata()
        .get("sudo")
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_owned())
        .filter(|identifier| !identifier.is_empty());
    app.authenticate(
        Credentials {
            token,
            client,
            sudo,
        },
        intent,
    )
    .await
    .map_err(status)
}

/// The one mapping from app errors to gRPC statuses. Messages are REST's texts.
pub fn status(error: Error) -> Status {
    match error {
        Error::Unauthorized | Error::KasUnauthorized => Status::unauthenticated(error.to_string()),
        Error::InsufficientScope => Status::permission_denied(
            "insufficient_scope: The request requires higher privileges than provided by the access token.",
        ),
        Error::Forbidden | Error::SudoForbidden => Status::permission_denied(error.to_string()),
        Error::SudoScopeMissing => Status::permission_denied(
            "insufficient_scope: The request requires higher privileges than provided by the access token.",
        ),
        Error::SudoUserNotFound(_) => Status::not_found(error.to_string()),
        Error::ProjectNotFound
        | Error::ClusterAgentsNotFound
        | Error::RecordNotFound
        | Error::NotFound
        | Error::UserNotFound
        | Error::AdminTokenNotFound => Status::not_found(error.to_string()),
        Error::TokenTypeNotSupported => Status::invalid_argument(error.to_string()),
        Error::KeysetUnavailable => Status::unimplemented(error.to_string()),
        Error::InvalidParameter(_) | Error::BadRequest(_) | Error::Invalid(_) => {
            Status::invalid_argument(error.to_string())
        }
        Error::InvalidAttributes(errors) => {
            Status::invalid_argument(attribute_errors_text(&errors))
        }
        Error::Conflict(message) => Status::already_exists(message),
        Error::PreconditionFailed => Status::failed_precondition(error.to_string()),
        Error::TooManyRequests { retry_after_secs } => {
            let mut status = Status::resource_exhausted(error.to_string());
            status
                .metadata_mut()
                .insert("retry-after", retry_after_secs.into());
            status
        }
        Error::Unavailable(cause) => {
            tracing::warn!(error = %crate::telemetry::error_chain(&cause), "storage unavailable");
            Status::unavailable("503 Service Unavailable")
        }
        Error::Internal(cause) => {
            tracing::error!(error = %crate::telemetry::error_chain(&cause), "rpc failed");
            Status::internal("500 Internal Server Error")
        }
    }
}

/// Attribute errors as REST renders their `message`: `{"path":["has already been taken"]}`.
fn attribute_errors_text(errors: &agentreg_domain::validation::ValidationErrors) -> String {
    let messages: serde_json::Map<String, serde_json::Value> = errors
        .by_attribute()
        .into_iter()
        .map(|(attribute, messages)| (attribute.to_owned(), serde_json::json!(messages)))
        .collect();
    serde_json::Value::Object(messages).to_string()
}

fn pagination(page: Option<pb::PageRequest>) -> Result<Pagination, Status> {
    let page = page.unwrap_or_default();
    Pagination::new(page.page, page.per_page).map_err(status)
}

fn keyset_request(keyset: pb::KeysetPageRequest) -> Result<KeysetRequest, Status> {
    KeysetRequest::new(keyset.order_by, keyset.sort, keyset.cursor, keyset.per_page).map_err(status)
}

fn page_info(info: &PageInfo) -> pb::PageInfo {
    let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    pb::PageInfo {
        total: signed(info.total),
        total_pages: signed(info.total_pages),
        per_page: signed(info.per_page),
        page: signed(info.page),
        next_page: info.next_page.map(signed),
        prev_page: info.prev_page.map(signed),
    }
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn id(value: impl Into<u64>) -> i64 {
    i64::try_from(value.into()).unwrap_or(i64::MAX)
}

/// A delete's precondition, truncated to whole seconds like an HTTP date.
fn unmodified_since(
    at: Option<prost_types::Timestamp>,
) -> Option<crate::app::agents::UnmodifiedSinceSeconds> {
    at.map(|at| crate::app::agents::UnmodifiedSinceSeconds(at.seconds))
}
