//! The CPU profiler's signal handler and the allocator hook must not deadlock. Every allocation
//! is sampled (rate 1), so two threads spend most of their time inside the hook's slow path
//! (walking stacks, interning them) while SIGPROF lands on them a hundred times a second for
//! three seconds. The profile must come back, and the threads must finish.
//! Runs without the test harness: the rate is process-wide.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

#[inline(never)]
fn allocate_in_the_hook(stop: &AtomicBool) -> u64 {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let v: Vec<u64> = Vec::with_capacity(8 + (n as usize % 512));
        n += std::hint::black_box(v).capacity() as u64;
    }
    n
}

fn main() {
    let server = heapsight_server::spawn("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    heapsight::set_sample_rate(1);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                heapsight::set_sample_rate(1);
                allocate_in_the_hook(&stop)
            })
        })
        .collect();
    let started = Instant::now();
    // A deadlock shows up as this request timing out (the helper waits at most 60 s).
    let reply = common::request_to(addr, "GET /debug/pprof/profile?seconds=3 HTTP/1.1", b"");
    stop.store(true, Ordering::Relaxed);
    let allocated: u64 = workers
        .into_iter()
        .map(|w| w.join().expect("worker finished"))
        .sum();
    heapsight::set_sample_rate(heapsight::DEFAULT_SAMPLE_RATE);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(!reply.body.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(allocated > 0);
    let stats = heapsight::stats();
    println!(
        "cpu_and_hook: 1 passed, 0 failed ({} stacks sampled at rate 1 under SIGPROF, {:?})",
        stats.stacks,
        started.elapsed()
    );
    server.shutdown();
}
