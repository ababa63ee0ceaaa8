//! The threads that run argon2, apart from the async workers and from the blocking pool.
//!
//! One argon2id run takes a core for about 20 ms and 19 MiB. With as many runs as cores, a storm
//! of token creations or first logins would take the whole machine and every cached request
//! would wait behind it. So argon2 runs on threads of its own in `slots` = max(1, cores - 1)
//! slots, fed from one first-in-first-out queue. Past `queue_limit` waiting jobs a caller is
//! turned away at once with [`Error::Overloaded`] (503 with `Retry-After`) instead of waiting
//! without bound. A job whose caller went away while it waited is skipped.
//!
//! Jobs come in two classes, each with `slots` threads of its own:
//! - [`Class::Verify`] checks a presented secret: a caller waits to be let in. These threads
//!   keep the process's priority.
//! - [`Class::Hash`] hashes a new secret, for a token creation. On Linux these threads yield to
//!   the rest of the process as `--argon2-nice` says. By default (`idle`) they take Linux's
//!   `SCHED_IDLE` policy: a request worker that wakes takes their core at once, and while the
//!   process keeps the cores busy they get a minimal share, so creations wait for requests
//!   rather than requests for creations. A number instead runs them that many niceness steps
//!   below the process: a woken worker then waits for the end of the hash's time slice, and
//!   a busy process leaves them about a tenth of a core at 10.
//!
//!   In the `limits` bench's token storm (alternating runs of 5 rounds in one session), GET
//!   throughput during the storm was 0.60-0.67x idle at the process's priority, 0.66-0.86x at
//!   nice 10 and 0.83-0.98x with `idle`; its p99 was 1.7-2.0x, 1.8-2.4x and 1.2-1.6x idle; and
//!   token create+revoke cycles per 3 s were about 75-120, 45-75 and 20-50.
//!
//! A hash starts only while fewer than `slots` jobs of both classes run. A verification starts
//! while fewer than `slots` verifications run, passing queued hashes that cannot start: it
//! never waits for a slot that a creation holds at a lower priority (no priority inversion). So
//! at most `slots` verifications and `slots` hashes run at once, and a run beyond the slots is
//! a hash at the hashing threads' lower priority beside a verification that passed it (with
//! `--argon2-nice 0`, at the process's priority: then it takes a core from requests for a run).
//! A creation can wait long only while requests keep every core busy; the queue bound and the
//! request timeout then answer it with a 503 instead of letting it wait without end.
//!
//! An earlier design ran every job at one lowered priority. It slowed first logins as much as
//! creations while an attacker's flood of cheap requests kept the cores busy: a login during
//! 400 forgeries once took over its 1 s bound.

use super::Error;
use crate::config::HashPriority;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// How long one argon2id run takes on one core, roughly; sizes the `Retry-After` advice.
const RUN_MILLIS: usize = 25;

/// What an argon2 job does, which decides the threads that run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Checks a presented secret against its stored hash; a caller waits to be let in.
    Verify,
    /// Hashes a newly generated secret.
    Hash,
}

/// A bounded set of argon2 threads with a bounded, fair queue.
pub(crate) struct Argon2Pool {
    shared: Arc<Shared>,
    queue_limit: usize,
}

type Job = Box<dyn FnOnce() + Send>;

struct Shared {
    state: Mutex<State>,
    /// Signalled on every change of the state; the few threads each check whether it lets them
    /// start a job.
    changed: Condvar,
    /// How many jobs may run at once.
    slots: usize,
}

#[derive(Default)]
struct State {
    /// Jobs submitted and not yet started, oldest first.
    queue: VecDeque<(Class, Job)>,
    /// Jobs running, per class (indexed by [`Class::index`]).
    running: [usize; 2],
    /// The pool was dropped: its threads end.
    closed: bool,
}

