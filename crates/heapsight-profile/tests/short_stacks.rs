//! Stacks that come out short are told plainly: `stats()`, the sampler source's warnings and
//! the profile's comments say so, with the fix. The test script runs this file in the normal
//! build (frame pointers: no warning) and in a build without frame pointers, with
//! `HEAPSIGHT_EXPECT_SHORT_STACKS=1` (the frame-pointer walk finds almost nothing: warned).

use heapsight::{SamplerSource, SnapshotSource};
use heapsight_profile::HeapView;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

/// One distinct call site per `N`.
#[inline(never)]
fn site<const N: usize>(keep: &mut Vec<Vec<u8>>) {
    keep.push(std::hint::black_box(vec![N as u8; 1000 + N]));
}

fn main() {
    let expect_short = std::env::var_os("HEAPSIGHT_EXPECT_SHORT_STACKS").is_some();
    heapsight::set_sample_rate(1);
    let mut keep = Vec::with_capacity(64);
    site::<0>(&mut keep);
    site::<1>(&mut keep);
    site::<2>(&mut keep);
    site::<3>(&mut keep);
    site::<4>(&mut keep);
    site::<5>(&mut keep);
    site::<6>(&mut keep);
    site::<7>(&mut keep);
    site::<8>(&mut keep);
    site::<9>(&mut keep);
    site::<10>(&mut keep);
    site::<11>(&mut keep);
    for _ in 0..40 {
        site::<12>(&mut keep);
    }
    heapsight::set_sample_rate(0);

    let stats = heapsight::stats();
    assert!(stats.samples >= 52, "{stats:?}");
    let profile = heapsight_profile::heap_profile(HeapView::InUse);
    let warnings: Vec<&str> = profile.warnings().collect();
    if expect_short {
        let said = stats
            .short_stacks()
            .expect("stacks are short, and stats() says so");
        assert!(said.contains("force-frame-pointers=yes"), "{said}");
        assert_eq!(SamplerSource.warnings(), vec![said.to_string()]);
        assert_eq!(warnings, vec![said], "the profile's comments say it too");
    } else {
        assert_eq!(stats.short_stacks(), None, "{stats:?}");
        assert!(SamplerSource.warnings().is_empty());
        assert!(warnings.is_empty(), "{warnings:?}");
    }
    println!(
        "short_stacks: 1 passed, 0 failed ({} of {} samples with short stacks)",
        stats.shallow_samples, stats.samples
    );
    drop(keep);
}
