//! Agent tokens: at most two active per agent under any concurrency, revocation that is
//! idempotent and keeps the record, lookup by handle, and last-use times that never go back.

use crate::fixtures::{self, Secrets};
use agentreg_domain::entities::{AgentToken, Revocation, RevocationReason, TokenStatus};
use agentreg_domain::ids::{AgentId, AgentTokenId};
use agentreg_domain::tokens::RotationRefused;
use agentreg_domain::tokens::TokenKind;
use agentreg_storage::agent_tokens::{
    CreateAgentTokenError, RevokeAgentTokenError, RotateAgentTokenError,
};
use agentreg_storage::port::{
    NewAgentToken, NewRotation, RevokeAgentToken, Storage, TokenDeadlines,
};

pub(crate) async fn a_third_active_token_is_refused_until_one_is_revoked(storage: &dyn Storage) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let mut secrets = Secrets::seeded(1);
    let first = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 2, None)
        .await
        .unwrap();
    let second = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 3, None)
        .await
        .unwrap();

    let third = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 4, None)
        .await;
    storage
        .revoke_agent_token(
            project.id,
            agent.id,
            first.id,
            RevokeAgentToken::default(),
            5,
            None,
        )
        .await
        .unwrap();
    let fourth = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 6, None)
        .await
        .unwrap();

    match third {
        Err(CreateAgentTokenError::LimitReached(limit)) => assert_eq!(limit.active, 2),
        other => panic!("a third active token was not refused: {other:?}"),
    }
    let mut active_ids: Vec<AgentTokenId> = storage
        .active_agent_tokens(project.id, agent.id)
        .await
        .unwrap()
        .unwrap()
        .iter()
        .map(|token| token.id)
        .collect();
    active_ids.sort();
    assert_eq!(active_ids, [second.id, fourth.id]);
    let token_set = storage
        .agent_token_set(project.id, agent.id)
        .await
        .unwrap()
        .unwrap();
    let mut active_set = token_set.active().to_vec();
    active_set.sort_unstable();
    assert_eq!(active_set, [second.id.get(), fourth.id.get()]);
    assert_eq!(token_set.revoked(), [first.id.get()]);
}

pub(crate) async fn concurrent_token_creates_never_exceed_two_active_tokens(storage: &dyn Storage) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let mut secrets = Secrets::seeded(1);
    let creates: Vec<_> = (0..50)
        .map(|_| secrets.agent_token())
        .map(|new| storage.create_agent_token(project.id, agent.id, new, 2, None))
        .collect();

    let results = futures::future::join_all(creates).await;

    let mut created_ids: Vec<AgentTokenId> = results
        .iter()
        .filter_map(|result| result.as_ref().ok())
        .map(|token| token.id)
        .collect();
    created_ids.sort();
    let n_refused = results
        .iter()
        .filter(|result| matches!(result, Err(CreateAgentTokenError::LimitReached(_))))
        .count();
    assert_eq!((created_ids.len(), n_refused), (2, 48), "{results:?}");
    let mut active_ids: Vec<AgentTokenId> = storage
        .active_agent_tokens(project.id, agent.id)
        .await
        .unwrap()
        .unwrap()
        .iter()
        .map(|token| token.id)
        .collect();
    active_ids.sort();
    assert_eq!(active_ids, created_ids);
    assert_eq!(storage.counts().await.unwrap().active_agent_tokens, 2);
}

