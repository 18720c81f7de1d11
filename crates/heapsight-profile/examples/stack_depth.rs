//! Prints the stack heapsight records for an allocation made five functions below `main`, to
//! see what frame pointers change. Compare:
//!
//!   cargo run --release -p heapsight --example stack_depth
//!   RUSTFLAGS="-C force-frame-pointers=no" cargo run --release -p heapsight --example stack_depth

use heapsight_profile::HeapView;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

#[path = "../tests/common/five_levels.rs"]
mod five_levels;

fn main() {
    heapsight::set_sample_rate(1);
    let mut keep = Vec::with_capacity(1);
    five_levels::level_1(&mut keep, 3);
    heapsight::set_sample_rate(0);
    let p = heapsight_profile::heap_profile(HeapView::InUse);
    let names = five_levels::stack_under_level_5(&p).unwrap_or_default();
    let found: Vec<_> = (1..=5)
        .filter(|i| names.iter().any(|f| f.ends_with(&format!("level_{i}"))))
        .collect();
    println!(
        "levels found: {found:?} of [1, 2, 3, 4, 5]; main present: {}",
        names.iter().any(|f| f.ends_with("stack_depth::main"))
    );
    for n in names {
        println!("  {n}");
    }
}
