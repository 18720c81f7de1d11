//! The stack table's lock-free core: distinct call stacks stored densely and found through an
//! open-addressing index.
//!
//! Entries (where a stack's frames are) and the frames themselves are appended to two arrays;
//! the index holds `(hash tag, entry id + 1)` words. An insert appends the entry first and then
//! publishes it into the index with one compare-and-swap; a thread that loses the race to a slot
//! compares with the winner and either uses it or probes on. Nobody ever waits for anybody, and
//! an entry appended for a lost race stays unused. Entries and frames are immutable once
//! published.
//!
//! The index is in tiers: the first `TIER0` slots, then each tier twice the last. A stack's
//! probe sequence takes a window of [`PROBES`] slots in each tier but the last, then the whole
//! last tier, and it is published in the first empty slot of its sequence, so every lookup of
//! it meets it before any empty slot. The index's resident pages then grow with the stacks
//! stored rather than with the capacity.

use crate::sync::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Slots of a tier a stack may take before its probe sequence moves to the next tier.
pub(crate) const PROBES: usize = 8;

/// Where a stack's frames are. Written once, before the stack is published.
#[repr(C)]
#[derive(Default)]
pub(crate) struct Entry {
    first_frame: AtomicU32,
    depth: AtomicU32,
}

/// Why a stack could not be interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InternError {
    /// The tables were never mapped.
    NoTable,
    /// The table's distinct stacks or frames are all used.
    Full,
}

/// Slots in an index of `tiers` tiers whose first has `tier0`.
pub(crate) const fn index_len(tier0: usize, tiers: u32) -> usize {
    tier0 * ((1 << tiers) - 1)
}

/// A table's arrays and counters, lent by its owner. `index` holds [`index_len`]`(TIER0, tiers)`
/// slots; `entries` and `frames` are the capacities of stacks and frames.
pub(crate) struct StackIndex<'a, const TIER0: usize> {
    pub(crate) tiers: u32,
    pub(crate) index: &'a [AtomicU64],
    pub(crate) entries: &'a [Entry],
    pub(crate) frames: &'a [AtomicUsize],
    pub(crate) next_entry: &'a AtomicU32,
    pub(crate) next_frame: &'a AtomicU32,
}

impl<const TIER0: usize> StackIndex<'_, TIER0> {
    /// The id of `frames` (leaf first), adding it if it is new. Lock-free, allocation-free and
    /// safe to call from a signal handler, even one that interrupted another `intern`.
    pub(crate) fn intern(&self, frames: &[usize]) -> Result<u32, InternError> {
        let h = hash(frames);
        let tag = (h >> 32) as u32 | 1; // never zero, so a used slot is never 0
        let mut new_id: Option<u32> = None;
        let (mut start, mut size, mut base) = (0, TIER0, h as usize);
        for tier in 1..=self.tiers {
            let probes = if tier == self.tiers { size } else { PROBES };
            for j in 0..probes {
                let slot = &self.index[start + (base.wrapping_add(j) & (size - 1))];
                let mut word = slot.load(Ordering::Acquire);
                if word == 0 {
                    let id = match new_id {
                        Some(id) => id,
                        None => *new_id.insert(self.append(frames)?),
                    };
                    let mine = (tag as u64) << 32 | (id as u64 + 1);
                    // Release: the entry written by `append` is visible to whoever reads this
                    // word.
                    match slot.compare_exchange(0, mine, Ordering::Release, Ordering::Acquire) {
                        Ok(_) => return Ok(id),
                        Err(now) => word = now,
                    }
                }
                if (word >> 32) as u32 == tag {
                    let id = (word as u32) - 1;
                    if self.same_stack(id, frames) {
                        return Ok(id);
                    }
                }
            }
            start += size;
            size <<= 1;
            base = base.rotate_left(7);
        }
        Err(InternError::Full)
    }

    /// How many entries exist (some may be unused leftovers of lost races).
    pub(crate) fn len(&self) -> u32 {
        self.next_entry
            .load(Ordering::Acquire)
            .min(self.entries.len() as u32)
    }

    /// The frames of stack `id` (leaf first), which must be below [`StackIndex::len`].
    pub(crate) fn frames_of(&self, id: u32) -> impl Iterator<Item = usize> + '_ {
        let e = &self.entries[id as usize];
        let first = e.first_frame.load(Ordering::Relaxed) as usize;
        let depth = e.depth.load(Ordering::Relaxed) as usize;
        self.frames[first..first + depth]
            .iter()
            .map(|f| f.load(Ordering::Relaxed))
    }

    /// Frames stored so far.
    pub(crate) fn frames_used(&self) -> usize {
        self.next_frame.load(Ordering::Relaxed) as usize
    }

    fn same_stack(&self, id: u32, frames: &[usize]) -> bool {
        let e = &self.entries[id as usize];
        e.depth.load(Ordering::Relaxed) as usize == frames.len()
            && self.frames_of(id).eq(frames.iter().copied())
    }

    fn append(&self, frames: &[usize]) -> Result<u32, InternError> {
        let id = self
            .next_entry
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                ((n as usize) < self.entries.len()).then_some(n + 1)
            })
            .map_err(|_| InternError::Full)?;
        let depth = frames.len() as u32;
        let first = self
            .next_frame
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                ((n as usize + depth as usize) <= self.frames.len()).then_some(n + depth)
            })
            .map_err(|_| InternError::Full)?;
        for (to, &f) in self.frames[first as usize..].iter().zip(frames) {
            to.store(f, Ordering::Relaxed);
        }
        let e = &self.entries[id as usize];
        e.first_frame.store(first, Ordering::Relaxed);
        e.depth.store(depth, Ordering::Relaxed);
        Ok(id)
    }
}

fn hash(frames: &[usize]) -> u64 {
    // FNV-style mixing with a multiply per frame: fast, and return addresses differ in low bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ frames.len() as u64;
    for &f in frames {
        h = (h ^ f as u64)
            .wrapping_mul(0x0000_0100_0000_01B3)
            .rotate_left(29);
    }
    h.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