pub(crate) async fn revoking_is_idempotent_and_keeps_the_record(storage: &dyn Storage) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let mut secrets = Secrets::seeded(1);
    let new = secrets.agent_token();
    let handle = new.handle.clone();
    let token = storage
        .create_agent_token(project.id, agent.id, new, 2, None)
        .await
        .unwrap();

    let first_revoke = storage
        .revoke_agent_token(
            project.id,
            agent.id,
            token.id,
            RevokeAgentToken::default(),
            3,
            None,
        )
        .await
        .unwrap();
    let second_revoke = storage
        .revoke_agent_token(
            project.id,
            agent.id,
            token.id,
            RevokeAgentToken::default(),
            4,
            None,
        )
        .await
        .unwrap();

    let revoked = AgentToken {
        status: TokenStatus::Revoked,
        revocation: Some(Revocation {
            revoked_at_ms: 3,
            revoked_by_user_id: None,
            reason: RevocationReason::revoked(),
        }),
        ..token.clone()
    };
    assert_eq!(token.status, TokenStatus::Active);
    assert_eq!(first_revoke, revoked);
    assert_eq!(second_revoke, revoked);
    assert_eq!(
        storage
            .agent_token(project.id, agent.id, token.id)
            .await
            .unwrap(),
        Some(revoked.clone())
    );
    let credential = storage
        .agent_token_by_handle(&handle)
        .await
        .unwrap()
        .expect("a revoked token keeps its handle");
    assert_eq!(credential.token, revoked);
    assert_eq!(
        storage
            .active_agent_tokens(project.id, agent.id)
            .await
            .unwrap(),
        Some(vec![])
    );
    let token_set = storage
        .agent_token_set(project.id, agent.id)
        .await
        .unwrap()
        .unwrap();
    assert!(token_set.active().is_empty());
    assert_eq!(token_set.revoked(), [token.id.get()]);
    assert_eq!(storage.counts().await.unwrap().active_agent_tokens, 0);
}

pub(crate) async fn tokens_are_found_only_through_their_agent(storage: &dyn Storage) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let other_project = fixtures::project(storage, &owner, "other").await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let neighbour = fixtures::agent(storage, project.id, "b").await;
    let foreign = fixtures::agent(storage, other_project.id, "a").await;
    let mut secrets = Secrets::seeded(1);
    let token = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 2, None)
        .await
        .unwrap();

    let revoke_through_neighbour = storage
        .revoke_agent_token(
            project.id,
            neighbour.id,
            token.id,
            RevokeAgentToken::default(),
            3,
            None,
        )
        .await;
    let revoke_through_other_project = storage
        .revoke_agent_token(
            other_project.id,
            agent.id,
            token.id,
            RevokeAgentToken::default(),
            3,
            None,
        )
        .await;
    let revoke_missing = storage
        .revoke_agent_token(
            project.id,
            agent.id,
            AgentTokenId::new(999_999),
            RevokeAgentToken::default(),
            3,
            None,
        )
        .await;
    let create_for_missing = storage
        .create_agent_token(
            project.id,
            AgentId::new(999_999),
            secrets.agent_token(),
            3,
            None,
        )
        .await;
    let create_through_wrong_project = storage
        .create_agent_token(project.id, foreign.id, secrets.agent_token(), 3, None)
        .await;

    for refused in [
        revoke_through_neighbour,
        revoke_through_other_project,
        revoke_missing,
    ] {
        assert!(
            matches!(refused, Err(RevokeAgentTokenError::NotFound)),
            "{refused:?}"
        );
    }
    for refused in [create_for_missing, create_through_wrong_project] {
        assert!(
            matches!(refused, Err(CreateAgentTokenError::AgentNotFound)),
            "{refused:?}"
        );
    }
    assert_eq!(
        storage
            .agent_token(project.id, neighbour.id, token.id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        storage
            .agent_token(other_project.id, agent.id, token.id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        storage
            .agent_token(project.id, agent.id, token.id)
            .await
            .unwrap(),
        Some(token)
    );
    assert_eq!(
        storage
            .active_agent_tokens(other_project.id, foreign.id)
            .await
            .unwrap(),
        Some(vec![])
    );
}

pub(crate) async fn a_token_is_found_by_its_handle_with_its_hash(storage: &dyn Storage) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let mut secrets = Secrets::seeded(1);
    let new = secrets.described_agent_token(owner.id);
    let (handle, secret_hash) = (new.handle.clone(), new.secret_hash.clone());

    let created = storage
        .create_agent_token(project.id, agent.id, new, 2, None)
        .await
        .unwrap();
    let credential = storage
        .agent_token_by_handle(&handle)
        .await
        .unwrap()
        .expect("the token is found by its handle");

    assert_eq!(
        created,
        AgentToken {
            id: created.id,
            agent_id: agent.id,
            project_id: project.id,
            name: "deploy".to_owned(),
            description: Some("for the deploy pipeline".to_owned()),
            status: TokenStatus::Active,
            created_by_user_id: Some(owner.id),
            created_at_ms: 2,
            last_used_at_ms: None,
            expires_at_ms: None,
            revocation: None,
            retiring_until_ms: None,
            successor_id: None,
            pending_predecessor_id: None,
        }
    );
    assert_eq!(credential.token, created);
    assert_eq!(credential.secret_hash, secret_hash);
    let unknown = secrets.unknown_handle(TokenKind::Agent);
    assert!(
        storage
            .agent_token_by_handle(&unknown)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        storage
            .personal_access_token_by_handle(&handle)
            .await
            .unwrap()
            .is_none()
    );
}

