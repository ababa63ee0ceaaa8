//! Consistent, versioned snapshots of the whole store, and restoring one into an empty
//! directory.
//!
//! Format (all integers big-endian): the magic `AGENTREG-SNAPSHOT`, a `u32` format version, then
//! per tree its name (`u32` length, bytes), its entry count (`u64`) and its entries (`u32` key
//! length, key, `u32` value length, value), and finally the SHA-256 of everything before it.
//! Restoring checks the magic, the version, every length and the checksum before it writes
//! anything, so a truncated or altered file is refused whole.

use crate::{Store, StoreError, engine, schema};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;

pub(crate) const MAGIC: &[u8] = b"AGENTREG-SNAPSHOT";
/// The snapshot format this version writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub n_trees: usize,
    pub n_entries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("writing the snapshot failed")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("reading the snapshot failed")]
    Io(#[from] std::io::Error),
    #[error("the file is not an agentreg snapshot")]
    NotASnapshot,
    #[error(
        "snapshot format version {0} is not supported (this build reads version {SNAPSHOT_FORMAT_VERSION})"
    )]
    UnsupportedVersion(u32),
    #[error("the snapshot is truncated or corrupt")]
    Corrupt,
    #[error("the snapshot's checksum does not match its contents")]
    ChecksumMismatch,
    #[error("the target directory {0} is not empty")]
    TargetNotEmpty(String),
    #[error("the snapshot names unknown tree {0:?}")]
    UnknownTree(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Writes a snapshot of every tree. Writers are held off while it is taken, so it is
    /// consistent across trees.
    pub fn write_snapshot(&self, out: &mut impl Write) -> Result<SnapshotSummary, SnapshotError> {
        let _quiet = self
            .gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut hashing = HashingWriter {
            inner: out,
            hasher: Sha256::new(),
        };
        hashing.write_all(MAGIC)?;
        hashing.write_all(&SNAPSHOT_FORMAT_VERSION.to_be_bytes())?;
        let mut n_entries = 0u64;
        for name in schema::ALL_TREES {
            let tree = self.db.open_tree(name).map_err(engine)?;
            write_bytes(&mut hashing, name.as_bytes())?;
            hashing.write_all(&(tree.len() as u64).to_be_bytes())?;
            let mut n_written = 0u64;
            for entry in tree.iter() {
                let (key, value) = entry.map_err(engine)?;
                write_bytes(&mut hashing, &key)?;
                write_bytes(&mut hashing, &value)?;
                n_written += 1;
            }
            if n_written != tree.len() as u64 {
                return Err(SnapshotError::Io(std::io::Error::other(
                    "a tree changed while it was written",
                )));
            }
            n_entries += n_written;
        }
        let digest = hashing.hasher.finalize();
        hashing.inner.write_all(&digest)?;
        hashing.inner.flush()?;
        Ok(SnapshotSummary {
            n_trees: schema::ALL_TREES.len(),
            n_entries,
        })
    }

    /// Creates a store in `dir` (absent or empty) from a snapshot, and flushes it.
    pub fn restore_snapshot(
        dir: &Path,
        input: &mut impl Read,
    ) -> Result<(Store, SnapshotSummary), RestoreError> {
        if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
            return Err(RestoreError::TargetNotEmpty(dir.display().to_string()));
        }
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        parse(&bytes)?;
        let store =
            Store::open(dir).map_err(|error| RestoreError::Io(std::io::Error::other(error)))?;
        let summary = store.restore_into(&bytes)?;
        Ok((store, summary))
    }

    /// Fills this store, which must hold no data, from a snapshot, and flushes it. The whole
    /// file is checked before anything is written.
    pub(crate) fn restore_into(&self, bytes: &[u8]) -> Result<SnapshotSummary, RestoreError> {
        let trees = parse(bytes)?;
        // Decoding every record first refuses a snapshot that would restore and then fail.
        crate::dataset::Dataset::from_trees(&trees)?;
        for name in schema::ALL_TREES {
            if !self.db.open_tree(name).map_err(engine)?.is_empty() {
                return Err(RestoreError::TargetNotEmpty("the sled database".to_owned()));
            }
        }
        let mut n_entries = 0u64;
        for (name, entries) in &trees {
            let tree = self.db.open_tree(name).map_err(engine)?;
            let mut batch = sled::Batch::default();
            for (key, value) in entries {
                batch.insert(*key, *value);
                n_entries += 1;
            }
            tree.apply_batch(batch).map_err(engine)?;
        }
        self.positions
            .reload(&self.trees.agent_names)
            .map_err(engine)?;
        self.decoded_projects.clear();
        self.decoded_agents.clear();
        self.id_blocks.forget();
        self.flush()?;
        Ok(SnapshotSummary {
            n_trees: trees.len(),
            n_entries,
        })
    }
}

