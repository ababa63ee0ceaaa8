//! Users, personal access tokens, projects and project members.

use crate::audit::{Audit, audit_entry};
use crate::hashing::SecretHash;
use crate::port::{NewPersonalAccessToken, PersonalAccessTokenCredential};
use crate::records::{encode, v1};
use crate::schema::{self, IdKind, folded_key, id_key, pair_key};
use crate::{Store, StoreError, abort, decode, decode_in_tx, engine, finish_tx};
use agentreg_domain::access::AccessLevel;
use agentreg_domain::entities::{Member, PersonalAccessToken, Project, User};
use agentreg_domain::ids::{PersonalAccessTokenId, ProjectId, UserId};
use agentreg_domain::names::{ProjectNaming, UserIdentity};
use agentreg_domain::tokens::TokenHandle;
use sled::Transactional;

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("username has already been taken")]
    UsernameTaken,
    #[error("email has already been taken")]
    EmailTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum CreatePersonalAccessTokenError {
    #[error("user not found")]
    UserNotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum CreateProjectError {
    #[error("path has already been taken")]
    PathTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum AddMemberError {
    #[error("user not found")]
    UserNotFound,
    #[error("member already exists")]
    AlreadyMember,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Whether any user exists; none means this is a first start.
    pub fn has_users(&self) -> Result<bool, StoreError> {
        Ok(!self.trees.users.is_empty())
    }

    pub fn create_user(
        &self,
        identity: &UserIdentity,
        is_admin: bool,
        now_ms: i64,
    ) -> Result<User, CreateUserError> {
        let id = self.next_id(IdKind::User)?;
        let record = v1::User {
            username: identity.username().to_owned(),
            name: identity.name().to_owned(),
            email: identity.email().to_owned(),
            is_admin,
            created_at_ms: now_ms,
        };
        let encoded = encode(&record);
        let username_key = folded_key(identity.username());
        let email_key = folded_key(identity.email());
        let writing = self.writing();
        let trees = &self.trees;
        finish_tx(
            (&trees.users, &trees.usernames, &trees.user_emails).transaction(
                |(users, usernames, emails)| {
                    if usernames.get(&username_key)?.is_some() {
                        return Err(abort(CreateUserError::UsernameTaken));
                    }
                    if emails.get(&email_key)?.is_some() {
                        return Err(abort(CreateUserError::EmailTaken));
                    }
                    usernames.insert(username_key.as_slice(), &id_key(id))?;
                    emails.insert(email_key.as_slice(), &id_key(id))?;
                    users.insert(&id_key(id), encoded.as_slice())?;
                    Ok(())
                },
            ),
        )?;
        self.commit(writing)?;
        Ok(user_from_record(id, record))
    }

    pub fn user(&self, user_id: u64) -> Result<Option<User>, StoreError> {
        let Some(bytes) = self.trees.users.get(id_key(user_id)).map_err(engine)? else {
            return Ok(None);
        };
        let record: v1::User = decode(schema::USERS, &bytes)?;
        Ok(Some(user_from_record(user_id, record)))
    }

    /// Finds a user by username, case-insensitively.
    pub fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        let Some(id_bytes) = self
            .trees
            .usernames
            .get(folded_key(username))
            .map_err(engine)?
        else {
            return Ok(None);
        };
        let id = schema::decode_u64(&id_bytes).ok_or(StoreError::Dangling {
            tree: schema::USERNAMES,
        })?;
        self.user(id)
    }

    pub fn create_personal_access_token(
        &self,
        new: NewPersonalAccessToken,
        now_ms: i64,
    ) -> Result<PersonalAccessToken, CreatePersonalAccessTokenError> {
        let id = self.next_id(IdKind::PersonalAccessToken)?;
        let record = v1::PersonalAccessToken {
            user_id: new.user_id.get(),
            name: new.name,
            scopes: new.scopes,
            expires_at: new.expires_at,
            revoked: false,
            handle: new.handle.as_str().to_owned(),
            secret_hash: new.secret_hash.as_str().to_owned(),
            created_at_ms: now_ms,
        };
        let encoded = encode(&record);
        let handle_key = new.handle.as_str().as_bytes().to_vec();
        let writing = self.writing();
        let trees = &self.trees;
        finish_tx((&trees.users, &trees.pats, &trees.pat_handles).transaction(
            |(users, pats, handles)| {
                if users.get(id_key(record.user_id))?.is_none() {
                    return Err(abort(CreatePersonalAccessTokenError::UserNotFound));
                }
                handles.insert(handle_key.as_slice(), &id_key(id))?;
                pats.insert(&id_key(id), encoded.as_slice())?;
                Ok(())
            },
        ))?;
        self.commit(writing)?;
        Ok(pat_from_record(id, record).0)
    }

    /// Revokes a personal access token (idempotently), with its audit event.
    pub fn revoke_personal_access_token(
        &self,
        token_id: u64,
        now_ms: i64,
        audit: Audit<'_, PersonalAccessToken>,
    ) -> Result<Option<PersonalAccessToken>, StoreError> {
        let audit_id = self.audit_id(audit)?;
        let writing = self.writing();
        let trees = &self.trees;
        let revoked = finish_tx::<_, StoreError>((&trees.pats, &trees.audit_events).transaction(
            |(pats, audit_events)| {
                let Some(bytes) = pats.get(id_key(token_id))? else {
                    return Ok(None);
                };
                let mut record: v1::PersonalAccessToken = decode_in_tx(schema::PATS, &bytes)?;
                record.revoked = true;
                pats.insert(&id_key(token_id), encode(&record))?;
                let (revoked, _) = pat_from_record(token_id, record);
                if let Some((audit_id, audit)) = audit_id.zip(audit) {
                    let (key, value) = audit_entry(audit(&revoked), audit_id, now_ms);
                    audit_events.insert(&key, value)?;
                }
                Ok(Some(revoked))
            },
        ))?;
        self.commit(writing)?;
        Ok(revoked)
    }

    /// The personal access token a handle names, with its owner, if any. The caller verifies
    /// the secret.
    pub fn personal_access_token_by_handle(
        &self,
        handle: &TokenHandle,
    ) -> Result<Option<PersonalAccessTokenCredential>, StoreError> {
        let Some(id_bytes) = self
            .trees
            .pat_handles
            .get(handle.as_str().as_bytes())
            .map_err(engine)?
        else {
            return Ok(None);
        };
        let id = schema::decode_u64(&id_bytes).ok_or(StoreError::Dangling {
            tree: schema::PAT_HANDLES,
        })?;
        let Some(bytes) = self.trees.pats.get(id_key(id)).map_err(engine)? else {
            return Err(StoreError::Dangling {
                tree: schema::PAT_HANDLES,
            });
        };
        let record: v1::PersonalAccessToken = decode(schema::PATS, &bytes)?;
        let (token, secret_hash) = pat_from_record(id, record);
        let Some(user) = self.user(token.user_id.get())? else {
            return Err(StoreError::Dangling { tree: schema::PATS });
        };
        Ok(Some(PersonalAccessTokenCredential {
            token,
            user,
            secret_hash,
        }))
    }

    /// Creates a project in `owner_id`'s namespace and makes the owner its Owner member.
    pub fn create_project(
        &self,
        owner_id: u64,
        naming: &ProjectNaming,
        description: Option<&str>,
        now_ms: i64,
    ) -> Result<Project, CreateProjectError> {
        let owner = self.user(owner_id)?.ok_or(StoreError::Dangling {
            tree: schema::USERS,
        })?;
        let id = self.next_id(IdKind::Project)?;
        let record = v1::Project {
            name: naming.name().to_owned(),
            path: naming.path().to_owned(),
            description: description.map(str::to_owned),
            owner_id,
            created_at_ms: now_ms,
        };
        let encoded = encode(&record);
        let path_key = folded_key(&format!("{}/{}", owner.username, naming.path()));
        let member = encode(&v1::Member {
            access_level: AccessLevel::Owner.value(),
            created_at_ms: now_ms,
        });
        let writing = self.writing();
        let trees = &self.trees;
        finish_tx(
            (&trees.projects, &trees.project_paths, &trees.members).transaction(
                |(projects, paths, members)| {
                    if paths.get(&path_key)?.is_some() {
                        return Err(abort(CreateProjectError::PathTaken));
                    }
                    paths.insert(path_key.as_slice(), &id_key(id))?;
                    projects.insert(&id_key(id), encoded.as_slice())?;
                    members.insert(&pair_key(id, owner_id), member.as_slice())?;
                    Ok(())
                },
            ),
        )?;
        self.commit(writing)?;
        Ok(project_from_record(id, record, owner))
    }

    pub fn project(&self, project_id: u64) -> Result<Option<Project>, StoreError> {
        if let Some(project) = self.decoded_projects.get(project_id) {
            return Ok(Some(project));
        }
        let Some(bytes) = self
            .trees
            .projects
            .get(id_key(project_id))
            .map_err(engine)?
        else {
            return Ok(None);
        };
        let record: v1::Project = decode(schema::PROJECTS, &bytes)?;
        let owner = self.user(record.owner_id)?.ok_or(StoreError::Dangling {
            tree: schema::PROJECTS,
        })?;
        let project = project_from_record(project_id, record, owner);
        self.decoded_projects.insert(&project);
        Ok(Some(project))
    }

    /// Finds a project by `namespace/path`, case-insensitively.
    pub fn project_by_full_path(&self, full_path: &str) -> Result<Option<Project>, StoreError> {
        let key = folded_key(full_path);
        let Some(id_bytes) = self.trees.project_paths.get(key).map_err(engine)? else {
            return Ok(None);
        };
        let id = schema::decode_u64(&id_bytes).ok_or(StoreError::Dangling {
            tree: schema::PROJECT_PATHS,
        })?;
        self.project(id)
    }

    /// The caller's membership level in a project, if any.
    pub fn access_level(
        &self,
        project_id: u64,
        user_id: u64,
    ) -> Result<Option<AccessLevel>, StoreError> {
        let Some(bytes) = self
            .trees
            .members
            .get(pair_key(project_id, user_id))
            .map_err(engine)?
        else {
            return Ok(None);
        };
        let record: v1::Member = decode(schema::MEMBERS, &bytes)?;
        let level =
            AccessLevel::from_value(record.access_level).map_err(|_| StoreError::Dangling {
                tree: schema::MEMBERS,
            })?;
        Ok(Some(level))
    }

    pub fn add_member(
        &self,
        project_id: u64,
        user_id: u64,
        access_level: AccessLevel,
        now_ms: i64,
    ) -> Result<Member, AddMemberError> {
        let record = v1::Member {
            access_level: access_level.value(),
            created_at_ms: now_ms,
        };
        let encoded = encode(&record);
        let writing = self.writing();
        let trees = &self.trees;
        let user = finish_tx(
            (&trees.users, &trees.members).transaction(|(users, members)| {
                let Some(user_bytes) = users.get(id_key(user_id))? else {
                    return Err(abort(AddMemberError::UserNotFound));
                };
                let key = pair_key(project_id, user_id);
                if members.get(key)?.is_some() {
                    return Err(abort(AddMemberError::AlreadyMember));
                }
                members.insert(&key, encoded.as_slice())?;
                decode_in_tx::<v1::User, AddMemberError>(schema::USERS, &user_bytes)
            }),
        )?;
        self.commit(writing)?;
        Ok(Member {
            user: user_from_record(user_id, user),
            access_level,
            created_at_ms: now_ms,
        })
    }
}

pub(crate) fn user_from_record(id: u64, record: v1::User) -> User {
    User {
        id: UserId::new(id),
        username: record.username,
        name: record.name,
        email: record.email,
        is_admin: record.is_admin,
        created_at_ms: record.created_at_ms,
    }
}

fn pat_from_record(id: u64, record: v1::PersonalAccessToken) -> (PersonalAccessToken, SecretHash) {
    let token = PersonalAccessToken {
        id: PersonalAccessTokenId::new(id),
        user_id: UserId::new(record.user_id),
        name: record.name,
        scopes: record.scopes,
        expires_at: record.expires_at,
        revoked: record.revoked,
        created_at_ms: record.created_at_ms,
    };
    (token, SecretHash::from_stored(record.secret_hash))
}

fn project_from_record(id: u64, record: v1::Project, owner: User) -> Project {
    Project {
        id: ProjectId::new(id),
        name: record.name,
        path: record.path,
        description: record.description,
        owner,
        created_at_ms: record.created_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn usernames_are_unique_case_insensitively() {
        let store = fixtures::store();
        let alice = UserIdentity::parse("alice", "Alice", "a@example.com").unwrap();
        store.create_user(&alice, false, 1).unwrap();
        let again = UserIdentity::parse("ALICE", "Alice", "b@example.com").unwrap();
        assert!(matches!(
            store.create_user(&again, false, 1),
            Err(CreateUserError::UsernameTaken)
        ));
    }

    #[test]
    fn project_is_found_by_id_and_by_case_folded_path() {
        let store = fixtures::store();
        let (_, project_id) = fixtures::project(&store);
        let by_path = store.project_by_full_path("OWNER/App").unwrap().unwrap();
        assert_eq!(by_path.id.get(), project_id);
        assert_eq!(by_path.path_with_namespace(), "owner/app");
        assert_eq!(by_path.name_with_namespace(), "Owner / app");
    }

    #[test]
    fn project_creator_is_owner_and_duplicate_path_is_refused() {
        let store = fixtures::store();
        let (owner_id, project_id) = fixtures::project(&store);
        assert_eq!(
            store.access_level(project_id, owner_id).unwrap(),
            Some(AccessLevel::Owner)
        );
        let naming = ProjectNaming::parse(Some("App"), Some("APP")).unwrap();
        assert!(matches!(
            store.create_project(owner_id, &naming, None, 3),
            Err(CreateProjectError::PathTaken)
        ));
    }

    #[test]
    fn members_are_added_once() {
        let store = fixtures::store();
        let (_, project_id) = fixtures::project(&store);
        let bob = UserIdentity::parse("bob", "Bob", "bob@example.com").unwrap();
        let bob = store.create_user(&bob, false, 1).unwrap();
        store
            .add_member(project_id, bob.id.get(), AccessLevel::Developer, 4)
            .unwrap();
        assert!(matches!(
            store.add_member(project_id, bob.id.get(), AccessLevel::Guest, 5),
            Err(AddMemberError::AlreadyMember)
        ));
        assert!(matches!(
            store.add_member(project_id, 999, AccessLevel::Guest, 5),
            Err(AddMemberError::UserNotFound)
        ));
    }

    #[test]
    fn ids_are_monotonic_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let store = Store::open(dir.path()).unwrap();
            fixtures::project(&store).0
        };
        let store = fixtures::reopen(dir.path());
        let carol = UserIdentity::parse("carol", "Carol", "c@example.com").unwrap();
        let second = store.create_user(&carol, false, 1).unwrap().id.get();
        // The reopened store starts a new block of ids (see `crate::ids`).
        assert!(second > first, "{second} after {first}");
    }
}

/// Projects decoded before, with their owners, by id. Neither a project nor a user changes once
/// created (the API has no update or delete for them, and a restore fills only an empty store),
/// so an entry never goes stale; it spares the hot read path two record reads and decodes.
/// Bounded: past [`DecodedProjects::MAX_ENTRIES`] it starts over.
#[derive(Default)]
pub(crate) struct DecodedProjects(std::sync::RwLock<std::collections::HashMap<u64, Project>>);

impl DecodedProjects {
    const MAX_ENTRIES: usize = 4096;

    fn get(&self, project_id: u64) -> Option<Project> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&project_id)
            .cloned()
    }

    fn insert(&self, project: &Project) {
        let mut projects = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if projects.len() >= Self::MAX_ENTRIES {
            projects.clear();
        }
        projects.insert(project.id.get(), project.clone());
    }

    pub(crate) fn clear(&self) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}
