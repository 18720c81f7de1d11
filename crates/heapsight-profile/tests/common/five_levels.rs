//! An allocation five functions below its caller (`level_1` .. `level_5`), each function with a
//! frame of its own: the stack unwinders are judged on it. Shared by `tests/fallback_unwinder.rs`
//! and `examples/stack_depth.rs`.

macro_rules! level {
    ($name:ident, $next:ident) => {
        #[inline(never)]
        pub fn $name(keep: &mut Vec<Vec<u8>>, n: usize) {
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
pub fn level_5(keep: &mut Vec<Vec<u8>>, n: usize) {
    keep.push(vec![0u8; 4096 + n]);
}

/// The function names of the stack of the sample taken under `level_5`, leaf first.
pub fn stack_under_level_5(p: &heapsight_profile::Profile) -> Option<Vec<&str>> {
    p.samples
        .iter()
        .map(|s| p.stack_names(s))
        .find(|n| n.iter().any(|f| f.ends_with("five_levels::level_5")))
}
