//! `agentreg backup` and `agentreg restore`: snapshots of the database on disk. A snapshot holds
//! the database only; the instance's key files stay out of it, so a leaked snapshot does not
//! reveal private keys, which are encrypted with the instance key.

use crate::secrets;
use agentreg_storage::Store;
use agentreg_storage::backup::SnapshotSummary;
use anyhow::Context;
use std::fs::OpenOptions;
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes a snapshot of the database in `data_dir` to `out` (mode 0600, created new).
pub fn backup(data_dir: &Path, out: &Path) -> anyhow::Result<SnapshotSummary> {
    let db_dir = data_dir.join("db");
    if !db_dir.exists() {
        anyhow::bail!("{} holds no agentreg database", data_dir.display());
    }
    let store =
        Store::open(&db_dir).context("opening the database (is the service still running?)")?;
    let partial = out.with_extension("partial");
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut writer = BufWriter::new(file);
    let summary = store
        .write_snapshot(&mut writer)
        .context("writing the snapshot")?;
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

/// Restores a snapshot into `data_dir`, which must be absent or empty.
pub fn restore(input: &Path, data_dir: &Path) -> anyhow::Result<SnapshotSummary> {
    if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
        anyhow::bail!("{} is not empty", data_dir.display());
    }
    secrets::create_data_dir(data_dir)?;
    let file =
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let (_store, summary) =
        Store::restore_snapshot(&data_dir.join("db"), &mut BufReader::new(file))
            .context("restoring the snapshot")?;
    Ok(summary)
}
