//! `MetaService`, `UserService` and `ProjectService`.

use super::pb::meta_service_server::MetaService;
use super::pb::project_service_server::ProjectService;
use super::pb::user_service_server::UserService;
use super::{caller, id, pb, status, timestamp};
use crate::app::identity::{
    NewMemberInput, NewPersonalAccessTokenInput, NewProjectInput, NewUserInput,
};
use crate::app::{App, Intent};
use agentreg_domain::access::Scope;
use agentreg_domain::entities::{Project, User};
use agentreg_domain::ids::{ProjectRef, UserId};
use secrecy::ExposeSecret;
use tonic::{Request, Response, Status};

pub struct MetaGrpc {
    pub app: App,
}

pub struct UserGrpc {
    pub app: App,
}

pub struct ProjectGrpc {
    pub app: App,
}

#[tonic::async_trait]
impl MetaService for MetaGrpc {
    async fn get_version(
        &self,
        request: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::Version>, Status> {
        let caller = caller(&self.app, &request, Intent::Read).await?;
        let info = self.app.version(&caller);
        Ok(Response::new(pb::Version {
            version: info.version.to_owned(),
            revision: info.revision.to_owned(),
        }))
    }

    async fn get_current_user(
        &self,
        request: Request<pb::GetCurrentUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&self.app, &request, Intent::Read).await?;
        Ok(Response::new(user(&caller.user)))
    }
}

#[tonic::async_trait]
impl UserService for UserGrpc {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&self.app, &request, Intent::Write).await?;
        let request = request.into_inner();
        let input = NewUserInput {
            username: request.username,
            name: request.name,
            email: request.email,
        };
        let created = self
            .app
            .users()
            .create(&caller, input)
            .await
            .map_err(status)?;
        Ok(Response::new(user(&created)))
    }

    async fn create_personal_access_token(
        &self,
        request: Request<pb::CreatePersonalAccessTokenRequest>,
    ) -> Result<Response<pb::PersonalAccessToken>, Status> {
        let caller = caller(&self.app, &request, Intent::Write).await?;
        let request = request.into_inner();
        let input = NewPersonalAccessTokenInput {
            name: request.name,
            scopes: (!request.scopes.is_empty()).then_some(request.scopes),
            expires_at: request.expires_at,
        };
        let created = self
            .app
            .users()
            .create_personal_access_token(&caller, UserId::from_wire(request.user_id), input)
            .await
            .map_err(status)?;
        let token = &created.token;
        Ok(Response::new(pb::PersonalAccessToken {
            id: id(token.id),
            name: token.name.clone(),
            revoked: token.revoked,
            created_at: Some(timestamp(token.created_at_ms)),
            scopes: Scope::names(&token.scopes),
            user_id: id(token.user_id),
            active: !token.revoked,
            expires_at: token.expires_at.map(|expires_at| expires_at.to_string()),
            token: created.plaintext.expose_secret().to_owned(),
        }))
    }
}

#[tonic::async_trait]
impl ProjectService for ProjectGrpc {
    async fn create_project(
        &self,
        request: Request<pb::CreateProjectRequest>,
    ) -> Result<Response<pb::Project>, Status> {
        let caller = caller(&self.app, &request, Intent::Write).await?;
        let request = request.into_inner();
        let input = NewProjectInput {
            name: request.name,
            path: request.path,
            description: request.description,
        };
        let created = self
            .app
            .projects()
            .create(&caller, input)
            .await
            .map_err(status)?;
        Ok(Response::new(project(&created)))
    }

    async fn get_project(
        &self,
        request: Request<pb::GetProjectRequest>,
    ) -> Result<Response<pb::Project>, Status> {
        let caller = caller(&self.app, &request, Intent::Read).await?;
        let request = request.into_inner();
        let found = self
            .app
            .projects()
            .get(&caller, &ProjectRef::parse(&request.project))
            .await
            .map_err(status)?;
        Ok(Response::new(project(&found)))
    }

    async fn add_project_member(
        &self,
        request: Request<pb::AddProjectMemberRequest>,
    ) -> Result<Response<pb::ProjectMember>, Status> {
        let caller = caller(&self.app, &request, Intent::Write).await?;
        let request = request.into_inner();
        let input = NewMemberInput {
            user_id: request.user_id,
            username: None,
            access_level: request.access_level,
        };
        let member = self
            .app
            .projects()
            .add_member(&caller, &ProjectRef::parse(&request.project), input)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ProjectMember {
            id: id(member.user.id),
            username: member.user.username.clone(),
            name: member.user.name.clone(),
            state: "active".to_owned(),
            access_level: member.access_level.value(),
            created_at: Some(timestamp(member.created_at_ms)),
        }))
    }
}

pub(super) fn project(project: &Project) -> pb::Project {
    pb::Project {
        id: id(project.id),
        description: project.description.clone(),
        name: project.name.clone(),
        name_with_namespace: project.name_with_namespace(),
        path: project.path.clone(),
        path_with_namespace: project.path_with_namespace(),
        created_at: Some(timestamp(project.created_at_ms)),
    }
}

fn user(user: &User) -> pb::User {
    pb::User {
        id: id(user.id),
        username: user.username.clone(),
        name: user.name.clone(),
        email: user.email.clone(),
        state: "active".to_owned(),
        is_admin: user.is_admin,
        created_at: Some(timestamp(user.created_at_ms)),
    }
}
