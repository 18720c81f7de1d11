//! What the endpoint costs: a heap-profile request over 10,000 stacks, and the effect of an idle
//! server on the allocator hook's small-object churn benchmark (same run, interleaved, ratio of
//! medians). Run with `cargo bench -p heapsight-server --bench requests` (`-- quick` for short).

#[path = "../../heapsight/benches/common/mod.rs"]
mod common;
mod http;

use common::{churn, compare, median, run_length, stack_path, Sizes};
use std::time::Instant;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

fn main() {
    let (steps, reps) = run_length(16);
    println!("heapsight-server benchmark ({reps} interleaved runs, medians)");

    // An idle server next to the hook: churn with no server, then with one listening.
    let c = compare(
        reps,
        || churn(&GLOBAL, Sizes::Small, steps),
        || {
            let server = heapsight_server::spawn("127.0.0.1:0").unwrap();
            // Let its runtime finish starting: the question is what an idle server costs.
            std::thread::sleep(std::time::Duration::from_millis(200));
            let d = churn(&GLOBAL, Sizes::Small, steps);
            server.shutdown();
            d
        },
    );
    println!(
        "{:<48} {:>9.3}s {:>9.3}s {:>7.3} (paired {:.3})",
        "small-object churn: no server vs idle server",
        c.bare,
        c.hooked,
        c.ratio(),
        c.paired
    );

    // A heap profile of 10,000 distinct stacks, requested over loopback.
    heapsight::set_sample_rate(1);
    let mut keep: Vec<Box<[u8; 256]>> = Vec::with_capacity(10_000);
    for bits in 0..10_000u32 {
        stack_path(bits, 14, &mut || keep.push(Box::new([bits as u8; 256])));
    }
    heapsight::set_sample_rate(heapsight::DEFAULT_SAMPLE_RATE);
    let server = heapsight_server::spawn("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let size = http::get(addr, "/debug/pprof/heap").len();
    let times: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            http::get(addr, "/debug/pprof/heap").len();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    println!(
        "{:<48} {:>10} {:>8.1}ms",
        format!(
            "GET /debug/pprof/heap, {} stacks",
            heapsight::stats().stacks
        ),
        format!("{} KiB", size / 1024),
        median(times)
    );
    server.shutdown();
    drop(keep);
}
