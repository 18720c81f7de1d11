//! The DWARF unwinders (heapsight's own, `Unwinder::Dwarf`, and libgcc's, `Unwinder::Libgcc`)
//! find complete stacks. The test script runs this file in a build *without* frame pointers
//! (where the default unwinder finds nothing) as well as in the normal build: an allocation five
//! functions below `main` must show all five, in order, under `main`.

use heapsight::{SamplerSource, SnapshotSource, Unwinder};
use heapsight_profile::{HeapView, Profile};

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

mod common;
#[path = "common/five_levels.rs"]
mod five_levels;

fn main() {
    let mut passed = 0;
    for unwinder in [Unwinder::Dwarf, Unwinder::Libgcc] {
        if !heapsight::set_unwinder(unwinder) {
            println!("fallback_unwinder: {unwinder:?} not built in, skipped");
            continue;
        }
        complete_stack_under_main(unwinder);
        passed += 1;
    }
    heapsight::set_unwinder(Unwinder::FramePointers);
    assert!(
        passed > 0,
        "build with --features backtrace-fallback,dwarf-unwind"
    );
    println!("fallback_unwinder: {passed} passed, 0 failed");
}

/// An allocation five functions below `main` shows all five, in order, under `main`.
fn complete_stack_under_main(unwinder: Unwinder) {
    // Only this unwinder's samples: the delta over its allocation.
    let mut before = None;
    SamplerSource.unprofiled(&mut || before = Some(heapsight::snapshot()));
    heapsight::set_sample_rate(1);
    let mut keep = Vec::with_capacity(1);
    five_levels::level_1(&mut keep, 3);
    heapsight::set_sample_rate(0);
    let mut p = Profile::default();
    SamplerSource.unprofiled(&mut || {
        let delta = heapsight::snapshot().delta(before.as_ref().unwrap());
        p = Profile::heap(&delta, HeapView::InUse);
    });
    let names = five_levels::stack_under_level_5(&p).expect("a sample under level_5");
    let pos: Vec<usize> = (1..=5)
        .rev()
        .map(|i| {
            names
                .iter()
                .position(|f| f.ends_with(&format!("fallback_unwinder::five_levels::level_{i}")))
                .unwrap_or_else(|| panic!("{unwinder:?}: level_{i} missing: {names:#?}"))
        })
        .collect();
    let main = names
        .iter()
        .position(|f| f.ends_with("fallback_unwinder::main"))
        .unwrap_or_else(|| panic!("{unwinder:?}: main missing: {names:#?}"));
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]) && pos[4] < main,
        "{unwinder:?}: {names:#?}"
    );
    assert!(
        !names.iter().any(|n| heapsight_profile::is_plumbing(n)),
        "{unwinder:?}: {names:#?}"
    );
    // The real go tool pprof reads the same stack.
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("fallback-{unwinder:?}.pb.gz"));
    std::fs::write(&file, p.to_pprof_bytes()).unwrap();
    let (traces, _) = common::go_pprof(&["-traces", file.to_str().unwrap()]);
    let trace = traces
        .split("-----------+")
        .find(|t| t.contains("level_5"))
        .unwrap_or_else(|| panic!("{unwinder:?}: no trace through level_5:\n{traces}"));
    let at = |f: &str| {
        trace
            .find(f)
            .unwrap_or_else(|| panic!("{unwinder:?}: {f}:\n{trace}"))
    };
    assert!(
        at("level_5") < at("level_4")
            && at("level_2") < at("level_1")
            && at("level_1") < at("fallback_unwinder::main"),
        "{unwinder:?}:\n{trace}"
    );
    println!("fallback_unwinder: {unwinder:?} finds the whole stack");
    drop(keep);
}
