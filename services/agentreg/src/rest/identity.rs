//! `/version`, `/user`, `/users`, `/users/:id/personal_access_tokens`, `/projects`,
//! `/projects/:id`, `/projects/:id/members`, `/projects/:id/audit_events` and `/audit_events`.

use super::bodies::{
    NewMemberBody, NewPersonalAccessTokenBody, NewPersonalAccessTokenForm, NewProjectBody,
    NewUserBody,
};
use super::dto::{
    AuditEventJson, MemberJson, PersonalAccessTokenJson, ProjectJson, UserJson, VersionJson,
};
use super::extract::{Authenticated, Ids, Params, RequestTarget};
use super::openapi::schemas::{
    AuditEventPage, BadRequest, Conflict, Forbidden, InvalidAttributes, InvalidParameter, NotFound,
    PageQuery, PayloadTooLarge, ProjectPath, ScopeForbidden, TooManyRequests, Unauthorized,
    UnsupportedMediaType, UserPath, WriteForbidden,
};
use super::{ApiError, RestState, paginated};
use agentreg_domain::ids::UserId;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The GitLab version whose agent API this implements, and agentreg's own version.
#[utoipa::path(
    get,
    path = "/api/v4/version",
    operation_id = "get_version",
    tag = "meta",
    responses(
        (status = 200, description = "The versions.", body = VersionJson),
        (status = 401, response = Unauthorized),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn version(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
) -> Result<Response, ApiError> {
    Ok(Json(VersionJson::from(&state.app.version(&caller))).into_response())
}

/// The caller.
#[utoipa::path(
    get,
    path = "/api/v4/user",
    operation_id = "get_current_user",
    tag = "users",
    responses(
        (status = 200, description = "The user the token belongs to.", body = UserJson),
        (status = 401, response = Unauthorized),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn current_user(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
) -> Result<Response, ApiError> {
    Ok(Json(UserJson::new(&caller.user, &target.origin(&state))).into_response())
}

/// Creates a user (administrators only).
#[utoipa::path(
    post,
    path = "/api/v4/users",
    operation_id = "create_user",
    tag = "users",
    request_body(content(
        (NewUserBody = "application/json"),
        (NewUserBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 201, description = "The new user.", body = UserJson,
            links(
                ("CreatePersonalAccessToken" = (
                    operation_id = "create_personal_access_token",
                    parameters(("user_id" = "$response.body#/id"))
                )),
            ),
        ),
        (status = 400, response = InvalidAttributes),
        (status = 401, response = Unauthorized),
        (status = 403, response = WriteForbidden),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn create_user(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
    params: Params,
) -> Result<Response, ApiError> {
    let body = NewUserBody::from_params(&params)?;
    let user = state.app.users().create(&caller, body.into()).await?;
    Ok((
        StatusCode::CREATED,
        Json(UserJson::new(&user, &target.origin(&state))),
    )
        .into_response())
}

/// Creates a personal access token for a user (administrators only).
#[utoipa::path(
    post,
    path = "/api/v4/users/{user_id}/personal_access_tokens",
    operation_id = "create_personal_access_token",
    tag = "users",
    params(UserPath),
    request_body(content(
        (NewPersonalAccessTokenBody = "application/json"),
        (NewPersonalAccessTokenForm = "application/x-www-form-urlencoded"),
    )),
    responses(
        (
            status = 201,
            description = "The token, with its secret shown this once.",
            body = PersonalAccessTokenJson,
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
pub(super) async fn create_personal_access_token(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    ids: Ids,
    params: Params,
) -> Result<Response, ApiError> {
    let user_id = UserId::from_wire(ids.integer("user_id")?);
    let body = NewPersonalAccessTokenBody::from_params(&params)?;
    let created = state
        .app
        .users()
        .create_personal_access_token(&caller, user_id, body.into())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(PersonalAccessTokenJson::new(&created)),
    )
        .into_response())
}

/// Creates a project in the caller's namespace; the caller becomes its Owner.
#[utoipa::path(
    post,
    path = "/api/v4/projects",
    operation_id = "create_project",
    tag = "projects",
    request_body(content(
        (NewProjectBody = "application/json"),
        (NewProjectBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 201, description = "The new project.", body = ProjectJson,
            links(
                ("GetProject" = (
                    operation_id = "get_project",
                    parameters(("id" = "$response.body#/id"))
                )),
                ("AddProjectMember" = (
                    operation_id = "add_project_member",
                    parameters(("id" = "$response.body#/id"))
                )),
                ("ListProjectAuditEvents" = (
                    operation_id = "list_project_audit_events",
                    parameters(("id" = "$response.body#/id"))
                )),
                ("CreateClusterAgent" = (
                    operation_id = "create_cluster_agent",
                    parameters(("id" = "$response.body#/id"))
                )),
                ("ListClusterAgents" = (
                    operation_id = "list_cluster_agents",
                    parameters(("id" = "$response.body#/id"))
                )),
            ),
        ),
        (status = 400, response = InvalidAttributes),
        (status = 401, response = Unauthorized),
        (status = 403, response = ScopeForbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn create_project(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
    params: Params,
) -> Result<Response, ApiError> {
    let body = NewProjectBody::from_params(&params)?;
    let project = state.app.projects().create(&caller, body.into()).await?;
    Ok((
        StatusCode::CREATED,
        Json(ProjectJson::new(&project, &target.origin(&state))),
    )
        .into_response())
}

/// A project the caller can see.
#[utoipa::path(
    get,
    path = "/api/v4/projects/{id}",
    operation_id = "get_project",
    tag = "projects",
    params(ProjectPath),
    responses(
        (status = 200, description = "The project.", body = ProjectJson),
        (status = 400, response = InvalidParameter),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn project(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
    ids: Ids,
    _params: Params,
) -> Result<Response, ApiError> {
    let project = state.app.projects().get(&caller, &ids.project()).await?;
    Ok(Json(ProjectJson::new(&project, &target.origin(&state))).into_response())
}

/// Adds a member (Maintainer and above; only an Owner or an administrator grants Owner).
#[utoipa::path(
    post,
    path = "/api/v4/projects/{id}/members",
    operation_id = "add_project_member",
    tag = "projects",
    params(ProjectPath),
    request_body(content(
        (NewMemberBody = "application/json"),
        (NewMemberBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 201, description = "The new member.", body = MemberJson),
        (status = 400, response = InvalidParameter),
        (status = 401, response = Unauthorized),
        (status = 403, response = WriteForbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn add_member(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
    ids: Ids,
    params: Params,
) -> Result<Response, ApiError> {
    let body = NewMemberBody::from_params(&params)?;
    let member = state
        .app
        .projects()
        .add_member(&caller, &ids.project(), body.into())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(MemberJson::new(&member, &target.origin(&state))),
    )
        .into_response())
}

/// The project's audit events, newest first (Maintainer and above).
#[utoipa::path(
    get,
    path = "/api/v4/projects/{id}/audit_events",
    operation_id = "list_project_audit_events",
    tag = "projects",
    params(ProjectPath, PageQuery),
    responses(
        (status = 200, response = AuditEventPage),
        (status = 400, response = InvalidParameter),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn audit_events(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
    ids: Ids,
    params: Params,
) -> Result<Response, ApiError> {
    let pagination = params.pagination()?;
    let (events, info) = state
        .app
        .audit_events()
        .project(&caller, &ids.project(), pagination)
        .await?;
    let body: Vec<AuditEventJson> = events.iter().map(AuditEventJson::from).collect();
    Ok(paginated(&state, &target, &ids, &params, &info, body))
}

/// Instance-wide audit events (failed authentications), newest first (administrators only).
#[utoipa::path(
    get,
    path = "/api/v4/audit_events",
    operation_id = "list_instance_audit_events",
    tag = "projects",
    params(PageQuery),
    responses(
        (status = 200, response = AuditEventPage),
        (status = 400, response = InvalidParameter),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn instance_audit_events(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
    ids: Ids,
    params: Params,
) -> Result<Response, ApiError> {
    let pagination = params.pagination()?;
    let (events, info) = state
        .app
        .audit_events()
        .instance(&caller, pagination)
        .await?;
    let body: Vec<AuditEventJson> = events.iter().map(AuditEventJson::from).collect();
    Ok(paginated(&state, &target, &ids, &params, &info, body))
}
