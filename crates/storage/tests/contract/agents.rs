//! Agents: names unique in their project under any concurrency, pages in byte order of names,
//! visibility only through the owning project, cascading deletes under a precondition, and ids
//! that grow and are never reused.

use crate::fixtures::{self, Secrets};
use agentreg_domain::access::AccessLevel;
use agentreg_domain::entities::AuditScope;
use agentreg_domain::ids::{AgentId, AgentTokenId, ProjectId, ProjectRef};
use agentreg_storage::agents::{CreateAgentError, DeleteAgentError, UnmodifiedSince};
use agentreg_storage::port::{Counts, RevokeAgentToken, Storage};

pub(crate) async fn agent_names_are_unique_within_a_project(storage: &dyn Storage) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let other_project = fixtures::project(storage, &owner, "other").await;
    let first = fixtures::agent(storage, project.id, "a").await;

    let duplicate = storage
        .create_agent(
            project.id,
            fixtures::agent_name("a"),
            Some(owner.id),
            2,
            None,
        )
        .await;
    let elsewhere = storage
        .create_agent(
            other_project.id,
            fixtures::agent_name("a"),
            Some(owner.id),
            3,
            None,
        )
        .await
        .unwrap();

    assert!(
        matches!(duplicate, Err(CreateAgentError::NameTaken)),
        "{duplicate:?}"
    );
    assert_eq!(
        (
            first.project_id,
            first.name.as_str(),
            first.created_by_user_id
        ),
        (project.id, "a", None)
    );
    assert_eq!((first.created_at_ms, first.updated_at_ms), (1, 1));
    assert!(!first.is_receptive());
    assert_eq!(elsewhere.project_id, other_project.id);
    assert_eq!(elsewhere.name, "a");
    assert_eq!(elsewhere.created_by_user_id, Some(owner.id));
    assert_eq!(
        storage.agent(project.id, first.id).await.unwrap(),
        Some(first)
    );
    assert_eq!(
        storage.agent(other_project.id, elsewhere.id).await.unwrap(),
        Some(elsewhere)
    );
}

pub(crate) async fn concurrent_creates_of_one_name_create_exactly_one_agent(storage: &dyn Storage) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let creates = (0..50)
        .map(|_| storage.create_agent(project.id, fixtures::agent_name("same"), None, 1, None));

    let results = futures::future::join_all(creates).await;

    let n_created = results.iter().filter(|result| result.is_ok()).count();
    let n_taken = results
        .iter()
        .filter(|result| matches!(result, Err(CreateAgentError::NameTaken)))
        .count();
    assert_eq!((n_created, n_taken), (1, 49), "{results:?}");
    let page = storage
        .agents_page(project.id, fixtures::window(0, 100))
        .await
        .unwrap();
    assert_eq!((page.items.len(), page.total), (1, 1));
    assert_eq!(storage.counts().await.unwrap().agents, 1);
}

pub(crate) async fn agents_are_paged_in_byte_order_of_their_names(storage: &dyn Storage) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let other_project = fixtures::project(storage, &owner, "other").await;
    fixtures::agent(storage, other_project.id, "a-0").await;
    // Byte order, not a locale's collation: a collation that skips punctuation would put "ab"
    // before "a-c", and one that compares numbers would put "a-2" before "a-10".
    for name in ["b", "a-2", "ab", "a-10", "a-c", "a-1"] {
        fixtures::agent(storage, project.id, name).await;
    }

    let all = storage
        .agents_page(project.id, fixtures::window(0, 100))
        .await
        .unwrap();
    let middle = storage
        .agents_page(project.id, fixtures::window(1, 3))
        .await
        .unwrap();
    let last = storage
        .agents_page(project.id, fixtures::window(5, 3))
        .await
        .unwrap();
    let past_the_end = storage
        .agents_page(project.id, fixtures::window(6, 3))
        .await
        .unwrap();

    assert_eq!(
        fixtures::names(&all),
        ["a-1", "a-10", "a-2", "a-c", "ab", "b"]
    );
    assert_eq!(all.total, 6);
    assert_eq!(fixtures::names(&middle), ["a-10", "a-2", "a-c"]);
    assert_eq!(middle.total, 6);
    assert_eq!(fixtures::names(&last), ["b"]);
    assert_eq!(last.total, 6);
    assert!(past_the_end.items.is_empty());
    assert_eq!(past_the_end.total, 6);
}

