//! The workload every set-up of the shim benchmark runs (see `main.rs` beside this file): `syn`
//! parsing a fixed corpus of Rust sources, the allocation pattern of a real crate's real job.
//!
//! The corpus is the list of files in `SHIM_COST_CORPUS` (one path a line, chosen by the runner
//! from the crates pinned in `Cargo.lock`), read before the first parse. `SHIM_COST_ROUNDS`
//! (default 1) repeats the parse. The program prints the parse loop's wall time in nanoseconds,
//! for the runner's paired timing: the instruction counts are taken of the whole program.

use std::hint::black_box;
use std::time::Instant;

/// Sets the sample rate from `SHIM_COST_RATE` when given: the runner's "sampling off" rows run
/// the hooked set-ups at rate 0, to part the fast paths' cost from the samples'.
#[allow(dead_code)] // only the hooked set-ups call it
pub fn rate_from_env() {
    if let Ok(rate) = std::env::var("SHIM_COST_RATE") {
        heapsight::set_sample_rate(rate.parse().expect("SHIM_COST_RATE is a whole number"));
    }
}

pub fn run() {
    let list = std::env::var("SHIM_COST_CORPUS").expect("SHIM_COST_CORPUS names the corpus list");
    let rounds: usize = std::env::var("SHIM_COST_ROUNDS").ok().map_or(1, |r| {
        r.parse().expect("SHIM_COST_ROUNDS is a whole number")
    });
    let list = std::fs::read_to_string(&list).expect("the corpus list is readable");
    let sources: Vec<String> = list
        .lines()
        .filter(|l| !l.is_empty())
        .map(|path| std::fs::read_to_string(path).expect("a corpus file is readable"))
        .collect();
    let start = Instant::now();
    let mut items = 0usize;
    for _ in 0..rounds {
        for source in &sources {
            // A file syn cannot parse (none in the pinned corpus) still allocates its error.
            if let Ok(file) = syn::parse_file(black_box(source)) {
                items += black_box(&file).items.len();
            }
        }
    }
    let elapsed = start.elapsed();
    println!(
        "parsed {} files x {rounds}: {items} items; parse_ns={}",
        sources.len(),
        elapsed.as_nanos()
    );
}
