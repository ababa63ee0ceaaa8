//! Write combining for the sled engine: concurrent writes of one kind are applied together, in
//! one transaction and one flush, by whichever caller finds no batch running.
//!
//! sled 0.34 writes its log buffer out twice for every transaction (it rolls the buffer before
//! and after the transaction's batch marker), so sharing flushes alone still costs two disk
//! writes per write. Applying the writes that queue up while a batch runs as the next batch costs
//! two disk writes and one flush per batch instead.
//!
//! A caller queues its item and waits. If no batch is running it runs one: it takes every item
//! queued so far (its own among them), applies them, and hands each caller its own outcome. A
//! caller returns once its item's outcome is known; the items of a batch are applied in the order
//! they were queued.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Combines concurrent submissions of items `I` into batches, each item getting an outcome `O`.
pub(crate) struct Combiner<I, O> {
    state: Mutex<CombinerState<I, O>>,
    /// Signalled when a batch ends.
    finished: Condvar,
}

struct CombinerState<I, O> {
    /// Items waiting for the next batch, with the number of their submission.
    queued: Vec<(u64, I)>,
    /// Outcomes not yet taken by their callers, by submission number.
    outcomes: Vec<(u64, O)>,
    /// Submissions so far.
    submitted: u64,
    /// A batch is being applied.
    running: bool,
}

impl<I, O> Default for Combiner<I, O> {
    fn default() -> Combiner<I, O> {
        Combiner {
            state: Mutex::new(CombinerState {
                queued: Vec::new(),
                outcomes: Vec::new(),
                submitted: 0,
                running: false,
            }),
            finished: Condvar::new(),
        }
    }
}

impl<I, O> Combiner<I, O> {
    /// Queues `item` and returns its outcome. `apply` applies a batch and returns one outcome per
    /// item, in order; `abandoned` is the outcome of an item whose batch panicked.
    pub(crate) fn submit(
        &self,
        item: I,
        apply: impl Fn(Vec<I>) -> Vec<O>,
        abandoned: impl Fn() -> O,
    ) -> O {
        let mut state = self.lock();
        state.submitted += 1;
        let number = state.submitted;
        state.queued.push((number, item));
        loop {
            if let Some(index) = state.outcomes.iter().position(|(n, _)| *n == number) {
                return state.outcomes.swap_remove(index).1;
            }
            if state.running {
                state = self
                    .finished
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.running = true;
            let (numbers, items): (Vec<u64>, Vec<I>) =
                std::mem::take(&mut state.queued).into_iter().unzip();
            drop(state);
            let applied = catch_unwind(AssertUnwindSafe(|| apply(items)));
            state = self.lock();
            state.running = false;
            let panic = match applied {
                Ok(outcomes) => {
                    debug_assert_eq!(outcomes.len(), numbers.len(), "one outcome per item");
                    state.outcomes.extend(numbers.iter().copied().zip(outcomes));
                    None
                }
                Err(panic) => {
                    state
                        .outcomes
                        .extend(numbers.iter().map(|number| (*number, abandoned())));
                    Some(panic)
                }
            };
            // An item the batch did not answer (a bug in `apply`) must not wait forever.
            for number in numbers {
                if !state.outcomes.iter().any(|(n, _)| *n == number) {
                    state.outcomes.push((number, abandoned()));
                }
            }
            self.finished.notify_all();
            if let Some(panic) = panic {
                state.outcomes.retain(|(n, _)| *n != number);
                drop(state);
                resume_unwind(panic);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, CombinerState<I, O>> {
        // Every update of the state is complete before the guard drops.
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

    #[test]
    fn concurrent_submissions_share_batches_and_each_gets_its_own_outcome() {
        let combiner = Arc::new(Combiner::<u64, u64>::default());
        let n_batches = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16u64)
            .map(|thread| {
                let (combiner, n_batches) = (combiner.clone(), n_batches.clone());
                std::thread::spawn(move || {
                    for round in 0..50u64 {
                        let item = thread * 1000 + round;
                        let outcome = combiner.submit(
                            item,
                            |items| {
                                n_batches.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(1));
                                items.into_iter().map(|item| item * 2).collect()
                            },
                            || u64::MAX,
                        );
                        assert_eq!(outcome, item * 2, "an outcome went to the wrong caller");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let n_batches = n_batches.load(Ordering::SeqCst);
        assert!(
            n_batches < 16 * 50 / 4,
            "16 writers should share batches, but {n_batches} ran for 800 items"
        );
    }

    #[test]
    fn items_of_a_panicked_batch_are_abandoned_and_the_next_batch_runs() {
        let combiner = Combiner::<u64, Option<u64>>::default();
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            combiner.submit(1, |_| panic!("apply failed"), || None)
        }));
        assert!(
            panicked.is_err(),
            "the panic reaches the caller that ran the batch"
        );
        let outcome = combiner.submit(2, |items| items.into_iter().map(Some).collect(), || None);
        assert_eq!(outcome, Some(2));
    }
}
