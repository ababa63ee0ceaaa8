//! Where each agent stands in its project's list, for the sled backend, so that a deep page costs
//! O(log n + page) instead of a walk from the start of the name index.
//!
//! Per project it keeps, in memory only:
//! - the name order cut into counted buckets of consecutive names over `agent_names`, with a
//!   Fenwick tree of their counts: an offset page finds its bucket in O(log n), then skips fewer
//!   than [`MAX_NAMES_PER_BUCKET`] index entries from the bucket's lower bound;
//! - the agents' ids in order, for keyset pages by id (the `agents` tree is keyed by id across
//!   every project).
//!
//! Why memory and not a tree on disk: the store is one process (its directory is file-locked), so
//! an index that is rebuilt when the store opens (one scan of `agent_names`, about 50 ms for
//! 120,000 agents) costs no disk, no snapshot format change and no write amplification, and
//! answers in memory. It is derived data: never written to disk or to snapshots.
//!
//! It stays exact under concurrency because every transaction that adds or removes an agent runs
//! while it holds the positions' write lock ([`AgentPositions::writer`]) and records its outcome
//! before releasing it: the buckets always count exactly what the committed index holds, and a
//! split finds its median in the index it counts. Readers take the read lock only to look up a
//! start; a write that commits between that lookup and their scan shifts an offset page by at
//! most that write, as it would have a moment earlier or later.

use crate::schema::{agent_name_key, decode_u64};
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{PoisonError, RwLock, RwLockWriteGuard};

/// How many names a bucket gets when the positions are built, and when a full bucket is split.
/// Buckets hold between this many (less after deletes) and [`MAX_NAMES_PER_BUCKET`]; a smaller
/// number makes the skip inside a bucket shorter and the tree of counts larger.
pub(crate) const NAMES_PER_BUCKET: u64 = 32;

/// A bucket that would pass this many names is split in two.
pub(crate) const MAX_NAMES_PER_BUCKET: u64 = 2 * NAMES_PER_BUCKET;

/// Which way a walk over a project's ids goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    Up,
    Down,
}

/// The positions of every project's agents.
#[derive(Debug, Default)]
pub(crate) struct AgentPositions {
    projects: RwLock<HashMap<u64, ProjectPositions>>,
}

/// The write lock of the positions, held across a transaction that adds or removes agents.
pub(crate) struct PositionsWriter<'a> {
    projects: RwLockWriteGuard<'a, HashMap<u64, ProjectPositions>>,
}

#[derive(Debug)]
struct ProjectPositions {
    /// The first name of each bucket, ascending; the first bucket's is empty, below every name.
    lower_bounds: Vec<Box<[u8]>>,
    /// How many names each bucket holds.
    counts: Vec<u64>,
    /// Running totals of `counts`.
    totals: Fenwick,
    ids: BTreeSet<u64>,
}

/// A Fenwick (binary indexed) tree over bucket counts: prefix totals and the bucket at an offset
/// in O(log buckets).
#[derive(Debug, Default)]
struct Fenwick {
    /// 1-based: `partial[i]` sums the counts of buckets `i - lowbit(i) .. i` (0-based, exclusive).
    partial: Vec<u64>,
}

impl AgentPositions {
    /// Builds the positions from the name index: buckets of [`NAMES_PER_BUCKET`] names.
    pub(crate) fn load(names: &sled::Tree) -> Result<AgentPositions, sled::Error> {
        let positions = AgentPositions::default();
        positions.reload(names)?;
        Ok(positions)
    }

    /// Rebuilds the positions from the name index (after a restore wrote it directly).
    pub(crate) fn reload(&self, names: &sled::Tree) -> Result<(), sled::Error> {
        let mut projects: HashMap<u64, ProjectPositions> = HashMap::new();
        let mut current: Option<(u64, ProjectPositions)> = None;
        for entry in names.iter() {
            let (key, id_bytes) = entry?;
            let (Some(project_id), Some(agent_id)) =
                (key.get(..8).and_then(decode_u64), decode_u64(&id_bytes))
            else {
                continue;
            };
            let name = &key[8..];
            match &mut current {
                Some((id, positions)) if *id == project_id => positions.append(name, agent_id),
                _ => {
                    if let Some((id, mut positions)) = current.take() {
                        positions.totals = Fenwick::build(&positions.counts);
                        projects.insert(id, positions);
                    }
                    let mut positions = ProjectPositions::empty();
                    positions.append(name, agent_id);
                    current = Some((project_id, positions));
                }
            }
        }
        if let Some((id, mut positions)) = current {
            positions.totals = Fenwick::build(&positions.counts);
            projects.insert(id, positions);
        }
        *self
            .projects
            .write()
            .unwrap_or_else(PoisonError::into_inner) = projects;
        Ok(())
    }