pub(crate) async fn recorded_token_use_never_moves_backwards(storage: &dyn Storage) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let mut secrets = Secrets::seeded(1);
    let new = secrets.agent_token();
    let handle = new.handle.clone();
    let token = storage
        .create_agent_token(project.id, agent.id, new, 2, None)
        .await
        .unwrap();
    let other = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 2, None)
        .await
        .unwrap();
    let last_used = async |token_id| {
        storage
            .agent_token(project.id, agent.id, token_id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at_ms
    };

    storage
        .record_agent_token_use(vec![(token.id, 100)])
        .await
        .unwrap();
    let after_first_use = last_used(token.id).await;
    storage
        .record_agent_token_use(vec![(token.id, 50), (other.id, 70)])
        .await
        .unwrap();
    let after_older_use = last_used(token.id).await;
    storage
        .record_agent_token_use(vec![(token.id, 300), (token.id, 200)])
        .await
        .unwrap();
    let after_a_batch = last_used(token.id).await;
    let unknown_token = storage
        .record_agent_token_use(vec![(AgentTokenId::new(999_999), 5)])
        .await;

    assert_eq!(after_first_use, Some(100));
    assert_eq!(after_older_use, Some(100));
    assert_eq!(last_used(other.id).await, Some(70));
    assert_eq!(after_a_batch, Some(300));
    assert!(unknown_token.is_ok(), "{unknown_token:?}");
    let credential = storage
        .agent_token_by_handle(&handle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(credential.token.last_used_at_ms, Some(300));
    let active = storage
        .active_agent_tokens(project.id, agent.id)
        .await
        .unwrap()
        .unwrap();
    let mut last_uses: Vec<_> = active
        .iter()
        .map(|token| (token.id, token.last_used_at_ms))
        .collect();
    last_uses.sort();
    assert_eq!(last_uses, [(token.id, Some(300)), (other.id, Some(70))]);
}

pub(crate) async fn an_expired_token_frees_its_slot(storage: &dyn Storage) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let mut secrets = Secrets::seeded(1);
    let expiring = NewAgentToken {
        expires_at_ms: Some(100),
        ..secrets.agent_token()
    };
    let expiring = storage
        .create_agent_token(project.id, agent.id, expiring, 2, None)
        .await
        .unwrap();
    storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 3, None)
        .await
        .unwrap();

    let before_expiry = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 99, None)
        .await;
    let at_expiry = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 100, None)
        .await;
    let after_replacement = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 101, None)
        .await;

    assert!(
        matches!(before_expiry, Err(CreateAgentTokenError::LimitReached(_))),
        "{before_expiry:?}"
    );
    assert!(at_expiry.is_ok(), "{at_expiry:?}");
    assert!(
        matches!(
            after_replacement,
            Err(CreateAgentTokenError::LimitReached(_))
        ),
        "{after_replacement:?}"
    );
    assert_eq!(expiring.expires_at_ms, Some(100));
    let stored = storage
        .agent_token(project.id, agent.id, expiring.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.expires_at_ms, Some(100));
    assert!(!stored.is_usable(100));
    let token_set = storage
        .agent_token_set(project.id, agent.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token_set.usable(100).count(), 2);
}

