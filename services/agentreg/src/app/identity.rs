//! Users, personal access tokens, projects and members: the identity operations the agent API
//! needs, with GitLab's parameters, permissions and messages.

use super::audit::{AuditEntry, instance_event};
use super::refusals::{Conflict, ParameterError};
use super::{App, Caller, Error, ProjectAccess, author, now_ms};
use agentreg_domain::access::{AccessLevel, ExpiryDate, Scope};
use agentreg_domain::entities::{Member, PersonalAccessToken, Project, User};
use agentreg_domain::ids::{ProjectRef, UserId};
use agentreg_domain::names::{ProjectDescription, ProjectNaming, UserIdentity};
use agentreg_domain::tokens::{TokenKind, generate_token, keyed_personal_access_token_handle};
use agentreg_domain::validation::ValidationErrors;
use agentreg_storage::identity::{
    AddMemberError, CreatePersonalAccessTokenError, CreateProjectError, CreateUserError,
};
use agentreg_storage::port::NewPersonalAccessToken;
use secrecy::{ExposeSecret, SecretString};

/// The version this service reports as GitLab's, so that clients enable the agent API.
pub const GITLAB_COMPATIBLE_VERSION: &str = "18.0.0";

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: &'static str,
    pub revision: &'static str,
}

/// `POST /users` parameters as sent.
#[derive(Debug, Default)]
pub struct NewUserInput {
    pub username: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
}

/// `POST /users/:id/personal_access_tokens` parameters as sent.
#[derive(Debug, Default)]
pub struct NewPersonalAccessTokenInput {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub expires_at: Option<String>,
}

/// A personal access token just created, with its secret shown this once.
pub struct CreatedPersonalAccessToken {
    pub token: PersonalAccessToken,
    pub plaintext: SecretString,
}

/// `POST /projects` parameters as sent.
#[derive(Debug, Default)]
pub struct NewProjectInput {
    pub name: Option<String>,
    pub path: Option<String>,
    pub description: Option<String>,
}

/// `POST /projects/:id/members` parameters as sent.
#[derive(Debug, Default)]
pub struct NewMemberInput {
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub access_level: Option<i64>,
}