    /// Takes the write lock: hold it across the transaction that adds or removes agents, and
    /// record the outcome before dropping it.
    pub(crate) fn writer(&self) -> PositionsWriter<'_> {
        // A panic while the lock was held leaves at worst a bucket count off by one (a page
        // shifted by one), never a wrong record: pages read the index itself.
        PositionsWriter {
            projects: self
                .projects
                .write()
                .unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Where the project's name order reaches `offset`: the lower bound of the bucket that
    /// holds it and how many names to skip from there. `None` past the last agent.
    pub(crate) fn name_start(&self, project_id: u64, offset: u64) -> Option<(Box<[u8]>, u64)> {
        let projects = self.projects.read().unwrap_or_else(PoisonError::into_inner);
        let positions = projects.get(&project_id)?;
        let (bucket_idx, n_before) = positions.totals.find(offset)?;
        Some((
            positions.lower_bounds[bucket_idx].clone(),
            offset - n_before,
        ))
    }

    /// Up to `limit` of the project's agent ids after `after` (from the start without it), in
    /// the direction of `walk`.
    pub(crate) fn ids_after(
        &self,
        project_id: u64,
        after: Option<u64>,
        walk: Walk,
        limit: usize,
    ) -> Vec<u64> {
        let projects = self.projects.read().unwrap_or_else(PoisonError::into_inner);
        let Some(positions) = projects.get(&project_id) else {
            return Vec::new();
        };
        match (walk, after) {
            (Walk::Up, None) => positions.ids.iter().take(limit).copied().collect(),
            (Walk::Up, Some(after)) => positions
                .ids
                .range((Bound::Excluded(after), Bound::Unbounded))
                .take(limit)
                .copied()
                .collect(),
            (Walk::Down, None) => positions.ids.iter().rev().take(limit).copied().collect(),
            (Walk::Down, Some(after)) => positions
                .ids
                .range(..after)
                .rev()
                .take(limit)
                .copied()
                .collect(),
        }
    }

    /// The number of buckets of a project, for tests.
    #[cfg(test)]
    fn n_buckets(&self, project_id: u64) -> usize {
        let projects = self.projects.read().unwrap_or_else(PoisonError::into_inner);
        projects
            .get(&project_id)
            .map_or(0, |positions| positions.counts.len())
    }
}

impl PositionsWriter<'_> {
    /// Records agents committed together. `names` is the name index they were committed to: a
    /// bucket that passes [`MAX_NAMES_PER_BUCKET`] is split at the name the index holds in its
    /// middle, once every agent is counted, so that the counts match the index when it is read.
    pub(crate) fn added<'n>(
        &mut self,
        agents: impl IntoIterator<Item = (u64, &'n str, u64)>,
        names: &sled::Tree,
    ) {
        let mut projects = Vec::new();
        for (project_id, name, agent_id) in agents {
            let positions = self
                .projects
                .entry(project_id)
                .or_insert_with(ProjectPositions::empty);
            if positions.counts.is_empty() {
                positions.lower_bounds.push(Box::default());
                positions.counts.push(0);
                positions.totals = Fenwick::build(&positions.counts);
            }
            positions.ids.insert(agent_id);
            let bucket_idx = positions.bucket_of(name.as_bytes());
            positions.counts[bucket_idx] += 1;
            positions.totals.add(bucket_idx, 1);
            if !projects.contains(&project_id) {
                projects.push(project_id);
            }
        }
        for project_id in projects {
            if let Some(positions) = self.projects.get_mut(&project_id) {
                positions.split_full(project_id, names);
            }
        }
    }

