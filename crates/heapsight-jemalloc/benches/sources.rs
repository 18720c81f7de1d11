//! The two sources side by side: heapsight's sampler (wrapping jemalloc) and jemalloc's own
//! profiler, each as a ratio against bare jemalloc measured in the same run, on heapsight's
//! benchmark workloads (`heapsight/benches/common`).
//!
//! Run with `cargo bench -p heapsight-jemalloc --bench sources` (add `-- quick` for a short run).
//!
//! This process starts jemalloc with `prof:true,prof_active:false`: profiling compiled in and
//! enabled, sampling paused. "Bare" is jemalloc with sampling paused; "jemalloc profiler" is the
//! same with `prof.active` on; "heapsight sampler" is `Sampler<Jemalloc>` with jemalloc's paused.
//! Both sample every 512 KiB on average.
//!
//! - churn: two threads each replace a random slot of a 4096-slot ring, 10M steps per thread;
//!   small sizes 16-256 B; byte-heavy 80% 16-256 B, 19% 1-64 KiB, 1% 256 KiB-1 MiB.
//! - per sample: one allocation and its free 30 frames deep, every allocation sampled, minus the
//!   same unsampled.

#[path = "../../heapsight/benches/common/mod.rs"]
mod common;

use common::{
    churn, churn_workloads, compare, deep, median, print_header, print_row, run_length, stack_path,
};
use heapsight::{Sampler, SamplerSource, Snapshot, SnapshotSource};
use heapsight_jemalloc::{set_active, set_sample_rate, JemallocSource};
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::time::Instant;
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
    heapsight::set_sample_rate(RATE as usize);
    assert_eq!(set_sample_rate(RATE).unwrap(), RATE);
    jemalloc_profiling(false);
    println!("two sources, one workload: {steps} steps x 2 threads, {reps} (small: {}) interleaved runs, medians of CPU seconds", churn_workloads(reps)[0].2);
    print_header("source s");
    for (name, sizes, reps) in churn_workloads(reps) {
        let ours = compare(
            reps,
            || churn(&Jemalloc, sizes, steps),
            || churn(&SAMPLED_JEMALLOC, sizes, steps),
        );
        print_row(&format!("{name}, heapsight sampler"), ours);
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
    heapsight::set_sample_rate(1);
    let ours = per_op(|| deep(&SAMPLED_JEMALLOC, 30, BATCH), 50, BATCH);
    heapsight::set_sample_rate(RATE as usize);
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
        "  heapsight sampler (frame pointers)",
        ours - bare
    );
    println!(
        "{:<46} {:>8.0}ns",
        "  jemalloc profiler (libgcc unwinder)",
        theirs - bare
    );

    // A snapshot with 10,000 distinct stacks live: heapsight copies counters, jemalloc dumps its
    // profile as text, which the source parses and interns.
    set_sample_rate(1).unwrap();
    heapsight::set_sample_rate(1);
    let layout = Layout::from_size_align(256, 8).unwrap();
    let mut keep = Vec::with_capacity(20_000);
    for bits in 0..10_000u32 {
        stack_path(bits, 14, &mut || {
            // SAFETY: non-zero layouts; all freed below with the same layout.
            keep.push(unsafe { SAMPLED_JEMALLOC.alloc(layout) } as usize);
            jemalloc_profiling(true);
            // SAFETY: as above.
            keep.push(unsafe { Jemalloc.alloc(layout) } as usize);
            jemalloc_profiling(false);
        });
    }
    heapsight::set_sample_rate(RATE as usize);
    let time = |f: &dyn Fn() -> Snapshot| {
        let sizes: Vec<usize> = (0..3).map(|_| f().stacks.len()).collect();
        let ms = median(
            (0..7)
                .map(|_| {
                    let t = Instant::now();
                    black_box(f());
                    t.elapsed().as_secs_f64() * 1000.0
                })
                .collect(),
        );
        (sizes[0], ms)
    };
    let (ours_n, ours) = time(&|| SamplerSource.snapshot().unwrap());
    let source = JemallocSource::new();
    let (theirs_n, theirs) = time(&|| source.snapshot().unwrap());
    println!("a snapshot, 10,000 distinct stacks live (median of 7):");
    println!(
        "{:<46} {ours:>7.2}ms ({ours_n} stacks)",
        "  heapsight sampler"
    );
    println!(
        "{:<46} {theirs:>7.2}ms ({theirs_n} stacks)",
        "  jemalloc profiler (dump and parse)"
    );
    for (i, p) in keep.into_iter().enumerate() {
        // SAFETY: allocated above, alternately by each allocator, with this layout.
        unsafe {
            if i % 2 == 0 {
                SAMPLED_JEMALLOC.dealloc(p as *mut u8, layout)
            } else {
                Jemalloc.dealloc(p as *mut u8, layout)
            }
        }
    }
}
