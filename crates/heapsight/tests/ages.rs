//! Allocation times: every sampled block in use appears in a snapshot's blocks with when it was
//! allocated, small (region) and large (inner allocator) alike, and leaves them when freed or
//! moved by a resize.

use heapsight::{SamplerSource, Snapshot, SnapshotSource};
use std::time::{Duration, SystemTime};

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

fn snapshot() -> Snapshot {
    let mut s = None;
    SamplerSource.unprofiled(&mut || s = Some(heapsight::snapshot()));
    s.unwrap()
}

/// The blocks of `snap` of exactly `size` bytes.
fn blocks_of(snap: &Snapshot, size: u64) -> Vec<SystemTime> {
    snap.blocks
        .iter()
        .filter(|b| b.size == size)
        .map(|b| b.allocated)
        .collect()
}

#[test]
fn sampled_blocks_carry_their_allocation_times_until_freed() {
    heapsight::set_sample_rate(1);
    // Sizes no other allocation of the test harness makes.
    const SMALL: usize = 4_321;
    const LARGE: usize = 300_007;
    let t0 = SystemTime::now();
    let early: Vec<Vec<u8>> = (0..20).map(|_| vec![1; SMALL]).collect();
    let early_large = vec![1u8; LARGE];
    std::thread::sleep(Duration::from_millis(300));
    let t1 = SystemTime::now();
    let late: Vec<Vec<u8>> = (0..10).map(|_| vec![2; SMALL]).collect();
    let snap = snapshot();

    let margin = Duration::from_millis(50);
    let small = blocks_of(&snap, SMALL as u64);
    assert_eq!(small.len(), 30, "every small block in use");
    let old = small.iter().filter(|t| **t < t1 - margin).count();
    let young = small.iter().filter(|t| **t >= t1 - margin).count();
    assert_eq!(
        (old, young),
        (20, 10),
        "allocated before and after the pause"
    );
    assert!(small
        .iter()
        .all(|t| *t >= t0 - margin && *t <= snap.time + margin));
    let large = blocks_of(&snap, LARGE as u64);
    assert_eq!(
        large.len(),
        1,
        "the large block, tracked outside the region"
    );
    assert!(large[0] < t1 - margin);

    // Only what was allocated after t1 is retained since t1.
    let retained = snap.retained_since(t1 - margin);
    let bytes: u64 = retained
        .stacks
        .iter()
        .map(|(_, t)| t.alloc_sample_bytes)
        .sum();
    assert!(bytes >= 10 * SMALL as u64, "{bytes}");
    assert!(
        bytes < 20 * SMALL as u64,
        "the early blocks are not retained since t1"
    );
    assert_eq!(
        retained.inuse_space(),
        retained
            .stacks
            .iter()
            .map(|(_, t)| t.inuse_space())
            .sum::<i64>()
    );

    // Freed blocks leave; a block moved by a resize is a new block.
    drop(early);
    let mut moved = early_large;
    moved.reserve_exact(LARGE);
    let after = snapshot();
    assert_eq!(blocks_of(&after, SMALL as u64).len(), 10);
    assert!(
        blocks_of(&after, LARGE as u64).is_empty(),
        "the old large block was freed"
    );
    let resized = blocks_of(&after, moved.capacity() as u64);
    assert_eq!(resized.len(), 1, "the resized block, sampled again");
    assert!(resized[0] >= t1 - margin);
    drop((late, moved));
    heapsight::set_sample_rate(heapsight::DEFAULT_SAMPLE_RATE);
}