    /// Records a committed deletion. A bucket left empty, or small enough to share with a
    /// neighbour, merges into it.
    pub(crate) fn removed(&mut self, project_id: u64, name: &str, agent_id: u64) {
        let Some(positions) = self.projects.get_mut(&project_id) else {
            return;
        };
        positions.ids.remove(&agent_id);
        let bucket_idx = positions.bucket_of(name.as_bytes());
        if positions.counts[bucket_idx] == 0 {
            return;
        }
        positions.counts[bucket_idx] -= 1;
        positions.totals.subtract(bucket_idx, 1);
        positions.merge_around(bucket_idx);
        if positions.ids.is_empty() {
            self.projects.remove(&project_id);
        }
    }
}

impl ProjectPositions {
    fn empty() -> ProjectPositions {
        ProjectPositions {
            lower_bounds: Vec::new(),
            counts: Vec::new(),
            totals: Fenwick::default(),
            ids: BTreeSet::new(),
        }
    }

    /// Adds the next name in order while loading; `totals` is built afterwards.
    fn append(&mut self, name: &[u8], agent_id: u64) {
        match self.counts.last_mut() {
            Some(count) if *count < NAMES_PER_BUCKET => *count += 1,
            Some(_) => {
                self.lower_bounds.push(name.into());
                self.counts.push(1);
            }
            None => {
                self.lower_bounds.push(Box::default());
                self.counts.push(1);
            }
        }
        self.ids.insert(agent_id);
    }

    /// The bucket whose range holds `name`: the last whose lower bound is at most `name`.
    fn bucket_of(&self, name: &[u8]) -> usize {
        self.lower_bounds
            .partition_point(|lower| lower.as_ref() <= name)
            .saturating_sub(1)
    }

    /// Splits a bucket at its [`NAMES_PER_BUCKET`]th name, read from the index. If the index
    /// cannot be read the bucket stays whole: it is then only slower to skip through.
    /// Splits every bucket over [`MAX_NAMES_PER_BUCKET`] until none is.
    fn split_full(&mut self, project_id: u64, names: &sled::Tree) {
        let mut bucket_idx = 0;
        while bucket_idx < self.counts.len() {
            if self.counts[bucket_idx] <= MAX_NAMES_PER_BUCKET
                || !self.split(project_id, bucket_idx, names)
            {
                bucket_idx += 1;
            }
        }
    }

    /// Splits a bucket after its first [`NAMES_PER_BUCKET`] names; false if the index does not
    /// hold that many past the bucket's lower bound.
    fn split(&mut self, project_id: u64, bucket_idx: usize, names: &sled::Tree) -> bool {
        let mut start = agent_name_key(project_id, "");
        start.extend_from_slice(&self.lower_bounds[bucket_idx]);
        let skip = usize::try_from(NAMES_PER_BUCKET).unwrap_or(usize::MAX);
        let Some(Ok((key, _))) = names.range(start..).nth(skip) else {
            return false;
        };
        if key.get(..8).and_then(decode_u64) != Some(project_id) {
            return false;
        }
        let n_moved = self.counts[bucket_idx] - NAMES_PER_BUCKET;
        self.counts[bucket_idx] = NAMES_PER_BUCKET;
        self.lower_bounds.insert(bucket_idx + 1, key[8..].into());
        self.counts.insert(bucket_idx + 1, n_moved);
        self.totals = Fenwick::build(&self.counts);
        true
    }

    /// Merges a bucket into its predecessor, or its successor into it, when one of the two is
    /// empty or both fit in [`NAMES_PER_BUCKET`]; the first bucket is never removed.
    fn merge_around(&mut self, bucket_idx: usize) {
        let fits = |a: u64, b: u64| a == 0 || b == 0 || a + b <= NAMES_PER_BUCKET;
        let merged = if bucket_idx > 0 && fits(self.counts[bucket_idx - 1], self.counts[bucket_idx])
        {
            Some(bucket_idx)
        } else if bucket_idx + 1 < self.counts.len()
            && fits(self.counts[bucket_idx], self.counts[bucket_idx + 1])
        {
            Some(bucket_idx + 1)
        } else {
            None
        };
        if let Some(removed_idx) = merged {
            let count = self.counts.remove(removed_idx);
            self.lower_bounds.remove(removed_idx);
            self.counts[removed_idx - 1] += count;
            self.totals = Fenwick::build(&self.counts);
        }
    }
}

