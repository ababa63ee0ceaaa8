//! The OpenAPI 3.1 document of the REST edge, served at `GET /api/v4/openapi.json`. It is
//! generated from the handlers' `#[utoipa::path]` annotations and the DTO types, and its tests
//! compare it with the route table in `rest/mod.rs`, so it describes exactly what is served.
//! This module also holds what only the document needs: the reusable error responses, path and
//! query parameters, the request bodies `Params` accepts, and the security schemes.

use super::dto::{
    AgentJson, AgentTokenBasicJson, AttributeErrorsJson, AuditEventJson, InsufficientScopeJson,
    InventoryAgentJson, MessageErrorJson, ParameterErrorJson,
};
use super::{admin, agent_tokens, agents, identity, internal, url_configs};
use axum::Json;
use serde_json::json;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, KnownFormat, Ref, RefOr, Required, SchemaFormat};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentreg",
        description = "GitLab's Kubernetes agent API (`/api/v4`) as a standalone service. \
            Callers authenticate with a personal access token in `PRIVATE-TOKEN` (or \
            `Authorization: Bearer`, or the `private_token` query parameter); the agent-server \
            routes under `/internal` use the KAS JWT instead. Errors use GitLab's shapes. A \
            client that fails to authenticate too often in a minute gets `429` with \
            `Retry-After`. As in GitLab, an administrator whose token has the `sudo` scope may \
            act as another user with the `Sudo` header or `sudo` query parameter (a user id or \
            username); a non-administrator gets `403 Forbidden - Must be admin to use sudo`, a \
            token without the scope `insufficient_scope` with `scope: sudo`, and an unknown user \
            `404 User with ID or username '...' Not Found`.",
    ),
    paths(
        document,
        identity::version,
        admin::snapshot,
        identity::current_user,
        identity::create_user,
        identity::create_personal_access_token,
        identity::create_project,
        identity::project,
        identity::add_member,
        identity::instance_audit_events,
        identity::audit_events,
        agents::list,
        agents::create,
        agents::show,
        agents::delete,
        agent_tokens::list,
        agent_tokens::create,
        agent_tokens::show,
        agent_tokens::revoke,
        agent_tokens::rotate,
        admin::identify_token,
        admin::agent_inventory,
        admin::revoke_token,
        url_configs::list,
        url_configs::create,
        url_configs::show,
        url_configs::delete,
        internal::agent_info,
        internal::legacy_agent_info,
        internal::receptive_agents,
    ),
    components(
        // The schemas that only the reusable responses below refer to.
        schemas(
            MessageErrorJson,
            ParameterErrorJson,
            InsufficientScopeJson,
            AttributeErrorsJson,
            AgentJson,
            AgentTokenBasicJson,
            AuditEventJson,
            InventoryAgentJson,
        ),
        responses(
            Unauthorized,
            KasUnauthorized,
            Forbidden,
            ScopeForbidden,
            WriteForbidden,
            NotFound,
            InvalidParameter,
            KeysetUnavailable,
            BadRequest,
            InvalidAttributes,
            Conflict,
            PreconditionFailed,
            PayloadTooLarge,
            UnsupportedMediaType,
            TooManyRequests,
            Snapshot,
            AgentPage,
            InventoryPage,
            AgentTokenPage,
            AuditEventPage,
        ),
    ),
    modifiers(&SecuritySchemes),
    security(("private_token" = []), ("bearer" = []), ("private_token_query" = [])),
    tags(
        (name = "meta", description = "The service itself: this document, the version, backups."),
        (name = "users", description = "Users and their personal access tokens."),
        (name = "projects", description = "Projects, members and audit events."),
        (name = "cluster_agents", description = "Kubernetes agents registered in a project."),
        (name = "agent_tokens", description = "An agent's tokens (at most two active)."),
        (
            name = "url_configurations",
            description = "How the agent server reaches a receptive agent.",
        ),
        (
            name = "internal",
            description = "Routes the agent server (KAS) calls, authenticated with its JWT.",
        ),
    ),
)]
pub(super) struct ApiDoc;

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/api/v4/openapi.json",
    operation_id = "get_openapi_document",
    tag = "meta",
    security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1).", body = Object)),
)]
pub(super) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Declares a reusable response: an uninhabited marker type, named in `#[utoipa::path]`
/// annotations, whose `ToResponse` builds the response component of the same name.
macro_rules! reusable_response {
    ($(#[$doc:meta])* $name:ident => $build:expr) => {
        $(#[$doc])*
        pub(super) enum $name {}

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
pub(super) enum ProjectPath {}

/// Path parameters of one agent: `id` and `agent_id`.
pub(super) enum AgentPath {}

/// Path parameters of one agent token: `id`, `agent_id` and `token_id`.
pub(super) enum AgentTokenPath {}

/// Path parameters of one URL configuration: `id`, `agent_id` and `url_configuration_id`.
pub(super) enum UrlConfigurationPath {}

/// Path parameters of a user's routes: `user_id`.
pub(super) enum UserPath {}

/// GitLab's offset pagination: `page` and `per_page`.
pub(super) enum PageQuery {}

/// The agent list's pagination: offset (`page`, `per_page`) or keyset (`pagination=keyset`,
/// `order_by`, `sort`, `cursor`, `per_page`).
pub(super) enum AgentListQuery {}

/// The optimistic-concurrency header of the delete routes.
pub(super) enum UnmodifiedSinceHeader {}

/// `status` of the token list (agentreg extension).
pub(super) enum TokenStatusQuery {}

/// The filters of the instance inventory (agentreg extension).
pub(super) enum InventoryQuery {}

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
pub(super) enum RevocationReasonQuery {}

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

/// The request bodies `Params` accepts, with the rules the service checks (a value that breaks
/// one gets a `400`). Handlers read parameters one by one with GitLab's coercions, so these
/// types only describe the bodies and are never built.
pub(super) mod bodies {
    #![expect(
        dead_code,
        reason = "schema-only types: never built, their fields never read"
    )]

    use utoipa::ToSchema;

    /// `POST /users`.
    #[derive(ToSchema)]
    #[schema(as = NewUser)]
    pub(in crate::rest) struct NewUserBody {
        /// Letters, digits, `_`, `-` and `.`; not starting with `-` nor ending in `.git` or
        /// `.atom`; unique.
        #[schema(
            pattern = r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$",
            max_length = 255,
            examples("alice")
        )]
        username: String,
        #[schema(pattern = r"\S", max_length = 255, examples("Alice Liddell"))]
        name: String,
        /// Unique.
        #[schema(
            pattern = r"^[^@\s]+@[^@\s]+$",
            max_length = 255,
            examples("alice@example.com")
        )]
        email: String,
    }

    /// A personal access token's scope.
    #[derive(ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub(in crate::rest) enum Scope {
        Api,
        ReadApi,
    }

    /// `POST /users/:user_id/personal_access_tokens`, as JSON.
    #[derive(ToSchema)]
    #[schema(as = NewPersonalAccessToken)]
    pub(in crate::rest) struct NewPersonalAccessTokenBody {
        #[schema(pattern = r"\S", examples("ci"))]
        name: String,
        #[schema(min_items = 1)]
        scopes: Vec<Scope>,
        /// The first day on which the token no longer works.
        #[schema(
            format = Date,
            pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
            examples("2099-12-31")
        )]
        expires_at: Option<String>,
    }

    /// `POST /users/:user_id/personal_access_tokens`, as form data: scopes are repeated
    /// `scopes[]` fields (a plain `scopes` field is split at commas).
    #[derive(ToSchema)]
    #[schema(as = NewPersonalAccessTokenForm)]
    pub(in crate::rest) struct NewPersonalAccessTokenForm {
        #[schema(pattern = r"\S")]
        name: String,
        #[schema(rename = "scopes[]", min_items = 1)]
        scopes: Vec<Scope>,
        /// The first day on which the token no longer works.
        #[schema(format = Date, pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
        expires_at: Option<String>,
    }

    /// `POST /projects`: a name, a path, or both (a missing path is derived from the name, a
    /// missing name is the path).
    #[derive(ToSchema)]
    #[schema(as = NewProject)]
    pub(in crate::rest) struct NewProjectBody {
        /// Starts with a letter, digit, emoji or `_`; then letters, digits, emoji, `_`, `.`,
        /// `+`, dashes or spaces.
        #[schema(max_length = 255, examples("My project"))]
        name: Option<String>,
        /// Letters, digits, `_`, `-` and `.`; not starting with `-` nor ending in `.git` or
        /// `.atom`; unique in the caller's namespace.
        #[schema(
            pattern = r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$",
            max_length = 255,
            examples("my-project")
        )]
        path: Option<String>,
        description: Option<String>,
    }

    /// `POST /projects/:id/members`: the user by id or by username, and the role.
    #[derive(ToSchema)]
    #[schema(as = NewMember)]
    pub(in crate::rest) struct NewMemberBody {
        user_id: Option<i64>,
        username: Option<String>,
        /// 10 Guest, 20 Reporter, 30 Developer, 40 Maintainer, 50 Owner.
        #[schema(minimum = 10, maximum = 50, multiple_of = 10, examples(30))]
        access_level: i64,
    }

    /// `POST /projects/:id/cluster_agents`.
    #[derive(ToSchema)]
    #[schema(as = NewClusterAgent)]
    pub(in crate::rest) struct NewAgentBody {
        /// A DNS label, unique in the project.
        #[schema(
            pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
            max_length = 63,
            examples("my-agent")
        )]
        name: String,
    }

    /// `POST /projects/:id/cluster_agents/:agent_id/tokens`.
    #[derive(ToSchema)]
    #[schema(as = NewAgentToken)]
    pub(in crate::rest) struct NewAgentTokenBody {
        #[schema(pattern = r"\S", max_length = 255, examples("deploy"))]
        name: String,
        #[schema(max_length = 1024, examples("Used by the deploy pipeline"))]
        description: Option<String>,
        /// When the token stops working (agentreg extension): an ISO 8601 date (its start, UTC)
        /// or an RFC 3339 time, in the future and within `--agent-token-max-lifetime`; required
        /// with `--require-agent-token-expiry`.
        #[schema(examples("2030-01-31", "2030-01-31T12:00:00Z"))]
        expires_at: Option<String>,
    }

    /// `POST` and `DELETE /admin/token`: the value of the token to find or revoke.
    #[derive(ToSchema)]
    #[schema(as = AdminToken)]
    pub(in crate::rest) struct AdminTokenBody {
        /// The token's value: `glagent-...` or `glpat-...`.
        token: String,
    }

    /// `POST /projects/:id/cluster_agents/:agent_id/tokens/:token_id/rotate` (agentreg
    /// extension): every field is optional.
    #[derive(ToSchema)]
    #[schema(as = RotateAgentToken)]
    pub(in crate::rest) struct RotateAgentTokenBody {
        /// The successor's name; the rotated token's when unset.
        #[schema(pattern = r"\S", max_length = 255)]
        name: Option<String>,
        /// The successor's description; the rotated token's when unset.
        #[schema(max_length = 1024)]
        description: Option<String>,
        /// The successor's expiry, as on create. Unset, a successor of a token with an expiry
        /// gets the same lifetime from now.
        expires_at: Option<String>,
        /// How long the rotated token keeps working if the successor is not used: a day by
        /// default, cut to `--max-rotation-overlap`.
        #[schema(minimum = 1, examples(86400))]
        overlap_seconds: Option<i64>,
    }

    /// `POST /projects/:id/cluster_agents/:agent_id/url_configurations`: JWT mode without a
    /// client key (the service generates an Ed25519 key pair), mTLS mode with `client_cert` and
    /// `client_key`.
    #[derive(ToSchema)]
    #[schema(as = NewUrlConfiguration)]
    pub(in crate::rest) struct NewUrlConfigurationBody {
        /// The agent's `grpc://` or `grpcs://` URL, with a host.
        #[schema(
            pattern = r"^grpcs?://",
            max_length = 2048,
            examples("grpcs://agent.example.com:443")
        )]
        url: String,
        /// PEM certificate, or the standard base64 of one (as GitLab's parameter docs have it);
        /// only with `client_key`. Responses give PEM.
        #[schema(max_length = 16384)]
        client_cert: Option<String>,
        /// PEM private key matching `client_cert`, or its base64.
        #[schema(max_length = 16384)]
        client_key: Option<String>,
        /// PEM certificates the agent's server certificate must chain to, or their base64.
        #[schema(max_length = 16384)]
        ca_cert: Option<String>,
        /// The host name to verify in the agent's certificate.
        #[schema(max_length = 2048)]
        tls_host: Option<String>,
    }
}

