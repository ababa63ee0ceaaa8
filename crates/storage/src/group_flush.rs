//! Group commit for the sled engine: writers that finish their transactions while a flush is
//! under way wait for the next one together, so that concurrent writers share one `fsync`
//! instead of queueing for one each.
//!
//! Every caller of [`GroupFlush::flush`] has finished its write before calling. A flush covers
//! every write finished before it *started*, so a caller waits for the first flush that starts
//! after its call: if one is running, the one after it. A caller never returns `Ok` before a
//! flush that covers its write has succeeded.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Shares flushes between concurrent callers; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct GroupFlush {
    state: Mutex<FlushState>,
    finished: Condvar,
}

#[derive(Debug, Default)]
struct FlushState {
    /// Flushes started so far; they are numbered from 1.
    started: u64,
    /// The number of the latest flush that finished.
    finished: u64,
    /// The number of the latest flush that failed.
    failed: Option<u64>,
    running: bool,
}

/// A flush shared with other callers failed; its leader reported the cause.
#[derive(Debug, thiserror::Error)]
#[error("a shared flush of the store failed")]
pub(crate) struct SharedFlushFailed;

impl GroupFlush {
    /// Returns once a flush that started after this call has succeeded. `flush` makes every
    /// write finished before it started durable; at most one runs at a time.
    pub(crate) fn flush<E: From<SharedFlushFailed>>(
        &self,
        flush: impl Fn() -> Result<(), E>,
    ) -> Result<(), E> {
        let mut state = self.lock();
        let needed = state.started + 1;
        loop {
            if state.finished >= needed {
                return match state.failed {
                    Some(failed) if failed >= needed => Err(E::from(SharedFlushFailed)),
                    Some(_) | None => Ok(()),
                };
            }
            if state.running {
                state = self
                    .finished
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.running = true;
            state.started += 1;
            let number = state.started;
            drop(state);
            let result = flush();
            state = self.lock();
            state.running = false;
            state.finished = number;
            if result.is_err() {
                state.failed = Some(number);
            }
            self.finished.notify_all();
            if number >= needed {
                return result;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, FlushState> {
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
        let group = Arc::new(GroupFlush::default());
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
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        group
                            .flush(|| {
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
            n_flushes < 16 * 50 / 2,
            "16 writers should share flushes, but {n_flushes} ran for 800 writes"
        );
    }

    #[test]
    fn a_failed_flush_fails_every_caller_it_was_meant_to_cover() {
        let group = GroupFlush::default();
        assert_eq!(group.flush(|| Err(Failure::Own)), Err(Failure::Own));
        // The next caller needs a new flush, which succeeds.
        assert_eq!(group.flush(|| Ok::<(), Failure>(())), Ok(()));

        let group = Arc::new(GroupFlush::default());
        let (entered_sender, entered) = std::sync::mpsc::channel();
        let (release, release_receiver) = std::sync::mpsc::channel::<()>();
        let leader = {
            let group = group.clone();
            std::thread::spawn(move || {
                group.flush(|| {
                    entered_sender.send(()).unwrap();
                    release_receiver.recv().unwrap();
                    Ok::<(), Failure>(())
                })
            })
        };
        entered.recv().unwrap();
        // Arrives while the first flush runs, so it needs the second, which fails; a third
        // caller queued behind the same flush is told so too.
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let group = group.clone();
                std::thread::spawn(move || group.flush(|| Err(Failure::Own)))
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), Ok(()));
        let mut outcomes: Vec<_> = waiters
            .into_iter()
            .map(|waiter| waiter.join().unwrap())
            .collect();
        outcomes.sort_by_key(|outcome| format!("{outcome:?}"));
        assert_eq!(
            outcomes,
            vec![Err(Failure::Own), Err(Failure::Shared)],
            "the flush's leader reports its cause, the caller it covered a shared failure"
        );
    }
}
