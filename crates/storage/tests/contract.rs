//! The storage contract: every invariant that the port (`agentreg_storage::port::Storage`)
//! promises, checked against every backend through `Arc<dyn Storage>`. Each case is one async body
//! over `&dyn Storage`; `contract_cases!` runs it on sled always, and on PostgreSQL when
//! `AGENTREG_TEST_DATABASE_URL` names an administrative connection (each test then gets a fresh
//! database of its own).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a contract case that cannot proceed should fail loudly"
)]

/// Expands every case into one test per backend: `on_sled::<module>::<case>` and
/// `on_postgres::<module>::<case>`. Cases under `one_storage` take a populated-as-they-like
/// storage; cases under `two_storages` also get a second, empty storage of the same backend.
macro_rules! contract_cases {
    (
        one_storage { $($module:ident { $($case:ident),* $(,)? })* }
        two_storages { $($pair_module:ident { $($pair_case:ident),* $(,)? })* }
    ) => {
        contract_cases!(@backend on_sled, Sled,
            one_storage { $($module { $($case),* })* }
            two_storages { $($pair_module { $($pair_case),* })* });
        contract_cases!(@backend on_postgres, Postgres,
            one_storage { $($module { $($case),* })* }
            two_storages { $($pair_module { $($pair_case),* })* });
    };
    (
        @backend $backend_module:ident, $backend:ident,
        one_storage { $($module:ident { $($case:ident),* })* }
        two_storages { $($pair_module:ident { $($pair_case:ident),* })* }
    ) => {
        mod $backend_module {
            $(mod $module {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $case() {
                        use futures::FutureExt as _;
                        let backend = crate::backends::Backend::$backend;
                        let Some(scratch) = crate::backends::Scratch::open(backend).await else {
                            return;
                        };
                        let outcome =
                            std::panic::AssertUnwindSafe(crate::$module::$case(scratch.storage()))
                                .catch_unwind()
                                .await;
                        crate::backends::Scratch::close_all([scratch], outcome).await;
                    }
                )*
            })*
            $(mod $pair_module {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $pair_case() {
                        use futures::FutureExt as _;
                        let backend = crate::backends::Backend::$backend;
                        let Some(source) = crate::backends::Scratch::open(backend).await else {
                            return;
                        };
                        let Some(target) = crate::backends::Scratch::open(backend).await else {
                            return;
                        };
                        let outcome = std::panic::AssertUnwindSafe(crate::$pair_module::$pair_case(
                            source.storage(),
                            target.storage(),
                        ))
                        .catch_unwind()
                        .await;
                        crate::backends::Scratch::close_all([source, target], outcome).await;
                    }
                )*
            })*
        }
    };
}

#[path = "contract/agent_tokens.rs"]
mod agent_tokens;
#[path = "contract/agents.rs"]
mod agents;
#[path = "contract/audit.rs"]
mod audit;
#[path = "contract/backends.rs"]
mod backends;
#[path = "contract/backup.rs"]
mod backup;
#[path = "contract/fixtures.rs"]
mod fixtures;
#[path = "contract/identity.rs"]
mod identity;
#[path = "contract/pages.rs"]
mod pages;
#[path = "contract/url_configs.rs"]
mod url_configs;

// The PostgreSQL backend's constructor.
#[path = "contract/postgres_backend.rs"]
mod postgres_backend;