pub(crate) async fn concurrent_creates_after_an_expiry_never_exceed_two_usable_tokens(
    storage: &dyn Storage,
) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let mut secrets = Secrets::seeded(1);
    for expires_at_ms in [Some(10), None] {
        let new = NewAgentToken {
            expires_at_ms,
            ..secrets.agent_token()
        };
        storage
            .create_agent_token(project.id, agent.id, new, 2, None)
            .await
            .unwrap();
    }
    let creates: Vec<_> = (0..50)
        .map(|_| secrets.agent_token())
        .map(|new| storage.create_agent_token(project.id, agent.id, new, 20, None))
        .collect();

    let results = futures::future::join_all(creates).await;

    let n_created = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(n_created, 1, "{results:?}");
    let token_set = storage
        .agent_token_set(project.id, agent.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token_set.usable(20).count(), 2);
}

pub(crate) async fn revoking_keeps_the_first_reason_and_expired_tokens_revoke_as_expired(
    storage: &dyn Storage,
) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let mut secrets = Secrets::seeded(1);
    let leaked = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 2, None)
        .await
        .unwrap();
    let expiring = NewAgentToken {
        expires_at_ms: Some(50),
        ..secrets.agent_token()
    };
    let expiring = storage
        .create_agent_token(project.id, agent.id, expiring, 2, None)
        .await
        .unwrap();
    let leak = RevokeAgentToken {
        by_user_id: Some(owner.id),
        reason: RevocationReason::parse("found in a build log").unwrap(),
    };

    let first = storage
        .revoke_agent_token(project.id, agent.id, leaked.id, leak, 10, None)
        .await
        .unwrap();
    let second = storage
        .revoke_agent_token(
            project.id,
            agent.id,
            leaked.id,
            RevokeAgentToken::default(),
            11,
            None,
        )
        .await
        .unwrap();
    let expired = storage
        .revoke_agent_token(
            project.id,
            agent.id,
            expiring.id,
            RevokeAgentToken {
                by_user_id: Some(owner.id),
                reason: RevocationReason::revoked(),
            },
            60,
            None,
        )
        .await
        .unwrap();

    let leak_details = Revocation {
        revoked_at_ms: 10,
        revoked_by_user_id: Some(owner.id),
        reason: RevocationReason::parse("found in a build log").unwrap(),
    };
    assert_eq!(first.revocation, Some(leak_details.clone()));
    assert_eq!(second.revocation, Some(leak_details));
    assert_eq!(
        expired.revocation,
        Some(Revocation {
            revoked_at_ms: 50,
            revoked_by_user_id: None,
            reason: RevocationReason::expired(),
        })
    );
    let mut all: Vec<(AgentTokenId, TokenStatus)> = storage
        .all_agent_tokens(project.id, agent.id)
        .await
        .unwrap()
        .unwrap()
        .iter()
        .map(|token| (token.id, token.status))
        .collect();
    all.sort_by_key(|(id, _)| *id);
    assert_eq!(
        all,
        [
            (leaked.id, TokenStatus::Revoked),
            (expiring.id, TokenStatus::Revoked)
        ]
    );
    let foreign = fixtures::agent(storage, project.id, "b").await;
    assert_eq!(
        storage
            .all_agent_tokens(project.id, foreign.id)
            .await
            .unwrap(),
        Some(Vec::new())
    );
    assert_eq!(
        storage
            .all_agent_tokens(project.id, AgentId::new(999_999))
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn rotating_keeps_the_slot_and_makes_the_successor_pending(storage: &dyn Storage) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let mut secrets = Secrets::seeded(1);
    let first = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 2, None)
        .await
        .unwrap();
    storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 2, None)
        .await
        .unwrap();

    let successor = secrets.agent_token();
    let successor_handle = successor.handle.clone();
    let rotated = storage
        .rotate_agent_token(
            project.id,
            agent.id,
            first.id,
            NewRotation {
                successor,
                retiring_until_ms: 1_000,
            },
            3,
            None,
        )
        .await
        .unwrap();
    let create = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 4, None)
        .await;

    assert_eq!(rotated.predecessor.id, first.id);
    assert_eq!(rotated.predecessor.retiring_until_ms, Some(1_000));
    assert_eq!(rotated.predecessor.successor_id, Some(rotated.successor.id));
    assert_eq!(rotated.successor.pending_predecessor_id, Some(first.id));
    assert_eq!(rotated.successor.created_at_ms, 3);
    assert!(matches!(
        create,
        Err(CreateAgentTokenError::LimitReached(_))
    ));
    let token_set = storage
        .agent_token_set(project.id, agent.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token_set.usable(4).count(), 3);
    assert_eq!(token_set.retiring(4).collect::<Vec<_>>(), [first.id.get()]);
    assert_eq!(token_set.usable(1_000).count(), 2);
    assert_eq!(
        storage
            .agent_token(project.id, agent.id, first.id)
            .await
            .unwrap(),
        Some(rotated.predecessor.clone())
    );
    let credential = storage
        .agent_token_by_handle(&successor_handle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(credential.token, rotated.successor);
}

