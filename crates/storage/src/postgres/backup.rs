//! Snapshots of the PostgreSQL backend: every table read in one REPEATABLE READ transaction into
//! a [`Dataset`], and a [`Dataset`] written into an empty database with the sequences moved to
//! the snapshot's counters, so that ids stay monotonic across a restore.

use super::errors::pg;
use super::rows::{self, get, key, unsigned};
use crate::backup::RestoreError;
use crate::dataset::{Dataset, ID_KINDS};
use crate::records::v1;
use crate::schema::IdKind;
use crate::{EngineError, StoreError};
use tokio_postgres::IsolationLevel;

/// Every table that holds agentreg data; a restore refuses a database where any has a row.
const DATA_TABLES: [&str; 8] = [
    "users",
    "personal_access_tokens",
    "projects",
    "members",
    "agents",
    "agent_tokens",
    "url_configurations",
    "audit_events",
];

/// What the restore says when the target holds data.
const TARGET: &str = "the PostgreSQL database";

/// Reads everything as of one instant.
pub(super) async fn read_dataset(
    client: &mut deadpool_postgres::Object,
) -> Result<Dataset, StoreError> {
    let transaction = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg)?;
    // A large snapshot may take longer than one request's statement.
    transaction
        .batch_execute("SET LOCAL statement_timeout = 0")
        .await
        .map_err(pg)?;
    let mut dataset = Dataset::default();
    let users = transaction
        .query(
            "SELECT id, username, name, email, is_admin, created_at_ms FROM users",
            &[],
        )
        .await
        .map_err(pg)?;
    for row in &users {
        let user = v1::User {
            username: get(row, 1)?,
            name: get(row, 2)?,
            email: get(row, 3)?,
            is_admin: get(row, 4)?,
            created_at_ms: get(row, 5)?,
        };
        dataset.users.insert(id(row, 0)?, user);
    }
    let tokens = transaction
        .query(
            "SELECT id, user_id, name, scopes, expires_at, revoked, handle, secret_hash, \
             created_at_ms FROM personal_access_tokens",
            &[],
        )
        .await
        .map_err(pg)?;
    for row in &tokens {
        let token = v1::PersonalAccessToken {
            user_id: id(row, 1)?,
            name: get(row, 2)?,
            scopes: rows::scopes(row, 3)?,
            expires_at: rows::expiry_date(row, 4)?,
            revoked: get(row, 5)?,
            handle: get(row, 6)?,
            secret_hash: get(row, 7)?,
            created_at_ms: get(row, 8)?,
        };
        dataset.personal_access_tokens.insert(id(row, 0)?, token);
    }
    let projects = transaction
        .query(
            "SELECT id, name, path, description, owner_id, created_at_ms FROM projects",
            &[],
        )
        .await
        .map_err(pg)?;
    for row in &projects {
        let project = v1::Project {
            name: get(row, 1)?,
            path: get(row, 2)?,
            description: get(row, 3)?,
            owner_id: id(row, 4)?,
            created_at_ms: get(row, 5)?,
        };
        dataset.projects.insert(id(row, 0)?, project);
    }
    let members = transaction
        .query(
            "SELECT project_id, user_id, access_level, created_at_ms FROM members",
            &[],
        )
        .await
        .map_err(pg)?;
    for row in &members {
        let member = v1::Member {
            access_level: get(row, 2)?,
            created_at_ms: get(row, 3)?,
        };
        dataset.members.insert((id(row, 0)?, id(row, 1)?), member);
    }
    let agents = transaction
        .query(
            "SELECT a.id, a.project_id, a.name, a.created_by_user_id, a.created_at_ms, \
             a.updated_at_ms, c.id FROM agents a LEFT JOIN url_configurations c ON c.agent_id = a.id",
            &[],
        )
        .await
        .map_err(pg)?;
    for row in &agents {
        let agent_id = id(row, 0)?;
        let agent = v1::Agent {
            project_id: id(row, 1)?,
            name: get(row, 2)?,
            created_by_user_id: optional_id(row, 3)?,
            created_at_ms: get(row, 4)?,
            updated_at_ms: get(row, 5)?,
            url_configuration_id: optional_id(row, 6)?,
        };
        dataset.agents.insert(agent_id, agent);
        // Every agent has a token set from its creation on, as on sled.
        dataset
            .agent_token_sets
            .insert(agent_id, v1::AgentTokenSet::default());
    }
    let agent_tokens = transaction
        .query(
            "SELECT id, agent_id, project_id, name, description, revoked, created_by_user_id, \
             created_at_ms, handle, secret_hash, last_used_at_ms, expires_at_ms, revoked_at_ms, \
             revoked_by_user_id, revoked_reason, retiring_until_ms, successor_id, \
             pending_predecessor_id FROM agent_tokens ORDER BY list_position",
            &[],
        )
        .await
        .map_err(pg)?;
    for row in &agent_tokens {
        let token_id = id(row, 0)?;
        let token = v1::AgentToken {
            agent_id: id(row, 1)?,
            project_id: id(row, 2)?,
            name: get(row, 3)?,
            description: get(row, 4)?,
            revoked: get(row, 5)?,
            created_by_user_id: optional_id(row, 6)?,
            created_at_ms: get(row, 7)?,
            handle: get(row, 8)?,
            secret_hash: get(row, 9)?,
            expires_at_ms: get(row, 11)?,
            revoked_at_ms: get(row, 12)?,
            revoked_by_user_id: optional_id(row, 13)?,
            revoked_reason: get(row, 14)?,
            retiring_until_ms: get(row, 15)?,
            successor_id: optional_id(row, 16)?,
            pending_predecessor_id: optional_id(row, 17)?,
        };
        let token_set = dataset.agent_token_sets.entry(token.agent_id).or_default();
        if let Some(expires_at_ms) = token.expires_at_ms {
            token_set.expiries.insert(token_id, expires_at_ms);
        }
        if let Some(retiring_until_ms) = token.retiring_until_ms {
            token_set.retiring.insert(token_id, retiring_until_ms);
        }
        if token.revoked {
            token_set.revoked.push(token_id);
        } else {
            token_set.active.push(token_id);
        }
        if let Some(used_at_ms) = get::<Option<i64>>(row, 10)? {
            dataset.agent_token_last_used.insert(token_id, used_at_ms);
        }
        dataset.agent_tokens.insert(token_id, token);
    }
    let configs = transaction
        .query(
            &format!("SELECT {} FROM url_configurations c", rows::CONFIG_COLUMNS),
            &[],
        )
        .await
        .map_err(pg)?;
    for row in &configs {
        let config = rows::url_configuration(row)?;
        let auth = match config.auth {
            agentreg_domain::entities::SealedUrlAuth::Jwt {
                public_key,
                sealed_private_key,
            } => v1::UrlAuth::Jwt {
                public_key,
                sealed_private_key,
            },
            agentreg_domain::entities::SealedUrlAuth::Mtls {
                client_cert,
                sealed_client_key,
            } => v1::UrlAuth::Mtls {
                client_cert,
                sealed_client_key,
            },
        };
        let record = v1::UrlConfiguration {
            agent_id: config.agent_id.get(),
            project_id: config.project_id.get(),
            url: config.url,
            ca_cert: config.ca_cert,
            tls_host: config.tls_host,
            auth,
            created_by_user_id: config.created_by_user_id.map(|id| id.get()),
            created_at_ms: config.created_at_ms,
        };
        dataset.url_configurations.insert(config.id.get(), record);
    }
    let events = transaction
        .query(
            "SELECT id, project_id, author_id, entity_id, entity_type, details, created_at_ms \
             FROM audit_events",
            &[],
        )
        .await
        .map_err(pg)?;
    for row in &events {
        let details: String = get(row, 5)?;
        let details = serde_json::from_str(&details)
            .map_err(|error| StoreError::Engine(EngineError::new(error)))?;
        let event = v1::AuditEvent {
            author_id: optional_id(row, 2)?,
            entity_id: id(row, 3)?,
            entity_type: get(row, 4)?,
            details,
            created_at_ms: get(row, 6)?,
        };
        dataset
            .audit_events
            .insert((id(row, 1)?, id(row, 0)?), event);
    }
    // Sequences are not transactional: read last, they are at least as far as any id above.
    for kind in ID_KINDS {
        let row = transaction
            .query_one(
                &format!("SELECT last_value, is_called FROM {}", sequence(kind)),
                &[],
            )
            .await
            .map_err(pg)?;
        if get::<bool>(&row, 1)? {
            dataset
                .counters
                .insert(kind.counter_key(), unsigned(get(&row, 0)?));
        }
    }
    let fingerprint = transaction
        .query_opt(
            "SELECT value FROM instance_settings WHERE name = $1",
            &[&super::KEY_FINGERPRINT_SETTING],
        )
        .await
        .map_err(pg)?;
    dataset.key_fingerprint = fingerprint.map(|row| get(&row, 0)).transpose()?;
    transaction.commit().await.map_err(pg)?;
    Ok(dataset)
}

