//! Users, projects, members and personal access tokens: case-insensitive uniqueness and lookups,
//! memberships, and tokens found by their handle.

use crate::fixtures::{self, Secrets};
use agentreg_domain::access::{AccessLevel, Scope};
use agentreg_domain::entities::AuditScope;
use agentreg_domain::ids::UserId;
use agentreg_domain::names::{ProjectNaming, UserIdentity};
use agentreg_domain::tokens::TokenKind;
use agentreg_storage::identity::{
    AddMemberError, CreatePersonalAccessTokenError, CreateProjectError, CreateUserError,
};
use agentreg_storage::port::{Counts, Storage};

pub(crate) async fn a_fresh_storage_is_empty_and_ready(storage: &dyn Storage) {
    let backend = storage.backend();

    storage.ping().await.unwrap();
    storage.flush().await.unwrap();

    assert!(!backend.is_empty());
    assert!(!storage.has_users().await.unwrap());
    assert_eq!(storage.counts().await.unwrap(), Counts::default());
    assert!(storage.all_url_configurations().await.unwrap().is_empty());
    let instance_events = storage
        .audit_events_page(AuditScope::Instance, fixtures::window(0, 10))
        .await
        .unwrap();
    assert_eq!((instance_events.items.len(), instance_events.total), (0, 0));
}

