//! The hook's cost, as ratios against the bare inner allocator measured in the same run.
//!
//! Every workload calls the allocators through `GlobalAlloc` directly, so one process can run
//! the bare allocator and `Sampler<allocator>` back to back, interleaved, repeated, and compare
//! medians (and, drift-proof, the median ratio of back-to-back pairs). Run with `cargo bench -p heapsight --bench overhead` (add `-- quick` for a short run,
//! and `--features backtrace-fallback,dwarf-unwind` to also time the DWARF unwinders).
//!
//! - churn: two threads each replace a random slot of a 4096-slot ring with a new object,
//!   10M steps per thread; `small` sizes are 16-256 B, `bytes` sizes are 80% 16-256 B,
//!   19% 1-64 KiB, 1% 256 KiB-1 MiB. Default sample rate (512 KiB). A last row times bare
//!   jemalloc against itself: how far apart two identical sides land on this machine; another
//!   adds one register instruction to each jemalloc call: what any hook costs at the least.
//! - sampled: one sampled allocation (and its free) 30 frames deep, at rate 1; then sampled
//!   allocations from one call site on one thread and on two at once.

mod common;

use common::{
    churn, churn_workloads, compare, deep, median, print_header, print_row, run_length, size,
    thread_cpu_time, xorshift, Sizes,
};
use heapsight::Sampler;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use tikv_jemallocator::Jemalloc;

static SAMPLED_SYSTEM: Sampler<System> = Sampler::new(System);
static SAMPLED_JEMALLOC: Sampler<Jemalloc> = Sampler::new(Jemalloc);

fn main() {
    let (steps, reps) = run_length(10);
    heapsight::set_sample_rate(heapsight::DEFAULT_SAMPLE_RATE);
    println!("heapsight overhead benchmark: {steps} steps x 2 threads, {reps} (small: {}) interleaved runs, medians", churn_workloads(reps)[0].2);
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
    // What one instruction costs in this loop: bare jemalloc with a single register `add` in each
    // call. No hook can add less than this (it must count bytes on the allocation and test the
    // pointer on the free), so this row is the floor the churn rows above are read against.
    #[cfg(target_arch = "x86_64")]
    {
        let one_add = compare(
            reps,
            || churn(&Jemalloc, sizes, steps),
            || churn(&OneAddPerCall(Jemalloc), sizes, steps),
        );
        print_row(&format!("{name}, jemalloc + one add per call"), one_add);
    }

    // One sampled allocation 30 frames deep: per-operation medians over batches.
    const BATCH: usize = 2_000;
    heapsight::set_sample_rate(1);
    let sampled: Vec<f64> = (0..50)
        .map(|_| deep(&SAMPLED_SYSTEM, 30, BATCH) as f64 / BATCH as f64)
        .collect();
    heapsight::set_sample_rate(heapsight::DEFAULT_SAMPLE_RATE);
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
    // The DWARF unwinders, where built in (libgcc's is slower: fewer, smaller batches).
    for (unwinder, label, runs, batch) in [
        (
            heapsight::Unwinder::Dwarf,
            "  the same with heapsight's DWARF unwinder",
            50,
            BATCH,
        ),
        (
            heapsight::Unwinder::Libgcc,
            "  the same with the libgcc fallback unwinder",
            20,
            BATCH / 10,
        ),
    ] {
        if !heapsight::set_unwinder(unwinder) {
            continue;
        }
        heapsight::set_sample_rate(1);
        let sampled: Vec<f64> = (0..runs)
            .map(|_| deep(&SAMPLED_SYSTEM, 30, batch) as f64 / batch as f64)
            .collect();
        heapsight::set_sample_rate(heapsight::DEFAULT_SAMPLE_RATE);
        heapsight::set_unwinder(heapsight::Unwinder::FramePointers);
        let s = median(sampled);
        println!("{label:<44} {b:>9.0}ns {s:>9.0}ns {:>8.1}", s / b);
    }

    // What stamping a sampled block with its allocation time adds to it: the hook reads the
    // coarse monotonic clock once per sampled allocation (and stores the stamp). Timed as a loop
    // of those reads against the same loop without them.
    let stamps = compare(
        reps.max(9),
        || clock_loop(CLOCK_READS, false),
        || clock_loop(CLOCK_READS, true),
    );
    println!(
        "{:<44} {:>9.1}ns {:>9.1}ns {:>8.1}",
        "allocation-time stamp (coarse clock read)",
        stamps.bare * 1e9 / CLOCK_READS as f64,
        stamps.hooked * 1e9 / CLOCK_READS as f64,
        stamps.paired
    );

    // Sampled allocations from one call site on one thread, then on two at once: what the
    // threads' sharing of the tables costs each sample.
    heapsight::set_sample_rate(1);
    let alone = median((0..15).map(|_| sampled_at_one_site(1)).collect());
    let together = median((0..15).map(|_| sampled_at_one_site(2)).collect());
    heapsight::set_sample_rate(heapsight::DEFAULT_SAMPLE_RATE);
    println!(
        "{:<44} {:>9.0}ns {:>9.0}ns {:>8.1}",
        "sampled alloc+free, one site, 1 -> 2 threads",
        alone,
        together,
        together / alone
    );
}