impl Argon2Pool {
    /// Starts `slots` (at least one) threads per class, the [`Class::Hash`] ones scheduled by
    /// `hash_priority`; they end when the pool is dropped.
    pub(crate) fn new(slots: usize, queue_limit: usize, hash_priority: HashPriority) -> Argon2Pool {
        let slots = slots.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            slots,
        });
        for class in [Class::Verify, Class::Hash] {
            for index in 0..slots {
                let shared = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("argon2-{}-{index}", class.name()))
                    .spawn(move || {
                        if class == Class::Hash {
                            lower_priority(hash_priority);
                        }
                        shared.work(class);
                    });
                if let Err(error) = spawned {
                    // Fewer threads only means a longer queue; the first of each class is required.
                    assert!(index > 0, "cannot start an argon2 thread: {error}");
                    tracing::warn!(%error, "started {index} argon2 threads instead of {slots}");
                    break;
                }
            }
        }
        Argon2Pool {
            shared,
            queue_limit,
        }
    }

    /// `max(1, cores - 1)`: cached requests always keep a core.
    pub(crate) fn default_slots() -> usize {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .saturating_sub(1)
            .max(1)
    }

    /// Runs `job` on an argon2 thread of its class after the jobs queued before it (see
    /// [`State::may_start`]), or refuses at once when `queue_limit` jobs are already waiting.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        class: Class,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        {
            let mut state = self.shared.lock();
            let ahead = state.queue.len();
            if ahead >= self.queue_limit {
                return Err(Error::Overloaded {
                    retry_after_secs: self.retry_after_secs(ahead),
                });
            }
            state.queue.push_back((
                class,
                Box::new(move || {
                    if !sender.is_closed() {
                        // The receiver may go away meanwhile; nobody is left to tell then.
                        drop(sender.send(job()));
                    }
                }),
            ));
        }
        self.shared.changed.notify_all();
        receiver
            .await
            .map_err(|error| Error::internal("argon2 job lost", error))
    }

    /// Whole seconds until the queue ahead of a caller should have drained.
    fn retry_after_secs(&self, ahead: usize) -> u64 {
        let millis = ahead.saturating_mul(RUN_MILLIS) / self.shared.slots;
        u64::try_from(millis.div_ceil(1000).max(1)).unwrap_or(u64::MAX)
    }
}

impl Drop for Argon2Pool {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
    }
}

