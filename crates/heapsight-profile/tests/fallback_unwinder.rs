//! The libgcc fallback unwinder finds complete stacks. The test script runs this file in a build
//! *without* frame pointers (where the default unwinder finds nothing) as well as in the normal
//! build: an allocation five functions below `main` must show all five, in order, under `main`.

use heapsight::Unwinder;
use heapsight_profile::HeapView;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

#[path = "common/five_levels.rs"]
mod five_levels;

fn main() {
    assert!(heapsight::set_unwinder(Unwinder::Libgcc));
    heapsight::set_sample_rate(1);
    let mut keep = Vec::with_capacity(1);
    five_levels::level_1(&mut keep, 3);
    heapsight::set_sample_rate(0);
    let p = heapsight_profile::heap_profile(HeapView::InUse);
    let names = five_levels::stack_under_level_5(&p).expect("a sample under level_5");
    let pos: Vec<usize> = (1..=5)
        .rev()
        .map(|i| {
            names
                .iter()
                .position(|f| f.ends_with(&format!("fallback_unwinder::five_levels::level_{i}")))
                .unwrap_or_else(|| panic!("level_{i} missing: {names:#?}"))
        })
        .collect();
    let main = names
        .iter()
        .position(|f| f.ends_with("fallback_unwinder::main"))
        .expect("main");
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]) && pos[4] < main,
        "{names:#?}"
    );
    assert!(
        !names.iter().any(|n| heapsight_profile::is_plumbing(n)),
        "{names:#?}"
    );
    println!("fallback_unwinder: 1 passed, 0 failed");
}
