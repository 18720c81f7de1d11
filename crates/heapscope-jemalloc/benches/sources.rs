//! The two sources side by side: heapscope's sampler (wrapping jemalloc) and jemalloc's own
//! profiler, each as a ratio against bare jemalloc measured in the same run, on heapscope's
//! benchmark workloads (`heapscope/benches/common`).
//!
//! Run with `cargo bench -p heapscope-jemalloc --bench sources` (add `-- quick` for a short run).
//!
//! This process starts jemalloc with `prof:true,prof_active:false`: profiling compiled in and
//! enabled, sampling paused. "Bare" is jemalloc with sampling paused; "jemalloc profiler" is the
//! same with `prof.active` on; "heapscope sampler" is `Sampler<Jemalloc>` with jemalloc's paused.
//! Both sample every 512 KiB on average.
//!
//! - churn: two threads each replace a random slot of a 4096-slot ring, 10M steps per thread;
//!   small sizes 16-256 B; byte-heavy 80% 16-256 B, 19% 1-64 KiB, 1% 256 KiB-1 MiB.
//! - per sample: one allocation and its free 30 frames deep, every allocation sampled, minus the
//!   same unsampled.

#[path = "../../heapscope/benches/common/mod.rs"]
mod common;

use common::{churn, churn_workloads, compare, deep, median, print_header, print_row, run_length};
use heapscope::Sampler;
use heapscope_jemalloc::{set_active, set_sample_rate};
use std::alloc::{GlobalAlloc, Layout};
use tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"prof:true,prof_active:false,prof_accum:true,lg_prof_sample:19\0";

static SAMPLED_JEMALLOC: Sampler<Jemalloc> = Sampler::new(Jemalloc);

const RATE: u64 = 512 * 1024;

fn jemalloc_profiling(on: bool) {
    set_active(on).expect("jemalloc's profiler is enabled in this benchmark");
}

/// Median nanoseconds per alloc+free 30 frames deep, over batches.
fn per_op(mut batch: impl FnMut() -> u64, batches: usize, n: usize) -> f64 {
    median((0..batches).map(|_| batch() as f64 / n as f64).collect())
}

fn main() {
    let (steps, reps) = run_length(10);
    heapscope::set_sample_rate(RATE as usize);
    assert_eq!(set_sample_rate(RATE).unwrap(), RATE);
    jemalloc_profiling(false);
    println!("two sources, one workload: {steps} steps x 2 threads, {reps} (small: {}) interleaved runs, medians of CPU seconds", reps * 2);
    print_header("source s");
    for (name, sizes, reps) in churn_workloads(reps) {
        let ours = compare(
            reps,
            || churn(&Jemalloc, sizes, steps),
            || churn(&SAMPLED_JEMALLOC, sizes, steps),
        );
        print_row(&format!("{name}, heapscope sampler"), ours);
        let theirs = compare(
            reps,
            || churn(&Jemalloc, sizes, steps),
            || {
                jemalloc_profiling(true);
                let t = churn(&Jemalloc, sizes, steps);
                jemalloc_profiling(false);
                t
            },
        );
        print_row(&format!("{name}, jemalloc profiler"), theirs);
    }

    // The cost of one sample: every allocation sampled, against none.
    const BATCH: usize = 2_000;
    let bare = per_op(|| deep(&Jemalloc, 30, BATCH), 50, BATCH);
    heapscope::set_sample_rate(1);
    let ours = per_op(|| deep(&SAMPLED_JEMALLOC, 30, BATCH), 50, BATCH);
    heapscope::set_sample_rate(RATE as usize);
    set_sample_rate(1).unwrap();
    jemalloc_profiling(true);
    // A thread keeps the countdown to its next sample, drawn at the old rate (512 KiB on
    // average), until it runs out: run it out, so that the batches below are all sampled.
    let mib = Layout::from_size_align(1 << 20, 8).unwrap();
    for _ in 0..64 {
        // SAFETY: a non-zero layout; freed at once with the same layout.
        unsafe { Jemalloc.dealloc(std::hint::black_box(Jemalloc.alloc(mib)), mib) };
    }
    let theirs = per_op(|| deep(&Jemalloc, 30, BATCH / 10), 20, BATCH / 10);
    jemalloc_profiling(false);
    set_sample_rate(RATE).unwrap();
    println!("one sample (alloc+free, 30 frames deep), bare alloc+free {bare:.0} ns:");
    println!(
        "{:<46} {:>8.0}ns",
        "  heapscope sampler (frame pointers)",
        ours - bare
    );
    println!(
        "{:<46} {:>8.0}ns",
        "  jemalloc profiler (libgcc unwinder)",
        theirs - bare
    );
}
