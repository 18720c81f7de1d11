//! Labels on a multi-thread tokio runtime: tasks that move between worker threads between polls
//! keep their labels, whether bound with `Labels::bind` or spawned with `heapsight_tracing::spawn`,
//! and what they hold is counted under them (every allocation sampled, so to the byte but for
//! what the runtime itself grows while they run).
//!
//! Runs without the test harness: the sample rate is global.

use heapsight::Labels;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

heapsight::global_allocator!(std::alloc::System);

const TASKS_PER_LABEL: usize = 16;
const STEPS: usize = 40;

/// Bytes each task of label `i` keeps per step: distinct per label, so a mix-up shows.
fn step_bytes(i: usize) -> usize {
    1000 + 977 * i
}

/// In use under each of `labels` in a snapshot delta.
fn in_use(delta: &heapsight::Snapshot, labels: &[Labels]) -> Vec<i64> {
    labels.iter().map(|&l| delta.inuse_space_under(l)).collect()
}

/// A task's work: keeps a block per step, yielding between steps so that the runtime may move
/// it, and notes every thread that polled it (in a set the task frees when it ends).
async fn work(label: usize, threads: Arc<Mutex<HashSet<ThreadId>>>) -> Vec<Box<[u8]>> {
    let mut kept = Vec::with_capacity(STEPS);
    for step in 0..STEPS {
        threads.lock().unwrap().insert(std::thread::current().id());
        kept.push(vec![step as u8; step_bytes(label)].into_boxed_slice());
        // Other tasks run here; a woken task goes to whichever worker is free.
        tokio::task::yield_now().await;
    }
    kept
}

fn run(spawn_helper: bool) {
    // Before the workers start: a thread that last drew its countdown with sampling off notices
    // a new rate only after its next stretch of allocations.
    heapsight::set_sample_rate(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let labels: Vec<Labels> = (0..4)
        .map(|i| Labels::new([("tenant", format!("t{i}"))]))
        .collect();
    let before = heapsight::snapshot();
    let moved = Arc::new(Mutex::new(0usize));
    let kept: Vec<Vec<Box<[u8]>>> = rt.block_on(async {
        let mut handles = Vec::new();
        for (i, &l) in labels.iter().enumerate() {
            for _ in 0..TASKS_PER_LABEL {
                let seen = Arc::new(Mutex::new(HashSet::new()));
                let moved = moved.clone();
                let task = async move {
                    let kept = work(i, seen.clone()).await;
                    if seen.lock().unwrap().len() > 1 {
                        *moved.lock().unwrap() += 1;
                    }
                    kept
                };
                handles.push(if spawn_helper {
                    l.run(|| heapsight_tracing::spawn(task))
                } else {
                    tokio::spawn(l.bind(task))
                });
            }
        }
        let mut kept = Vec::new();
        for h in handles {
            kept.push(h.await.unwrap());
        }
        kept
    });
    let delta = heapsight::snapshot().delta(&before);
    heapsight::set_sample_rate(0);

    let moved = *moved.lock().unwrap();
    assert!(
        moved > 0,
        "no task moved between workers: the test shows nothing"
    );
    let held = in_use(&delta, &labels);
    for (i, &h) in held.iter().enumerate() {
        let blocks = (TASKS_PER_LABEL * STEPS * step_bytes(i)) as i64;
        // The kept vectors' own buffers are the tasks' too: STEPS boxes' pointers per task.
        let vectors = (TASKS_PER_LABEL * STEPS * 16) as i64;
        // The runtime may grow its own queues while a task is polled (its list of yielded
        // tasks, say), under that task's labels and kept: a few KiB at most.
        let truth = blocks + vectors;
        assert!(
            (truth..truth + (16 << 10)).contains(&h),
            "tenant=t{i} (helper: {spawn_helper}): {h} bytes in use, {truth} kept, {moved} tasks moved"
        );
    }
    drop(kept);
    println!(
        "{moved} of {} tasks moved between workers",
        4 * TASKS_PER_LABEL
    );
}

fn main() {
    run(false);
    println!("test bound_tasks_keep_their_labels_across_workers ... ok");
    run(true);
    println!("test spawned_tasks_keep_the_spawners_labels_across_workers ... ok");
}