/// The ways to authenticate.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let header = |name: &str, description: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                name,
                description,
            )))
        };
        components.add_security_scheme(
            "private_token",
            header("PRIVATE-TOKEN", "A personal access token (`glpat-...`)."),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A personal access token in `Authorization: Bearer <token>`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "private_token_query",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "private_token",
                "A personal access token in the query string.",
            ))),
        );
        components.add_security_scheme(
            "kas_jwt",
            header(
                "Gitlab-Kas-Api-Request",
                "The agent server's JWT (HS256, issuer `gitlab-kas`, audience `gitlab`) signed \
                 with the shared secret.",
            ),
        );
        components.add_security_scheme(
            "agent_token",
            header(
                "Gitlab-Agent-Api-Request",
                "An agent token (`glagent-...`).",
            ),
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn document_json() -> serde_json::Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    fn operations(document: &serde_json::Value) -> BTreeSet<(String, String)> {
        let mut operations = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ] {
                if item.get(method).is_some() {
                    operations.insert((method.to_owned(), path.clone()));
                }
            }
        }
        operations
    }

    #[test]
    fn every_served_route_is_documented_and_nothing_else() {
        let served: BTreeSet<(String, String)> = super::super::routes()
            .iter()
            .map(|route| {
                (
                    route.method.as_str().to_ascii_lowercase(),
                    route.path.to_owned(),
                )
            })
            .collect();
        let documented = operations(&document_json());
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let not_served: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "served but not documented: {undocumented:?}"
        );
        assert!(
            not_served.is_empty(),
            "documented but not served: {not_served:?}"
        );
    }

    #[test]
    fn every_reference_resolves() {
        let document = document_json();
        let mut references = Vec::new();
        collect_references(&document, &mut references);
        assert!(!references.is_empty());
        for reference in references {
            let pointer = reference.strip_prefix('#').unwrap();
            assert!(
                document.pointer(pointer).is_some(),
                "dangling reference {reference}"
            );
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let document = document_json();
        let mut ids = BTreeSet::new();
        for item in document["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                let id = operation["operationId"].as_str().unwrap().to_owned();
                assert!(ids.insert(id.clone()), "duplicate operationId {id}");
            }
        }
    }

    #[test]
    fn every_authenticated_operation_documents_401_and_429() {
        let document = document_json();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let public = operation["security"] == json!([{}]);
                let responses = &operation["responses"];
                if !public {
                    for status in ["401", "429"] {
                        assert!(
                            responses.get(status).is_some(),
                            "{method} {path} lacks {status}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn links_name_existing_operations_and_their_parameters() {
        let document = document_json();
        let mut parameters_by_operation = std::collections::BTreeMap::new();
        for item in document["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                let names: BTreeSet<String> = operation["parameters"]
                    .as_array()
                    .map(|parameters| {
                        parameters
                            .iter()
                            .map(|parameter| parameter["name"].as_str().unwrap().to_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                parameters_by_operation.insert(operation["operationId"].to_string(), names);
            }
        }
        let mut n_links = 0;
        for item in document["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                for response in operation["responses"].as_object().unwrap().values() {
                    let Some(links) = response.get("links") else {
                        continue;
                    };
                    for link in links.as_object().unwrap().values() {
                        n_links += 1;
                        let target = &parameters_by_operation[&link["operationId"].to_string()];
                        for name in link["parameters"].as_object().unwrap().keys() {
                            assert!(target.contains(name), "{link} sets an unknown {name}");
                        }
                    }
                }
            }
        }
        assert!(n_links > 0);
    }

    #[test]
    fn optional_entity_keys_are_required_and_nullable() {
        let document = document_json();
        let agent = &document["components"]["schemas"]["ClusterAgent"];
        let required: Vec<&str> = agent["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| key.as_str().unwrap())
            .collect();
        assert!(required.contains(&"created_by_user_id"));
        assert_eq!(agent["additionalProperties"], json!(false));
        assert_eq!(
            agent["properties"]["created_by_user_id"]["type"],
            json!(["integer", "null"])
        );
    }

    fn collect_references(value: &serde_json::Value, references: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(object) => {
                for (key, child) in object {
                    match (key.as_str(), child) {
                        ("$ref", serde_json::Value::String(reference)) => {
                            references.push(reference.clone())
                        }
                        _ => collect_references(child, references),
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    collect_references(item, references);
                }
            }
            serde_json::Value::Null
            | serde_json::Value::Bool(_)
            | serde_json::Value::Number(_)
            | serde_json::Value::String(_) => {}
        }
    }
}