const CLOCK_READS: usize = 2_000_000;

/// Wall time of `n` loop steps, each reading `CLOCK_MONOTONIC_COARSE` as the hook does for a
/// sampled allocation when `read` is set.
fn clock_loop(n: usize, read: bool) -> std::time::Duration {
    let start = std::time::Instant::now();
    let mut sum = 0u64;
    for i in 0..n {
        if black_box(read) {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes the timespec we own and nothing else.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
            sum = sum.wrapping_add(ts.tv_nsec as u64);
        } else {
            sum = sum.wrapping_add(i as u64);
        }
    }
    black_box(sum);
    start.elapsed()
}

/// Nanoseconds of CPU per sampled allocation and free when `threads` threads each replace blocks
/// of a 64-slot ring from the same call site (run at rate 1).
fn sampled_at_one_site(threads: usize) -> f64 {
    const STEPS: usize = 200_000;
    let cpu: std::time::Duration = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads as u64)
            .map(|t| {
                scope.spawn(move || {
                    let start = thread_cpu_time();
                    let mut ring = [(std::ptr::null_mut::<u8>(), 0usize); 64];
                    let mut s = 0x9E37_79B9 + t;
                    for i in 0..STEPS {
                        let n = size(Sizes::Small, xorshift(&mut s));
                        let slot = &mut ring[i % 64];
                        // SAFETY: each block is freed once, with the size it was allocated with.
                        unsafe {
                            if !slot.0.is_null() {
                                SAMPLED_JEMALLOC
                                    .dealloc(slot.0, Layout::from_size_align_unchecked(slot.1, 8));
                            }
                            let p = SAMPLED_JEMALLOC.alloc(Layout::from_size_align_unchecked(n, 8));
                            assert!(!p.is_null());
                            p.write_volatile(1);
                            *slot = (p, n);
                        }
                    }
                    for (p, n) in ring {
                        // SAFETY: as above.
                        unsafe {
                            SAMPLED_JEMALLOC.dealloc(p, Layout::from_size_align_unchecked(n, 8))
                        };
                    }
                    thread_cpu_time() - start
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    cpu.as_nanos() as f64 / (STEPS * threads) as f64
}

/// Bare `A` plus one register instruction on each allocation and each free, and nothing else: a
/// lower bound for any allocator hook, which has to count bytes on one and test the pointer on
/// the other.
#[cfg(target_arch = "x86_64")]
struct OneAddPerCall<A>(A);

#[cfg(target_arch = "x86_64")]
// SAFETY: every call goes to `A` unchanged.
unsafe impl<A: GlobalAlloc> GlobalAlloc for OneAddPerCall<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        one_add(layout.size());
        // SAFETY: forwarded unchanged from our caller.
        unsafe { self.0.alloc(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        one_add(ptr as usize);
        // SAFETY: forwarded unchanged from our caller.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

/// One `add` to a register holding `x`. An `asm!` block is never removed, so the instruction is
/// executed whether or not its result is used; it touches no memory and no stack.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn one_add(mut x: usize) {
    // SAFETY: adds to a register; reads and writes no memory and leaves the stack alone.
    unsafe { std::arch::asm!("add {0}, 1", inout(reg) x, options(nomem, nostack)) };
    let _ = x;
}
