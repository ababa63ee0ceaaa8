//! The pieces of the OpenAPI document that the handlers name in their `#[utoipa::path]`
//! annotations: the reusable error and page responses, and the path, query and header
//! parameters. A leaf: it imports the response DTOs, never a handler.

use crate::rest::dto::{
    AgentJson, AgentTokenBasicJson, AttributeErrorsJson, AuditEventJson, InsufficientScopeJson,
    InventoryAgentJson, MessageErrorJson, ParameterErrorJson,
};
use serde_json::json;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Content, KnownFormat, Ref, RefOr, Required, SchemaFormat};
use utoipa::{IntoParams, ToSchema};

/// Declares a reusable response: an uninhabited marker type, named in `#[utoipa::path]`
/// annotations, whose `ToResponse` builds the response component of the same name.
macro_rules! reusable_response {
    ($(#[$doc:meta])* $name:ident => $build:expr) => {
        $(#[$doc])*
        pub(in crate::rest) enum $name {}

        impl<'r> utoipa::ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), RefOr::T($build))
            }
        }
    };
}

reusable_response!(
    /// `401`: no personal access token, or one that does not authenticate.
    Unauthorized => json_response(
        "No token, an unknown, revoked or expired token: `{\"message\": \"401 Unauthorized\"}`.",
        schema_ref::<MessageErrorJson>(),
    ).build()
);

reusable_response!(
    /// `401` on the agent-server routes.
    KasUnauthorized => json_response(
        "The KAS JWT is missing or invalid (`{\"message\": \"KAS JWT authentication invalid\"}`), \
         or the agent token does not authenticate (`{\"message\": \"401 Unauthorized\"}`).",
        schema_ref::<MessageErrorJson>(),
    ).build()
);

reusable_response!(
    /// `403` for a caller who may not see or do this.
    Forbidden => json_response(
        "The caller's role does not allow this: `{\"message\": \"403 Forbidden\"}`.",
        schema_ref::<MessageErrorJson>(),
    ).build()
);

reusable_response!(
    /// `403` for a `read_api` token on a route that writes.
    ScopeForbidden => json_response(
        "The token has only the `read_api` scope and the route writes.",
        schema_ref::<InsufficientScopeJson>(),
    )
    .header("WWW-Authenticate", www_authenticate())
    .build()
);

reusable_response!(
    /// `403` on a write: either the token's scope or the caller's role.
    WriteForbidden => json_response(
        "The token has only the `read_api` scope (an `insufficient_scope` body and a \
         `WWW-Authenticate` challenge), or the caller's role does not allow this \
         (`{\"message\": \"403 Forbidden\"}`).",
        one_of(&[schema_ref::<InsufficientScopeJson>(), schema_ref::<MessageErrorJson>()]),
    )
    .header("WWW-Authenticate", www_authenticate())
    .build()
);

reusable_response!(
    /// `404` with GitLab's message for what was not found.
    NotFound => json_response(
        "`404 Project Not Found`, `404 ClusterAgents Not Found`, `404 User Not Found`, \
         `404 Not found` (a record) or `404 Not Found` (a resource or a disabled feature), \
         as `{\"message\": ...}`.",
        schema_ref::<MessageErrorJson>(),
    ).build()
);

reusable_response!(
    /// `400` for a parameter, path or body that does not decode.
    InvalidParameter => json_response(
        "A parameter is missing, invalid or not allowed, the path is not valid UTF-8, or the \
         body does not match its declared format: `{\"error\": \"name is missing\"}`.",
        schema_ref::<ParameterErrorJson>(),
    ).build()
);

reusable_response!(
    /// `400` for a parameter error or a refused operation.
    BadRequest => json_response(
        "A parameter error (`{\"error\": ...}`, as for `InvalidParameter`), or a refused or \
         invalid operation: `{\"message\": \"400 Bad request - ...\"}`.",
        one_of(&[schema_ref::<ParameterErrorJson>(), schema_ref::<MessageErrorJson>()]),
    ).build()
);

reusable_response!(
    /// `400` for a parameter error or failed model validation keyed by attribute.
    InvalidAttributes => json_response(
        "A parameter error (`{\"error\": ...}`), or model validation failed: \
         `{\"message\": {\"path\": [\"has already been taken\"]}}`.",
        one_of(&[schema_ref::<ParameterErrorJson>(), schema_ref::<AttributeErrorsJson>()]),
    ).build()
);

