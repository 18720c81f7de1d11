//! The hook's cost, as ratios against the bare inner allocator measured in the same run.
//!
//! Every workload calls the allocators through `GlobalAlloc` directly, so one process can run
//! the bare allocator and `Sampler<allocator>` back to back, interleaved, repeated, and compare
//! medians. Run with `cargo bench -p heapscope --bench overhead` (add `-- quick` for a short run,
//! and `--features backtrace-fallback` to also time the fallback unwinder).
//!
//! - churn: two threads each replace a random slot of a 4096-slot ring with a new object,
//!   10M steps per thread; `small` sizes are 16-256 B, `bytes` sizes are 80% 16-256 B,
//!   19% 1-64 KiB, 1% 256 KiB-1 MiB. Default sample rate (512 KiB).
//! - sampled: one sampled allocation (and its free) 30 frames deep, at rate 1.
//! - write: writing a heap profile of 10,000 distinct stacks once symbols are cached.

use heapscope::Sampler;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tikv_jemallocator::Jemalloc;

static SAMPLED_SYSTEM: Sampler<System> = Sampler::new(System);
static SAMPLED_JEMALLOC: Sampler<Jemalloc> = Sampler::new(Jemalloc);

const RING: usize = 4096;

#[derive(Clone, Copy)]
enum Sizes {
    Small,
    ByteHeavy,
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn size(sizes: Sizes, r: u64) -> usize {
    let pick = (r >> 32) % 100;
    let r = r as usize;
    match (sizes, pick) {
        (Sizes::Small, _) | (Sizes::ByteHeavy, 0..=79) => 16 + r % 241,
        (Sizes::ByteHeavy, 80..=98) => 1024 + r % (63 * 1024 + 1),
        (Sizes::ByteHeavy, _) => (256 << 10) + r % ((768 << 10) + 1),
    }
}

fn churn_thread<A: GlobalAlloc>(a: &A, sizes: Sizes, steps: usize, seed: u64) {
    let mut ring: Vec<(*mut u8, usize)> = vec![(std::ptr::null_mut(), 0); RING];
    let mut s = seed | 1;
    for _ in 0..steps {
        let r = xorshift(&mut s);
        let slot = &mut ring[(r as usize >> 7) % RING];
        if !slot.0.is_null() {
            // SAFETY: allocated below by `a` with this size and alignment 8.
            unsafe { a.dealloc(slot.0, Layout::from_size_align_unchecked(slot.1, 8)) };
        }
        let n = size(sizes, xorshift(&mut s));
        // SAFETY: n > 0.
        let p = unsafe { a.alloc(Layout::from_size_align_unchecked(n, 8)) };
        assert!(!p.is_null());
        // SAFETY: p has n >= 16 bytes.
        unsafe { p.write_volatile(1) };
        *slot = (p, n);
    }
    for (p, n) in ring {
        if !p.is_null() {
            // SAFETY: as above.
            unsafe { a.dealloc(p, Layout::from_size_align_unchecked(n, 8)) };
        }
    }
}

/// CPU time of the calling thread: time the thread was preempted for does not count.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Two threads churning at once; returns the CPU time they used together.
fn churn<A: GlobalAlloc + Sync>(a: &A, sizes: Sizes, steps: usize) -> Duration {
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2u64)
            .map(|t| {
                scope.spawn(move || {
                    let start = thread_cpu_time();
                    churn_thread(a, sizes, steps, 0x1234_5678 + t * 7919);
                    thread_cpu_time() - start
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Runs `base` and `hooked` `reps` times each, alternating which goes first (ABBA) so that
/// neither always runs in the wake of the other; returns (median base, median hooked) in s.
fn compare(
    reps: usize,
    mut base: impl FnMut() -> Duration,
    mut hooked: impl FnMut() -> Duration,
) -> (f64, f64) {
    let (mut b, mut h) = (Vec::new(), Vec::new());
    for i in 0..reps {
        if i % 2 == 0 {
            b.push(base().as_secs_f64());
            h.push(hooked().as_secs_f64());
        } else {
            h.push(hooked().as_secs_f64());
            b.push(base().as_secs_f64());
        }
    }
    (median(b), median(h))
}

#[inline(never)]
fn deep<A: GlobalAlloc>(a: &A, depth: usize, n: usize) -> u64 {
    if depth > 1 {
        return black_box(deep(a, depth - 1, n)) + 1;
    }
    let layout = Layout::from_size_align(64, 8).unwrap();
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: a non-zero layout; the block is freed at once with the same layout.
        unsafe {
            let p = a.alloc(layout);
            black_box(p);
            a.dealloc(p, layout);
        }
    }
    start.elapsed().as_nanos() as u64
}

#[inline(never)]
fn path_a(keep: &mut Vec<usize>, bits: u32, depth: u32) {
    stack_path(keep, bits >> 1, depth - 1);
    black_box(&keep);
}

#[inline(never)]
fn path_b(keep: &mut Vec<usize>, bits: u32, depth: u32) {
    stack_path(keep, bits >> 1, depth - 1);
    black_box(&keep);
}

#[inline(never)]
fn stack_path(keep: &mut Vec<usize>, bits: u32, depth: u32) {
    if depth == 0 {
        let layout = Layout::from_size_align(256, 8).unwrap();
        // SAFETY: non-zero layout; kept until the benchmark frees it.
        keep.push(unsafe { SAMPLED_SYSTEM.alloc(layout) } as usize);
    } else if bits & 1 == 1 {
        path_a(keep, bits, depth);
    } else {
        path_b(keep, bits, depth);
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let (steps, reps) = if quick {
        (1_000_000, 4)
    } else {
        (10_000_000, 10)
    };
    heapscope::set_sample_rate(heapscope::DEFAULT_SAMPLE_RATE);
    println!("heapscope overhead benchmark: {steps} steps x 2 threads, {reps} (small: {}) interleaved runs, medians", reps * 2);
    println!("(churn: CPU seconds of both threads together)");
    println!(
        "{:<44} {:>10} {:>10} {:>8}",
        "workload", "bare s", "hooked s", "ratio"
    );
    for (name, sizes) in [
        ("small-object churn", Sizes::Small),
        ("byte-heavy churn", Sizes::ByteHeavy),
    ] {
        // Small churn is cheap per run and the noisier ratio: give it twice the runs.
        let reps = if matches!(sizes, Sizes::Small) {
            reps * 2
        } else {
            reps
        };
        let (b, h) = compare(
            reps,
            || churn(&System, sizes, steps),
            || churn(&SAMPLED_SYSTEM, sizes, steps),
        );
        println!(
            "{:<44} {b:>10.3} {h:>10.3} {:>8.3}",
            format!("{name}, System"),
            h / b
        );
        let (b, h) = compare(
            reps,
            || churn(&Jemalloc, sizes, steps),
            || churn(&SAMPLED_JEMALLOC, sizes, steps),
        );
        println!(
            "{:<44} {b:>10.3} {h:>10.3} {:>8.3}",
            format!("{name}, jemalloc"),
            h / b
        );
    }

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
    for bits in 0..10_000u32 {
        stack_path(&mut keep, bits, 14);
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
