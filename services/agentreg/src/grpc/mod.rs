//! The gRPC edge: `agentreg.v1` services over the app layer, with the same rules and messages
//! as REST. An interceptor lifts the caller's token out of the metadata; `status` is the one
//! mapping from app errors to gRPC codes; `routes` is the one list of services served.

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

use crate::app::credentials::{KAS_JWT_HEADER, SUDO_HEADER, presented_token};
use crate::app::pagination::{KeysetRequest, PageInfo, Pagination};
use crate::app::{App, Caller, Credentials, Error, Intent};
use secrecy::SecretString;
use std::convert::Infallible;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};
use tonic_health::ServingStatus;

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

/// Every service the gRPC listener serves, and the health reporter that speaks for them.
pub struct Routes {
    pub routes: tonic::service::Routes,
    pub health_reporter: tonic_health::server::HealthReporter,
    /// The names health reports on: every agentreg service, and "" for the server as a whole.
    pub health_names: Vec<&'static str>,
}

/// The token a caller presented, put into request extensions by [`extract_credentials`].
#[derive(Clone)]
struct PresentedToken(Option<SecretString>);

/// The peer address of a call (the listeners record it for every request).
fn client_address<T>(request: &Request<T>) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<crate::server::Client>()
        .map(|client| client.address)
}

/// Reads `private-token` or `authorization: Bearer` metadata into the request's extensions.
/// A call without any token is refused here, before its message is read.
pub fn extract_credentials(mut request: Request<()>) -> Result<Request<()>, Status> {
    let metadata = request.metadata();
    let token = presented_token(|name| metadata.get(name).and_then(|value| value.to_str().ok()))
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
        .get(KAS_JWT_HEADER)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| !value.trim().is_empty());
    if !present {
        return Err(status(Error::KasUnauthorized));
    }
    Ok(request)
}