impl Class {
    fn index(self) -> usize {
        match self {
            Class::Verify => 0,
            Class::Hash => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Class::Verify => "verify",
            Class::Hash => "hash",
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One thread's loop: take the next job of `class` that may start, run it, repeat.
    fn work(&self, class: Class) {
        let mut state = self.lock();
        loop {
            if state.closed {
                // Nobody waits for a queued job any more: every caller borrows the pool.
                return;
            }
            if let Some(job) = state.start(class, self.slots) {
                drop(state);
                // A running hash may let a verification pass it.
                self.changed.notify_all();
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    // The caller sees its job lost; the slot must not be.
                    tracing::error!("an argon2 job panicked");
                }
                state = self.lock();
                state.running[class.index()] -= 1;
                self.changed.notify_all();
            } else {
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

impl State {
    /// Takes the job a thread of `class` should run now, if any, counting it as running.
    fn start(&mut self, class: Class, slots: usize) -> Option<Job> {
        let position = self.may_start(class, slots)?;
        let (_, job) = self.queue.remove(position)?;
        self.running[class.index()] += 1;
        Some(job)
    }

    /// The queue position of the job a thread of `class` should start now, if any.
    ///
    /// Jobs start oldest first. A verification may start while fewer than `slots`
    /// verifications run; a hash while fewer than `slots` jobs of both classes run. The one
    /// exception to the order: a verification may pass older hashes that cannot start, so a
    /// login never waits for a slot a creation holds at a lower priority. A hash never passes
    /// anything (an older verification could start whenever the hash could).
    fn may_start(&self, class: Class, slots: usize) -> Option<usize> {
        let [verifying, hashing] = self.running;
        let position = self.queue.iter().position(|(queued, _)| *queued == class)?;
        let start = match class {
            Class::Verify => verifying < slots && (position == 0 || verifying + hashing >= slots),
            Class::Hash => position == 0 && verifying + hashing < slots,
        };
        start.then_some(position)
    }
}

/// Makes the calling thread yield to the rest of the process as `priority` says. A failure
/// only costs the priority, so it is logged, not fatal. Linux schedules each thread on its own,
/// so this touches no other thread; elsewhere it does nothing.
fn lower_priority(priority: HashPriority) {
    #[cfg(target_os = "linux")]
    {
        let lowered = match priority {
            HashPriority::Nice(0) => return,
            HashPriority::Nice(steps) => nicer_by(steps),
            HashPriority::Idle => schedule_idle(),
        };
        if let Err(error) = lowered {
            tracing::warn!(%error, %priority, "could not lower the priority of an argon2 thread");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
}

/// `steps` niceness steps nicer than the thread is, capped at Linux's lowest priority
/// ([`crate::config::MAX_ARGON2_NICE`]).
#[cfg(target_os = "linux")]
fn nicer_by(steps: u8) -> Result<(), String> {
    let thread = Some(rustix::thread::gettid());
    rustix::process::getpriority_process(thread)
        .and_then(|current| {
            rustix::process::setpriority_process(
                thread,
                (current + i32::from(steps)).min(i32::from(crate::config::MAX_ARGON2_NICE)),
            )
        })
        .map_err(|error| error.to_string())
}

/// Linux's `SCHED_IDLE` policy for the calling thread, which any thread may take without
/// privileges.
#[cfg(target_os = "linux")]
fn schedule_idle() -> Result<(), String> {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id, thread_schedule_policy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    match set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        idle,
    ) {
        Ok(()) => Ok(()),
        // After the policy the crate sets the niceness to 0, which a process started nicer may
        // not do; SCHED_IDLE ignores niceness, so the policy is what counts.
        Err(_) if matches!(thread_schedule_policy(), Ok(policy) if policy == idle) => Ok(()),
        Err(error) => Err(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A job that runs until the returned sender sends (or is dropped).
    fn held() -> (mpsc::Sender<()>, impl FnOnce() + Send + 'static) {
        let (release, hold) = mpsc::channel::<()>();
        (release, move || hold.recv().unwrap_or_default())
    }

    /// Submits a job of `class` that runs `job`, and returns once it is queued, running or done,
    /// so that later submissions queue behind it.
    async fn submit<T: Send + 'static>(
        pool: &Arc<Argon2Pool>,
        class: Class,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<T, Error>> {
        let jobs = |pool: &Argon2Pool| {
            let state = pool.shared.lock();
            state.queue.len() + state.running.iter().sum::<usize>()
        };
        let before = jobs(pool);
        let handle = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(class, job).await })
        };
        while jobs(pool) <= before && !handle.is_finished() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        handle
    }

    fn state(queued: &[Class], running: [usize; 2]) -> State {
        State {
            queue: queued
                .iter()
                .map(|class| (*class, Box::new(|| ()) as Job))
                .collect(),
            running,
            closed: false,
        }
    }

    #[tokio::test]
    async fn jobs_run_in_order_and_past_the_limit_callers_are_refused_at_once() {
        let pool = Arc::new(Argon2Pool::new(1, 3, HashPriority::Nice(0)));
        let order = Arc::new(Mutex::new(Vec::new()));
        // The first job occupies the slot until released; three more may wait. Hashes, because
        // they run one at a time behind anything (a verification may run beside a hash, so the
        // order in which two such jobs record themselves would be a race).
        let (release, hold) = held();
        let blocker = submit(&pool, Class::Verify, hold).await;
        let mut waiting = Vec::new();
        for index in 0..3 {
            let order = order.clone();
            waiting.push(
                submit(&pool, Class::Hash, move || {
                    order.lock().unwrap().push(index)
                })
                .await,
            );
        }
        let refused = pool.run(Class::Verify, || ()).await;
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
        pool.run(Class::Hash, || ()).await.unwrap();
    }

    #[tokio::test]
    async fn a_verification_does_not_wait_for_a_slot_that_a_hash_holds() {
        let pool = Arc::new(Argon2Pool::new(1, 8, HashPriority::Nice(0)));
        let (release, hold) = held();
        let creation = submit(&pool, Class::Hash, hold).await;
        // Queued behind the running hash, and behind a second hash that cannot start yet.
        let second_creation = submit(&pool, Class::Hash, || ()).await;

        let login = tokio::time::timeout(Duration::from_secs(5), pool.run(Class::Verify, || 7))
            .await
            .expect("the verification ran while the hash held the slot");

        assert_eq!(login.unwrap(), 7);
        assert!(!second_creation.is_finished(), "hashes wait for the slot");
        release.send(()).unwrap();
        creation.await.unwrap().unwrap();
        second_creation.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_hash_waits_while_verifications_hold_every_slot() {
        let pool = Arc::new(Argon2Pool::new(1, 8, HashPriority::Nice(0)));
        let (release, hold) = held();
        let login = submit(&pool, Class::Verify, hold).await;
        let creation = submit(&pool, Class::Hash, || ()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;

        assert!(
            !creation.is_finished(),
            "the hash started beside a verification"
        );
        release.send(()).unwrap();
        login.await.unwrap().unwrap();
        creation.await.unwrap().unwrap();
    }

    #[test]
    fn a_job_starts_oldest_first_within_its_slots() {
        use Class::{Hash, Verify};
        // Empty queue, or no job of the class: nothing to start.
        assert_eq!(state(&[], [0, 0]).may_start(Verify, 1), None);
        assert_eq!(state(&[Hash], [0, 0]).may_start(Verify, 1), None);
        // The oldest job starts when a slot is free.
        assert_eq!(state(&[Verify, Hash], [0, 0]).may_start(Verify, 1), Some(0));
        assert_eq!(state(&[Hash, Verify], [0, 0]).may_start(Hash, 1), Some(0));
        // A free slot goes to the oldest job, not to a younger one of the other class.
        assert_eq!(state(&[Hash, Verify], [0, 0]).may_start(Verify, 1), None);
        assert_eq!(state(&[Verify, Hash], [0, 0]).may_start(Hash, 2), None);
        // Verifications pass hashes that cannot start, up to their own slots.
        assert_eq!(state(&[Hash, Verify], [0, 1]).may_start(Verify, 1), Some(1));
        assert_eq!(state(&[Hash, Verify], [1, 0]).may_start(Verify, 1), None);
        assert_eq!(
            state(&[Hash, Hash, Verify], [1, 1]).may_start(Verify, 2),
            Some(2)
        );
        // A hash starts only under the total bound.
        assert_eq!(state(&[Hash], [1, 0]).may_start(Hash, 1), None);
        assert_eq!(state(&[Hash], [1, 0]).may_start(Hash, 2), Some(0));
        assert_eq!(state(&[Hash], [0, 2]).may_start(Hash, 2), None);
    }

    /// The scheduling policy and niceness of the thread a job of `class` runs on.
    #[cfg(target_os = "linux")]
    async fn scheduling_in_pool(
        class: Class,
        priority: HashPriority,
    ) -> (thread_priority::unix::ThreadSchedulePolicy, i32) {
        Argon2Pool::new(1, 3, priority)
            .run(class, || {
                (
                    thread_priority::unix::thread_schedule_policy().unwrap(),
                    rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap(),
                )
            })
            .await
            .unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hash_threads_run_nicer_than_the_process_by_the_setting_and_verify_threads_do_not() {
        let own = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let niceness = |class, steps| async move {
            scheduling_in_pool(class, HashPriority::Nice(steps)).await.1
        };
        assert_eq!(niceness(Class::Hash, 0).await, own);
        assert_eq!(niceness(Class::Hash, 4).await, (own + 4).min(19));
        assert_eq!(
            niceness(Class::Hash, 19).await,
            19,
            "capped at Linux's lowest priority"
        );
        assert_eq!(niceness(Class::Verify, 10).await, own);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn idle_hash_threads_take_sched_idle_and_verify_threads_do_not() {
        use thread_priority::unix::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        let own = thread_priority::unix::thread_schedule_policy().unwrap();

        let (hashing, _) = scheduling_in_pool(Class::Hash, HashPriority::Idle).await;
        let (verifying, _) = scheduling_in_pool(Class::Verify, HashPriority::Idle).await;

        assert_eq!(
            hashing,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
        );
        assert_eq!(verifying, own);
        assert_ne!(own, hashing);
    }
}
