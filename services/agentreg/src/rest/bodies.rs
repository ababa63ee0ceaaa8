//! The request bodies of the REST edge. Each handler builds its body from [`Params`] (the query
//! string merged with a JSON or form body, with Grape's coercions) and hands it to the app; the
//! OpenAPI document describes the same types, so the two cannot drift. A value of the wrong type
//! is refused here; absent and blank values stay `None` or empty, because the app reports them
//! in GitLab's order of checks. The schema attributes state the rules the service checks, so a
//! `required` field is one whose absence gets a `400`.

use super::extract::Params;
use crate::app::Error;
use crate::app::agent_tokens::{NewAgentTokenInput, RotateAgentTokenInput};
use crate::app::identity::{
    NewMemberInput, NewPersonalAccessTokenInput, NewProjectInput, NewUserInput,
};
use crate::app::url_configs::NewUrlConfigurationInput;
use agentreg_domain::access::Scope;
use secrecy::SecretString;
use std::borrow::Cow;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Array, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// `POST /users`.
#[derive(ToSchema)]
#[schema(as = NewUser)]
pub(super) struct NewUserBody {
    /// Letters, digits, `_`, `-` and `.`; not starting with `-` nor ending in `.git` or
    /// `.atom`; unique.
    #[schema(
        required = true,
        value_type = String,
        pattern = r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$",
        max_length = 255,
        examples("alice")
    )]
    username: Option<String>,
    #[schema(
        required = true,
        value_type = String,
        pattern = r"\S",
        max_length = 255,
        examples("Alice Liddell")
    )]
    name: Option<String>,
    /// Unique.
    #[schema(
        required = true,
        value_type = String,
        pattern = r"^[^@\s]+@[^@\s]+$",
        max_length = 255,
        examples("alice@example.com")
    )]
    email: Option<String>,
}

/// `POST /users/:user_id/personal_access_tokens`, as JSON.
#[derive(ToSchema)]
#[schema(as = NewPersonalAccessToken)]
pub(super) struct NewPersonalAccessTokenBody {
    #[schema(required = true, value_type = String, pattern = r"\S", examples("ci"))]
    name: Option<String>,
    #[schema(required = true, schema_with = scope_list)]
    scopes: Option<Vec<String>>,
    /// The first day on which the token no longer works.
    #[schema(
        value_type = Option<String>,
        format = Date,
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
        examples("2099-12-31")
    )]
    expires_at: Option<String>,
}

/// `POST /users/:user_id/personal_access_tokens` as form data: [`NewPersonalAccessTokenBody`]
/// with the scopes as repeated `scopes[]` fields (a plain `scopes` field is split at commas).
/// Only the document names it; its schema is derived from the body's, so the two cannot drift.
pub(super) enum NewPersonalAccessTokenForm {}

/// `POST /projects`: a name, a path, or both (a missing path is derived from the name, a
/// missing name is the path).
#[derive(ToSchema)]
#[schema(as = NewProject)]
pub(super) struct NewProjectBody {
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
pub(super) struct NewMemberBody {
    user_id: Option<i64>,
    username: Option<String>,
    /// 10 Guest, 20 Reporter, 30 Developer, 40 Maintainer, 50 Owner.
    #[schema(
        required = true,
        value_type = i64,
        minimum = 10,
        maximum = 50,
        multiple_of = 10,
        examples(30)
    )]
    access_level: Option<i64>,
}

/// `POST /projects/:id/cluster_agents`.
#[derive(ToSchema)]
#[schema(as = NewClusterAgent)]
pub(super) struct NewAgentBody {
    /// A DNS label, unique in the project.
    #[schema(
        required = true,
        value_type = String,
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length = 63,
        examples("my-agent")
    )]
    name: Option<String>,
}

