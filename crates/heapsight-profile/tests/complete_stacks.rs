//! A sample taken three known functions deep shows all three, in order, under `main`, with the
//! allocator plumbing trimmed from the leaf end. Runs without the test harness so that the
//! allocating thread really is the one `main` runs on.

mod common;

use common::stack_through;
use heapsight_profile::HeapView;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

#[inline(never)]
fn outer_level(keep: &mut Vec<Vec<u64>>) {
    middle_level(keep);
    std::hint::black_box(&keep);
}

#[inline(never)]
fn middle_level(keep: &mut Vec<Vec<u64>>) {
    inner_level(keep);
    std::hint::black_box(&keep);
}

#[inline(never)]
fn inner_level(keep: &mut Vec<Vec<u64>>) {
    keep.push(Vec::with_capacity(std::hint::black_box(1000)));
}

fn main() {
    heapsight::set_sample_rate(1);
    let mut keep = Vec::with_capacity(1);
    outer_level(&mut keep);
    heapsight::set_sample_rate(heapsight::DEFAULT_SAMPLE_RATE);

    let profile = heapsight_profile::heap_profile(HeapView::InUse);
    let stack = stack_through(&profile, "inner_level").expect("a sample under inner_level");
    let pos = |suffix: &str| {
        stack
            .iter()
            .position(|n| n.ends_with(suffix))
            .unwrap_or_else(|| panic!("{suffix} missing from {stack:#?}"))
    };
    let (inner, middle, outer, user_main) = (
        pos("complete_stacks::inner_level"),
        pos("complete_stacks::middle_level"),
        pos("complete_stacks::outer_level"),
        pos("complete_stacks::main"),
    );
    let c_main = stack
        .iter()
        .rposition(|n| *n == "main")
        .expect("the C main frame");
    assert!(
        inner < middle && middle < outer && outer < user_main && user_main < c_main,
        "{stack:#?}"
    );
    assert!(
        !stack.iter().any(|n| heapsight_profile::is_plumbing(n)),
        "plumbing left in {stack:#?}"
    );
    // The leaf is the code that asked for memory: Vec::with_capacity, inlined into inner_level.
    assert!(
        stack[0].contains("with_capacity") || stack[0].ends_with("inner_level"),
        "{stack:#?}"
    );
    println!("complete_stacks: 1 passed, 0 failed");
}
