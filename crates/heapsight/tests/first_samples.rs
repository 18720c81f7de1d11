//! The tables are set up before any thread samples, so the first samples of a process are not
//! lost to the set-up: threads that all take their first sample at the same moment (a server's
//! workers, started before sampling was turned up) each record theirs.

use std::sync::{Arc, Barrier};

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

#[test]
fn threads_sampling_at_once_lose_nothing_to_the_set_up() {
    let threads = 8;
    let per_thread = 200;
    let start = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                // Every allocation here is sampled: the rate is 1 by the time the barrier opens.
                // The rate is read at this thread's next sample point, so the first allocation
                // crosses the point drawn at the old rate only if it is far; make it near.
                heapsight::set_sample_rate(1);
                let kept: Vec<Box<[u8; 64]>> =
                    (0..per_thread).map(|_| Box::new([7u8; 64])).collect();
                std::hint::black_box(&kept);
                kept
            })
        })
        .collect();
    heapsight::set_sample_rate(1);
    start.wait();
    let kept: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let stats = heapsight::stats();
    assert_eq!(stats.dropped_no_tables, 0, "{stats:?}");
    let held: u64 = heapsight::snapshot()
        .blocks
        .iter()
        .filter(|b| b.size == 64)
        .count() as u64;
    assert!(
        held >= (threads * per_thread) as u64,
        "{held} sampled 64-byte blocks held, {} allocated",
        threads * per_thread
    );
    drop(kept);
}
