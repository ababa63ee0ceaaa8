//! Write combining for the sled engine: concurrent writes of one kind are applied together, in
//! one transaction and one flush, by one worker on the blocking pool.
//!
//! sled 0.34 writes its log buffer out twice for every transaction (it rolls the buffer before
//! and after the transaction's batch marker), so sharing flushes alone still costs two disk
//! writes per write. Applying the writes that queue up while a batch runs as the next batch costs
//! two disk writes and one flush per batch instead.
//!
//! A caller queues its item and awaits its outcome; it holds no thread while it waits. The
//! caller that finds no worker running starts one on the blocking pool, which applies batches
//! (every item queued so far, in the order queued) until the queue is empty. Each outcome goes
//! straight to its caller's task, so a batch wakes each of its callers once and no one else.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::oneshot;

/// Combines concurrent submissions of items `I` into batches, each item getting an outcome `O`.
pub(crate) struct Combiner<I, O> {
    state: Mutex<CombinerState<I, O>>,
}

struct CombinerState<I, O> {
    /// Items waiting for the next batch, each with where its outcome goes.
    queued: Vec<(I, oneshot::Sender<O>)>,
    /// A worker is applying batches.
    running: bool,
}

impl<I, O> Default for Combiner<I, O> {
    fn default() -> Combiner<I, O> {
        Combiner {
            state: Mutex::new(CombinerState {
                queued: Vec::new(),
                running: false,
            }),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Combiner<I, O> {
    /// Queues `item` and returns its outcome. `apply` (made by `make_apply`, called only when
    /// this caller starts the worker) applies a batch and returns one outcome per item, in order;
    /// `abandoned` is the outcome of an item whose batch panicked or never ran (the runtime shut
    /// down). An item is applied even if its caller stops waiting.
    pub(crate) async fn submit<A>(
        self: &Arc<Self>,
        item: I,
        make_apply: impl FnOnce() -> A,
        abandoned: fn() -> O,
    ) -> O
    where
        A: Fn(Vec<I>) -> Vec<O> + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let start_worker = {
            let mut state = self.lock();
            state.queued.push((item, sender));
            !std::mem::replace(&mut state.running, true)
        };
        if start_worker {
            let worker = Worker {
                combiner: self.clone(),
                done: false,
            };
            // Detached: it ends when the queue is empty.
            let apply = make_apply();
            drop(tokio::task::spawn_blocking(move || worker.run(apply)));
        }
        receiver.await.unwrap_or_else(|_| abandoned())
    }
}

impl<I, O> Combiner<I, O> {
    fn lock(&self) -> MutexGuard<'_, CombinerState<I, O>> {
        // Every update of the state is complete before the guard drops.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The one worker applying batches. Dropped without finishing (a task the runtime never ran),
/// it lets the next submission start a worker, and its queued callers get `abandoned`.
struct Worker<I, O> {
    combiner: Arc<Combiner<I, O>>,
    done: bool,
}

impl<I, O> Worker<I, O> {
    fn run(mut self, apply: impl Fn(Vec<I>) -> Vec<O>) {
        loop {
            let batch = {
                let mut state = self.combiner.lock();
                if state.queued.is_empty() {
                    state.running = false;
                    self.done = true;
                    return;
                }
                std::mem::take(&mut state.queued)
            };
            let (items, senders): (Vec<I>, Vec<oneshot::Sender<O>>) = batch.into_iter().unzip();
            // A panicking batch drops its senders: its callers get `abandoned`, and the next
            // batch still runs.
            if let Ok(outcomes) = catch_unwind(AssertUnwindSafe(|| apply(items))) {
                // An item `apply` did not answer (a bug) has its sender dropped: `abandoned`.
                for (sender, outcome) in senders.into_iter().zip(outcomes) {
                    // The caller may have stopped waiting; the item is applied all the same.
                    let _ = sender.send(outcome);
                }
            } else {
                tracing::error!("a batch of combined writes panicked; its callers get an error");
            }
        }
    }
}

impl<I, O> Drop for Worker<I, O> {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.combiner.lock();
            state.running = false;
            state.queued.clear();
        }
    }
}

#[cfg(test)]
#[expect(
    clippy::disallowed_methods,
    reason = "the batches sleep on the blocking pool, where the combiner runs them"
)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submissions_share_batches_and_each_gets_its_own_outcome() {
        let combiner = Arc::new(Combiner::<u64, u64>::default());
        let n_batches = Arc::new(AtomicU64::new(0));
        let callers: Vec<_> = (0..16u64)
            .map(|caller| {
                let (combiner, n_batches) = (combiner.clone(), n_batches.clone());
                tokio::spawn(async move {
                    for round in 0..50u64 {
                        let item = caller * 1000 + round;
                        let n_batches = n_batches.clone();
                        let outcome = combiner
                            .submit(
                                item,
                                || {
                                    move |items: Vec<u64>| {
                                        n_batches.fetch_add(1, Ordering::SeqCst);
                                        std::thread::sleep(std::time::Duration::from_millis(1));
                                        items.into_iter().map(|item| item * 2).collect()
                                    }
                                },
                                || u64::MAX,
                            )
                            .await;
                        assert_eq!(outcome, item * 2, "an outcome went to the wrong caller");
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
        let n_batches = n_batches.load(Ordering::SeqCst);
        assert!(
            n_batches < 16 * 50 / 4,
            "16 writers should share batches, but {n_batches} ran for 800 items"
        );
    }

    #[tokio::test]
    async fn items_of_a_panicked_batch_are_abandoned_and_the_next_batch_runs() {
        let combiner = Arc::new(Combiner::<u64, Option<u64>>::default());
        // Every caller passes the same `apply`, as in production: the worker that ran the first
        // batch may still be running when the second item arrives, and then applies it with
        // the `apply` it was started with.
        let apply = || {
            |items: Vec<u64>| {
                assert!(!items.contains(&1), "apply failed");
                items.into_iter().map(Some).collect()
            }
        };

        let panicked = combiner.submit(1, apply, || None).await;
        let next = combiner.submit(2, apply, || None).await;

        assert_eq!(panicked, None);
        assert_eq!(next, Some(2));
    }

    #[tokio::test]
    async fn an_item_without_an_outcome_is_abandoned() {
        let combiner = Arc::new(Combiner::<u64, Option<u64>>::default());

        let unanswered = combiner.submit(1, || |_| Vec::new(), || None).await;

        assert_eq!(unanswered, None);
    }
}
