//! Workloads shared by the benchmarks of heapsight and heapsight-server (included by path, so
//! both measure exactly the same thing).
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::time::{Duration, Instant};

pub const RING: usize = 4096;

#[derive(Clone, Copy)]
pub enum Sizes {
    /// 16-256 B.
    Small,
    /// 80% 16-256 B, 19% 1-64 KiB, 1% 256 KiB-1 MiB.
    ByteHeavy,
}

pub fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

pub fn size(sizes: Sizes, r: u64) -> usize {
    let pick = (r >> 32) % 100;
    let r = r as usize;
    match (sizes, pick) {
        (Sizes::Small, _) | (Sizes::ByteHeavy, 0..=79) => 16 + r % 241,
        (Sizes::ByteHeavy, 80..=98) => 1024 + r % (63 * 1024 + 1),
        (Sizes::ByteHeavy, _) => (256 << 10) + r % ((768 << 10) + 1),
    }
}

pub fn churn_thread<A: GlobalAlloc>(a: &A, sizes: Sizes, steps: usize, seed: u64) {
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
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Two threads churning at once; returns the CPU time they used together.
pub fn churn<A: GlobalAlloc + Sync>(a: &A, sizes: Sizes, steps: usize) -> Duration {
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

/// Steps per churn thread and interleaved runs: `full_reps` runs of 10M steps, or with `quick` on
/// the command line 4 runs of 1M.
pub fn run_length(full_reps: usize) -> (usize, usize) {
    if std::env::args().any(|a| a == "quick") {
        (1_000_000, 4)
    } else {
        (10_000_000, full_reps)
    }
}

/// The two churn workloads, named, with the runs each gets: small-object churn is cheap per run
/// and the noisier ratio, so it gets four times the runs.
pub fn churn_workloads(reps: usize) -> [(&'static str, Sizes, usize); 2] {
    [
        ("small-object churn", Sizes::Small, reps * 4),
        ("byte-heavy churn", Sizes::ByteHeavy, reps),
    ]
}

/// The header of a results table of [`print_row`]s.
pub fn print_header(hooked: &str) {
    println!(
        "{:<46} {:>10} {:>10} {:>8} {:>8}",
        "workload", "bare s", hooked, "ratio", "paired"
    );
}

/// One row: a workload's medians, bare and hooked, their ratio, and the median of the
/// back-to-back pairs' ratios.
pub fn print_row(name: &str, c: Comparison) {
    println!(
        "{name:<46} {:>10.3} {:>10.3} {:>8.3} {:>8.3}",
        c.bare,
        c.hooked,
        c.ratio(),
        c.paired
    );
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// What [`compare`] measured.
pub struct Comparison {
    /// Median seconds of the bare runs.
    pub bare: f64,
    /// Median seconds of the hooked runs.
    pub hooked: f64,
    /// The median over the back-to-back pairs of hooked / bare. On a shared machine whose speed
    /// drifts by tens of percent over seconds, this cancels the drift that the ratio of the two
    /// medians only averages out.
    pub paired: f64,
}

impl Comparison {
    /// The ratio of the medians, hooked / bare: the figure the budgets are stated in.
    pub fn ratio(&self) -> f64 {
        self.hooked / self.bare
    }
}

/// Runs `base` and `hooked` `reps` times each, back to back, alternating which goes first (ABBA)
/// so that neither always runs in the wake of the other.
pub fn compare(
    reps: usize,
    mut base: impl FnMut() -> Duration,
    mut hooked: impl FnMut() -> Duration,
) -> Comparison {
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
    let paired = median(h.iter().zip(&b).map(|(h, b)| h / b).collect());
    Comparison {
        bare: median(b),
        hooked: median(h),
        paired,
    }
}

/// Builds a distinct call path from `bits` (two alternating functions per level, `depth` levels)
/// and calls `leaf` at its end: `2^depth` distinct stacks from one recursive helper.
#[inline(never)]
pub fn path_a(bits: u32, depth: u32, leaf: &mut dyn FnMut()) {
    stack_path(bits >> 1, depth - 1, leaf);
    // Different constants in the two functions: identical bodies would be merged into one
    // symbol by the compiler, and every path would look the same.
    black_box(0xA);
}

#[inline(never)]
pub fn path_b(bits: u32, depth: u32, leaf: &mut dyn FnMut()) {
    stack_path(bits >> 1, depth - 1, leaf);
    black_box(0xB);
}

#[inline(never)]
pub fn stack_path(bits: u32, depth: u32, leaf: &mut dyn FnMut()) {
    if depth == 0 {
        leaf();
    } else if bits & 1 == 1 {
        path_a(bits, depth, leaf);
    } else {
        path_b(bits, depth, leaf);
    }
}

/// Allocates and frees a 64-byte block `n` times, `depth` frames down; returns the nanoseconds
/// the loop took.
#[inline(never)]
pub fn deep<A: GlobalAlloc>(a: &A, depth: usize, n: usize) -> u64 {
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
