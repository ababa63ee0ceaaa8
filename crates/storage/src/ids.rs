//! Ids for new records, handed out from blocks reserved in the persisted counters, the way
//! PostgreSQL's sequence cache does.
//!
//! Reserving a block is one counter update in sled (a log write, and a compare-and-swap that
//! concurrent writers of one kind contend on); every id of the block after that is an increment
//! under a lock. Ids stay unique and increasing across restarts: a record that uses an id is
//! written after the reservation that covers it, and sled recovers a prefix of its log, so a
//! record that survived a crash has its reservation behind it. A restart skips what was left of
//! each block, so ids have gaps, as sequence ids in GitLab's database do.

use crate::schema::{self, IdKind};
use crate::{StoreError, engine};
use std::sync::Mutex;

/// Ids reserved per counter update.
pub(crate) const ID_BLOCK: u64 = 32;

/// The unused rest of the current block, per kind.
#[derive(Default)]
pub(crate) struct IdBlocks {
    blocks: [Mutex<Block>; 7],
}

/// Ids `next..end` are reserved and not yet handed out.
#[derive(Default)]
struct Block {
    next: u64,
    end: u64,
}

impl IdBlocks {
    /// The next id of `kind`, reserving a block in `meta` when the current one is used up.
    pub(crate) fn next(&self, meta: &sled::Tree, kind: IdKind) -> Result<u64, StoreError> {
        // The guarded data is two integers, consistent after every statement.
        let mut block = self.blocks[index(kind)]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if block.next == block.end {
            let reserved = meta
                .update_and_fetch(kind.counter_key(), |current| {
                    let last = current.and_then(schema::decode_u64).unwrap_or(0);
                    Some((last + ID_BLOCK).to_be_bytes().to_vec())
                })
                .map_err(engine)?
                .as_deref()
                .and_then(schema::decode_u64)
                .ok_or(StoreError::Dangling { tree: schema::META })?;
            block.next = reserved - ID_BLOCK + 1;
            block.end = reserved + 1;
        }
        let id = block.next;
        block.next += 1;
        Ok(id)
    }

    /// Forgets every block, so that the next ids are reserved from the counters as they are now
    /// (after a restore replaced them).
    pub(crate) fn forget(&self) {
        for block in &self.blocks {
            *block
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Block::default();
        }
    }
}

fn index(kind: IdKind) -> usize {
    match kind {
        IdKind::User => 0,
        IdKind::PersonalAccessToken => 1,
        IdKind::Project => 2,
        IdKind::Agent => 3,
        IdKind::AgentToken => 4,
        IdKind::UrlConfiguration => 5,
        IdKind::AuditEvent => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(meta: &sled::Tree, kind: IdKind) -> Option<u64> {
        meta.get(kind.counter_key())
            .unwrap()
            .as_deref()
            .and_then(schema::decode_u64)
    }

    #[test]
    fn ids_are_consecutive_within_a_run_and_the_counter_covers_every_one_handed_out() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let meta = db.open_tree("meta").unwrap();
        let blocks = IdBlocks::default();

        let ids: Vec<u64> = (0..ID_BLOCK + 3)
            .map(|_| blocks.next(&meta, IdKind::Agent).unwrap())
            .collect();
        let other = blocks.next(&meta, IdKind::AuditEvent).unwrap();

        assert_eq!(ids, (1..=ID_BLOCK + 3).collect::<Vec<_>>());
        assert_eq!(counter(&meta, IdKind::Agent), Some(2 * ID_BLOCK));
        assert_eq!(other, 1);
        assert_eq!(counter(&meta, IdKind::AuditEvent), Some(ID_BLOCK));
    }

    #[test]
    fn a_restart_continues_after_the_reserved_block() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let meta = db.open_tree("meta").unwrap();
        let before_restart = IdBlocks::default();
        let first = before_restart.next(&meta, IdKind::Agent).unwrap();

        let after_restart = IdBlocks::default();
        let next = after_restart.next(&meta, IdKind::Agent).unwrap();

        assert_eq!(first, 1);
        assert_eq!(next, ID_BLOCK + 1);
    }

    #[test]
    fn concurrent_callers_never_get_the_same_id() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let meta = db.open_tree("meta").unwrap();
        let blocks = IdBlocks::default();

        let mut ids: Vec<u64> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        (0..100)
                            .map(|_| blocks.next(&meta, IdKind::AgentToken).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|handle| handle.join().unwrap())
                .collect()
        });
        ids.sort_unstable();

        assert_eq!(ids, (1..=800).collect::<Vec<_>>());
    }
}
