//! The large-sample table: sampled blocks of [`crate::region::LARGE`] bytes or more, which stay
//! in the inner allocator, keyed by address ([`crate::lockfree::large_blocks`], in memory mapped
//! here).
//!
//! Only frees of large blocks look here, and those are rare next to small frees and cost the
//! inner allocator far more (often an `munmap`) than a lookup of two cache lines.
//!
//! Must never: allocate through the global allocator, block, or grow.

pub(crate) use crate::lockfree::large_blocks::LargeSample;
use crate::lockfree::large_blocks::{Meta, BUCKET};
use crate::os;
use std::sync::atomic::{AtomicUsize, Ordering};

const BUCKETS: usize = 1 << 13;
const CAPACITY: usize = BUCKETS * BUCKET;

/// The stack of a block in the table that was not sampled (a mapped block of the profiler's).
pub(crate) const NO_STACK: u32 = u32::MAX;

static KEYS: AtomicUsize = AtomicUsize::new(0);
static META: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn init() -> Option<usize> {
    let keys_len = CAPACITY * std::mem::size_of::<AtomicUsize>();
    let meta_len = CAPACITY * std::mem::size_of::<Meta>();
    let keys = os::map_zeroed(keys_len)?;
    let Some(meta) = os::map_zeroed(meta_len) else {
        // SAFETY: mapped just above and never published.
        unsafe { os::unmap(keys, keys_len) };
        return None;
    };
    META.store(meta.as_ptr() as usize, Ordering::Relaxed);
    // Release: whoever sees the keys sees the metadata array.
    KEYS.store(keys.as_ptr() as usize, Ordering::Release);
    Some(keys_len + meta_len)
}

type Table = crate::lockfree::large_blocks::Table<'static, BUCKETS>;

fn table() -> Option<Table> {
    let keys = KEYS.load(Ordering::Acquire) as *const AtomicUsize;
    if keys.is_null() {
        return None;
    }
    let meta = META.load(Ordering::Relaxed) as *const Meta;
    // SAFETY: both mappings hold CAPACITY zeroed records (valid atomics), are never unmapped once
    // published, and are only accessed through atomics.
    Some(unsafe {
        Table {
            keys: std::slice::from_raw_parts(keys, CAPACITY),
            meta: std::slice::from_raw_parts(meta, CAPACITY),
        }
    })
}

/// Records a sampled large block. False when both its buckets are full or the table is missing
/// (a counted drop).
pub(crate) fn insert(addr: usize, sample: LargeSample) -> bool {
    table().is_some_and(|t| t.insert(addr, sample))
}

/// Whether a block is in the table, that is, sampled.
pub(crate) fn contains(addr: usize) -> bool {
    table().is_some_and(|t| t.contains(addr))
}

/// Removes a block if it was sampled, returning what its allocation recorded.
pub(crate) fn remove(addr: usize) -> Option<LargeSample> {
    table()?.remove(addr)
}

/// Whether `addr` is in the table as a mapped block.
pub(crate) fn is_mapped(addr: usize) -> bool {
    table().is_some_and(|t| t.is_mapped(addr))
}

/// Resident bytes of the table's two arrays (both are filled by hash, not densely).
pub(crate) fn resident_bytes() -> usize {
    match table() {
        None => 0,
        Some(t) => {
            os::resident_bytes(t.keys.as_ptr() as usize, std::mem::size_of_val(t.keys))
                + os::resident_bytes(t.meta.as_ptr() as usize, std::mem::size_of_val(t.meta))
        }
    }
}

/// Calls `f` with every sampled block in the table. It reads every key (512 KiB) and takes no
/// lock: a block inserted or removed while it runs may be seen either way, and one whose slot
/// is reused meanwhile may be seen with its successor's record.
pub(crate) fn each(mut f: impl FnMut(LargeSample)) {
    let Some(t) = table() else { return };
    // A block with no stack was not sampled.
    t.each(|sample| {
        if sample.stack != NO_STACK {
            f(sample)
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const LARGE_SIZE: u64 = crate::region::LARGE as u64;

    #[test]
    fn churn_through_the_table_never_loses_or_invents_a_block() {
        assert!(crate::tables::ready());
        // Many more inserts than slots, as a long-running service makes: every removal finds
        // exactly what was inserted, and addresses never inserted are never found.
        let base = 0x7f00_0000_0000usize;
        for round in 0..(4 * CAPACITY / 64) {
            let addrs: Vec<usize> = (0..64).map(|i| base + ((round * 64 + i) << 17)).collect();
            let sample = |i: usize| LargeSample {
                stack: i as u32,
                allocated: 3,
                weight_fx: 7,
                size: LARGE_SIZE,
                mapped: i % 2 == 1,
            };
            for (i, &a) in addrs.iter().enumerate() {
                assert!(insert(a, sample(i)), "bucket full at round {round}");
            }
            assert!(remove(base - (1 << 17)).is_none());
            assert!(addrs.iter().all(|&a| contains(a)));
            for (i, &a) in addrs.iter().enumerate() {
                let s = remove(a).expect("inserted block found");
                assert_eq!(s, sample(i));
                assert!(remove(a).is_none(), "removed twice");
                assert!(!contains(a));
            }
        }
    }
}