reusable_response!(
    /// `409` for a unique value already taken.
    Conflict => json_response(
        "A unique value is taken: `{\"message\": \"Username has already been taken\"}`.",
        schema_ref::<MessageErrorJson>(),
    ).build()
);

reusable_response!(
    /// `412` when `If-Unmodified-Since` does not hold.
    PreconditionFailed => json_response(
        "The resource changed after `If-Unmodified-Since`: \
         `{\"message\": \"412 Precondition Failed\"}`.",
        schema_ref::<MessageErrorJson>(),
    ).build()
);

reusable_response!(
    /// `413` for a body over 1 MiB.
    PayloadTooLarge => json_response(
        "The body is over 1 MiB: `{\"message\": \"413 Request Entity Too Large\"}`.",
        schema_ref::<MessageErrorJson>(),
    ).build()
);

reusable_response!(
    /// `415` for a body that is neither JSON nor form data.
    UnsupportedMediaType => json_response(
        "The body is neither `application/json` nor `application/x-www-form-urlencoded`: \
         `{\"error\": \"The provided content-type '...' is not supported.\"}`.",
        schema_ref::<ParameterErrorJson>(),
    ).build()
);

reusable_response!(
    /// `429` for a client that failed to authenticate too often.
    TooManyRequests => json_response(
        "Too many failed authentications in the last minute for this client address and \
         token (for this agent token, or for all agent tokens), or too many callers waiting for \
         a token verification: `{\"message\": \"429 Too Many Requests\"}`.",
        schema_ref::<MessageErrorJson>(),
    )
    .header(
        "Retry-After",
        always_sent(
            HeaderBuilder::new()
                .schema(Some(integer_schema()))
                .description(Some("Seconds to wait before trying again.")),
        ),
    )
    .build()
);

reusable_response!(
    /// `503`, which any operation may answer: the request ran past the request timeout, the
    /// storage backend is unreachable, or (for the operations that verify or hash a secret) the
    /// argon2 queue is full, which also sends `Retry-After`.
    ServiceUnavailable => json_response(
        "The service cannot answer now: the request timed out, the storage backend is \
         unreachable, or too many secrets wait for argon2 (then with `Retry-After`): \
         `{\"message\": \"503 Service Unavailable\"}`.",
        schema_ref::<MessageErrorJson>(),
    )
    .header(
        "Retry-After",
        HeaderBuilder::new()
            .schema(Some(integer_schema()))
            .description(Some(
                "Seconds to wait before trying again; sent when the argon2 queue is full.",
            ))
            .build(),
    )
    .build()
);

reusable_response!(
    /// The online backup.
    Snapshot => ResponseBuilder::new()
        .description("The snapshot, in the format `agentreg restore` reads.")
        .content(
            "application/octet-stream",
            Content::new(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .content_media_type("application/octet-stream")
                    .build(),
            )),
        )
        .header(
            "Content-Disposition",
            always_sent(
                HeaderBuilder::new()
                    .description(Some("`attachment; filename=\"agentreg.snapshot\"`")),
            ),
        )
        .build()
);

reusable_response!(
    /// A page of agents, offset or keyset.
    AgentPage => agent_list_response()
);

reusable_response!(
    /// `405` for a keyset order the list cannot follow.
    KeysetUnavailable => json_response(
        "`pagination=keyset` with an `order_by` other than `id` or `name`, or a `sort` other \
         than `asc` or `desc`, as GitLab answers: `{\"error\": \"Keyset pagination is not yet \
         available for this type of request\"}`.",
        schema_ref::<ParameterErrorJson>(),
    ).build()
);

reusable_response!(
    /// A page of the instance inventory.
    InventoryPage => paginated_response::<InventoryAgentJson>(
        "A page of the instance's agents, ordered by id.",
    )
);

reusable_response!(
    /// A page of agent tokens.
    AgentTokenPage => paginated_response::<AgentTokenBasicJson>(
        "A page of the agent's active tokens.",
    )
);

reusable_response!(
    /// A page of audit events.
    AuditEventPage => paginated_response::<AuditEventJson>("A page of audit events, newest first.")
);

/// Path parameters of the project routes: `id`.
pub(in crate::rest) enum ProjectPath {}

