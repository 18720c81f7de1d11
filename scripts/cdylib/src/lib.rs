//! Loaded by `scripts/test` with Python's ctypes: `heapsight_cdylib_check()` returns the
//! in-use bytes the hook estimates for 256 blocks of 4 KiB it holds, sampling every allocation.

heapsight::global_allocator!(std::alloc::System);

/// Holds 1 MiB in 256 blocks, sampled at rate 1, and returns the in-use bytes the hook counts
/// for them (exactly 1 MiB when every sample is recorded), or -1 if sampling did not work.
#[no_mangle]
pub extern "C" fn heapsight_cdylib_check() -> i64 {
    heapsight::set_sample_rate(1);
    let before = heapsight::snapshot();
    let kept: Vec<Box<[u8; 4096]>> = (0..256).map(|_| Box::new([7; 4096])).collect();
    let held = heapsight::snapshot().delta(&before);
    heapsight::set_sample_rate(heapsight::DEFAULT_SAMPLE_RATE);
    let blocks = kept.iter().filter(|b| b[4095] == 7).count();
    if blocks != 256 {
        return -1;
    }
    held.inuse_space() as i64
}
