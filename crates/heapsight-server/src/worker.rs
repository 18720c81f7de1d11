//! The profiler's worker threads: every job that builds or keeps what the profiler holds
//! (profiles, trees, the history's entries) runs on one of two threads.
//!
//! Its own threads, not the runtime's blocking pool: the profiler's CPU is held to two cores
//! and its work to two of the C allocator's arenas, and a request that waits for others' jobs
//! waits in the queue, not on a lock. Two, so that one long job (naming a large profile) does
//! not hold up every other answer.
//!
//! A job that panics is answered as an error; the thread goes on. A job started on the worker
//! itself runs in place, so a job never waits for the queue it is in. After a `fork`, the child
//! starts a worker of its own.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

type Job = Box<dyn FnOnce() + Send>;

/// Threads that take jobs from the one queue.
const THREADS: usize = 2;

struct Workers {
    jobs: mpsc::Sender<Job>,
    /// The process that started the threads.
    pid: u32,
}

static WORKERS: Mutex<Option<Workers>> = Mutex::new(None);

thread_local! {
    static ON_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Queues `job` for the worker threads (starting them if this process has none), or runs it
/// here if this is a worker. `None` if no thread could be started.
fn submit(job: Job) -> Option<()> {
    if ON_WORKER.with(|w| w.get()) {
        job();
        return Some(());
    }
    let mut workers = WORKERS.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    let job = match workers.as_ref().filter(|w| w.pid == pid) {
        Some(w) => match w.jobs.send(job) {
            Ok(()) => return Some(()),
            // The threads are gone: start others with the job that found them gone.
            Err(mpsc::SendError(job)) => job,
        },
        None => job,
    };
    let (jobs, queue) = mpsc::channel::<Job>();
    let queue = Arc::new(Mutex::new(queue));
    let mut started = 0;
    for _ in 0..THREADS {
        let queue = queue.clone();
        let spawned = std::thread::Builder::new()
            .name("heapsight-worker".into())
            .spawn(move || {
                ON_WORKER.with(|w| w.set(true));
                // Everything the thread allocates, waiting included, is the profiler's; a job
                // names its own part inside.
                heapsight::own::run(heapsight::own::Part::Requests, || loop {
                    let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    let Ok(job) = next else { return };
                    // A job reports its own result; a panic in it only ends the job.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                })
            });
        started += spawned.is_ok() as usize;
    }
    if started == 0 {
        return None;
    }
    jobs.send(job).ok()?;
    *workers = Some(Workers { jobs, pid });
    Some(())
}

/// Runs `f` on the worker and waits for it. `None` if it panicked or no worker could run it.
pub(crate) fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (done, result) = mpsc::sync_channel(1);
    submit(Box::new(move || {
        let _ = done.send(f());
    }))?;
    result.recv().ok()
}

/// Runs `f` on the worker; the future resolves when it is done. `None` if it panicked or no
/// worker could run it. Dropping the future does not cancel a job that has started.
pub(crate) async fn run_async<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    submit(Box::new(move || {
        let _ = done.send(f());
    }))?;
    result.await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_the_workers_and_a_panic_ends_only_its_job() {
        let names: std::collections::HashSet<_> = (0..20)
            .map(|_| run(|| std::thread::current().id()).unwrap())
            .collect();
        assert!((1..=THREADS).contains(&names.len()), "{names:?}");
        assert!(!names.contains(&std::thread::current().id()));
        assert_eq!(
            run(|| std::thread::current().name().map(String::from)),
            Some(Some("heapsight-worker".into()))
        );
        assert_eq!(run(|| -> u32 { panic!("a job that fails") }), None);
        assert_eq!(run(|| 7), Some(7), "the worker goes on");
        // A job that starts another runs it in place rather than waiting for itself.
        assert_eq!(run(|| run(|| 8)), Some(Some(8)));
    }
}