/// Path parameters of one agent: `id` and `agent_id`.
pub(in crate::rest) enum AgentPath {}

/// Path parameters of one agent token: `id`, `agent_id` and `token_id`.
pub(in crate::rest) enum AgentTokenPath {}

/// Path parameters of one URL configuration: `id`, `agent_id` and `url_configuration_id`.
pub(in crate::rest) enum UrlConfigurationPath {}

/// Path parameters of a user's routes: `user_id`.
pub(in crate::rest) enum UserPath {}

/// GitLab's offset pagination: `page` and `per_page`.
pub(in crate::rest) enum PageQuery {}

/// The agent list's pagination: offset (`page`, `per_page`) or keyset (`pagination=keyset`,
/// `order_by`, `sort`, `cursor`, `per_page`).
pub(crate) enum AgentListQuery {}

/// The optimistic-concurrency header of the delete routes.
pub(in crate::rest) enum UnmodifiedSinceHeader {}

/// `status` of the token list (agentreg extension).
pub(in crate::rest) enum TokenStatusQuery {}

/// The filters of the instance inventory (agentreg extension).
pub(in crate::rest) enum InventoryQuery {}

impl IntoParams for InventoryQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let query = |name: &str, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(description))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String).build()))
                .build()
        };
        vec![
            query(
                "unused_since",
                "Only agents none of whose tokens was used since this time (ISO 8601 date or \
                 RFC 3339 time), never-used ones included: dead agents.",
            ),
            query(
                "token_expires_before",
                "Only agents with a usable token that expires before this time: what needs \
                 rotating.",
            ),
            query(
                "project",
                "Only agents of projects whose full path starts with this, case-insensitively.",
            ),
        ]
    }
}

/// `reason` of a token revocation (agentreg extension).
pub(in crate::rest) enum RevocationReasonQuery {}

impl IntoParams for TokenStatusQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("status")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(
                    "`active` (the default, GitLab's list) or `revoked`: revoked and expired \
                     tokens with `revoked_at`, `revoked_by_user_id` and `revoked_reason`.",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(["active", "revoked"]))
                        .build(),
                ))
                .build(),
        ]
    }
}

impl IntoParams for RevocationReasonQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("reason")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(
                    "Why the token is revoked, kept as its `revoked_reason` (at most 255 \
                     characters; blank means `revoked`). May also be sent in the body.",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .max_length(Some(255))
                        .build(),
                ))
                .build(),
        ]
    }
}

impl IntoParams for ProjectPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![project_id()]
    }
}

impl IntoParams for AgentPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![project_id(), id_parameter("agent_id", "The agent's id.")]
    }
}

impl IntoParams for AgentTokenPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            project_id(),
            id_parameter("agent_id", "The agent's id."),
            id_parameter("token_id", "The token's id."),
        ]
    }
}

impl IntoParams for UrlConfigurationPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            project_id(),
            id_parameter("agent_id", "The agent's id."),
            id_parameter("url_configuration_id", "The URL configuration's id."),
        ]
    }
}

impl IntoParams for UserPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![id_parameter("user_id", "The user's id.")]
    }
}

impl IntoParams for PageQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let query = |name: &str, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(description))
                .schema(Some(integer_schema()))
                .build()
        };
        vec![
            query("page", "The page, from 1 (the default); below 1 means 1."),
            query(
                "per_page",
                "Items per page: 20 by default, at most 100 (larger values are clamped); a \
                 negative value means the default and 0 is refused.",
            ),
        ]
    }
}

impl IntoParams for AgentListQuery {
    fn into_params(parameter_in: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let text = |name: &str, description: &str, values: Option<&[&str]>| {
            let mut schema = ObjectBuilder::new().schema_type(Type::String);
            if let Some(values) = values {
                schema = schema.enum_values(Some(values.iter().copied()));
            }
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(description))
                .schema(Some(schema.build()))
                .build()
        };
        let mut parameters = PageQuery::into_params(parameter_in);
        parameters.extend([
            text(
                "pagination",
                "`offset` (the default): pages by name with `page`, the `X-Total`... headers and \
                 `prev`, `next`, `first` and `last` links. `keyset`: pages that follow a cursor, \
                 as GitLab's large lists do, with only a `Link` to the next page (absent on the \
                 last one) and no totals; a deep page costs what the first does.",
                Some(&["offset", "keyset"]),
            ),
            text(
                "order_by",
                "Keyset pages only: `id` (the default) or `name`; another order is `405`.",
                None,
            ),
            text(
                "sort",
                "Keyset pages only: `asc` or `desc` (the default); another value is `405`.",
                None,
            ),
            text(
                "cursor",
                "Keyset pages only: where the page starts, from the previous page's `next` link; \
                 absent for the first page. A value that is not such a cursor is `400`.",
                None,
            ),
        ]);
        parameters
    }
}