impl App {
    pub fn version(&self, _caller: &Caller) -> VersionInfo {
        VersionInfo {
            version: GITLAB_COMPATIBLE_VERSION,
            revision: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// Users and their personal access tokens: `app.users()`.
#[derive(Clone, Copy)]
pub struct Users<'a> {
    app: &'a App,
}

impl App {
    pub fn users(&self) -> Users<'_> {
        Users { app: self }
    }
}

impl Users<'_> {
    /// Creates a user (administrators only).
    pub async fn create(&self, caller: &Caller, input: NewUserInput) -> Result<User, Error> {
        let missing: Vec<&'static str> = [
            ("email", input.email.is_none()),
            ("name", input.name.is_none()),
            ("username", input.username.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, absent)| absent.then_some(name))
        .collect();
        if !missing.is_empty() {
            return Err(Error::InvalidParameter(ParameterError::Missing(missing)));
        }
        if !caller.user.is_admin {
            return Err(Error::Forbidden);
        }
        let identity = UserIdentity::parse(
            input.username.as_deref().unwrap_or_default(),
            input.name.as_deref().unwrap_or_default(),
            input.email.as_deref().unwrap_or_default(),
        )
        .map_err(Error::InvalidAttributes)?;
        let now = now_ms();
        let created = self.app.storage().create_user(identity, false, now).await;
        match created {
            Ok(user) => {
                let entry = AuditEntry {
                    event_name: "user_created",
                    message: format!("Created user {}", user.username),
                    entity_type: "User",
                    entity_id: user.id.get(),
                    target_details: &user.username,
                };
                self.app
                    .record_instance_event(instance_event(author(caller), entry))
                    .await;
                Ok(user)
            }
            Err(CreateUserError::UsernameTaken) => Err(Error::Conflict(Conflict::UsernameTaken)),
            Err(CreateUserError::EmailTaken) => Err(Error::Conflict(Conflict::EmailTaken)),
            Err(CreateUserError::Store(error)) => Err(error.into()),
        }
    }

    /// Creates a personal access token for a user (administrators only).
    pub async fn create_personal_access_token(
        &self,
        caller: &Caller,
        user_id: UserId,
        input: NewPersonalAccessTokenInput,
    ) -> Result<CreatedPersonalAccessToken, Error> {
        let (Some(name), Some(scopes)) = (input.name.clone(), input.scopes.clone()) else {
            let missing: Vec<&'static str> = [
                input.name.is_none().then_some("name"),
                input.scopes.is_none().then_some("scopes"),
            ]
            .into_iter()
            .flatten()
            .collect();
            return Err(Error::InvalidParameter(ParameterError::Missing(missing)));
        };
        let parsed_scopes: Result<Vec<Scope>, _> = scopes.iter().map(|s| Scope::parse(s)).collect();
        let Ok(parsed_scopes) = parsed_scopes else {
            return Err(Error::InvalidParameter(ParameterError::UnknownValue(
                "scopes",
            )));
        };
        let Ok(expires_at) = input
            .expires_at
            .as_deref()
            .map(ExpiryDate::parse)
            .transpose()
        else {
            return Err(Error::invalid("expires_at"));
        };
        if !caller.user.is_admin {
            return Err(Error::Forbidden);
        }
        let mut validator = agentreg_domain::validation::Validator::new();
        if name.trim().is_empty() {
            validator.fail("name", "can't be blank");
        }
        if parsed_scopes.is_empty() {
            validator.fail("scopes", "can't be blank");
        }
        // A token that expires before it is created could never be used; refuse it rather than
        // report it as active.
        let today = time::OffsetDateTime::now_utc().date();
        if let Some(expires_at) = expires_at
            && expires_at.date() < today
        {
            validator.fail("expires_at", "cannot be in the past");
        }
        validator.finish()?;

        let generated = generate_token(TokenKind::PersonalAccess, &mut rand::rng());
        let plaintext = generated.plaintext;
        let secret_hash = self.app.hash_secret(&plaintext).await?;
        let now = now_ms();
        let handle = generated.handle;
        let new = NewPersonalAccessToken {
            user_id,
            name,
            scopes: parsed_scopes,
            expires_at,
            handle,
            secret_hash,
        };
        let created = self
            .app
            .storage()
            .create_personal_access_token(new, now)
            .await;
        match created {
            Ok(token) => {
                let entry = AuditEntry {
                    event_name: "personal_access_token_created",
                    message: format!(
                        "Created personal access token {} for user {}",
                        token.name,
                        user_id.get()
                    ),
                    entity_type: "PersonalAccessToken",
                    entity_id: token.id.get(),
                    target_details: &token.name,
                };
                self.app
                    .record_instance_event(instance_event(author(caller), entry))
                    .await;
                Ok(CreatedPersonalAccessToken { token, plaintext })
            }
            Err(CreatePersonalAccessTokenError::UserNotFound) => Err(Error::UserNotFound),
            Err(CreatePersonalAccessTokenError::Store(error)) => Err(error.into()),
        }
    }
}

/// Projects and their members: `app.projects()`.
#[derive(Clone, Copy)]
pub struct Projects<'a> {
    app: &'a App,
}

impl App {
    pub fn projects(&self) -> Projects<'_> {
        Projects { app: self }
    }
}

