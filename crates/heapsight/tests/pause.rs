//! Pausing sampling on a thread (`SnapshotSource::unprofiled`, as the profiler does around its own
//! work) keeps the pause's allocations out of the heap and leaves what the thread allocates
//! afterwards sampled at the full rate: no stretch after a pause goes unsampled.

use heapsight::{SamplerSource, SnapshotSource};
use std::alloc::{alloc, dealloc, Layout};

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

const RATE: usize = 64 << 10;

/// Allocates and frees `n` blocks of `layout`.
fn churn(layout: Layout, n: usize) {
    for _ in 0..n {
        // SAFETY: a non-zero layout; the block is freed at once with the same layout.
        unsafe { dealloc(std::hint::black_box(alloc(layout)), layout) };
    }
}

#[test]
fn allocations_right_after_a_pause_are_sampled_at_the_full_rate() {
    heapsight::set_sample_rate(RATE);
    let block = Layout::from_size_align(RATE, 8).unwrap();
    let rounds = 400;
    let mut before = None;
    SamplerSource.unprofiled(&mut || before = Some(heapsight::snapshot()));
    for _ in 0..rounds {
        // The profiler's own work: 2 MiB, which crosses sample points while paused.
        SamplerSource.unprofiled(&mut || churn(block, 32));
        // Then one block of the service's, the size of the mean sample distance.
        churn(block, 1);
    }
    let mut sampled = 0;
    SamplerSource.unprofiled(&mut || {
        let delta = heapsight::snapshot().delta(before.as_ref().unwrap());
        sampled = delta
            .stacks
            .iter()
            .map(|(_, t)| t.alloc_samples)
            .sum::<u64>();
    });
    // Each block is sampled with probability 1 - 1/e: 253 expected of 400, sd 9.6. Nothing of
    // the paused 2 MiB per round may be counted (that would be 400 x 32 blocks at 63%).
    let expected = rounds as f64 * (1.0 - (-1.0f64).exp());
    assert!(
        (sampled as f64 - expected).abs() < 6.0 * 9.6,
        "{sampled} of {rounds} blocks sampled after pauses; expected about {expected:.0}"
    );
}
