//! A fixed table of blocks keyed by address, each with the record its allocation made: where
//! the hook keeps the sampled blocks too large for the region.
//!
//! Each address may live in one of two buckets of [`BUCKET`] slots, chosen by two hashes; a
//! bucket's keys fill one cache line. A lookup reads both buckets whole, so it costs two cache
//! lines whatever the table has been through: there are no probe chains and no tombstones to
//! grow them. An insert claims a free slot with a compare-and-swap; a removal clears the key.
//!
//! Addresses in the table are unique, since a block is inserted before its pointer is handed
//! out and removed before it is given back; so is each block's owner at any moment. The
//! owner's hand-over of the pointer (through the program's own synchronisation) is what makes
//! the record, written before it, visible to the thread that removes it.

use crate::sync::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Slots per bucket: eight keys, one cache line.
pub(crate) const BUCKET: usize = 8;
/// A key that holds no block.
const FREE: usize = 0;
/// Stored in `size`'s top bit: sizes never reach it.
const MAPPED: u64 = 1 << 63;

/// What a block's allocation recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LargeSample {
    pub(crate) stack: u32,
    /// The allocation's clock stamp; 0 while the record is being written or cleared.
    pub(crate) allocated: u32,
    pub(crate) weight_fx: u64,
    pub(crate) size: u64,
    /// The block is a mapping of its own (the profiler's own large blocks), not the inner
    /// allocator's.
    pub(crate) mapped: bool,
}

/// A slot's record, beside its key.
#[repr(C)]
#[derive(Default)]
pub(crate) struct Meta {
    stack: AtomicU32,
    allocated: AtomicU32,
    weight_fx: AtomicU64,
    size: AtomicU64,
}

/// The table over its two arrays, `BUCKETS * BUCKET` keys and as many records.
pub(crate) struct Table<'a, const BUCKETS: usize> {
    pub(crate) keys: &'a [AtomicUsize],
    pub(crate) meta: &'a [Meta],
}

impl<const BUCKETS: usize> Table<'_, BUCKETS> {
    /// The first slot of each of the address's two buckets.
    fn buckets(addr: usize) -> [usize; 2] {
        let h = (addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let b1 = (h >> 40) as usize % BUCKETS;
        let b2 = (h >> 16) as usize % BUCKETS;
        [b1 * BUCKET, b2 * BUCKET]
    }

    /// Records a block. False when both its buckets are full.
    pub(crate) fn insert(&self, addr: usize, sample: LargeSample) -> bool {
        for first in Self::buckets(addr) {
            for i in first..first + BUCKET {
                // Acquire pairs with the Release of the removal that freed the slot: its reads
                // of the record come before the writes below.
                if self.keys[i].load(Ordering::Relaxed) == FREE
                    && self.keys[i]
                        .compare_exchange(FREE, addr, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    let m = &self.meta[i];
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

    /// Whether a block is in the table.
    pub(crate) fn contains(&self, addr: usize) -> bool {
        Self::buckets(addr).into_iter().any(|first| {
            self.keys[first..first + BUCKET]
                .iter()
                .any(|k| k.load(Ordering::Relaxed) == addr)
        })
    }

    /// Removes a block that the calling thread owns, returning what its allocation recorded.
    pub(crate) fn remove(&self, addr: usize) -> Option<LargeSample> {
        for first in Self::buckets(addr) {
            for i in first..first + BUCKET {
                if self.keys[i].load(Ordering::Relaxed) == addr {
                    let sample = read(&self.meta[i]);
                    self.meta[i].allocated.store(0, Ordering::Relaxed);
                    // Release: the record is read before another insert may take the slot.
                    self.keys[i].store(FREE, Ordering::Release);
                    return Some(sample);
                }
            }
        }
        None
    }

    /// Whether `addr` is in the table as a mapped block.
    pub(crate) fn is_mapped(&self, addr: usize) -> bool {
        Self::buckets(addr).into_iter().any(|first| {
            (first..first + BUCKET).any(|i| {
                self.keys[i].load(Ordering::Relaxed) == addr
                    && self.meta[i].size.load(Ordering::Relaxed) & MAPPED != 0
            })
        })
    }

    /// Calls `f` with every record of a block in the table whose record is whole. It takes no
    /// lock: a block inserted or removed meanwhile may be seen either way, and one whose slot
    /// is reused meanwhile may be seen with its successor's record.
    pub(crate) fn each(&self, mut f: impl FnMut(LargeSample)) {
        for (key, meta) in self.keys.iter().zip(self.meta) {
            if key.load(Ordering::Relaxed) != FREE {
                let sample = read(meta);
                if sample.allocated != 0 {
                    f(sample);
                }
            }
        }
    }
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
