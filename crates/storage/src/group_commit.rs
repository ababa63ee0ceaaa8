//! Group commit for the sled engine: concurrent writers share one flush instead of queueing for
//! one each.
//!
//! A write is bracketed by a [`Write`] ticket, taken just before its transaction and given back
//! to [`GroupCommit::commit`] once the transaction is done. Writes are numbered in the order they
//! finish. A flush covers every write that finished before it *started*, so a caller returns once
//! a flush that started after its write finished has succeeded; if one is running, it waits for
//! the one after.
//!
//! sled makes a transaction wait while any flush runs, and a flush wait while a transaction runs,
//! so writers that arrive while a flush runs pile up behind it. The caller that leads the next
//! flush therefore first lets the writes already in progress finish (for at most
//! [`MAX_GATHER`]), so that one flush covers all of them rather than one or two.
//!
//! A write does not even *begin* while a flush runs: [`GroupCommit::begin`] waits for the flush
//! to end. The write would wait inside sled anyway, but there it would wait for sled's
//! concurrency-control lock in write mode, and that lock is fair: once a writer waits for it,
//! every new reader waits too. sled's flush holds the lock in read mode across its `fsync`, and
//! every `Tree::get` takes it in read mode, so one transaction queued behind a flush used to
//! stall every read, on the async workers that serve cached reads inline, for as long as the
//! disk took (up to 460 ms per GET in the `limits` bench's token storm). Waiting here keeps
//! reads clear of the disk.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The longest a flush waits for writes in progress to finish and join it. It bounds the latency
/// group commit adds; a lone writer never waits.
pub(crate) const MAX_GATHER: Duration = Duration::from_millis(2);

/// Shares flushes between concurrent writers; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    state: Mutex<CommitState>,
    /// Signalled when the last write in progress finishes while a leader gathers.
    gathered: Condvar,
    /// Signalled when a flush ends, for the callers it covers and the writes waiting to begin.
    flushed: Condvar,
}

#[derive(Debug, Default)]
struct CommitState {
    /// Writes begun and not yet finished.
    in_progress: usize,
    /// Writes waiting to begin until a flush ends. A leader gathers them like the writes in
    /// progress: they begin as soon as the flush before it ends.
    waiting: usize,
    /// Writes finished so far; a write's number is this count just after it finished.
    finished: u64,
    /// Every write numbered up to this is durable.
    durable: u64,
    /// The writes numbered above `.0` and up to `.1` were to be covered by a flush that failed.
    failed: Option<(u64, u64)>,
    /// A caller leads a flush: gathering writes in progress, or flushing.
    leading: bool,
    /// The leader waits for the writes in progress to finish.
    gathering: bool,
    /// The leader's flush runs; no write begins until it ends.
    flushing: bool,
}

impl CommitState {
    /// The writes a leader gathers: those in progress and those about to begin.
    fn unfinished(&self) -> usize {
        self.in_progress + self.waiting
    }
}

/// A write in progress. Dropping it (or handing it to [`GroupCommit::commit`]) marks it finished.
#[must_use = "a write is finished when its ticket drops"]
pub(crate) struct Write<'a> {
    group: &'a GroupCommit,
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        self.group.finish();
    }
}

/// A flush shared with other callers failed; its leader reported the cause.
#[derive(Debug, thiserror::Error)]
#[error("a shared flush of the store failed")]
pub(crate) struct SharedFlushFailed;

impl GroupCommit {
    /// Marks a write as begun; take it just before the write's transaction. Waits while a
    /// flush runs (see the module documentation), so call it on a blocking thread.
    pub(crate) fn begin(&self) -> Write<'_> {
        let mut state = self.lock();
        if state.flushing {
            state.waiting += 1;
            while state.flushing {
                state = self
                    .flushed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.waiting -= 1;
        }
        state.in_progress += 1;
        Write { group: self }
    }

    /// Finishes `write` and returns once a flush that covers it has succeeded. `flush` makes
    /// every write finished before it started durable; at most one runs at a time.
    pub(crate) fn commit<E: From<SharedFlushFailed>>(
        &self,
        write: Write<'_>,
        flush: impl Fn() -> Result<(), E>,
    ) -> Result<(), E> {
        drop(write);
        let number = self.lock().finished;
        self.wait_durable(number, flush)
    }

    /// Returns once every write finished before this call is durable.
    pub(crate) fn flush<E: From<SharedFlushFailed>>(
        &self,
        flush: impl Fn() -> Result<(), E>,
    ) -> Result<(), E> {
        let number = self.lock().finished;
        self.wait_durable(number, flush)
    }

    fn finish(&self) {
        let mut state = self.lock();
        state.in_progress -= 1;
        state.finished += 1;
        if state.gathering && state.unfinished() == 0 {
            self.gathered.notify_one();
        }
    }

