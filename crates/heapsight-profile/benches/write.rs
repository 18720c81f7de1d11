//! What writing a heap profile costs: 10,000 distinct stacks, 14 frames each, written as
//! gzipped pprof once the symbols are cached (the budget is 100 ms). Run with
//! `cargo bench -p heapsight-profile --bench write`.

#[path = "../../heapsight/benches/common/mod.rs"]
mod common;

use common::{median, stack_path};
use heapsight::Sampler;
use std::alloc::{GlobalAlloc, Layout, System};
use std::time::Instant;

static SAMPLED_SYSTEM: Sampler<System> = Sampler::new(System);

fn main() {
    heapsight::set_sample_rate(1);
    let mut keep = Vec::with_capacity(10_000);
    let layout = Layout::from_size_align(256, 8).unwrap();
    for bits in 0..10_000u32 {
        stack_path(bits, 14, &mut || {
            // SAFETY: a non-zero layout; freed at the end with the same layout.
            keep.push(unsafe { SAMPLED_SYSTEM.alloc(layout) } as usize)
        });
    }
    heapsight::set_sample_rate(heapsight::DEFAULT_SAMPLE_RATE);
    let stacks = heapsight::stats().stacks;
    let mut out = Vec::with_capacity(4 << 20);
    heapsight_profile::write_heap_profile(&mut out).unwrap();
    let first = out.len();
    let writes: Vec<f64> = (0..7)
        .map(|_| {
            out.clear();
            let t = Instant::now();
            heapsight_profile::write_heap_profile(&mut out).unwrap();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    println!(
        "{:<44} {:>10} {:>9.1}ms",
        format!("write heap profile, {stacks} stacks"),
        format!("{} KiB", first / 1024),
        median(writes),
    );
    for p in keep {
        // SAFETY: allocated above with this layout.
        unsafe { SAMPLED_SYSTEM.dealloc(p as *mut u8, layout) };
    }
}