pub(crate) async fn usernames_and_emails_are_unique_case_insensitively(storage: &dyn Storage) {
    let had_users = storage.has_users().await.unwrap();
    let alice_identity = UserIdentity::parse("alice", "Alice", "alice@example.com").unwrap();
    let alice = storage.create_user(alice_identity, true, 7).await.unwrap();

    let same_username = storage
        .create_user(
            UserIdentity::parse("ALICE", "Other", "other@example.com").unwrap(),
            false,
            8,
        )
        .await;
    let same_email = storage
        .create_user(
            UserIdentity::parse("bob", "Bob", "Alice@Example.COM").unwrap(),
            false,
            9,
        )
        .await;

    assert!(!had_users);
    assert!(storage.has_users().await.unwrap());
    assert_eq!(
        (
            alice.username.as_str(),
            alice.name.as_str(),
            alice.email.as_str()
        ),
        ("alice", "Alice", "alice@example.com")
    );
    assert!(alice.is_admin);
    assert_eq!(alice.created_at_ms, 7);
    assert!(
        matches!(same_username, Err(CreateUserError::UsernameTaken)),
        "{same_username:?}"
    );
    assert!(
        matches!(same_email, Err(CreateUserError::EmailTaken)),
        "{same_email:?}"
    );
    assert_eq!(storage.user(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(
        storage.user_by_username("aLiCe").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(storage.user_by_username("bob").await.unwrap(), None);
    assert_eq!(storage.user(UserId::new(999_999)).await.unwrap(), None);
}

pub(crate) async fn project_paths_are_unique_case_insensitively_per_namespace(
    storage: &dyn Storage,
) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let someone = fixtures::user(storage, "someone").await;

    let duplicate = storage
        .create_project(
            owner.id,
            ProjectNaming::parse(Some("App"), Some("APP")).unwrap(),
            None,
            3,
        )
        .await;
    let same_path_elsewhere = storage
        .create_project(
            someone.id,
            ProjectNaming::parse(Some("app"), None).unwrap(),
            None,
            4,
        )
        .await
        .unwrap();

    assert!(
        matches!(duplicate, Err(CreateProjectError::PathTaken)),
        "{duplicate:?}"
    );
    assert_eq!(
        (project.name.as_str(), project.path.as_str()),
        ("app", "app")
    );
    assert_eq!(project.description.as_deref(), Some("app project"));
    assert_eq!(project.owner, owner);
    assert_eq!(project.created_at_ms, 2);
    assert_eq!(
        storage.project(project.id).await.unwrap(),
        Some(project.clone())
    );
    assert_eq!(
        storage.project_by_full_path("OWNER/App").await.unwrap(),
        Some(project.clone())
    );
    assert_eq!(
        storage.project_by_full_path("someone/app").await.unwrap(),
        Some(same_path_elsewhere)
    );
    assert_eq!(
        storage.project_by_full_path("owner/missing").await.unwrap(),
        None
    );
    assert_eq!(
        storage.access_level(project.id, owner.id).await.unwrap(),
        Some(AccessLevel::Owner)
    );
    assert_eq!(
        storage.access_level(project.id, someone.id).await.unwrap(),
        None
    );
}

pub(crate) async fn members_are_added_once_and_only_for_existing_users(storage: &dyn Storage) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let other_project = fixtures::project(storage, &owner, "other").await;
    let bob = fixtures::user(storage, "bob").await;

    let member = storage
        .add_member(project.id, bob.id, AccessLevel::Developer, 4)
        .await
        .unwrap();
    let again = storage
        .add_member(project.id, bob.id, AccessLevel::Guest, 5)
        .await;
    let ghost = storage
        .add_member(project.id, UserId::new(999_999), AccessLevel::Guest, 6)
        .await;

    assert_eq!(member.user, bob);
    assert_eq!(member.access_level, AccessLevel::Developer);
    assert_eq!(member.created_at_ms, 4);
    assert!(
        matches!(again, Err(AddMemberError::AlreadyMember)),
        "{again:?}"
    );
    assert!(
        matches!(ghost, Err(AddMemberError::UserNotFound)),
        "{ghost:?}"
    );
    assert_eq!(
        storage.access_level(project.id, bob.id).await.unwrap(),
        Some(AccessLevel::Developer)
    );
    assert_eq!(
        storage
            .access_level(other_project.id, bob.id)
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn a_personal_access_token_is_found_by_its_handle_with_its_user_and_hash(
    storage: &dyn Storage,
) {
    let owner = fixtures::user(storage, "owner").await;
    let mut secrets = Secrets::seeded(1);
    let new = secrets.personal_access_token(owner.id);
    let (handle, secret_hash) = (new.handle.clone(), new.secret_hash.clone());
    let orphan = secrets.personal_access_token(UserId::new(999_999));

    let created = storage.create_personal_access_token(new, 5).await.unwrap();
    let refused = storage.create_personal_access_token(orphan, 6).await;

    assert_eq!(created.user_id, owner.id);
    assert_eq!(created.name, "ci");
    assert_eq!(created.scopes, [Scope::Api, Scope::ReadApi]);
    assert_eq!(
        created.expires_at.map(|date| date.to_string()).as_deref(),
        Some("2030-01-01")
    );
    assert!(!created.revoked);
    assert_eq!(created.created_at_ms, 5);
    assert!(
        matches!(refused, Err(CreatePersonalAccessTokenError::UserNotFound)),
        "{refused:?}"
    );
    let credential = storage
        .personal_access_token_by_handle(&handle)
        .await
        .unwrap()
        .expect("the token is found by its handle");
    assert_eq!(credential.token, created);
    assert_eq!(credential.user, owner);
    assert_eq!(credential.secret_hash, secret_hash);
    let unknown = secrets.unknown_handle(TokenKind::PersonalAccess);
    assert!(
        storage
            .personal_access_token_by_handle(&unknown)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        storage
            .agent_token_by_handle(&handle)
            .await
            .unwrap()
            .is_none()
    );
}

pub(crate) async fn a_revoked_personal_access_token_stays_revoked_and_unknown_ones_are_none(
    storage: &dyn Storage,
) {
    let (owner, _) = fixtures::owner_and_project(storage).await;
    let mut secrets = fixtures::Secrets::seeded(1);
    let new = secrets.personal_access_token(owner.id);
    let handle = new.handle.clone();
    let token = storage.create_personal_access_token(new, 2).await.unwrap();

    let revoked = storage
        .revoke_personal_access_token(token.id, 3, None)
        .await
        .unwrap();
    let again = storage
        .revoke_personal_access_token(token.id, 4, None)
        .await
        .unwrap();
    let unknown = storage
        .revoke_personal_access_token(
            agentreg_domain::ids::PersonalAccessTokenId::new(999_999),
            4,
            None,
        )
        .await
        .unwrap();

    assert!(revoked.is_some_and(|token| token.revoked));
    assert!(again.is_some_and(|token| token.revoked));
    assert_eq!(unknown, None);
    let credential = storage
        .personal_access_token_by_handle(&handle)
        .await
        .unwrap()
        .unwrap();
    assert!(credential.token.revoked);
}