pub(crate) async fn concurrent_rotations_of_one_token_create_exactly_one_successor(
    storage: &dyn Storage,
) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let mut secrets = Secrets::seeded(1);
    let token = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 2, None)
        .await
        .unwrap();
    let rotations: Vec<_> = (0..20)
        .map(|_| secrets.agent_token())
        .map(|new| {
            storage.rotate_agent_token(
                project.id,
                agent.id,
                token.id,
                NewRotation {
                    successor: new,
                    retiring_until_ms: 1_000,
                },
                3,
                None,
            )
        })
        .collect();

    let results = futures::future::join_all(rotations).await;

    let successors: Vec<AgentTokenId> = results
        .iter()
        .filter_map(|result| result.as_ref().ok())
        .map(|rotated| rotated.successor.id)
        .collect();
    assert_eq!(successors.len(), 1, "{results:?}");
    assert!(results.iter().all(|result| matches!(
        result,
        Ok(_)
            | Err(RotateAgentTokenError::Refused(
                RotationRefused::AlreadyRotating
            ))
    )));
    let stored = storage
        .agent_token(project.id, agent.id, token.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.successor_id, Some(successors[0]));
    assert_eq!(
        storage
            .all_agent_tokens(project.id, agent.id)
            .await
            .unwrap()
            .unwrap()
            .len(),
        2
    );
}

pub(crate) async fn fifty_mixed_rotations_and_creates_leave_two_counted_tokens_and_one_retiring(
    storage: &dyn Storage,
) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let mut secrets = Secrets::seeded(1);
    let token = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 2, None)
        .await
        .unwrap();
    let operations: Vec<_> = (0..50)
        .map(|operation_idx| {
            let new = secrets.agent_token();
            async move {
                if operation_idx % 2 == 0 {
                    storage
                        .rotate_agent_token(
                            project.id,
                            agent.id,
                            token.id,
                            NewRotation {
                                successor: new,
                                retiring_until_ms: 1_000,
                            },
                            3,
                            None,
                        )
                        .await
                        .is_ok()
                } else {
                    storage
                        .create_agent_token(project.id, agent.id, new, 3, None)
                        .await
                        .is_ok()
                }
            }
        })
        .collect();

    let outcomes = futures::future::join_all(operations).await;

    let n_rotated = outcomes.iter().step_by(2).filter(|ok| **ok).count();
    let n_created = outcomes.iter().skip(1).step_by(2).filter(|ok| **ok).count();
    assert_eq!((n_rotated, n_created), (1, 1), "{outcomes:?}");
    let token_set = storage
        .agent_token_set(project.id, agent.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token_set.usable(3).count(), 3);
    assert_eq!(token_set.retiring(3).collect::<Vec<_>>(), [token.id.get()]);
    assert!(token_set.check_capacity(3).is_err());
}