/// `POST /projects/:id/cluster_agents/:agent_id/tokens`.
#[derive(ToSchema)]
#[schema(as = NewAgentToken)]
pub(super) struct NewAgentTokenBody {
    #[schema(
        required = true,
        value_type = String,
        pattern = r"\S",
        max_length = 255,
        examples("deploy")
    )]
    name: Option<String>,
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
pub(super) struct AdminTokenBody {
    /// The token's value: `glagent-...` or `glpat-...`.
    #[schema(required = true, value_type = String)]
    token: Option<SecretString>,
}

/// `POST /projects/:id/cluster_agents/:agent_id/tokens/:token_id/rotate` (agentreg
/// extension): every field is optional.
#[derive(ToSchema)]
#[schema(as = RotateAgentToken)]
pub(super) struct RotateAgentTokenBody {
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
pub(super) struct NewUrlConfigurationBody {
    /// The agent's `grpc://` or `grpcs://` URL, with a host.
    #[schema(
        required = true,
        value_type = String,
        pattern = r"^grpcs?://",
        max_length = 2048,
        examples("grpcs://agent.example.com:443")
    )]
    url: Option<String>,
    /// PEM certificate, or the standard base64 of one (as GitLab's parameter docs have it);
    /// only with `client_key`. Responses give PEM.
    #[schema(max_length = 16384)]
    client_cert: Option<String>,
    /// PEM private key matching `client_cert`, or its base64.
    #[schema(value_type = Option<String>, max_length = 16384)]
    client_key: Option<SecretString>,
    /// PEM certificates the agent's server certificate must chain to, or their base64.
    #[schema(max_length = 16384)]
    ca_cert: Option<String>,
    /// The host name to verify in the agent's certificate.
    #[schema(max_length = 2048)]
    tls_host: Option<String>,
}

// Each `from_params` reads the fields in the order GitLab checks them, so that of two bad
// values the same one is reported.

impl NewUserBody {
    pub(super) fn from_params(params: &Params) -> Result<NewUserBody, Error> {
        Ok(NewUserBody {
            username: params.required_text("username")?,
            name: params.required_text("name")?,
            email: params.required_text("email")?,
        })
    }
}

impl From<NewUserBody> for NewUserInput {
    fn from(body: NewUserBody) -> NewUserInput {
        NewUserInput {
            username: body.username,
            name: body.name,
            email: body.email,
        }
    }
}

impl NewPersonalAccessTokenBody {
    pub(super) fn from_params(params: &Params) -> Result<NewPersonalAccessTokenBody, Error> {
        Ok(NewPersonalAccessTokenBody {
            name: params.required_text("name")?,
            scopes: params.text_list("scopes")?,
            expires_at: params.optional_text("expires_at")?,
        })
    }
}

impl From<NewPersonalAccessTokenBody> for NewPersonalAccessTokenInput {
    fn from(body: NewPersonalAccessTokenBody) -> NewPersonalAccessTokenInput {
        NewPersonalAccessTokenInput {
            name: body.name,
            scopes: body.scopes,
            expires_at: body.expires_at,
        }
    }
}

impl PartialSchema for NewPersonalAccessTokenForm {
    fn schema() -> RefOr<Schema> {
        let mut schema = NewPersonalAccessTokenBody::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.description = Some(
                "`POST /users/:user_id/personal_access_tokens`, as form data: scopes are \
                 repeated\n`scopes[]` fields (a plain `scopes` field is split at commas)."
                    .to_owned(),
            );
            if let Some(scopes) = object.properties.shift_remove("scopes") {
                object.properties.insert("scopes[]".to_owned(), scopes);
            }
            for name in &mut object.required {
                if name == "scopes" {
                    "scopes[]".clone_into(name);
                }
            }
        }
        schema
    }
}

impl ToSchema for NewPersonalAccessTokenForm {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("NewPersonalAccessTokenForm")
    }
}

impl NewProjectBody {
    pub(super) fn from_params(params: &Params) -> Result<NewProjectBody, Error> {
        Ok(NewProjectBody {
            name: params.optional_text("name")?,
            path: params.optional_text("path")?,
            description: params.optional_text("description")?,
        })
    }
}

