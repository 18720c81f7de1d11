//! The libgcc fallback unwinder finds complete stacks. The test script runs this file in a build
//! *without* frame pointers (where the default unwinder finds nothing) as well as in the normal
//! build: an allocation five functions below `main` must show all five, in order, under `main`.

use heapscope::{HeapView, Profile, Unwinder};

#[global_allocator]
static GLOBAL: heapscope::Sampler<std::alloc::System> = heapscope::Sampler::new(std::alloc::System);

macro_rules! level {
    ($name:ident, $next:ident) => {
        #[inline(never)]
        fn $name(keep: &mut Vec<Vec<u8>>, n: usize) {
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
    assert!(heapscope::set_unwinder(Unwinder::Libgcc));
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
        .expect("a sample under level_5");
    let pos: Vec<usize> = (1..=5)
        .rev()
        .map(|i| {
            names
                .iter()
                .position(|f| f.ends_with(&format!("fallback_unwinder::level_{i}")))
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
        !names.iter().any(|n| heapscope::is_plumbing(n)),
        "{names:#?}"
    );
    println!("fallback_unwinder: 1 passed, 0 failed");
}
