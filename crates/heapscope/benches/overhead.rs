//! The hook's cost, as ratios against the bare inner allocator measured in the same run.
//!
//! Every workload calls the allocators through `GlobalAlloc` directly, so one process can run
//! the bare allocator and `Sampler<allocator>` back to back, interleaved, repeated, and compare
//! medians (and, drift-proof, the median ratio of back-to-back pairs). Run with `cargo bench -p heapscope --bench overhead` (add `-- quick` for a short run,
//! and `--features backtrace-fallback` to also time the fallback unwinder).
//!
//! - churn: two threads each replace a random slot of a 4096-slot ring with a new object,
//!   10M steps per thread; `small` sizes are 16-256 B, `bytes` sizes are 80% 16-256 B,
//!   19% 1-64 KiB, 1% 256 KiB-1 MiB. Default sample rate (512 KiB). A last row times bare
//!   jemalloc against itself: how far apart two identical sides land on this machine.
//! - sampled: one sampled allocation (and its free) 30 frames deep, at rate 1.
//! - write: writing a heap profile of 10,000 distinct stacks once symbols are cached.

mod common;

use common::{
    churn, churn_workloads, compare, deep, median, print_header, print_row, run_length, stack_path,
};
use heapscope::Sampler;
use std::alloc::{GlobalAlloc, Layout, System};
use std::time::Instant;
use tikv_jemallocator::Jemalloc;

static SAMPLED_SYSTEM: Sampler<System> = Sampler::new(System);
static SAMPLED_JEMALLOC: Sampler<Jemalloc> = Sampler::new(Jemalloc);

fn main() {
    let (steps, reps) = run_length(10);
    heapscope::set_sample_rate(heapscope::DEFAULT_SAMPLE_RATE);
    println!("heapscope overhead benchmark: {steps} steps x 2 threads, {reps} (small: {}) interleaved runs, medians", churn_workloads(reps)[0].2);
    println!("(churn: CPU seconds of both threads together)");
    print_header("hooked s");
    for (name, sizes, reps) in churn_workloads(reps) {
        let system = compare(
            reps,
            || churn(&System, sizes, steps),
            || churn(&SAMPLED_SYSTEM, sizes, steps),
        );
        print_row(&format!("{name}, System"), system);
        let jemalloc = compare(
            reps,
            || churn(&Jemalloc, sizes, steps),
            || churn(&SAMPLED_JEMALLOC, sizes, steps),
        );
        print_row(&format!("{name}, jemalloc"), jemalloc);
    }
    // The noise floor: the bare allocator against itself, timed exactly as above.
    let (name, sizes, reps) = churn_workloads(reps)[0];
    let control = compare(
        reps,
        || churn(&Jemalloc, sizes, steps),
        || churn(&Jemalloc, sizes, steps),
    );
    print_row(&format!("{name}, jemalloc against itself"), control);

    // One sampled allocation 30 frames deep: per-operation medians over batches.
    const BATCH: usize = 2_000;
    heapscope::set_sample_rate(1);
    let sampled: Vec<f64> = (0..50)
        .map(|_| deep(&SAMPLED_SYSTEM, 30, BATCH) as f64 / BATCH as f64)
        .collect();
    heapscope::set_sample_rate(heapscope::DEFAULT_SAMPLE_RATE);
    let bare: Vec<f64> = (0..50)
        .map(|_| deep(&System, 30, BATCH) as f64 / BATCH as f64)
        .collect();
    let (s, b) = (median(sampled), median(bare));
    println!(
        "{:<44} {:>9.0}ns {:>9.0}ns {:>8.1}",
        "sampled alloc+free, 30 frames, rate 1",
        b,
        s,
        s / b
    );
    if heapscope::set_unwinder(heapscope::Unwinder::Libgcc) {
        heapscope::set_sample_rate(1);
        let sampled: Vec<f64> = (0..20)
            .map(|_| deep(&SAMPLED_SYSTEM, 30, BATCH / 10) as f64 / (BATCH / 10) as f64)
            .collect();
        heapscope::set_sample_rate(heapscope::DEFAULT_SAMPLE_RATE);
        heapscope::set_unwinder(heapscope::Unwinder::FramePointers);
        let s = median(sampled);
        println!(
            "{:<44} {:>9.0}ns {:>9.0}ns {:>8.1}",
            "  the same with the libgcc fallback unwinder",
            b,
            s,
            s / b
        );
    }

    // Writing a heap profile of 10,000 distinct stacks, symbols cached.
    heapscope::set_sample_rate(1);
    let mut keep = Vec::with_capacity(10_000);
    let layout = Layout::from_size_align(256, 8).unwrap();
    for bits in 0..10_000u32 {
        // SAFETY: a non-zero layout; freed at the end with the same layout.
        stack_path(bits, 14, &mut || {
            keep.push(unsafe { SAMPLED_SYSTEM.alloc(layout) } as usize)
        });
    }
    heapscope::set_sample_rate(heapscope::DEFAULT_SAMPLE_RATE);
    let stacks = heapscope::stats().stacks;
    let mut out = Vec::with_capacity(4 << 20);
    heapscope::write_heap_profile(&mut out).unwrap();
    let first = out.len();
    let writes: Vec<f64> = (0..7)
        .map(|_| {
            out.clear();
            let t = Instant::now();
            heapscope::write_heap_profile(&mut out).unwrap();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    println!(
        "{:<44} {:>10} {:>9.1}ms {:>8}",
        format!("write heap profile, {stacks} stacks"),
        format!("{} KiB", first / 1024),
        median(writes),
        ""
    );
    for p in keep {
        // SAFETY: allocated by stack_path with this layout.
        unsafe { SAMPLED_SYSTEM.dealloc(p as *mut u8, Layout::from_size_align(256, 8).unwrap()) };
    }
}