pub(crate) async fn the_successors_first_use_retires_the_predecessor_once(storage: &dyn Storage) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let mut secrets = Secrets::seeded(1);
    let token = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 2, None)
        .await
        .unwrap();
    let rotated = storage
        .rotate_agent_token(
            project.id,
            agent.id,
            token.id,
            NewRotation {
                successor: secrets.agent_token(),
                retiring_until_ms: 1_000,
            },
            3,
            None,
        )
        .await
        .unwrap();

    let completions = futures::future::join_all(
        (0..10).map(|_| storage.complete_agent_token_rotation(rotated.successor.id, 5, None)),
    )
    .await;

    let retired: Vec<AgentToken> = completions.into_iter().filter_map(Result::unwrap).collect();
    assert_eq!(retired.len(), 1, "{retired:?}");
    assert_eq!(retired[0].id, token.id);
    assert_eq!(retired[0].status, TokenStatus::Revoked);
    assert_eq!(
        retired[0].revocation,
        Some(Revocation {
            revoked_at_ms: 5,
            revoked_by_user_id: None,
            reason: RevocationReason::rotated(),
        })
    );
    let successor = storage
        .agent_token(project.id, agent.id, rotated.successor.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(successor.pending_predecessor_id, None);
    let token_set = storage
        .agent_token_set(project.id, agent.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        token_set.usable(5).collect::<Vec<_>>(),
        [rotated.successor.id.get()]
    );
    // The slot the predecessor held is free again, and a new rotation may start.
    storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 6, None)
        .await
        .unwrap();
    storage
        .rotate_agent_token(
            project.id,
            agent.id,
            rotated.successor.id,
            NewRotation {
                successor: secrets.agent_token(),
                retiring_until_ms: 2_000,
            },
            7,
            None,
        )
        .await
        .unwrap();
}

pub(crate) async fn revoked_expired_and_retired_tokens_cannot_be_rotated(storage: &dyn Storage) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let mut secrets = Secrets::seeded(1);
    let expiring = NewAgentToken {
        expires_at_ms: Some(10),
        ..secrets.agent_token()
    };
    let expiring = storage
        .create_agent_token(project.id, agent.id, expiring, 2, None)
        .await
        .unwrap();
    let revoked = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 2, None)
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

    let rotate = |token_id: AgentTokenId, now_ms: i64, seed: &mut Secrets| {
        storage.rotate_agent_token(
            project.id,
            agent.id,
            token_id,
            NewRotation {
                successor: seed.agent_token(),
                retiring_until_ms: now_ms + 100,
            },
            now_ms,
            None,
        )
    };
    let expired = rotate(expiring.id, 10, &mut secrets).await;
    let revoked = rotate(revoked.id, 10, &mut secrets).await;
    let unknown = rotate(AgentTokenId::new(999_999), 10, &mut secrets).await;

    for result in [expired, revoked, unknown] {
        assert!(
            matches!(
                result,
                Err(RotateAgentTokenError::Refused(RotationRefused::NotFound))
            ),
            "{result:?}"
        );
    }
}

pub(crate) async fn deadlines_list_every_active_token_that_has_one(storage: &dyn Storage) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let mut secrets = Secrets::seeded(1);
    let expiring = NewAgentToken {
        expires_at_ms: Some(500),
        ..secrets.agent_token()
    };
    storage
        .create_agent_token(project.id, agent.id, expiring, 2, None)
        .await
        .unwrap();
    let rotating = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 2, None)
        .await
        .unwrap();
    storage
        .rotate_agent_token(
            project.id,
            agent.id,
            rotating.id,
            NewRotation {
                successor: secrets.agent_token(),
                retiring_until_ms: 300,
            },
            3,
            None,
        )
        .await
        .unwrap();

    let mut deadlines = storage.agent_token_deadlines().await.unwrap();

    deadlines.sort_by_key(|deadline| (deadline.expires_at_ms, deadline.retiring_until_ms));
    assert_eq!(
        deadlines,
        [
            TokenDeadlines {
                expires_at_ms: None,
                retiring_until_ms: Some(300),
            },
            TokenDeadlines {
                expires_at_ms: Some(500),
                retiring_until_ms: None,
            },
        ]
    );
}