/// Authenticates the caller of a request that passed through [`extract_credentials`].
async fn caller<T>(
    app: &App,
    request: &Request<T>,
    intent: Intent,
) -> Result<std::sync::Arc<Caller>, Status> {
    let token = request
        .extensions()
        .get::<PresentedToken>()
        .and_then(|presented| presented.0.clone());
    let client = client_address(request);
    let sudo = request
        .metadata()
        .get(SUDO_HEADER)
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

/// The one mapping from app errors to gRPC statuses. Messages are the error's `Display`, REST's
/// texts, except that `insufficient_scope` carries its description.
pub fn status(error: Error) -> Status {
    let message = error.to_string();
    match error {
        Error::Unauthorized | Error::KasUnauthorized => Status::unauthenticated(message),
        Error::InsufficientScope | Error::SudoScopeMissing => Status::permission_denied(
            "insufficient_scope: The request requires higher privileges than provided by the access token.",
        ),
        Error::Forbidden | Error::SudoForbidden => Status::permission_denied(message),
        Error::ProjectNotFound
        | Error::ClusterAgentsNotFound
        | Error::RecordNotFound
        | Error::NotFound
        | Error::UserNotFound
        | Error::AdminTokenNotFound
        | Error::SudoUserNotFound(_) => Status::not_found(message),
        Error::KeysetUnavailable => Status::unimplemented(message),
        Error::TokenTypeNotSupported
        | Error::InvalidParameter(_)
        | Error::Refused(_)
        | Error::Invalid(_) => Status::invalid_argument(message),
        Error::InvalidAttributes(errors) => {
            Status::invalid_argument(attribute_errors_text(&errors))
        }
        Error::Conflict(_) => Status::already_exists(message),
        Error::PreconditionFailed => Status::failed_precondition(message),
        Error::TooManyRequests { retry_after_secs } => {
            with_retry_after(Status::resource_exhausted(message), retry_after_secs)
        }
        Error::Unavailable(cause) => {
            tracing::warn!(error = %crate::telemetry::error_chain(&cause), "storage unavailable");
            Status::unavailable(message)
        }
        Error::Overloaded { retry_after_secs } => {
            with_retry_after(Status::unavailable(message), retry_after_secs)
        }
        Error::Internal(cause) => {
            tracing::error!(error = %crate::telemetry::error_chain(&cause), "rpc failed");
            Status::internal(message)
        }
    }
}

/// `status` with `retry-after` metadata: the seconds to wait, as REST's `Retry-After` says.
fn with_retry_after(mut status: Status, retry_after_secs: u64) -> Status {
    status
        .metadata_mut()
        .insert("retry-after", retry_after_secs.into());
    status
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

/// Every agentreg service behind its interceptor and message limit, with health (each service
/// `SERVING`) and reflection (v1 and v1alpha). Health names come from the services added, so
/// that a service cannot be served without being reported on.
pub async fn routes(
    app: &App,
    max_message_bytes: usize,
) -> Result<Routes, tonic_reflection::server::Error> {
    use pb::admin_token_service_server::AdminTokenServiceServer;
    use pb::agent_service_server::AgentServiceServer;
    use pb::agent_token_service_server::AgentTokenServiceServer;
    use pb::audit_event_service_server::AuditEventServiceServer;
    use pb::internal_service_server::InternalServiceServer;
    use pb::meta_service_server::MetaServiceServer;
    use pb::project_service_server::ProjectServiceServer;
    use pb::url_configuration_service_server::UrlConfigurationServiceServer;
    use pb::user_service_server::UserServiceServer;

    let intercept = extract_credentials;
    let mut services = Services::default();
    services
        .add(InterceptedService::new(
            MetaServiceServer::new(MetaGrpc { app: app.clone() })
                .max_decoding_message_size(max_message_bytes),
            intercept,
        ))
        .add(InterceptedService::new(
            UserServiceServer::new(UserGrpc { app: app.clone() })
                .max_decoding_message_size(max_message_bytes),
            intercept,
        ))
        .add(InterceptedService::new(
            ProjectServiceServer::new(ProjectGrpc { app: app.clone() })
                .max_decoding_message_size(max_message_bytes),
            intercept,
        ))
        .add(InterceptedService::new(
            AgentServiceServer::new(AgentGrpc { app: app.clone() })
                .max_decoding_message_size(max_message_bytes),
            intercept,
        ))
        .add(InterceptedService::new(
            AgentTokenServiceServer::new(AgentTokenGrpc { app: app.clone() })
                .max_decoding_message_size(max_message_bytes),
            intercept,
        ))
        .add(InterceptedService::new(
            AdminTokenServiceServer::new(AdminTokenGrpc { app: app.clone() })
                .max_decoding_message_size(max_message_bytes),
            intercept,
        ))
        .add(InterceptedService::new(
            UrlConfigurationServiceServer::new(UrlConfigurationGrpc { app: app.clone() })
                .max_decoding_message_size(max_message_bytes),
            intercept,
        ))
        .add(InterceptedService::new(
            AuditEventServiceServer::new(AuditEventGrpc { app: app.clone() })
                .max_decoding_message_size(max_message_bytes),
            intercept,
        ))
        .add(InterceptedService::new(
            InternalServiceServer::new(InternalGrpc { app: app.clone() })
                .max_decoding_message_size(max_message_bytes),
            require_kas_jwt,
        ));
    let Services {
        mut routes,
        names: mut health_names,
    } = services;
    health_names.push("");

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for name in &health_names {
        health_reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok(Routes {
        routes: routes.routes(),
        health_reporter,
        health_names,
    })
}

/// Routes being built, with the name of every service added so far.
#[derive(Default)]
struct Services {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
}

impl Services {
    /// Adds a service under its `NamedService::NAME` and records that name.
    fn add<S>(&mut self, service: S) -> &mut Services
    where
        S: tower::Service<axum::http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }
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
