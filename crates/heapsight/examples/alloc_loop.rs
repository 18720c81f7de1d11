//! A loop of allocations and frees through `#[global_allocator]`, for counting what the hook
//! adds per call with `valgrind --tool=callgrind` (docs/performance.md, "Counted in
//! instructions"): run it with `N` and with `0` iterations and divide the difference by `N`.
//!
//! `cargo run --release -p heapsight --example alloc_loop -- RATE N [SIZE [LABELLED]]`: sample
//! rate in bytes (`1` samples every allocation, `0` none), iterations, block size (default 64),
//! and `1` to run the loop under a label set ([`heapsight::Labels`]), which the unsampled path
//! never reads: its count per call is the same.
//!
//! The program's own crate declares the global allocator, so the compiler inlines the allocator
//! shims into this loop, where the layout is a constant (a `Vec<u8>`'s, alignment 1): the
//! figures are those of a program's own code, or of a build with fat LTO. Code in other crates
//! calls the shims; `examples/shim_cost` counts that case on a real workload.

use std::hint::black_box;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .map(|a| a.parse().expect("a whole number"))
            .unwrap_or(default)
    };
    let (rate, n, size, labelled) = (arg(1, 0), arg(2, 1_000_000), arg(3, 64), arg(4, 0));
    heapsight::set_sample_rate(rate);
    let labels = if labelled == 1 {
        heapsight::Labels::new([("loop", "alloc")])
    } else {
        heapsight::Labels::NONE
    };
    labels.run(|| churn(n, size));
    println!("{n} allocations of {size} bytes at rate {rate}, labelled: {labelled}");
}

/// The measured loop, kept out of line so that it compiles to the same code labelled or not.
#[inline(never)]
fn churn(n: usize, size: usize) {
    for _ in 0..n {
        let block: Vec<u8> = Vec::with_capacity(black_box(size));
        drop(black_box(block));
    }
}
