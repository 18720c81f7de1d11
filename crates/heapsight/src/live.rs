//! The large-sample table: sampled blocks of [`crate::region::LARGE`] bytes or more, which stay
//! in the inner allocator, keyed by address.
//!
//! Only frees of large blocks look here, and those are rare next to small frees and cost the
//! inner allocator far more (often an `munmap`) than a lookup. Each address may live in one of
//! two buckets of eight slots, chosen by two hashes; a bucket's keys fill one cache line. A lookup
//! reads both buckets whole, so it costs two cache lines whatever the table has been through:
//! there are no probe chains and no tombstones to grow them. An insert claims a free slot with a
//! compare-and-swap; a removal clears the key. Addresses in the table are unique, since a block is
//! inserted before its pointer is handed out and removed before it is given back.
//!
//! Must never: allocate through the global allocator, block, or grow.

use crate::os;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

const BUCKET: usize = 8;
const BUCKETS: usize = 1 << 13;
const CAPACITY: usize = BUCKETS * BUCKET;
const FREE: usize = 0;

/// What a large sampled allocation recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LargeSample {
    pub(crate) stack: u32,
    /// The allocation's [`crate::clock::stamp`].
    pub(crate) allocated: u32,
    pub(crate) weight_fx: u64,
    pub(crate) size: u64,
    /// The block is a mapping of its own (the profiler's own large blocks), not the inner
    /// allocator's; `stack` is [`NO_STACK`] when it was not sampled.
    pub(crate) mapped: bool,
}

/// The stack of a block in the table that was not sampled (a mapped block of the profiler's).
pub(crate) const NO_STACK: u32 = u32::MAX;
/// Stored in `size`'s top bit: sizes never reach it.
const MAPPED: u64 = 1 << 63;

#[repr(C)]
struct Meta {
    stack: AtomicU32,
    allocated: AtomicU32,
    weight_fx: AtomicU64,
    size: AtomicU64,
}

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

struct Table {
    keys: &'static [AtomicUsize],
    meta: &'static [Meta],
}

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

/// The first slot of each of the address's two buckets.
fn buckets(addr: usize) -> [usize; 2] {
    let h = (addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b1 = (h >> 40) as usize % BUCKETS;
    let b2 = (h >> 16) as usize % BUCKETS;
    [b1 * BUCKET, b2 * BUCKET]
}

/// Records a sampled large block. False when both its buckets are full or the table is missing
/// (a counted drop).
pub(crate) fn insert(addr: usize, sample: LargeSample) -> bool {
    let Some(t) = table() else { return false };
    for first in buckets(addr) {
        for i in first..first + BUCKET {
            if t.keys[i].load(Ordering::Relaxed) == FREE
                && t.keys[i]
                    .compare_exchange(FREE, addr, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                let m = &t.meta[i];
                m.stack.store(sample.stack, Ordering::Relaxed);
                m.weight_fx.store(sample.weight_fx, Ordering::Relaxed);
                let mapped = if sample.mapped { MAPPED } else { 0 };
                m.size.store(sample.size | mapped, Ordering::Relaxed);
                m.allocated.store(sample.allocated, Ordering::Relaxed);
                return true;
            }
        }
    }
    false
}

/// Whether a block is in the table, that is, sampled.
pub(crate) fn contains(addr: usize) -> bool {
    let Some(t) = table() else { return false };
    buckets(addr).into_iter().any(|first| {
        t.keys[first..first + BUCKET]
            .iter()
            .any(|k| k.load(Ordering::Relaxed) == addr)
    })
}

/// Removes a block if it was sampled, returning what its allocation recorded.
///
/// The block's owner hands the pointer to the freeing thread, so the record, written before the
/// pointer left the allocating thread, is visible here.
pub(crate) fn remove(addr: usize) -> Option<LargeSample> {
    let t = table()?;
    for first in buckets(addr) {
        for i in first..first + BUCKET {
            if t.keys[i].load(Ordering::Relaxed) == addr {
                let sample = read(&t.meta[i]);
                t.meta[i].allocated.store(0, Ordering::Relaxed);
                t.keys[i].store(FREE, Ordering::Relaxed);
                return Some(sample);
            }
        }
    }
    None
}

fn read(m: &Meta) -> LargeSample {
    let size = m.size.load(Ordering::Relaxed);
    LargeSample {
        stack: m.stack.load(Ordering::Relaxed),
        allocated: m.allocated.load(Ordering::Relaxed),
        weight_fx: m.weight_fx.load(Ordering::Relaxed),
        size: size & !MAPPED,
        mapped: size & MAPPED != 0,
    }
}

/// Whether `addr` is in the table as a mapped block.
pub(crate) fn is_mapped(addr: usize) -> bool {
    let Some(t) = table() else { return false };
    buckets(addr).into_iter().any(|first| {
        (first..first + BUCKET).any(|i| {
            t.keys[i].load(Ordering::Relaxed) == addr
                && t.meta[i].size.load(Ordering::Relaxed) & MAPPED != 0
        })
    })
}

/// Calls `f` with every block in the table. It reads every key (512 KiB) and takes no lock: a
/// block inserted or removed while it runs may be seen either way, and one whose slot is reused
/// meanwhile may be seen with its successor's record.
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

pub(crate) fn each(mut f: impl FnMut(LargeSample)) {
    let Some(t) = table() else { return };
    for (key, meta) in t.keys.iter().zip(t.meta) {
        if key.load(Ordering::Relaxed) != FREE {
            let sample = read(meta);
            // A stamp of 0: inserted and not yet recorded, or being removed. A block with no
            // stack was not sampled.
            if sample.allocated != 0 && sample.stack != NO_STACK {
                f(sample);
            }
        }
    }
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