contract_cases! {
    one_storage {
        identity {
            a_revoked_personal_access_token_stays_revoked_and_unknown_ones_are_none,
            a_fresh_storage_is_empty_and_ready,
            usernames_and_emails_are_unique_case_insensitively,
            project_paths_are_unique_case_insensitively_per_namespace,
            members_are_added_once_and_only_for_existing_users,
            a_personal_access_token_is_found_by_its_handle_with_its_user_and_hash,
        }
        agents {
            agent_names_are_unique_within_a_project,
            all_agents_lists_every_agent_with_its_project_and_tokens,
            concurrent_creates_of_one_name_create_exactly_one_agent,
            agents_are_paged_in_byte_order_of_their_names,
            agents_are_found_only_through_their_project,
            a_project_is_read_with_the_users_level_and_the_agent_asked_for,
            a_project_read_with_access_finds_nothing_it_does_not_name,
            deleting_an_agent_removes_its_tokens_and_url_configuration_and_frees_its_name,
            deleting_an_agent_modified_after_the_precondition_is_refused,
            ids_grow_and_are_never_reused,
        }
        agent_tokens {
            a_held_rotation_secret_is_taken_once_by_its_rotator_within_the_window,
            a_third_active_token_is_refused_until_one_is_revoked,
            concurrent_token_creates_never_exceed_two_active_tokens,
            revoking_is_idempotent_and_keeps_the_record,
            tokens_are_found_only_through_their_agent,
            a_token_is_found_by_its_handle_with_its_hash,
            recorded_token_use_never_moves_backwards,
            an_expired_token_frees_its_slot,
            concurrent_creates_after_an_expiry_never_exceed_two_usable_tokens,
            revoking_keeps_the_first_reason_and_expired_tokens_revoke_as_expired,
            rotating_keeps_the_slot_and_makes_the_successor_pending,
            concurrent_rotations_of_one_token_create_exactly_one_successor,
            fifty_mixed_rotations_and_creates_leave_two_counted_tokens_and_one_retiring,
            the_successors_first_use_retires_the_predecessor_once,
            revoked_expired_and_retired_tokens_cannot_be_rotated,
            deadlines_list_every_active_token_that_has_one,
            ended_tokens_are_recorded_once_with_their_reason_and_deadline,
        }
        pages {
            offset_pages_match_a_sorted_list_at_bucket_boundaries,
            offset_pages_stay_exact_after_inserts_and_deletes_in_the_middle,
            concurrent_registrations_and_deletions_keep_every_offset_page_exact,
            random_changes_keep_offset_pages_equal_to_a_sorted_list,
            keyset_pages_walk_every_agent_once_in_each_order,
            a_keyset_page_continues_after_a_deleted_cursor,
        }
        url_configs {
            an_agent_has_at_most_one_url_configuration,
            concurrent_url_configuration_creates_create_exactly_one,
            creating_and_deleting_a_url_configuration_updates_the_agent,
            deleting_a_url_configuration_created_after_the_precondition_is_refused,
            all_url_configurations_are_listed_by_id,
            a_sealed_key_is_replaced_in_either_mode,
        }
        audit {
            an_audited_create_writes_its_event_with_the_change,
            every_audited_write_records_its_event,
            refused_writes_record_no_event,
            instance_events_are_kept_apart_from_project_events,
            audit_events_are_paged_newest_first,
            retention_deletes_only_old_instance_events,
            audit_details_come_back_as_they_were_given,
            counts_follow_agents_active_tokens_and_url_configurations,
        }
    }
    two_storages {
        backup {
            a_snapshot_restores_every_record_into_an_empty_storage,
            restore_refuses_a_storage_that_holds_data,
            restore_refuses_a_damaged_snapshot_and_writes_nothing,
            restore_refuses_a_record_that_does_not_decode_and_writes_nothing,
            the_key_fingerprint_is_recorded_once_and_travels_with_a_snapshot,
            a_restored_storage_pages_like_its_source,
        }
    }
}

/// A snapshot is the one format every backend reads, so each backend restores the other's.
mod across_backends {
    use crate::backends::{Backend, Scratch};
    use futures::FutureExt as _;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_sled_snapshot_restores_into_postgres() {
        let Some(target) = Scratch::open(Backend::Postgres).await else {
            return;
        };
        let source = Scratch::open(Backend::Sled).await.unwrap();

        let outcome = std::panic::AssertUnwindSafe(
            crate::backup::a_snapshot_restores_every_record_into_an_empty_storage(
                source.storage(),
                target.storage(),
            ),
        )
        .catch_unwind()
        .await;

        Scratch::close_all([source, target], outcome).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_postgres_snapshot_restores_into_sled() {
        let Some(source) = Scratch::open(Backend::Postgres).await else {
            return;
        };
        let target = Scratch::open(Backend::Sled).await.unwrap();

        let outcome = std::panic::AssertUnwindSafe(
            crate::backup::a_snapshot_restores_every_record_into_an_empty_storage(
                source.storage(),
                target.storage(),
            ),
        )
        .catch_unwind()
        .await;

        Scratch::close_all([source, target], outcome).await;
    }
}
