//! The profiler's own large blocks are mapped by the hook, not handed to the C allocator: glibc
//! never sees them, so freeing one does not raise its mmap threshold (after which a freed large
//! block would stay resident in an arena for good). The blocks behave as any others: their
//! contents survive growing, zeroed ones are zero, and the service may free them.

use heapsight::own::{self, Part};

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

/// Bytes glibc holds in mappings of its own (blocks above its mmap threshold).
fn glibc_mapped() -> usize {
    // SAFETY: mallinfo2 only reads glibc's counters.
    unsafe { libc::mallinfo2() }.hblkhd
}

#[test]
fn the_profilers_large_blocks_never_reach_the_c_allocator() {
    heapsight::set_sample_rate(heapsight::DEFAULT_SAMPLE_RATE);
    let before = glibc_mapped();
    let grown: Vec<u64> = own::run(Part::Symbolizer, || {
        let zeroed = vec![0u8; 4 << 20];
        assert!(zeroed.iter().all(|&b| b == 0));
        assert_eq!(
            glibc_mapped(),
            before,
            "a 4 MiB block of the profiler's went to glibc"
        );
        drop(zeroed);
        // Grown past the large size by doubling, as a Vec grows: every step moves it.
        let mut v: Vec<u64> = Vec::new();
        for i in 0..(1u64 << 19) {
            v.push(i * 3);
        }
        assert_eq!(glibc_mapped(), before);
        v
    });
    assert!(grown.iter().enumerate().all(|(i, &x)| x == i as u64 * 3));
    // The service frees it, and grows another large block of its own through glibc: one of
    // 1 MiB still gets a mapping of glibc's, so the profiler's 4 MiB never raised the threshold.
    drop(grown);
    let service = vec![1u8; 1 << 20];
    assert!(
        glibc_mapped() >= before + (1 << 20),
        "glibc served 1 MiB from an arena: its mmap threshold was raised"
    );
    drop(service);
    let stats = heapsight::stats();
    assert_eq!(stats.dropped_large_table_full, 0, "{stats:?}");
}
