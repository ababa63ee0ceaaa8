//! `agentreg backup` and `agentreg restore`: snapshots of either backend, in the one snapshot
//! format, so that a sled deployment moves to PostgreSQL (and back) by backup and restore. A
//! snapshot holds the database only; the instance's key files stay out of it, so a leaked
//! snapshot does not reveal private keys, which are encrypted with the instance key. Every
//! snapshot is authenticated with a key derived from the instance key, so both commands need
//! the encryption key file, and a snapshot altered without it is refused.

use crate::app::crypto::SnapshotAuthenticator;
use crate::config::DatabaseSettings;
use crate::{backends, secrets};
use agentreg_storage::backup::{SnapshotSummary, summarize};
use anyhow::Context;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes a snapshot of the database (sled in `data_dir`, or PostgreSQL) to `out` (mode 0600,
/// created new).
/// `key_file` is the instance's encryption key [default: `<data_dir>/encryption_key`].
pub async fn backup(
    database: Option<&DatabaseSettings>,
    data_dir: &Path,
    out: &Path,
    key_file: Option<&Path>,
) -> anyhow::Result<SnapshotSummary> {
    if database.is_none() && !data_dir.join("db").exists() {
        anyhow::bail!("{} holds no agentreg database", data_dir.display());
    }
    if out.exists() {
        anyhow::bail!("{} already exists", out.display());
    }
    let authenticator = authenticator(key_file, data_dir)?;
    let storage = backends::open(database, data_dir)
        .await
        .context("opening the database (is a sled service still running on it?)")?;
    let bytes = storage.snapshot().await.context("taking the snapshot")?;
    let summary = summarize(&bytes).context("checking the snapshot just taken")?;
    let bytes = authenticator.seal(bytes);
    let partial = out.with_extension("partial");
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    writer.write_all(&bytes)?;
    writer.flush()?;
    writer.get_ref().sync_all()?;
    if out.exists() {
        std::fs::remove_file(&partial)?;
        anyhow::bail!("{} already exists", out.display());
    }
    std::fs::rename(&partial, out)
        .with_context(|| format!("moving the snapshot to {}", out.display()))?;
    Ok(summary)
}

/// Restores a snapshot into an empty database: PostgreSQL, or a sled `data_dir` that holds no
/// database (it may already hold the key files). The file's tag is checked with the encryption
/// key (`key_file`, default `<data_dir>/encryption_key`) and every record is decoded before
/// anything is written.
pub async fn restore(
    input: &Path,
    database: Option<&DatabaseSettings>,
    data_dir: &Path,
    key_file: Option<&Path>,
) -> anyhow::Result<SnapshotSummary> {
    let file = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let authenticator = authenticator(key_file, data_dir)?;
    let bytes = authenticator
        .open(&file)
        .with_context(|| format!("checking {}", input.display()))?
        .to_vec();
    summarize(&bytes).context("checking the snapshot")?;
    if database.is_none() {
        let db_dir = data_dir.join("db");
        if db_dir.exists() && std::fs::read_dir(&db_dir)?.next().is_some() {
            anyhow::bail!("{} is not empty", db_dir.display());
        }
        secrets::create_data_dir(data_dir)?;
    }
    let storage = backends::open(database, data_dir).await?;
    let summary = storage
        .restore(bytes)
        .await
        .context("restoring the snapshot")?;
    storage
        .flush()
        .await
        .context("flushing the restored data")?;
    Ok(summary)
}

/// The snapshot authenticator of the instance whose encryption key is in `key_file` (or
/// `<data_dir>/encryption_key`); the key is read, never generated.
fn authenticator(
    key_file: Option<&Path>,
    data_dir: &Path,
) -> anyhow::Result<SnapshotAuthenticator> {
    let path = key_file.map_or_else(|| data_dir.join("encryption_key"), Path::to_path_buf);
    if !path.exists() {
        anyhow::bail!(
            "the encryption key {} is missing: snapshots are authenticated with the instance's key; pass --encryption-key-file",
            path.display()
        );
    }
    let key = secrets::encryption_key(Some(&path), data_dir)?;
    Ok(SnapshotAuthenticator::new(&key))
}
