//! Entering and leaving a label set in a loop, for counting what one pair costs with
//! `valgrind --tool=callgrind` (docs/performance.md, "Labels"): run it with `N` and with `0`
//! iterations and divide the difference by `N`.
//!
//! `cargo run --release -p heapsight --example label_loop -- N`

use std::hint::black_box;

heapsight::global_allocator!(std::alloc::System);

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("a whole number"));
    let sets = [
        heapsight::Labels::new([("route", "/a")]),
        heapsight::Labels::new([("route", "/b")]),
    ];
    for i in 0..n {
        let guard = black_box(sets[i & 1]).enter();
        black_box(&guard);
        drop(guard);
    }
    println!(
        "{n} label sets entered and left, now {:?}",
        heapsight::Labels::current()
    );
}