impl Fenwick {
    /// In O(n).
    fn build(counts: &[u64]) -> Fenwick {
        let mut partial = vec![0; counts.len() + 1];
        partial[1..].copy_from_slice(counts);
        for idx in 1..partial.len() {
            let parent = idx + lowest_bit(idx);
            if parent < partial.len() {
                partial[parent] += partial[idx];
            }
        }
        Fenwick { partial }
    }

    fn add(&mut self, bucket_idx: usize, n: u64) {
        let mut idx = bucket_idx + 1;
        while idx < self.partial.len() {
            self.partial[idx] += n;
            idx += lowest_bit(idx);
        }
    }

    fn subtract(&mut self, bucket_idx: usize, n: u64) {
        let mut idx = bucket_idx + 1;
        while idx < self.partial.len() {
            self.partial[idx] -= n;
            idx += lowest_bit(idx);
        }
    }

    /// The bucket that holds the item at `offset` (0-based) and the number of items before
    /// that bucket; `None` when `offset` is past the last item.
    fn find(&self, offset: u64) -> Option<(usize, u64)> {
        let n_buckets = self.partial.len().saturating_sub(1);
        let mut position = 0;
        let mut remaining = offset;
        let mut step = if n_buckets == 0 {
            0
        } else {
            1 << n_buckets.ilog2()
        };
        while step > 0 {
            let next = position + step;
            if next <= n_buckets && self.partial[next] <= remaining {
                position = next;
                remaining -= self.partial[next];
            }
            step >>= 1;
        }
        (position < n_buckets).then_some((position, offset - remaining))
    }
}

