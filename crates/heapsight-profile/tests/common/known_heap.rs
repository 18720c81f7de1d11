//! Ground truth: known amounts kept live at distinct call sites, and a site that allocated and
//! freed everything. Both sources (heapsight's sampler, jemalloc's profiler) are checked against
//! it at a 64 KiB rate: every site's in-use estimate within 15% of what it holds, the total
//! within 7%, the churned site near zero in use but its full volume allocated.
#![allow(dead_code)]

use crate::common::{assert_close, site};
use heapsight_profile::Profile;

pub const RATE: usize = 64 * 1024;
const SMALL: (usize, usize) = (400_000, 128); // 51 MB of 128-byte objects
const MEDIUM: (usize, usize) = (6_000, 8 * 1024); // 49 MB of 8 KiB objects
const MIB: (usize, usize) = (48, 1 << 20); // 48 MiB of 1 MiB objects
const HUGE: (usize, usize) = (3, 40 << 20); // 120 MiB of objects over 32 MiB
const CHURN: (usize, usize) = (25_600, 4096); // 100 MiB allocated and freed

/// The sites that keep what they allocate: (function, (objects, bytes each)).
pub const SITES: [(&str, (usize, usize)); 4] = [
    ("known_heap::site_small", SMALL),
    ("known_heap::site_medium", MEDIUM),
    ("known_heap::site_mib", MIB),
    ("known_heap::site_huge", HUGE),
];

/// What the sites hold, until dropped.
pub struct KnownHeap {
    _held: [Vec<Box<[u8]>>; 4],
}

#[inline(never)]
fn site_small(keep: &mut Vec<Box<[u8]>>) {
    for i in 0..SMALL.0 {
        keep.push(vec![i as u8; SMALL.1].into_boxed_slice());
    }
}

#[inline(never)]
fn site_medium(keep: &mut Vec<Box<[u8]>>) {
    for i in 0..MEDIUM.0 {
        keep.push(vec![i as u8; MEDIUM.1].into_boxed_slice());
    }
}

#[inline(never)]
fn site_mib(keep: &mut Vec<Box<[u8]>>) {
    for i in 0..MIB.0 {
        keep.push(vec![i as u8; MIB.1].into_boxed_slice());
    }
}

#[inline(never)]
fn site_huge(keep: &mut Vec<Box<[u8]>>) {
    for i in 0..HUGE.0 {
        keep.push(vec![i as u8; HUGE.1].into_boxed_slice());
    }
}

#[inline(never)]
fn site_churn() {
    for i in 0..CHURN.0 {
        std::hint::black_box(vec![i as u8; CHURN.1]);
    }
}

/// Allocates the known heap (call with the source's sample rate already at [`RATE`]).
pub fn build() -> KnownHeap {
    // The containers are sized up front, here, so the sites allocate only their objects.
    let mut held = [
        Vec::with_capacity(SMALL.0),
        Vec::with_capacity(MEDIUM.0),
        Vec::with_capacity(MIB.0),
        Vec::with_capacity(HUGE.0),
    ];
    site_small(&mut held[0]);
    site_medium(&mut held[1]);
    site_mib(&mut held[2]);
    site_huge(&mut held[3]);
    site_churn();
    KnownHeap { _held: held }
}

/// Asserts a heap profile's estimates against what the sites hold (see the module docs).
pub fn check(profile: &Profile) {
    let mut total_estimate = 0;
    let mut total_truth = 0;
    for (name, (count, size)) in SITES {
        let truth = (count * size) as i64;
        let v = site(profile, name);
        assert_close(&format!("{name} inuse_space"), v[3], truth, 0.15);
        total_estimate += v[3];
        total_truth += truth;
    }
    assert_close("total inuse_space", total_estimate, total_truth, 0.07);

    let churn = site(profile, "known_heap::site_churn");
    let churned = (CHURN.0 * CHURN.1) as i64;
    assert_close("site_churn alloc_space", churn[1], churned, 0.15);
    assert!(
        churn[3].abs() < churned / 100,
        "site_churn still holds {} bytes",
        churn[3]
    );
}