pub(crate) async fn ended_tokens_are_recorded_once_with_their_reason_and_deadline(
    storage: &dyn Storage,
) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let mut secrets = Secrets::seeded(1);
    let expiring = NewAgentToken {
        expires_at_ms: Some(10),
        ..secrets.agent_token()
    };
    let expiring = storage
        .create_agent_token(project.id, agent.id, expiring, 2, None)
        .await
        .unwrap();
    let rotating = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 2, None)
        .await
        .unwrap();
    let rotated = storage
        .rotate_agent_token(
            project.id,
            agent.id,
            rotating.id,
            NewRotation {
                successor: secrets.agent_token(),
                retiring_until_ms: 20,
            },
            3,
            None,
        )
        .await
        .unwrap();

    let early = storage.retire_ended_agent_tokens(5, None).await.unwrap();
    let sweeps =
        futures::future::join_all((0..10).map(|_| storage.retire_ended_agent_tokens(25, None)))
            .await;

    assert!(early.is_empty(), "{early:?}");
    let mut retired: Vec<AgentToken> = sweeps.into_iter().flat_map(Result::unwrap).collect();
    retired.sort_by_key(|token| token.id);
    let details: Vec<(AgentTokenId, Option<Revocation>)> = retired
        .iter()
        .map(|token| (token.id, token.revocation.clone()))
        .collect();
    assert_eq!(
        details,
        [
            (
                expiring.id,
                Some(Revocation {
                    revoked_at_ms: 10,
                    revoked_by_user_id: None,
                    reason: RevocationReason::expired(),
                })
            ),
            (
                rotating.id,
                Some(Revocation {
                    revoked_at_ms: 20,
                    revoked_by_user_id: None,
                    reason: RevocationReason::rotated(),
                })
            ),
        ]
    );
    let token_set = storage
        .agent_token_set(project.id, agent.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token_set.active(), [rotated.successor.id.get()]);
    assert!(
        storage
            .retire_ended_agent_tokens(30, None)
            .await
            .unwrap()
            .is_empty()
    );
}

pub(crate) async fn a_held_rotation_secret_is_taken_once_by_its_rotator_within_the_window(
    storage: &dyn Storage,
) {
    let predecessor = AgentTokenId::new(7);
    let rotator = agentreg_domain::ids::UserId::new(3);
    let held = |key: &str, expires_at_ms| agentreg_storage::port::RotationRetrieval {
        predecessor_id: predecessor,
        idempotency_key: key.to_owned(),
        user_id: rotator,
        successor_id: AgentTokenId::new(8),
        sealed_secret: vec![1, 2, 3],
        expires_at_ms,
    };
    storage
        .hold_rotation_secret(held("k1", 1_000))
        .await
        .unwrap();
    storage
        .hold_rotation_secret(held("old", 500))
        .await
        .unwrap();

    let other_user = storage
        .take_rotation_secret(predecessor, "k1", agentreg_domain::ids::UserId::new(4), 100)
        .await
        .unwrap();
    let other_key = storage
        .take_rotation_secret(predecessor, "k2", rotator, 100)
        .await
        .unwrap();
    let takes = (0..10).map(|_| storage.take_rotation_secret(predecessor, "k1", rotator, 100));
    let taken: Vec<_> = futures::future::join_all(takes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let purged = storage.purge_rotation_secrets(600).await.unwrap();
    let after_window = storage
        .take_rotation_secret(predecessor, "old", rotator, 100)
        .await
        .unwrap();

    assert_eq!(other_user, None, "only the rotator may take it");
    assert_eq!(other_key, None, "only with the same key");
    let winners: Vec<_> = taken.iter().flatten().collect();
    assert_eq!(
        winners,
        vec![&(AgentTokenId::new(8), vec![1, 2, 3])],
        "taken once"
    );
    assert_eq!(purged, 1);
    assert_eq!(after_window, None, "gone once its window ended");
}