impl IntoParams for UnmodifiedSinceHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("If-Unmodified-Since")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Delete only if the resource has not changed since then: an HTTP date or \
                     an ISO 8601 time. A value that does not parse is ignored.",
                ))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String).build()))
                .build(),
        ]
    }
}

fn schema_ref<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

fn one_of(schemas: &[RefOr<Schema>]) -> RefOr<Schema> {
    let mut one_of = OneOfBuilder::new();
    for schema in schemas {
        one_of = one_of.item(schema.clone());
    }
    RefOr::T(Schema::OneOf(one_of.build()))
}

fn integer_schema() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .build(),
    )
}

fn json_response(description: &str, schema: RefOr<Schema>) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(schema)))
}

fn www_authenticate() -> Header {
    HeaderBuilder::new()
        .description(Some(
            "`Bearer realm=\"\", error=\"insufficient_scope\", ...` when the scope is the cause.",
        ))
        .build()
}

/// A JSON array of `T` with GitLab's pagination headers.
/// The agent list's response: offset pages carry every pagination header, keyset pages only a
/// `Link` to the next page, so none of them is always sent.
fn agent_list_response() -> Response {
    let mut response = paginated_response::<AgentJson>(
        "A page of the project's agents, ordered by name (offset pages) or as `order_by` and \
         `sort` say (keyset pages).",
    );
    for (name, header) in &mut response.headers {
        if let RefOr::T(header) = header {
            header.extensions = None;
            let description = header.description.take().unwrap_or_default();
            header.description = Some(if name == "Link" {
                format!(
                    "Offset pages: {description} Keyset pages: the `next` page only, with its \
                     `cursor`; absent on the last page."
                )
            } else {
                format!("Offset pages only: {description}")
            });
        }
    }
    response
}

fn paginated_response<T: ToSchema>(description: &str) -> Response {
    let items = ArrayBuilder::new().items(schema_ref::<T>()).build();
    let integer = |description: &str| {
        always_sent(
            HeaderBuilder::new()
                .schema(Some(integer_schema()))
                .description(Some(description)),
        )
    };
    let optional_page = |description: &str| {
        always_sent(
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[0-9]*$"))
                        .build(),
                ))
                .description(Some(description)),
        )
    };
    json_response(description, RefOr::T(Schema::Array(items)))
        .header("X-Total", integer("The number of items."))
        .header(
            "X-Total-Pages",
            integer("The number of pages (at least 1)."),
        )
        .header("X-Per-Page", integer("Items per page."))
        .header("X-Page", integer("This page."))
        .header(
            "X-Next-Page",
            optional_page("The next page, empty on the last page."),
        )
        .header(
            "X-Prev-Page",
            optional_page("The previous page, empty on the first page."),
        )
        .header(
            "Link",
            always_sent(HeaderBuilder::new().description(Some(
                "Absolute URLs of the `prev`, `next`, `first` and `last` pages (RFC 8288); \
                 their query repeats every request parameter.",
            ))),
        )
        .build()
}

/// A header the response always carries. utoipa 6's `Header` has no `required` field, though
/// OpenAPI defines one, so it is written as an extension, which serializes in place.
fn always_sent(header: HeaderBuilder) -> Header {
    header
        .extensions(Some(Extensions::from_iter([("required", true)])))
        .build()
}

/// `id`: a project id, or its URL-encoded full path.
fn project_id() -> Parameter {
    ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(
            "The project's id, or its URL-encoded full path (`root%2Fproject`).",
        ))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String).build()))
        .example(Some(json!("1")))
        .build()
}

/// An integer id in the path (Grape's Integer: optional minus sign, then digits).
fn id_parameter(name: &str, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(integer_schema()))
        .example(Some(json!(1)))
        .build()
}