impl Projects<'_> {
    /// Creates a project in the caller's namespace; the caller becomes its Owner.
    pub async fn create(&self, caller: &Caller, input: NewProjectInput) -> Result<Project, Error> {
        if input.name.is_none() && input.path.is_none() {
            return Err(Error::InvalidParameter(ParameterError::AtLeastOneOf([
                "name", "path",
            ])));
        }
        let naming = ProjectNaming::parse(input.name.as_deref(), input.path.as_deref())
            .map_err(Error::InvalidAttributes)?;
        let description = match input.description.as_deref() {
            Some(description) => Some(
                ProjectDescription::parse(description)
                    .map_err(Error::InvalidAttributes)?
                    .as_str()
                    .to_owned(),
            ),
            None => None,
        };
        let owner_id = caller.user.id;
        let now = now_ms();
        let created = self
            .app
            .storage()
            .create_project(owner_id, naming, description, now)
            .await;
        match created {
            Ok(project) => Ok(project),
            Err(CreateProjectError::PathTaken) => Err(Error::InvalidAttributes(
                ValidationErrors::single("path", "has already been taken"),
            )),
            Err(CreateProjectError::Store(error)) => Err(error.into()),
        }
    }

    pub async fn get(&self, caller: &Caller, project_ref: &ProjectRef) -> Result<Project, Error> {
        Ok(self.app.project_access(caller, project_ref).await?.project)
    }

    /// Adds a member (Maintainer and above; only an Owner or admin may grant Owner).
    pub async fn add_member(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        input: NewMemberInput,
    ) -> Result<Member, Error> {
        let Some(level) = input.access_level else {
            return Err(Error::missing("access_level"));
        };
        let Ok(level) = AccessLevel::from_value(level) else {
            return Err(Error::InvalidParameter(ParameterError::UnknownValue(
                "access_level",
            )));
        };
        if input.user_id.is_none() && input.username.is_none() {
            return Err(Error::InvalidParameter(ParameterError::AtLeastOneOf([
                "user_id", "username",
            ])));
        }
        let ProjectAccess { project, role, .. } =
            self.app.project_access(caller, project_ref).await?;
        if !role.can_admin_members() {
            return Err(Error::Forbidden);
        }
        let grants_owner = level == AccessLevel::Owner;
        let may_grant_owner = matches!(
            role,
            agentreg_domain::access::ProjectRole::Admin
                | agentreg_domain::access::ProjectRole::Member(AccessLevel::Owner)
        );
        if grants_owner && !may_grant_owner {
            return Err(Error::Forbidden);
        }
        let now = now_ms();
        let user_id = match (input.user_id, input.username) {
            (Some(id), _) => Some(UserId::from_wire(id)),
            (None, Some(username)) => self
                .app
                .storage()
                .user_by_username(&username)
                .await?
                .map(|user| user.id),
            (None, None) => None,
        };
        let added = match user_id {
            Some(user_id) => {
                self.app
                    .storage()
                    .add_member(project.id, user_id, level, now)
                    .await
            }
            None => Err(AddMemberError::UserNotFound),
        };
        match added {
            Ok(member) => Ok(member),
            Err(AddMemberError::UserNotFound) => Err(Error::UserNotFound),
            Err(AddMemberError::AlreadyMember) => Err(Error::Conflict(Conflict::AlreadyMember)),
            Err(AddMemberError::Store(error)) => Err(error.into()),
        }
    }
}

impl App {
    /// Creates the administrator on first start: user `root` named `Administrator`, with an
    /// `api` token. Returns the token, or `None` if users already exist.
    pub async fn bootstrap_root(
        &self,
        token: Option<SecretString>,
    ) -> Result<Option<SecretString>, Error> {
        if self.storage().has_users().await? {
            return Ok(None);
        }
        let plaintext = token.unwrap_or_else(|| {
            generate_token(TokenKind::PersonalAccess, &mut rand::rng()).plaintext
        });
        let handle = keyed_personal_access_token_handle(
            plaintext.expose_secret(),
            self.inner.sealer.handle_key(),
        );
        let secret_hash = self.hash_secret(&plaintext).await?;
        let now = now_ms();
        let identity = UserIdentity::parse("root", "Administrator", "admin@example.com")?;
        let root = match self.storage().create_user(identity, true, now).await {
            Ok(root) => root,
            // Another replica on the same database bootstrapped first.
            Err(CreateUserError::UsernameTaken | CreateUserError::EmailTaken) => return Ok(None),
            Err(CreateUserError::Store(error)) => return Err(error.into()),
        };
        let new = NewPersonalAccessToken {
            user_id: root.id,
            name: "initial root token".to_owned(),
            scopes: vec![Scope::Api],
            expires_at: None,
            handle,
            secret_hash,
        };
        self.storage()
            .create_personal_access_token(new, now)
            .await
            .map_err(|error| Error::internal("creating the root token failed", error))?;
        Ok(Some(plaintext))
    }
}