pub(crate) async fn a_project_is_read_with_the_users_level_and_the_agent_asked_for(
    storage: &dyn Storage,
) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let bob = fixtures::user(storage, "bob").await;
    let carol = fixtures::user(storage, "carol").await;
    storage
        .add_member(project.id, bob.id, AccessLevel::Developer, 3)
        .await
        .unwrap();
    let agent = fixtures::agent(storage, project.id, "a").await;
    let config = storage
        .create_url_configuration(
            project.id,
            agent.id,
            fixtures::jwt_url_configuration(),
            4,
            None,
        )
        .await
        .unwrap();
    let receptive_agent = storage.agent(project.id, agent.id).await.unwrap().unwrap();
    let by_id = ProjectRef::Id(project.id);
    let by_path = ProjectRef::FullPath("OWNER/App".to_owned());

    let owner_with_agent = storage
        .project_with_access(&by_id, Some(owner.id), Some(agent.id))
        .await
        .unwrap()
        .unwrap();
    let bob_by_path = storage
        .project_with_access(&by_path, Some(bob.id), Some(agent.id))
        .await
        .unwrap()
        .unwrap();
    let carol_without_agent = storage
        .project_with_access(&by_id, Some(carol.id), None)
        .await
        .unwrap()
        .unwrap();
    let missing_agent = storage
        .project_with_access(&by_id, Some(owner.id), Some(AgentId::new(999_999)))
        .await
        .unwrap()
        .unwrap();

    assert_eq!(owner_with_agent.project, project);
    assert_eq!(owner_with_agent.access_level, Some(AccessLevel::Owner));
    assert_eq!(owner_with_agent.agent, Some(receptive_agent.clone()));
    assert_eq!(
        receptive_agent.url_configuration_id,
        Some(config.id),
        "the agent carries its URL configuration's id"
    );
    assert_eq!(bob_by_path.project, project);
    assert_eq!(bob_by_path.access_level, Some(AccessLevel::Developer));
    assert_eq!(bob_by_path.agent, Some(receptive_agent));
    assert_eq!(carol_without_agent.project, project);
    assert_eq!(carol_without_agent.access_level, None);
    assert_eq!(carol_without_agent.agent, None);
    assert_eq!(missing_agent.access_level, Some(AccessLevel::Owner));
    assert_eq!(missing_agent.agent, None);

    let for_an_administrator = storage
        .project_with_access(&by_path, None, Some(agent.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(for_an_administrator.project, project);
    assert_eq!(
        for_an_administrator.access_level, None,
        "no membership is read when none is asked for"
    );
    assert_eq!(for_an_administrator.agent, owner_with_agent.agent);
}

pub(crate) async fn a_project_read_with_access_finds_nothing_it_does_not_name(
    storage: &dyn Storage,
) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let other_project = fixtures::project(storage, &owner, "other").await;
    let agent = fixtures::agent(storage, project.id, "a").await;

    let through_other = storage
        .project_with_access(
            &ProjectRef::Id(other_project.id),
            Some(owner.id),
            Some(agent.id),
        )
        .await
        .unwrap()
        .unwrap();
    let missing_id = storage
        .project_with_access(
            &ProjectRef::Id(ProjectId::new(999_999)),
            Some(owner.id),
            None,
        )
        .await
        .unwrap();
    let missing_path = storage
        .project_with_access(
            &ProjectRef::FullPath("owner/missing".to_owned()),
            Some(owner.id),
            Some(agent.id),
        )
        .await
        .unwrap();
    let nothing = storage
        .project_with_access(&ProjectRef::Nothing, Some(owner.id), Some(agent.id))
        .await
        .unwrap();

    assert_eq!(through_other.project, other_project);
    assert_eq!(through_other.access_level, Some(AccessLevel::Owner));
    assert_eq!(through_other.agent, None);
    assert!(missing_id.is_none());
    assert!(missing_path.is_none());
    assert!(nothing.is_none());
}

pub(crate) async fn agents_are_found_only_through_their_project(storage: &dyn Storage) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let other_project = fixtures::project(storage, &owner, "other").await;
    let agent = fixtures::agent(storage, project.id, "a").await;

    let through_other = storage.agent(other_project.id, agent.id).await.unwrap();
    let token_set = storage
        .agent_token_set(other_project.id, agent.id)
        .await
        .unwrap();
    let active_tokens = storage
        .active_agent_tokens(other_project.id, agent.id)
        .await
        .unwrap();
    let url_configurations = storage
        .url_configurations(other_project.id, agent.id)
        .await
        .unwrap();
    let delete_through_other = storage
        .delete_agent(other_project.id, agent.id, None, 5, None)
        .await;
    let delete_missing = storage
        .delete_agent(project.id, AgentId::new(999_999), None, 5, None)
        .await;

    assert_eq!(through_other, None);
    assert_eq!(token_set, None);
    assert_eq!(active_tokens, None);
    assert_eq!(url_configurations, None);
    assert!(
        matches!(delete_through_other, Err(DeleteAgentError::NotFound)),
        "{delete_through_other:?}"
    );
    assert!(
        matches!(delete_missing, Err(DeleteAgentError::NotFound)),
        "{delete_missing:?}"
    );
    assert_eq!(
        storage.agent(project.id, agent.id).await.unwrap(),
        Some(agent)
    );
    let other_page = storage
        .agents_page(other_project.id, fixtures::window(0, 10))
        .await
        .unwrap();
    assert_eq!((other_page.items.len(), other_page.total), (0, 0));
}

