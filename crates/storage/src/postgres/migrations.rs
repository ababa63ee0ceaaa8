//! The schema's versioned, append-only migrations, embedded in the binary and applied in one
//! transaction under an advisory lock, so that replicas starting together migrate once.

use super::ConnectError;
use super::errors::pg;
use crate::EngineError;
use std::collections::BTreeSet;

/// A schema change. Versions are applied in order and never edited once released: a change to
/// the schema is a new file.
struct Migration {
    version: u32,
    sql: &'static str,
}

/// Versions need not be contiguous: each is applied if the database lacks it, in ascending
/// order, so changes developed side by side may take numbers out of order.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../../migrations/0002_instance_settings.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("../../migrations/0003_token_lifecycle.sql"),
    },
    Migration {
        version: 4,
        sql: include_str!("../../migrations/0004_rotation_retrievals.sql"),
    },
    Migration {
        version: 5,
        sql: include_str!("../../migrations/0005_agent_name_buckets.sql"),
    },
];

/// The advisory lock every migrating process takes: "agentreg" in ASCII.
const MIGRATION_LOCK_KEY: i64 = 0x6167_656e_7472_6567;

/// The newest schema version this build knows.
pub(super) fn newest_version() -> u32 {
    MIGRATIONS
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0)
}

/// Every version this build knows, ascending.
#[cfg(test)]
pub(super) fn versions() -> Vec<u32> {
    MIGRATIONS
        .iter()
        .map(|migration| migration.version)
        .collect()
}

/// Applies the migrations the database lacks, and returns their versions (none when the schema
/// is current). Refuses a database migrated by a newer build.
pub(super) async fn apply(client: &mut tokio_postgres::Client) -> Result<Vec<u32>, ConnectError> {
    apply_through(client, u32::MAX).await
}

/// [`apply`], up to and including `last_version` only (tests apply an older schema, write to it,
/// then migrate it).
pub(super) async fn apply_through(
    client: &mut tokio_postgres::Client,
    last_version: u32,
) -> Result<Vec<u32>, ConnectError> {
    let transaction = client.transaction().await.map_err(pg)?;
    // Waiting for another replica's migration, or a long migration, is not an outage.
    transaction
        .batch_execute("SET LOCAL statement_timeout = 0")
        .await
        .map_err(pg)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(pg)?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS agentreg_schema_migrations (
                version INTEGER PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(pg)?;
    let rows = transaction
        .query("SELECT version FROM agentreg_schema_migrations", &[])
        .await
        .map_err(pg)?;
    let mut applied = BTreeSet::new();
    for row in rows {
        let version: i32 = row.try_get(0).map_err(pg)?;
        applied.insert(u32::try_from(version).unwrap_or(u32::MAX));
    }
    let known = newest_version();
    if let Some(found) = applied.last().copied()
        && found > known
    {
        return Err(ConnectError::SchemaTooNew { found, known });
    }
    let mut newly_applied = Vec::new();
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) || migration.version > last_version {
            continue;
        }
        transaction
            .batch_execute(migration.sql)
            .await
            .map_err(|source| ConnectError::Migration {
                version: migration.version,
                source: EngineError::new(source),
            })?;
        let version = i32::try_from(migration.version).unwrap_or(i32::MAX);
        transaction
            .execute(
                "INSERT INTO agentreg_schema_migrations (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(pg)?;
        newly_applied.push(migration.version);
    }
    transaction.commit().await.map_err(pg)?;
    Ok(newly_applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_unique_and_ascending() {
        let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(versions, sorted);
        assert_eq!(newest_version(), *versions.last().unwrap());
    }
}