/// Writes a dataset into a database that holds no agentreg data, in one transaction.
pub(super) async fn write_dataset(
    client: &mut deadpool_postgres::Object,
    dataset: &Dataset,
) -> Result<(), RestoreError> {
    let transaction = client.transaction().await.map_err(pg)?;
    transaction
        .batch_execute(&format!(
            "SET LOCAL statement_timeout = 0; LOCK TABLE {} IN EXCLUSIVE MODE",
            DATA_TABLES.join(", ")
        ))
        .await
        .map_err(pg)?;
    let any_row = DATA_TABLES
        .iter()
        .map(|table| format!("EXISTS (SELECT 1 FROM {table})"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let not_empty = transaction
        .query_one(&format!("SELECT {any_row}"), &[])
        .await
        .map_err(pg)?;
    if get::<bool>(&not_empty, 0)? {
        return Err(RestoreError::TargetNotEmpty(TARGET.to_owned()));
    }

    let insert = transaction
        .prepare(
            "INSERT INTO users (id, username, username_folded, name, email, email_folded, \
             is_admin, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await
        .map_err(pg)?;
    for (user_id, user) in &dataset.users {
        transaction
            .execute(
                &insert,
                &[
                    &key(*user_id),
                    &user.username,
                    &user.username.to_lowercase(),
                    &user.name,
                    &user.email,
                    &user.email.to_lowercase(),
                    &user.is_admin,
                    &user.created_at_ms,
                ],
            )
            .await
            .map_err(pg)?;
    }

    let insert = transaction
        .prepare(
            "INSERT INTO personal_access_tokens (id, user_id, name, scopes, expires_at, revoked, \
             handle, secret_hash, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await
        .map_err(pg)?;
    for (token_id, token) in &dataset.personal_access_tokens {
        transaction
            .execute(
                &insert,
                &[
                    &key(*token_id),
                    &key(token.user_id),
                    &token.name,
                    &rows::scope_names(&token.scopes),
                    &rows::expiry_text(token.expires_at),
                    &token.revoked,
                    &token.handle,
                    &token.secret_hash,
                    &token.created_at_ms,
                ],
            )
            .await
            .map_err(pg)?;
    }

    let insert = transaction
        .prepare(
            "INSERT INTO projects (id, name, path, description, owner_id, full_path_folded, \
             created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(pg)?;
    for (project_id, project) in &dataset.projects {
        let owner = dataset
            .users
            .get(&project.owner_id)
            .ok_or(RestoreError::Corrupt)?;
        let full_path_folded = format!("{}/{}", owner.username, project.path).to_lowercase();
        transaction
            .execute(
                &insert,
                &[
                    &key(*project_id),
                    &project.name,
                    &project.path,
                    &project.description,
                    &key(project.owner_id),
                    &full_path_folded,
                    &project.created_at_ms,
                ],
            )
            .await
            .map_err(pg)?;
    }

    let insert = transaction
        .prepare(
            "INSERT INTO members (project_id, user_id, access_level, created_at_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .await
        .map_err(pg)?;
    for ((project_id, user_id), member) in &dataset.members {
        transaction
            .execute(
                &insert,
                &[
                    &key(*project_id),
                    &key(*user_id),
                    &member.access_level,
                    &member.created_at_ms,
                ],
            )
            .await
            .map_err(pg)?;
    }

    // The agents' name buckets (migration 0005) are counted once they are all in, rather than
    // agent by agent.
    transaction
        .batch_execute("SET LOCAL agentreg.rebuilding_agent_name_buckets = 'on'")
        .await
        .map_err(pg)?;
    let insert = transaction
        .prepare(
            "INSERT INTO agents (id, project_id, name, created_by_user_id, created_at_ms, \
             updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
        .map_err(pg)?;
    for (agent_id, agent) in &dataset.agents {
        transaction
            .execute(
                &insert,
                &[
                    &key(*agent_id),
                    &key(agent.project_id),
                    &agent.name,
                    &agent.created_by_user_id.map(key),
                    &agent.created_at_ms,
                    &agent.updated_at_ms,
                ],
            )
            .await
            .map_err(pg)?;
    }

    transaction
        .batch_execute(
            "SELECT agent_name_buckets_rebuild(); \
             SET LOCAL agentreg.rebuilding_agent_name_buckets = 'off'",
        )
        .await
        .map_err(pg)?;

    let insert = transaction
        .prepare(
            "INSERT INTO agent_tokens (id, agent_id, project_id, name, description, revoked, \
             created_by_user_id, created_at_ms, handle, secret_hash, last_used_at_ms, \
             list_position, expires_at_ms, revoked_at_ms, revoked_by_user_id, revoked_reason, \
             retiring_until_ms, successor_id, pending_predecessor_id) VALUES ($1, $2, $3, $4, $5, \
             $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        )
        .await
        .map_err(pg)?;
    // Positions follow each agent's lists, active then revoked, so that reading them back in
    // position order gives the same lists.
    let mut positions = std::collections::BTreeMap::new();
    for token_set in dataset.agent_token_sets.values() {
        for token_id in token_set.active.iter().chain(&token_set.revoked) {
            let next = i64::try_from(positions.len()).unwrap_or(i64::MAX - 1) + 1;
            positions.entry(*token_id).or_insert(next);
        }
    }
    let mut last_position = i64::try_from(positions.len()).unwrap_or(i64::MAX);
    for (token_id, token) in &dataset.agent_tokens {
        let position = match positions.get(token_id) {
            Some(position) => *position,
            None => {
                last_position += 1;
                last_position
            }
        };
        transaction
            .execute(
                &insert,
                &[
                    &key(*token_id),
                    &key(token.agent_id),
                    &key(token.project_id),
                    &token.name,
                    &token.description,
                    &token.revoked,
                    &token.created_by_user_id.map(key),
                    &token.created_at_ms,
                    &token.handle,
                    &token.secret_hash,
                    &dataset.agent_token_last_used.get(token_id),
                    &position,
                    &token.expires_at_ms,
                    &token.revoked_at_ms,
                    &token.revoked_by_user_id.map(key),
                    &token.revoked_reason,
                    &token.retiring_until_ms,
                    &token.successor_id.map(key),
                    &token.pending_predecessor_id.map(key),
                ],
            )
            .await
            .map_err(pg)?;
    }

    let insert = transaction
        .prepare(
            "INSERT INTO url_configurations (id, agent_id, project_id, url, ca_cert, tls_host, \
             auth_mode, public_key, sealed_private_key, client_cert, sealed_client_key, \
             created_by_user_id, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .await
        .map_err(pg)?;
    for (config_id, config) in &dataset.url_configurations {
        let (auth_mode, public_key, sealed_private_key, client_cert, sealed_client_key) =
            match &config.auth {
                v1::UrlAuth::Jwt {
                    public_key,
                    sealed_private_key,
                } => (
                    rows::JWT,
                    Some(public_key),
                    Some(sealed_private_key),
                    None,
                    None,
                ),
                v1::UrlAuth::Mtls {
                    client_cert,
                    sealed_client_key,
                } => (
                    rows::MTLS,
                    None,
                    None,
                    Some(client_cert),
                    Some(sealed_client_key),
                ),
            };
        transaction
            .execute(
                &insert,
                &[
                    &key(*config_id),
                    &key(config.agent_id),
                    &key(config.project_id),
                    &config.url,
                    &config.ca_cert,
                    &config.tls_host,
                    &auth_mode,
                    &public_key,
                    &sealed_private_key,
                    &client_cert,
                    &sealed_client_key,
                    &config.created_by_user_id.map(key),
                    &config.created_at_ms,
                ],
            )
            .await
            .map_err(pg)?;
    }

    let insert = transaction
        .prepare(
            "INSERT INTO audit_events (id, project_id, author_id, entity_id, entity_type, \
             details, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(pg)?;
    for ((project_id, event_id), event) in &dataset.audit_events {
        transaction
            .execute(
                &insert,
                &[
                    &key(*event_id),
                    &key(*project_id),
                    &event.author_id.map(key),
                    &key(event.entity_id),
                    &event.entity_type,
                    &event.details.to_string(),
                    &event.created_at_ms,
                ],
            )
            .await
            .map_err(pg)?;
    }

    // The next id of each kind follows the snapshot's counter, and never goes below what this
    // database already issued.
    for kind in ID_KINDS {
        let last_id = dataset.last_id(kind);
        if last_id == 0 {
            continue;
        }
        let sequence = sequence(kind);
        transaction
            .execute(
                &format!(
                    "SELECT setval('{sequence}', GREATEST($1, \
                     (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {sequence})))"
                ),
                &[&key(last_id)],
            )
            .await
            .map_err(pg)?;
    }
    if let Some(fingerprint) = &dataset.key_fingerprint {
        transaction
            .execute(
                "INSERT INTO instance_settings (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                &[&super::KEY_FINGERPRINT_SETTING, fingerprint],
            )
            .await
            .map_err(pg)?;
    }
    if last_position > 0 {
        transaction
            .execute(
                "SELECT setval('agent_token_list_positions', GREATEST($1, \
                 (SELECT last_value FROM agent_token_list_positions)))",
                &[&last_position],
            )
            .await
            .map_err(pg)?;
    }
    transaction.commit().await.map_err(pg)?;
    Ok(())
}

/// The sequence that issues a kind's ids.
fn sequence(kind: IdKind) -> &'static str {
    match kind {
        IdKind::User => "users_id_seq",
        IdKind::PersonalAccessToken => "personal_access_tokens_id_seq",
        IdKind::Project => "projects_id_seq",
        IdKind::Agent => "agents_id_seq",
        IdKind::AgentToken => "agent_tokens_id_seq",
        IdKind::UrlConfiguration => "url_configurations_id_seq",
        IdKind::AuditEvent => "audit_events_id_seq",
    }
}

fn id(row: &tokio_postgres::Row, index: usize) -> Result<u64, StoreError> {
    get::<i64>(row, index).map(unsigned)
}

fn optional_id(row: &tokio_postgres::Row, index: usize) -> Result<Option<u64>, StoreError> {
    Ok(get::<Option<i64>>(row, index)?.map(unsigned))
}
