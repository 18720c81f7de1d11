//! What labels cost: entering and leaving a set (the budget: at most 5 ns a pair), reading the
//! current set, interning a set already known, and a sampled allocation with and without a set
//! current. Each figure is the median of alternated runs of the measured loop and a baseline
//! loop that does the same minus the measured call, with the spread of the per-run differences.
//!
//! `cargo bench -p heapsight --bench labels` (add `-- quick` for a short run). The instruction
//! counts, which repeat where the clock does not, come from `examples/label_loop` and
//! `examples/alloc_loop` under callgrind (docs/performance.md, "Labels").

use heapsight::Labels;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::Instant;

#[global_allocator]
static GLOBAL: heapsight::Sampler<System> = heapsight::Sampler::new(System);

fn per_op(n: usize, f: impl Fn(usize)) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// Median, lowest and highest of `measured - baseline` over `runs` alternated pairs, in ns.
fn paired(
    runs: usize,
    n: usize,
    measured: impl Fn(usize),
    baseline: impl Fn(usize),
) -> (f64, f64, f64) {
    let mut d: Vec<f64> = (0..runs)
        .map(|r| {
            if r % 2 == 0 {
                let m = per_op(n, &measured);
                m - per_op(n, &baseline)
            } else {
                let b = per_op(n, &baseline);
                per_op(n, &measured) - b
            }
        })
        .collect();
    d.sort_by(|a, b| a.total_cmp(b));
    (d[d.len() / 2], d[0], d[d.len() - 1])
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let (runs, n) = if quick {
        (5, 2_000_000)
    } else {
        (15, 20_000_000)
    };
    let sets = [
        Labels::new([("route", "/a")]),
        Labels::new([("route", "/b")]),
    ];
    println!("heapsight labels benchmark: {runs} alternated runs of {n} calls, ns per call over the baseline (median, range)");

    let (m, lo, hi) = paired(
        runs,
        n,
        |i| {
            let g = black_box(sets[i & 1]).enter();
            black_box(&g);
        },
        |i| {
            black_box(black_box(sets[i & 1]));
        },
    );
    println!("enter + leave a label set:        {m:6.2} ns ({lo:.2} .. {hi:.2}); budget 5 ns");

    let (m, lo, hi) = paired(
        runs,
        n,
        |_| {
            black_box(Labels::current());
        },
        |_| {
            black_box(Labels::NONE);
        },
    );
    println!("Labels::current():                {m:6.2} ns ({lo:.2} .. {hi:.2})");

    let (m, lo, hi) = paired(
        runs,
        n / 20,
        |i| {
            black_box(Labels::new([(
                "route",
                if i & 1 == 0 { "/a" } else { "/b" },
            )]));
        },
        |i| {
            black_box(if i & 1 == 0 { "/a" } else { "/b" });
        },
    );
    println!("Labels::new of a known set:       {m:6.1} ns ({lo:.1} .. {hi:.1})");

    // A sampled allocation and its free, through the hook directly, with a set current or not.
    heapsight::set_sample_rate(1);
    let layout = Layout::from_size_align(64, 8).unwrap();
    let sampled = |_| {
        // SAFETY: a non-zero layout, freed at once with the same layout.
        unsafe {
            let p = GLOBAL.alloc(layout);
            GLOBAL.dealloc(black_box(p), layout);
        }
    };
    let labelled = sets[0].enter();
    let with = per_op(n / 50, sampled);
    drop(labelled);
    let without = per_op(n / 50, sampled);
    heapsight::set_sample_rate(0);
    println!(
        "sampled 64 B alloc + free:        {with:6.0} ns under a set, {without:.0} ns with none"
    );
}
