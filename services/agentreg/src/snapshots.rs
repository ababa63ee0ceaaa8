//! `agentreg backup` and `agentreg restore`: snapshots of either backend, in the one snapshot
//! format, so that a sled deployment moves to PostgreSQL (and back) by backup and restore. A
//! snapshot holds the database only; the instance's key files stay out of it, so a leaked
//! snapshot does not reveal private keys, which are encrypted with the instance key.

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
pub async fn backup(
    database: Option<&DatabaseSettings>,
    data_dir: &Path,
    out: &Path,
) -> anyhow::Result<SnapshotSummary> {
    if database.is_none() && !data_dir.join("db").exists() {
        anyhow::bail!("{} holds no agentreg database", data_dir.display());
    }
    if out.exists() {
        anyhow::bail!("{} already exists", out.display());
    }
    let storage = backends::open(database, data_dir)
        .await
        .context("opening the database (is a sled service still running on it?)")?;
    let bytes = storage.snapshot().await.context("taking the snapshot")?;
    let summary = summarize(&bytes).context("checking the snapshot just taken")?;
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

/// Restores a snapshot into an empty database: PostgreSQL, or a sled `data_dir` that must be
/// absent or empty. The whole file is checked before anything is written.
pub async fn restore(
    input: &Path,
    database: Option<&DatabaseSettings>,
    data_dir: &Path,
) -> anyhow::Result<SnapshotSummary> {
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    summarize(&bytes).context("checking the snapshot")?;
    if database.is_none() {
        if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
            anyhow::bail!("{} is not empty", data_dir.display());
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