/// Checks a snapshot file (magic, version, lengths, checksum) and counts what it holds.
pub fn summarize(bytes: &[u8]) -> Result<SnapshotSummary, RestoreError> {
    let trees = parse(bytes)?;
    Ok(SnapshotSummary {
        n_trees: trees.len(),
        n_entries: trees.iter().map(|(_, entries)| entries.len() as u64).sum(),
    })
}

pub(crate) type ParsedTree<'a> = (String, Vec<(&'a [u8], &'a [u8])>);

/// Checks and splits a snapshot file into its trees.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<ParsedTree<'_>>, RestoreError> {
    if !bytes.starts_with(MAGIC) {
        return Err(RestoreError::NotASnapshot);
    }
    if bytes.len() < MAGIC.len() + 4 + 32 {
        return Err(RestoreError::Corrupt);
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err(RestoreError::ChecksumMismatch);
    }
    let mut reader = Cursor {
        bytes: body,
        position: MAGIC.len(),
    };
    let version = u32::from_be_bytes(reader.array()?);
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(RestoreError::UnsupportedVersion(version));
    }
    let mut trees = Vec::new();
    while !reader.at_end() {
        let name =
            String::from_utf8(reader.chunk()?.to_vec()).map_err(|_| RestoreError::Corrupt)?;
        if !schema::ALL_TREES.contains(&name.as_str()) {
            return Err(RestoreError::UnknownTree(name));
        }
        let n_entries = u64::from_be_bytes(reader.array()?);
        let mut entries = Vec::new();
        for _ in 0..n_entries {
            let key = reader.chunk()?;
            let value = reader.chunk()?;
            entries.push((key, value));
        }
        trees.push((name, entries));
    }
    Ok(trees)
}

pub(crate) fn write_bytes(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let length = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::other("a stored value exceeds 4 GiB"))?;
    out.write_all(&length.to_be_bytes())?;
    out.write_all(bytes)
}

struct HashingWriter<'a, W: Write> {
    inner: &'a mut W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n_written = self.inner.write(buf)?;
        self.hasher.update(&buf[..n_written]);
        Ok(n_written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n_bytes: usize) -> Result<&'a [u8], RestoreError> {
        let end = self
            .position
            .checked_add(n_bytes)
            .ok_or(RestoreError::Corrupt)?;
        let slice = self
            .bytes
            .get(self.position..end)
            .ok_or(RestoreError::Corrupt)?;
        self.position = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RestoreError> {
        self.take(N)?.try_into().map_err(|_| RestoreError::Corrupt)
    }

    fn chunk(&mut self) -> Result<&'a [u8], RestoreError> {
        let length = u32::from_be_bytes(self.array()?);
        self.take(length as usize)
    }

    fn at_end(&self) -> bool {
        self.position >= self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use agentreg_domain::names::AgentName;

    fn snapshot_of(store: &Store) -> Vec<u8> {
        let mut bytes = Vec::new();
        store.write_snapshot(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn restored_store_is_identical() {
        let store = fixtures::store();
        let (_, project_id) = fixtures::project(&store);
        let agent = store
            .create_agent(project_id, &AgentName::parse("a").unwrap(), None, 5, None)
            .unwrap();
        let bytes = snapshot_of(&store);
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("restored");

        let (restored, summary) = Store::restore_snapshot(&target, &mut bytes.as_slice()).unwrap();

        assert!(summary.n_entries > 0);
        assert_eq!(
            restored.agent(project_id, agent.id.get()).unwrap(),
            Some(agent)
        );
        assert_eq!(snapshot_of(&restored), bytes);
    }

    #[test]
    fn altered_or_truncated_snapshots_are_refused() {
        let store = fixtures::store();
        fixtures::project(&store);
        let bytes = snapshot_of(&store);
        let dir = tempfile::tempdir().unwrap();
        let mut altered = bytes.clone();
        altered[MAGIC.len() + 10] ^= 1;
        assert!(matches!(
            Store::restore_snapshot(&dir.path().join("a"), &mut altered.as_slice()),
            Err(RestoreError::ChecksumMismatch)
        ));
        assert!(
            Store::restore_snapshot(&dir.path().join("b"), &mut &bytes[..bytes.len() - 5]).is_err()
        );
        assert!(matches!(
            Store::restore_snapshot(&dir.path().join("c"), &mut &b"hello"[..]),
            Err(RestoreError::NotASnapshot)
        ));
    }

    #[test]
    fn restore_refuses_a_non_empty_directory() {
        let store = fixtures::store();
        let bytes = snapshot_of(&store);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), b"x").unwrap();
        assert!(matches!(
            Store::restore_snapshot(dir.path(), &mut bytes.as_slice()),
            Err(RestoreError::TargetNotEmpty(_))
        ));
    }
}