impl From<NewProjectBody> for NewProjectInput {
    fn from(body: NewProjectBody) -> NewProjectInput {
        NewProjectInput {
            name: body.name,
            path: body.path,
            description: body.description,
        }
    }
}

impl NewMemberBody {
    pub(super) fn from_params(params: &Params) -> Result<NewMemberBody, Error> {
        Ok(NewMemberBody {
            user_id: params.integer("user_id")?,
            username: params.optional_text("username")?,
            access_level: params.integer("access_level")?,
        })
    }
}

impl From<NewMemberBody> for NewMemberInput {
    fn from(body: NewMemberBody) -> NewMemberInput {
        NewMemberInput {
            user_id: body.user_id,
            username: body.username,
            access_level: body.access_level,
        }
    }
}

impl NewAgentBody {
    pub(super) fn from_params(params: &Params) -> Result<NewAgentBody, Error> {
        Ok(NewAgentBody {
            name: params.required_text("name")?,
        })
    }

    /// The name as sent; `None` when absent.
    pub(super) fn into_name(self) -> Option<String> {
        self.name
    }
}

impl NewAgentTokenBody {
    pub(super) fn from_params(params: &Params) -> Result<NewAgentTokenBody, Error> {
        Ok(NewAgentTokenBody {
            name: params.required_text("name")?,
            description: params.optional_text("description")?,
            expires_at: params.optional_text("expires_at")?,
        })
    }
}

impl From<NewAgentTokenBody> for NewAgentTokenInput {
    fn from(body: NewAgentTokenBody) -> NewAgentTokenInput {
        NewAgentTokenInput {
            name: body.name,
            description: body.description,
            expires_at: body.expires_at,
        }
    }
}

impl AdminTokenBody {
    pub(super) fn from_params(params: &Params) -> Result<AdminTokenBody, Error> {
        Ok(AdminTokenBody {
            token: params.optional_text("token")?.map(SecretString::from),
        })
    }

    /// The token as sent; `None` when absent.
    pub(super) fn into_token(self) -> Option<SecretString> {
        self.token
    }
}

impl RotateAgentTokenBody {
    pub(super) fn from_params(params: &Params) -> Result<RotateAgentTokenBody, Error> {
        Ok(RotateAgentTokenBody {
            name: params.optional_text("name")?,
            description: params.optional_text("description")?,
            expires_at: params.optional_text("expires_at")?,
            overlap_seconds: params.integer("overlap_seconds")?,
        })
    }

    /// The app's input, with the `Idempotency-Key` header's value.
    pub(super) fn into_input(self, idempotency_key: Option<String>) -> RotateAgentTokenInput {
        RotateAgentTokenInput {
            idempotency_key,
            name: self.name,
            description: self.description,
            expires_at: self.expires_at,
            overlap_seconds: self.overlap_seconds,
        }
    }
}

impl NewUrlConfigurationBody {
    pub(super) fn from_params(params: &Params) -> Result<NewUrlConfigurationBody, Error> {
        Ok(NewUrlConfigurationBody {
            url: params.required_text("url")?,
            client_cert: params.optional_text("client_cert")?,
            client_key: params.optional_text("client_key")?.map(SecretString::from),
            ca_cert: params.optional_text("ca_cert")?,
            tls_host: params.optional_text("tls_host")?,
        })
    }
}

impl From<NewUrlConfigurationBody> for NewUrlConfigurationInput {
    fn from(body: NewUrlConfigurationBody) -> NewUrlConfigurationInput {
        NewUrlConfigurationInput {
            url: body.url,
            client_cert: body.client_cert,
            client_key: body.client_key,
            ca_cert: body.ca_cert,
            tls_host: body.tls_host,
        }
    }
}

/// `scopes`: one or more of the scope names the service knows.
fn scope_list() -> Array {
    let scope = ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("A personal access token's scope."))
        .enum_values(Some(Scope::ALL.map(Scope::as_str)));
    ArrayBuilder::new().items(scope).min_items(Some(1)).build()
}