pub(crate) async fn deleting_an_agent_removes_its_tokens_and_url_configuration_and_frees_its_name(
    storage: &dyn Storage,
) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let neighbour = fixtures::agent(storage, project.id, "neighbour").await;
    let mut secrets = Secrets::seeded(1);
    let revoked_new = secrets.agent_token();
    let revoked_handle = revoked_new.handle.clone();
    let revoked = storage
        .create_agent_token(project.id, agent.id, revoked_new, 2, None)
        .await
        .unwrap();
    storage
        .revoke_agent_token(
            project.id,
            agent.id,
            revoked.id,
            RevokeAgentToken::default(),
            3,
            None,
        )
        .await
        .unwrap();
    let active_new = secrets.agent_token();
    let active_handle = active_new.handle.clone();
    let active = storage
        .create_agent_token(project.id, agent.id, active_new, 4, None)
        .await
        .unwrap();
    let neighbour_token_new = secrets.agent_token();
    let neighbour_handle = neighbour_token_new.handle.clone();
    storage
        .create_agent_token(project.id, neighbour.id, neighbour_token_new, 4, None)
        .await
        .unwrap();
    let config = storage
        .create_url_configuration(
            project.id,
            agent.id,
            fixtures::jwt_url_configuration(),
            5,
            None,
        )
        .await
        .unwrap();

    let deleted = storage
        .delete_agent(project.id, agent.id, None, 6, None)
        .await
        .unwrap();

    let mut deleted_token_ids = deleted.token_ids.clone();
    deleted_token_ids.sort();
    assert_eq!(deleted_token_ids, [revoked.id, active.id]);
    assert_eq!(deleted.agent.id, agent.id);
    assert_eq!(deleted.agent.url_configuration_id, Some(config.id));
    assert_eq!(storage.agent(project.id, agent.id).await.unwrap(), None);
    for handle in [&revoked_handle, &active_handle] {
        assert!(
            storage
                .agent_token_by_handle(handle)
                .await
                .unwrap()
                .is_none()
        );
    }
    for token_id in [revoked.id, active.id] {
        let token = storage
            .agent_token(project.id, agent.id, token_id)
            .await
            .unwrap();
        assert_eq!(token, None);
    }
    assert_eq!(
        storage
            .url_configuration(project.id, agent.id, config.id)
            .await
            .unwrap(),
        None
    );
    assert!(storage.all_url_configurations().await.unwrap().is_empty());
    assert!(
        storage
            .agent_token_by_handle(&neighbour_handle)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        storage.counts().await.unwrap(),
        Counts {
            agents: 1,
            active_agent_tokens: 1,
            url_configurations: 0,
        }
    );
    let page = storage
        .agents_page(project.id, fixtures::window(0, 10))
        .await
        .unwrap();
    assert_eq!(fixtures::names(&page), ["neighbour"]);
    assert_eq!(page.total, 1);
    let again = storage
        .create_agent(project.id, fixtures::agent_name("a"), None, 7, None)
        .await
        .unwrap();
    assert!(again.id > agent.id);
    assert!(!again.is_receptive());
    let token_set = storage
        .agent_token_set(project.id, again.id)
        .await
        .unwrap()
        .expect("the new agent has a token set");
    assert_eq!(token_set.all().count(), 0);
    assert_eq!(
        storage
            .url_configurations(project.id, again.id)
            .await
            .unwrap(),
        Some(vec![])
    );
}

