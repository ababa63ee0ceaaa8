//! The threads that run argon2, apart from the async workers and from the blocking pool.
//!
//! One argon2id run takes a core for about 20 ms and 19 MiB. With as many runs as cores, a storm
//! of token creations or first logins would take the whole machine and every cached request
//! would wait behind it. So argon2 gets its own threads, one fewer than the cores (at least
//! one), fed from one first-in-first-out queue. Past `queue_limit` waiting jobs a caller is
//! turned away at once with [`Error::Overloaded`] (503 with `Retry-After`) instead of waiting
//! without bound. A job whose caller went away while it waited is skipped.
//!
//! On Linux `--argon2-nice N` (off by default) runs the threads N steps below the rest of the
//! process, so that when the cores are contended the kernel gives them to the request workers
//! first. In the `limits` bench's token storm nice 10 lifted GET throughput from 0.58-0.68x idle
//! to 0.77-0.79x and made token creations about 45% slower; but it slows a first login just as
//! much while a flood of cheap requests keeps the cores busy (the end-to-end test of a login
//! during 400 forgeries once took over its 1 s bound), so it is left to operators who prefer
//! reads over logins.

use super::Error;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

/// How long one argon2id run takes on one core, roughly; sizes the `Retry-After` advice.
const RUN_MILLIS: usize = 25;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of argon2 threads with a bounded, fair queue.
pub(crate) struct Argon2Pool {
    jobs: mpsc::Sender<Job>,
    /// Jobs submitted and not yet started.
    queued: Arc<AtomicUsize>,
    queue_limit: usize,
    threads: usize,
}

impl Argon2Pool {
    /// Starts `threads` (at least one) threads, each `nice` steps below the process's priority;
    /// they end when the pool is dropped.
    pub(crate) fn new(threads: usize, queue_limit: usize, nice: u8) -> Argon2Pool {
        let threads = threads.max(1);
        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || {
                    lower_priority(nice);
                    loop {
                        // Waiting threads queue on the mutex, so jobs are taken in order.
                        let job = receiver
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .recv();
                        match job {
                            Ok(job) => job(),
                            Err(mpsc::RecvError) => break,
                        }
                    }
                });
            if let Err(error) = spawned {
                // Fewer threads only means a longer queue; the first one is required.
                assert!(index > 0, "cannot start an argon2 thread: {error}");
                tracing::warn!(%error, "started {index} argon2 threads instead of {threads}");
                break;
            }
        }
        Argon2Pool {
            jobs,
            queued: Arc::new(AtomicUsize::new(0)),
            queue_limit,
            threads,
        }
    }

    /// `max(1, cores - 1)`: cached requests always keep a core.
    pub(crate) fn default_threads() -> usize {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .saturating_sub(1)
            .max(1)
    }

    /// Runs `job` on an argon2 thread after the jobs queued before it, or refuses at once when
    /// `queue_limit` jobs are already waiting.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let ahead = self.queued.fetch_add(1, Ordering::SeqCst);
        if ahead >= self.queue_limit {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Overloaded {
                retry_after_secs: self.retry_after_secs(ahead),
            });
        }
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let queued = self.queued.clone();
        let submitted = self.jobs.send(Box::new(move || {
            queued.fetch_sub(1, Ordering::SeqCst);
            if !sender.is_closed() {
                // The receiver may go away meanwhile; nobody is left to tell then.
                drop(sender.send(job()));
            }
        }));
        if submitted.is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::internal(
                "argon2 threads stopped",
                std::io::Error::other("argon2 pool closed"),
            ));
        }
        receiver
            .await
            .map_err(|error| Error::internal("argon2 job lost", error))
    }

    /// Whole seconds until the queue ahead of a caller should have drained.
    fn retry_after_secs(&self, ahead: usize) -> u64 {
        let millis = ahead.saturating_mul(RUN_MILLIS) / self.threads;
        u64::try_from(millis.div_ceil(1000).max(1)).unwrap_or(u64::MAX)
    }
}

/// Makes the calling thread `nice` steps nicer than it is (capped at Linux's lowest priority,
/// [`crate::config::MAX_ARGON2_NICE`]). A failure only costs the priority, so it is logged, not
/// fatal. Linux schedules each thread on its own, so this touches no other thread; elsewhere
/// niceness is per process and this does nothing.
fn lower_priority(nice: u8) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let thread = Some(rustix::thread::gettid());
        let lowered = rustix::process::getpriority_process(thread).and_then(|current| {
            rustix::process::setpriority_process(
                thread,
                (current + i32::from(nice)).min(i32::from(crate::config::MAX_ARGON2_NICE)),
            )
        });
        if let Err(error) = lowered {
            tracing::warn!(%error, "could not lower the priority of an argon2 thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn jobs_run_in_order_and_past_the_limit_callers_are_refused_at_once() {
        let pool = Arc::new(Argon2Pool::new(1, 3, 0));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(Mutex::new(hold));
        let order = Arc::new(Mutex::new(Vec::new()));
        // The first job occupies the thread until released; three more may wait.
        let blocker = {
            let (pool, hold) = (pool.clone(), hold.clone());
            tokio::spawn(
                async move { pool.run(move || hold.lock().unwrap().recv().unwrap()).await },
            )
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut waiting = Vec::new();
        for index in 0..3 {
            let (pool, order) = (pool.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                pool.run(move || order.lock().unwrap().push(index)).await
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let refused = pool.run(|| ()).await;
        assert!(
            matches!(refused, Err(Error::Overloaded { retry_after_secs }) if retry_after_secs >= 1),
            "a fourth waiting job is refused with a retry time"
        );
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        for job in waiting {
            job.await.unwrap().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2], "first in, first out");
        // The queue is empty again.
        pool.run(|| ()).await.unwrap();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_threads_run_nicer_than_the_process_by_the_setting() {
        let own = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let niceness_in_pool = |nice: u8| async move {
            Argon2Pool::new(1, 3, nice)
                .run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())))
                .await
                .unwrap()
                .unwrap()
        };
        assert_eq!(niceness_in_pool(0).await, own);
        assert_eq!(niceness_in_pool(4).await, (own + 4).min(19));
        assert_eq!(
            niceness_in_pool(19).await,
            19,
            "capped at Linux's lowest priority"
        );
    }
}