    /// Returns once write `number` is durable, leading a flush when none is under way.
    fn wait_durable<E: From<SharedFlushFailed>>(
        &self,
        number: u64,
        flush: impl Fn() -> Result<(), E>,
    ) -> Result<(), E> {
        let mut state = self.lock();
        loop {
            if state.durable >= number {
                return Ok(());
            }
            if let Some((after, upto)) = state.failed
                && after < number
                && number <= upto
            {
                return Err(E::from(SharedFlushFailed));
            }
            if state.leading {
                state = self
                    .flushed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.leading = true;
            let deadline = Instant::now() + MAX_GATHER;
            while state.unfinished() > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state.gathering = true;
                state = self
                    .gathered
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                state.gathering = false;
            }
            let covers = state.finished;
            state.flushing = true;
            drop(state);
            let result = flush();
            state = self.lock();
            state.flushing = false;
            state.leading = false;
            match &result {
                Ok(()) => state.durable = state.durable.max(covers),
                Err(_) => state.failed = Some((state.durable, covers)),
            }
            self.flushed.notify_all();
            if result.is_err() && number <= covers {
                return result;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, CommitState> {
        // Every update of the state is complete before the guard drops, so a panic elsewhere
        // leaves nothing half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[expect(
    clippy::disallowed_methods,
    reason = "plain threads stand in for blocking-pool writers; no async worker is involved"
)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug, PartialEq)]
    enum Failure {
        Own,
        Shared,
    }

    impl From<SharedFlushFailed> for Failure {
        fn from(_: SharedFlushFailed) -> Failure {
            Failure::Shared
        }
    }

    #[test]
    fn concurrent_callers_share_flushes_and_each_waits_for_one_that_covers_it() {
        let group = Arc::new(GroupCommit::default());
        let n_flushes = Arc::new(AtomicU64::new(0));
        // The number of writes done, and the count the latest flush made durable.
        let written = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (group, n_flushes, written, durable) = (
                    group.clone(),
                    n_flushes.clone(),
                    written.clone(),
                    durable.clone(),
                );
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let write = group.begin();
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        group
                            .commit(write, || {
                                let covered = written.load(Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(1));
                                durable.fetch_max(covered, Ordering::SeqCst);
                                n_flushes.fetch_add(1, Ordering::SeqCst);
                                Ok::<(), Failure>(())
                            })
                            .unwrap();
                        assert!(
                            durable.load(Ordering::SeqCst) >= mine,
                            "returned before a flush covered write {mine}"
                        );
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let n_flushes = n_flushes.load(Ordering::SeqCst);
        assert!(
            n_flushes < 16 * 50 / 4,
            "16 writers should share flushes, but {n_flushes} ran for 800 writes"
        );
    }

    /// A writer whose flush has begun and runs until `release` sends.
    fn leader_in_flush(
        group: &Arc<GroupCommit>,
    ) -> (
        std::thread::JoinHandle<Result<(), Failure>>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (entered_sender, entered) = std::sync::mpsc::channel();
        let (release, release_receiver) = std::sync::mpsc::channel::<()>();
        let leader = {
            let group = group.clone();
            std::thread::spawn(move || {
                group.commit(group.begin(), || {
                    entered_sender.send(()).unwrap();
                    release_receiver.recv().unwrap();
                    Ok::<(), Failure>(())
                })
            })
        };
        entered.recv().unwrap();
        (leader, release)
    }

    #[test]
    fn no_write_begins_while_a_flush_runs() {
        let group = Arc::new(GroupCommit::default());
        let (leader, release) = leader_in_flush(&group);
        let (began_sender, began) = std::sync::mpsc::channel();
        let writer = {
            let group = group.clone();
            std::thread::spawn(move || {
                let write = group.begin();
                began_sender.send(()).unwrap();
                group.commit(write, || Ok::<(), Failure>(()))
            })
        };
        assert_eq!(
            began.recv_timeout(std::time::Duration::from_millis(100)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout),
            "a write began while a flush ran"
        );
        release.send(()).unwrap();
        began
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the write begins once the flush ends");
        assert_eq!(leader.join().unwrap(), Ok(()));
        assert_eq!(writer.join().unwrap(), Ok(()));
    }

    #[test]
    fn a_failed_flush_fails_every_caller_it_was_meant_to_cover() {
        let group = GroupCommit::default();
        assert_eq!(
            group.commit(group.begin(), || Err(Failure::Own)),
            Err(Failure::Own)
        );
        // The next write needs a new flush, which succeeds.
        assert_eq!(
            group.commit(group.begin(), || Ok::<(), Failure>(())),
            Ok(())
        );

        // Two writes finish while the first flush runs, so both need the second, which fails:
        // its leader is told the cause, the other caller that the shared flush failed. Their
        // writes begin before the first flush and finish during it, so the second flush covers
        // both however the threads are scheduled.
        let group = &GroupCommit::default();
        let mut outcomes = std::thread::scope(|scope| {
            let writes = [group.begin(), group.begin()];
            let (entered_sender, entered) = std::sync::mpsc::channel();
            let (release, release_receiver) = std::sync::mpsc::channel::<()>();
            let leader = scope.spawn(move || {
                group.commit(group.begin(), || {
                    entered_sender.send(()).unwrap();
                    release_receiver.recv().unwrap();
                    Ok::<(), Failure>(())
                })
            });
            entered.recv().unwrap();
            let waiters: Vec<_> = writes
                .into_iter()
                .map(|write| scope.spawn(move || group.commit(write, || Err(Failure::Own))))
                .collect();
            while group.lock().finished < 3 {
                std::thread::yield_now();
            }
            release.send(()).unwrap();
            assert_eq!(leader.join().unwrap(), Ok(()));
            waiters
                .into_iter()
                .map(|waiter| waiter.join().unwrap())
                .collect::<Vec<_>>()
        });
        outcomes.sort_by_key(|outcome| format!("{outcome:?}"));
        assert_eq!(
            outcomes,
            vec![Err(Failure::Own), Err(Failure::Shared)],
            "the flush's leader reports its cause, the caller it covered a shared failure"
        );
    }
}
