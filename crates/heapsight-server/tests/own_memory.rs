//! The profiler's own memory is not the service's heap: what the standalone server keeps (its
//! snapshot history), runs (its runtime, connections) and builds (profiles, trees) is
//! allocated with sampling paused, so it never shows
//! in the profiles it serves, even when every allocation is sampled.

mod common;

use common::request_to;
use std::time::Duration;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

#[test]
fn the_snapshot_history_stays_out_of_the_heap_it_records() {
    heapsight::set_sample_rate(1);
    let server = heapsight_server::Options::new()
        .history(Duration::from_millis(20), 1000, 64 << 20)
        .spawn("127.0.0.1:0")
        .unwrap();
    let kept: Vec<Vec<u8>> = (0..50).map(|i| vec![i as u8; 4096]).collect();
    std::thread::sleep(Duration::from_millis(600));
    let r = request_to(
        server.local_addr(),
        "GET /debug/pprof/ui/api/folded HTTP/1.1",
        b"",
    );
    assert_eq!(r.status, 200);
    let folded = r.text();
    assert!(
        folded.contains("own_memory::"),
        "the test's own heap is there:\n{folded}"
    );
    // The endpoints' state, the history's snapshots, the server's runtime and connections,
    // this very request included: whoever allocated them (the caller of `spawn()`, the
    // history's thread, the server's), none of it is the service's heap.
    let own: Vec<&str> = folded
        .lines()
        .filter(|l| {
            l.contains("heapsight_server::") || l.contains("hyper::") || l.contains("axum::")
        })
        .collect();
    assert!(
        own.is_empty(),
        "the profiler's state in the heap:\n{}",
        own.join("\n")
    );
    drop(kept);
}