fn lowest_bit(idx: usize) -> usize {
    idx & idx.wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::id_key;

    fn names_tree() -> sled::Tree {
        sled::Config::new()
            .temporary(true)
            .open()
            .unwrap()
            .open_tree("names")
            .unwrap()
    }

    /// The index entries of `names` in project 1, with ids from 1.
    fn index(names: &[String]) -> sled::Tree {
        let tree = names_tree();
        for (idx, name) in names.iter().enumerate() {
            tree.insert(agent_name_key(1, name), &id_key(idx as u64 + 1))
                .unwrap();
        }
        tree
    }

    /// The names an offset page starting at `offset` reads: the bucket's lower bound, then the
    /// skip, as `Store::agents_page` does.
    fn names_from(positions: &AgentPositions, tree: &sled::Tree, offset: u64) -> Vec<String> {
        let Some((lower, skip)) = positions.name_start(1, offset) else {
            return Vec::new();
        };
        let mut start = agent_name_key(1, "");
        start.extend_from_slice(&lower);
        tree.range(start..)
            .skip(skip as usize)
            .take(3)
            .map(|entry| String::from_utf8(entry.unwrap().0[8..].to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn the_tree_of_counts_finds_the_bucket_at_each_offset() {
        let counts = [3, 0, 2, 5, 1];
        let totals = Fenwick::build(&counts);

        let found: Vec<_> = (0..12).map(|offset| totals.find(offset)).collect();

        assert_eq!(
            found,
            [
                Some((0, 0)),
                Some((0, 0)),
                Some((0, 0)),
                Some((2, 3)),
                Some((2, 3)),
                Some((3, 5)),
                Some((3, 5)),
                Some((3, 5)),
                Some((3, 5)),
                Some((3, 5)),
                Some((4, 10)),
                None,
            ]
        );
        assert_eq!(Fenwick::build(&[]).find(0), None);
    }

    #[test]
    fn loaded_positions_start_every_offset_at_its_name() {
        let names: Vec<String> = (0..200).map(|idx| format!("agent-{idx:04}")).collect();
        let tree = index(&names);

        let positions = AgentPositions::load(&tree).unwrap();

        assert_eq!(positions.n_buckets(1), 7);
        for offset in [0, 31, 32, 33, 64, 199] {
            assert_eq!(
                names_from(&positions, &tree, offset)[0],
                names[offset as usize]
            );
        }
        assert!(names_from(&positions, &tree, 200).is_empty());
        assert!(positions.name_start(2, 0).is_none());
    }

    #[test]
    fn additions_split_full_buckets_and_deletions_merge_small_ones() {
        let tree = names_tree();
        let positions = AgentPositions::default();
        let mut names = Vec::new();
        // Descending inserts fill the first bucket over and over.
        for idx in (0..300).rev() {
            let name = format!("agent-{idx:04}");
            tree.insert(agent_name_key(1, &name), &id_key(idx + 1))
                .unwrap();
            positions
                .writer()
                .added([(1, name.as_str(), idx + 1)], &tree);
            names.insert(0, name);
        }
        let n_buckets_full = positions.n_buckets(1);
        for offset in [0, 63, 64, 150, 299] {
            assert_eq!(
                names_from(&positions, &tree, offset)[0],
                names[offset as usize]
            );
        }
        // Delete every name but each tenth.
        for (idx, name) in names.iter().enumerate() {
            if idx % 10 != 0 {
                tree.remove(agent_name_key(1, name)).unwrap();
                positions.writer().removed(1, name, idx as u64 + 1);
            }
        }
        let kept: Vec<&String> = names.iter().step_by(10).collect();

        assert!(n_buckets_full >= 300 / MAX_NAMES_PER_BUCKET as usize);
        assert!(positions.n_buckets(1) <= 2, "{}", positions.n_buckets(1));
        for (offset, name) in kept.iter().enumerate() {
            assert_eq!(&&names_from(&positions, &tree, offset as u64)[0], name);
        }
        assert!(names_from(&positions, &tree, kept.len() as u64).is_empty());
        assert_eq!(
            positions.ids_after(1, Some(11), Walk::Up, 2),
            [21, 31],
            "ids follow deletions"
        );
    }

    #[test]
    fn agents_committed_together_are_counted_before_any_bucket_splits() {
        let tree = names_tree();
        let positions = AgentPositions::default();
        // One batch, as concurrent registrations commit: the index holds every name of it
        // before any is counted, and the batch alone overfills the first bucket several times.
        let names: Vec<String> = (0..300).map(|idx| format!("agent-{idx:04}")).collect();
        for (idx, name) in names.iter().enumerate() {
            tree.insert(agent_name_key(1, name), &id_key(idx as u64 + 1))
                .unwrap();
        }
        positions.writer().added(
            names
                .iter()
                .enumerate()
                .map(|(idx, name)| (1, name.as_str(), idx as u64 + 1)),
            &tree,
        );

        assert!(positions.n_buckets(1) >= 300 / MAX_NAMES_PER_BUCKET as usize);
        for offset in [0, 31, 32, 63, 64, 65, 150, 299] {
            assert_eq!(
                names_from(&positions, &tree, offset)[0],
                names[offset as usize],
                "offset {offset}"
            );
        }
        assert!(names_from(&positions, &tree, 300).is_empty());
    }

    #[test]
    fn ids_are_walked_both_ways_after_a_cursor() {
        let tree = names_tree();
        let positions = AgentPositions::default();
        for id in [5, 1, 9, 3] {
            let name = format!("n{id}");
            tree.insert(agent_name_key(1, &name), &id_key(id)).unwrap();
            positions.writer().added([(1, name.as_str(), id)], &tree);
        }

        assert_eq!(positions.ids_after(1, None, Walk::Up, 10), [1, 3, 5, 9]);
        assert_eq!(positions.ids_after(1, Some(3), Walk::Up, 1), [5]);
        assert_eq!(positions.ids_after(1, None, Walk::Down, 2), [9, 5]);
        assert_eq!(positions.ids_after(1, Some(5), Walk::Down, 10), [3, 1]);
        assert!(positions.ids_after(2, None, Walk::Up, 10).is_empty());
    }

    #[test]
    fn deleting_every_agent_forgets_the_project() {
        let tree = names_tree();
        let positions = AgentPositions::default();
        tree.insert(agent_name_key(1, "a"), &id_key(1)).unwrap();
        positions.writer().added([(1, "a", 1)], &tree);

        positions.writer().removed(1, "a", 1);

        assert_eq!(positions.n_buckets(1), 0);
        assert!(positions.name_start(1, 0).is_none());
    }
}
