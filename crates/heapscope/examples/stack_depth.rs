//! Prints the stack heapscope records for an allocation made five functions below `main`, to
//! see what frame pointers change. Compare:
//!
//!   cargo run --release -p heapscope --example stack_depth
//!   RUSTFLAGS="-C force-frame-pointers=no" cargo run --release -p heapscope --example stack_depth

use heapscope::{HeapView, Profile};

#[global_allocator]
static GLOBAL: heapscope::Sampler<std::alloc::System> = heapscope::Sampler::new(std::alloc::System);

macro_rules! level {
    ($name:ident, $next:ident) => {
        #[inline(never)]
        fn $name(keep: &mut Vec<Vec<u8>>, n: usize) {
            // Enough work that the function keeps a frame of its own.
            let extra: Vec<usize> = (0..n).collect();
            $next(keep, std::hint::black_box(extra.len()));
            std::hint::black_box(&extra);
        }
    };
}

level!(level_1, level_2);
level!(level_2, level_3);
level!(level_3, level_4);
level!(level_4, level_5);

#[inline(never)]
fn level_5(keep: &mut Vec<Vec<u8>>, n: usize) {
    keep.push(vec![0u8; 4096 + n]);
}

fn main() {
    heapscope::set_sample_rate(1);
    let mut keep = Vec::with_capacity(1);
    level_1(&mut keep, 3);
    heapscope::set_sample_rate(0);
    let p = Profile::heap(&heapscope::snapshot(), HeapView::InUse);
    let names = p
        .samples
        .iter()
        .map(|s| p.stack_names(s))
        .find(|n| n.iter().any(|f| f.ends_with("level_5")))
        .unwrap_or_default();
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