pub(crate) async fn deleting_an_agent_modified_after_the_precondition_is_refused(
    storage: &dyn Storage,
) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = storage
        .create_agent(project.id, fixtures::agent_name("a"), None, 1_000, None)
        .await
        .unwrap();

    let before_creation = storage
        .delete_agent(
            project.id,
            agent.id,
            Some(UnmodifiedSince {
                latest_allowed_ms: 999,
            }),
            1_500,
            None,
        )
        .await;
    storage
        .create_url_configuration(
            project.id,
            agent.id,
            fixtures::jwt_url_configuration(),
            2_000,
            None,
        )
        .await
        .unwrap();
    let before_modification = storage
        .delete_agent(
            project.id,
            agent.id,
            Some(UnmodifiedSince {
                latest_allowed_ms: 1_999,
            }),
            2_500,
            None,
        )
        .await;
    let still_there = storage.agent(project.id, agent.id).await.unwrap();
    let at_modification = storage
        .delete_agent(
            project.id,
            agent.id,
            Some(UnmodifiedSince {
                latest_allowed_ms: 2_000,
            }),
            3_000,
            None,
        )
        .await;

    assert!(
        matches!(before_creation, Err(DeleteAgentError::PreconditionFailed)),
        "{before_creation:?}"
    );
    assert!(
        matches!(
            before_modification,
            Err(DeleteAgentError::PreconditionFailed)
        ),
        "{before_modification:?}"
    );
    assert!(still_there.is_some_and(|agent| agent.is_receptive()));
    assert_eq!(at_modification.unwrap().agent.id, agent.id);
    assert_eq!(storage.agent(project.id, agent.id).await.unwrap(), None);
}

pub(crate) async fn ids_grow_and_are_never_reused(storage: &dyn Storage) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let mut secrets = Secrets::seeded(1);

    let first_agent = fixtures::agent(storage, project.id, "a").await;
    let first_token = storage
        .create_agent_token(project.id, first_agent.id, secrets.agent_token(), 2, None)
        .await
        .unwrap();
    let first_config = storage
        .create_url_configuration(
            project.id,
            first_agent.id,
            fixtures::jwt_url_configuration(),
            2,
            None,
        )
        .await
        .unwrap();
    let first_event = storage
        .record_audit_event(fixtures::standalone_event(AuditScope::Instance, 1), 2)
        .await
        .unwrap();
    storage
        .delete_agent(project.id, first_agent.id, None, 3, None)
        .await
        .unwrap();
    let second_agent = fixtures::agent(storage, project.id, "a").await;
    let second_token = storage
        .create_agent_token(project.id, second_agent.id, secrets.agent_token(), 4, None)
        .await
        .unwrap();
    let second_config = storage
        .create_url_configuration(
            project.id,
            second_agent.id,
            fixtures::jwt_url_configuration(),
            4,
            None,
        )
        .await
        .unwrap();
    storage
        .delete_url_configuration(project.id, second_agent.id, second_config.id, None, 5, None)
        .await
        .unwrap();
    let third_config = storage
        .create_url_configuration(
            project.id,
            second_agent.id,
            fixtures::jwt_url_configuration(),
            6,
            None,
        )
        .await
        .unwrap();
    let second_event = storage
        .record_audit_event(fixtures::standalone_event(AuditScope::Instance, 1), 6)
        .await
        .unwrap();
    let second_user = fixtures::user(storage, "second").await;
    let second_project = fixtures::project(storage, &owner, "second").await;

    assert!(second_agent.id > first_agent.id);
    assert!(second_token.id > first_token.id);
    assert!(second_config.id > first_config.id);
    assert!(third_config.id > second_config.id);
    assert!(second_event.id > first_event.id);
    assert!(second_user.id > owner.id);
    assert!(second_project.id > project.id);
}

pub(crate) async fn all_agents_lists_every_agent_with_its_project_and_tokens(
    storage: &dyn Storage,
) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let other = fixtures::project(storage, &owner, "other").await;
    let first = fixtures::agent(storage, project.id, "first").await;
    let second = fixtures::agent(storage, other.id, "second").await;
    let mut secrets = Secrets::seeded(1);
    let token = storage
        .create_agent_token(project.id, first.id, secrets.agent_token(), 2, None)
        .await
        .unwrap();
    let revoked = storage
        .create_agent_token(project.id, first.id, secrets.agent_token(), 2, None)
        .await
        .unwrap();
    let revoked = storage
        .revoke_agent_token(
            project.id,
            first.id,
            revoked.id,
            RevokeAgentToken::default(),
            3,
            None,
        )
        .await
        .unwrap();

    let inventory = storage.all_agents().await.unwrap();

    let summary: Vec<(AgentId, ProjectId, Vec<AgentTokenId>)> = inventory
        .iter()
        .map(|entry| {
            (
                entry.agent.id,
                entry.project.id,
                entry.tokens.iter().map(|token| token.id).collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (first.id, project.id, vec![token.id, revoked.id]),
            (second.id, other.id, vec![]),
        ]
    );
    assert_eq!(inventory[0].project, project);
    assert_eq!(inventory[0].tokens[1], revoked);
}
