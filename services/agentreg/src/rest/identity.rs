//! `/version`, `/user`, `/users`, `/users/:id/personal_access_tokens`, `/projects`,
//! `/projects/:id`, `/projects/:id/members` and `/projects/:id/audit_events`.

use super::dto::{self, AuditEventJson, MemberJson, ProjectJson, UserJson};
use super::extract::{Authenticated, Ids, Params, RequestTarget};
use super::{ApiError, RestState, paginated};
use crate::app::identity::{
    NewMemberInput, NewPersonalAccessTokenInput, NewProjectInput, NewUserInput,
};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub(super) async fn version(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
) -> Result<Response, ApiError> {
    Ok(Json(dto::version(&state.app.version(&caller))).into_response())
}

pub(super) async fn current_user(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
) -> Result<Response, ApiError> {
    Ok(Json(UserJson::new(&caller.user, &target.origin(&state))).into_response())
}

pub(super) async fn create_user(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
    params: Params,
) -> Result<Response, ApiError> {
    let input = NewUserInput {
        username: params.required_text("username")?,
        name: params.required_text("name")?,
        email: params.required_text("email")?,
    };
    let user = state.app.create_user(&caller, input).await?;
    Ok((
        StatusCode::CREATED,
        Json(UserJson::new(&user, &target.origin(&state))),
    )
        .into_response())
}

pub(super) async fn create_personal_access_token(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    ids: Ids,
    params: Params,
) -> Result<Response, ApiError> {
    let user_id = ids.integer("user_id")?;
    let input = NewPersonalAccessTokenInput {
        name: params.required_text("name")?,
        scopes: params.text_list("scopes")?,
        expires_at: params.optional_text("expires_at")?,
    };
    let created = state
        .app
        .create_personal_access_token(&caller, user_id, input)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(dto::personal_access_token(&created)),
    )
        .into_response())
}

pub(super) async fn create_project(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
    params: Params,
) -> Result<Response, ApiError> {
    let input = NewProjectInput {
        name: params.optional_text("name")?,
        path: params.optional_text("path")?,
        description: params.optional_text("description")?,
    };
    let project = state.app.create_project(&caller, input).await?;
    Ok((
        StatusCode::CREATED,
        Json(ProjectJson::new(&project, &target.origin(&state))),
    )
        .into_response())
}

pub(super) async fn project(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
    ids: Ids,
    _params: Params,
) -> Result<Response, ApiError> {
    let project = state.app.project(&caller, ids.project()).await?;
    Ok(Json(ProjectJson::new(&project, &target.origin(&state))).into_response())
}

pub(super) async fn add_member(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
    ids: Ids,
    params: Params,
) -> Result<Response, ApiError> {
    let input = NewMemberInput {
        user_id: params.integer("user_id")?,
        username: params.optional_text("username")?,
        access_level: params.integer("access_level")?,
    };
    let member = state.app.add_member(&caller, ids.project(), input).await?;
    Ok((
        StatusCode::CREATED,
        Json(MemberJson::new(&member, &target.origin(&state))),
    )
        .into_response())
}

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
        .audit_events(&caller, ids.project(), pagination)
        .await?;
    let body: Vec<AuditEventJson> = events.iter().map(AuditEventJson::from).collect();
    Ok(paginated(&state, &target, &ids, &params, &info, body))
}

pub(super) async fn instance_audit_events(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
    target: RequestTarget,
    ids: Ids,
    params: Params,
) -> Result<Response, ApiError> {
    let pagination = params.pagination()?;
    let (events, info) = state.app.instance_audit_events(&caller, pagination).await?;
    let body: Vec<AuditEventJson> = events.iter().map(AuditEventJson::from).collect();
    Ok(paginated(&state, &target, &ids, &params, &info, body))
}
