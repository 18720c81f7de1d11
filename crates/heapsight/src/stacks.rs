//! The stack table: every distinct sampled call stack once, with its running totals.
//!
//! Stacks are stored densely (entries and their frames appended to two arrays) and found through
//! an open-addressing index of `(hash tag, entry id)` words. An insert appends the entry first and
//! then publishes it into the index with one compare-and-swap; a thread that loses the race to
//! a slot compares with the winner and either uses it or probes on. Nobody ever waits for anybody.
//!
//! Entries and frames are immutable once published and live as long as the process, so a
//! [`crate::Snapshot`] can name stacks by id and read their frames later without copying them.
//! Totals only ever grow (frees are counted, not subtracted), so two snapshots subtract cleanly.
//!
//! Must never: allocate through the global allocator, block, or grow past its fixed capacity.

use crate::os;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Slots in the index's first tier: one page. Each further tier is twice the last, so that the
/// index's resident pages grow with the stacks stored, not with the table's capacity: a hash
/// index over the whole capacity touches a page per stack until all of its pages are resident
/// (4 MiB for the sampler's, reached at a few thousand stacks).
const INDEX_TIER0: usize = 512;
/// Slots of a tier a stack may take before its probe sequence moves to the next tier.
const INDEX_PROBES: usize = 8;

/// Distinct stacks kept; further new stacks are counted as dropped samples.
pub(crate) const MAX_STACKS: usize = 1 << 18;
/// Frames kept in all stacks together.
const MAX_FRAMES: usize = 1 << 23;

/// Running totals of one stack. Each is monotonic; in-use is allocations minus frees. One cache
/// line, and alone on it: the hook writes it from whichever thread samples the stack, and
/// nothing that every sample reads (the index, an entry, its frames) shares it.
#[repr(C, align(64))]
#[derive(Default)]
pub(crate) struct Totals {
    /// Estimated objects allocated, in [`crate::poisson::WEIGHT_ONE`] fixed point.
    pub(crate) alloc_objects_fx: AtomicU64,
    /// Estimated bytes allocated.
    pub(crate) alloc_space: AtomicU64,
    pub(crate) free_objects_fx: AtomicU64,
    pub(crate) free_space: AtomicU64,
    /// Sampled allocations, unweighted.
    pub(crate) alloc_samples: AtomicU64,
    pub(crate) alloc_sample_bytes: AtomicU64,
    pub(crate) free_samples: AtomicU64,
    pub(crate) free_sample_bytes: AtomicU64,
}

/// Where a stack's frames are. Written once, before the stack is published; read by every
/// sample that looks the stack up.
#[repr(C)]
struct Entry {
    first_frame: AtomicU32,
    depth: AtomicU32,
}

/// Interned stacks: an index, entries and frames, each in a mapping of its own, of fixed
/// capacity. The sampler's table lives as long as the process; a CPU profile maps one for its
/// own duration. What each stack counts lives beside it, in arrays indexed by its id.
pub(crate) struct StackTable {
    max_stacks: usize,
    max_frames: usize,
    /// Tiers of the index (see [`INDEX_TIER0`]).
    tiers: u32,
    index: AtomicUsize,
    entries: AtomicUsize,
    frames: AtomicUsize,
    next_entry: AtomicU32,
    next_frame: AtomicU32,
}

/// A mapped table's arrays.
struct View<'a> {
    table: &'a StackTable,
    index: *const AtomicU64,
    entries: *const Entry,
    frames: *const AtomicUsize,
}

impl StackTable {
    /// A table of `max_stacks` (a power of two) and `max_frames`, not yet mapped.
    pub(crate) const fn new(max_stacks: usize, max_frames: usize) -> StackTable {
        assert!(max_stacks.is_power_of_two() && max_stacks <= u32::MAX as usize / 2);
        assert!(max_frames <= u32::MAX as usize);
        StackTable {
            max_stacks,
            max_frames,
            tiers: StackTable::tiers_for(max_stacks),
            index: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            frames: AtomicUsize::new(0),
            next_entry: AtomicU32::new(0),
            next_frame: AtomicU32::new(0),
        }
    }

    /// Tiers of the index: `INDEX_TIER0 << t` slots each, the last at least twice the table's
    /// capacity of stacks.
    const fn tiers_for(max_stacks: usize) -> u32 {
        let mut t = 1;
        while INDEX_TIER0 << (t - 1) < max_stacks * 2 {
            t += 1;
        }
        t
    }

    fn tiers(&self) -> u32 {
        self.tiers
    }

    fn index_len(&self) -> usize {
        INDEX_TIER0 * ((1 << self.tiers()) - 1)
    }

    fn sizes(&self) -> [usize; 3] {
        [
            self.index_len() * std::mem::size_of::<AtomicU64>(),
            self.max_stacks * std::mem::size_of::<Entry>(),
            self.max_frames * std::mem::size_of::<AtomicUsize>(),
        ]
    }

    /// Maps the arrays of a table that is not mapped. Returns the address space reserved.
    pub(crate) fn map(&self) -> Option<usize> {
        let sizes = self.sizes();
        let maps = map_all(&sizes)?;
        self.next_entry.store(0, Ordering::Relaxed);
        self.next_frame.store(0, Ordering::Relaxed);
        self.frames.store(maps[2], Ordering::Relaxed);
        self.entries.store(maps[1], Ordering::Relaxed);
        // Release: whoever sees the index sees the other arrays and the counters reset.
        self.index.store(maps[0], Ordering::Release);
        Some(sizes.iter().sum())
    }

    /// Unmaps the table's arrays; it is then empty until mapped again.
    ///
    /// # Safety
    /// Nobody may be using the table, or start to before this returns, other than through
    /// calls that find it unmapped.
    pub(crate) unsafe fn unmap(&self) {
        let index = self.index.swap(0, Ordering::AcqRel);
        if index == 0 {
            return;
        }
        let arrays = [
            index,
            self.entries.swap(0, Ordering::Relaxed),
            self.frames.swap(0, Ordering::Relaxed),
        ];
        for (addr, len) in arrays.into_iter().zip(self.sizes()) {
            if let Some(p) = std::ptr::NonNull::new(addr as *mut u8) {
                // SAFETY: mapped by `map` with this length; the caller guarantees no user.
                unsafe { os::unmap(p, len) };
            }
        }
    }

    fn view(&self) -> Option<View<'_>> {
        let index = self.index.load(Ordering::Acquire);
        if index == 0 {
            return None;
        }
        Some(View {
            table: self,
            index: index as *const AtomicU64,
            entries: self.entries.load(Ordering::Relaxed) as *const Entry,
            frames: self.frames.load(Ordering::Relaxed) as *const AtomicUsize,
        })
    }

    /// The id of `frames` (leaf first), adding it if it is new. Lock-free, allocation-free and
    /// safe to call from a signal handler, even one that interrupted another `intern`.
    pub(crate) fn intern(&self, frames: &[usize]) -> Result<u32, InternError> {
        let t = self.view().ok_or(InternError::NoTable)?;
        let h = hash(frames);
        let tag = (h >> 32) as u32 | 1; // never zero, so a used slot is never 0
        let mut new_id: Option<u32> = None;
        let tiers = self.tiers();
        // One probe sequence through the tiers: a window of INDEX_PROBES slots in each but the
        // last, then the whole last tier. A stack is published in the first empty slot of its
        // sequence, so every lookup of it meets it before any empty slot.
        let (mut start, mut size, mut base) = (0, INDEX_TIER0, h as usize);
        for tier in 1..=tiers {
            let probes = if tier == tiers { size } else { INDEX_PROBES };
            for j in 0..probes {
                let slot = t.slot(start + (base.wrapping_add(j) & (size - 1)));
                let mut word = slot.load(Ordering::Acquire);
                if word == 0 {
                    let id = match new_id {
                        Some(id) => id,
                        None => {
                            let id = t.append(frames)?;
                            new_id = Some(id);
                            id
                        }
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
                    if t.same_stack(id, frames) {
                        // An entry appended for a lost race stays unused, with all-zero counts.
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
            .min(self.max_stacks as u32)
    }

    /// Calls `f` with the frames (return addresses, leaf first) of stack `id`.
    pub(crate) fn with_frames<R>(
        &self,
        id: u32,
        f: impl FnOnce(&mut dyn Iterator<Item = usize>) -> R,
    ) -> R {
        match self.view() {
            Some(t) if id < self.len() => {
                let e = t.entry(id);
                let first = e.first_frame.load(Ordering::Relaxed);
                let depth = e.depth.load(Ordering::Relaxed);
                f(&mut (first..first + depth).map(|i| t.frame(i).load(Ordering::Relaxed)))
            }
            _ => f(&mut std::iter::empty()),
        }
    }

    /// The outermost frame of stack `id`, if it has any.
    pub(crate) fn last_frame(&self, id: u32) -> Option<usize> {
        let t = self.view()?;
        if id >= self.len() {
            return None;
        }
        let e = t.entry(id);
        let depth = e.depth.load(Ordering::Relaxed);
        (depth > 0).then(|| {
            t.frame(e.first_frame.load(Ordering::Relaxed) + depth - 1)
                .load(Ordering::Relaxed)
        })
    }

    /// Frames stored so far.
    pub(crate) fn frames_used(&self) -> usize {
        self.next_frame.load(Ordering::Relaxed) as usize
    }

    /// Resident bytes: the entries and frames in use (they are filled densely), and the
    /// index's pages the kernel has made resident (its slots are scattered by hash).
    pub(crate) fn resident_bytes(&self) -> usize {
        let index = self.index.load(Ordering::Acquire);
        if index == 0 {
            return 0;
        }
        self.len() as usize * std::mem::size_of::<Entry>()
            + self.frames_used() * std::mem::size_of::<usize>()
            + os::resident_bytes(index, self.sizes()[0])
    }
}

/// Maps one zeroed array per size, or none at all.
fn map_all<const N: usize>(sizes: &[usize; N]) -> Option<[usize; N]> {
    let mut maps = [0usize; N];
    for (i, len) in sizes.iter().enumerate() {
        match os::map_zeroed(*len) {
            Some(p) => maps[i] = p.as_ptr() as usize,
            None => {
                for (j, &m) in maps.iter().enumerate().take(i) {
                    // SAFETY: mapped just above and never published.
                    unsafe { os::unmap(std::ptr::NonNull::new_unchecked(m as *mut u8), sizes[j]) };
                }
                return None;
            }
        }
    }
    Some(maps)
}

impl View<'_> {
    fn slot(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < self.table.index_len());
        // SAFETY: callers mask `i` below the index length; the mapping is that long, zeroed
        // (valid atomics) and stays mapped while the table is in use.
        unsafe { &*self.index.add(i) }
    }

    fn entry(&self, id: u32) -> &Entry {
        debug_assert!((id as usize) < self.table.max_stacks);
        // SAFETY: ids are only created below the table's stack capacity; as above.
        unsafe { &*self.entries.add(id as usize) }
    }

    fn frame(&self, i: u32) -> &AtomicUsize {
        debug_assert!((i as usize) < self.table.max_frames);
        // SAFETY: frame indices are only handed out below the table's frame capacity.
        unsafe { &*self.frames.add(i as usize) }
    }

    fn same_stack(&self, id: u32, frames: &[usize]) -> bool {
        let e = self.entry(id);
        let depth = e.depth.load(Ordering::Relaxed) as usize;
        let first = e.first_frame.load(Ordering::Relaxed);
        depth == frames.len()
            && frames
                .iter()
                .enumerate()
                .all(|(i, &f)| self.frame(first + i as u32).load(Ordering::Relaxed) == f)
    }

    fn append(&self, frames: &[usize]) -> Result<u32, InternError> {
        let t = self.table;
        let id = t
            .next_entry
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                ((n as usize) < t.max_stacks).then_some(n + 1)
            })
            .map_err(|_| InternError::Full)?;
        let depth = frames.len() as u32;
        let first = t
            .next_frame
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                ((n as usize + depth as usize) <= t.max_frames).then_some(n + depth)
            })
            .map_err(|_| InternError::Full)?;
        for (i, &f) in frames.iter().enumerate() {
            self.frame(first + i as u32).store(f, Ordering::Relaxed);
        }
        let e = self.entry(id);
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

/// Why a stack could not be interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InternError {
    /// The tables were never mapped.
    NoTable,
    /// The table's distinct stacks or frames are all used.
    Full,
}

/// The sampler's table, with each stack's [`Totals`] beside it.
static HEAP: StackTable = StackTable::new(MAX_STACKS, MAX_FRAMES);
static TOTALS: AtomicUsize = AtomicUsize::new(0);

/// Maps the sampler's table. Returns the address space reserved.
pub(crate) fn init() -> Option<usize> {
    let len = MAX_STACKS * std::mem::size_of::<Totals>();
    let totals = os::map_zeroed(len)?;
    TOTALS.store(totals.as_ptr() as usize, Ordering::Release);
    match HEAP.map() {
        Some(n) => Some(n + len),
        None => {
            TOTALS.store(0, Ordering::Relaxed);
            // SAFETY: mapped just above and published to nobody (no stack id exists yet).
            unsafe { os::unmap(totals, len) };
            None
        }
    }
}

/// The id of `frames` (leaf first) in the sampler's table, adding it if it is new.
pub(crate) fn intern(frames: &[usize]) -> Result<u32, InternError> {
    HEAP.intern(frames)
}

/// The running totals of a stack returned by [`intern`].
pub(crate) fn totals(id: u32) -> &'static Totals {
    totals_if_any(id).expect("a stack id exists only once the table does")
}

/// How many entries exist (some may be unused leftovers of lost races, with zero totals).
pub(crate) fn len() -> u32 {
    HEAP.len()
}

/// Calls `f` with the frames (return addresses, leaf first) of stack `id`.
pub(crate) fn with_frames<R>(id: u32, f: impl FnOnce(&mut dyn Iterator<Item = usize>) -> R) -> R {
    HEAP.with_frames(id, f)
}

/// The outermost frame of stack `id`, if it has any.
pub(crate) fn last_frame(id: u32) -> Option<usize> {
    HEAP.last_frame(id)
}

/// Bytes of the table and its totals that are resident, for [`crate::Stats`].
pub(crate) fn resident_bytes() -> usize {
    HEAP.resident_bytes() + len() as usize * std::mem::size_of::<Totals>()
}

/// Bytes of the entry, counters and frame arrays in use (the parts that grow with distinct
/// stacks).
pub(crate) fn bytes_used() -> usize {
    len() as usize * (std::mem::size_of::<Entry>() + std::mem::size_of::<Totals>())
        + HEAP.frames_used() * std::mem::size_of::<usize>()
}

/// Samples recorded over all stacks.
pub(crate) fn samples() -> u64 {
    (0..len())
        .filter_map(totals_if_any)
        .map(|t| t.alloc_samples.load(Ordering::Relaxed))
        .sum()
}

/// The totals of entry `id` if it exists (ids up to [`len`]).
pub(crate) fn totals_if_any(id: u32) -> Option<&'static Totals> {
    let totals = TOTALS.load(Ordering::Acquire) as *const Totals;
    if totals.is_null() || id >= len() {
        return None;
    }
    // SAFETY: ids below `len()` are below MAX_STACKS; the mapping is that long, zeroed (valid
    // atomics), page-aligned (so every record is 64-byte aligned) and never unmapped.
    Some(unsafe { &*totals.add(id as usize) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stack_has_one_id_and_the_index_grows_with_the_stacks() {
        let table = StackTable::new(1 << 14, 1 << 18);
        assert!(table.map().is_some());
        let stack = |i: usize| [0x1000 + i, 0x2000 + i * 7, 0x3000];
        // A few hundred stacks touch a few pages of the index, not all of it.
        for i in 0..300 {
            assert_eq!(table.intern(&stack(i)), Ok(i as u32));
        }
        let index = os::resident_bytes(table.index.load(Ordering::Relaxed), table.sizes()[0]);
        assert!(
            index <= 16 << 10,
            "{index} bytes of index resident for 300 stacks"
        );
        // Filled to its capacity, every stack still has its own id and keeps it.
        for i in 300..(1 << 14) {
            assert_eq!(table.intern(&stack(i)), Ok(i as u32), "stack {i}");
        }
        for i in (0..(1 << 14)).step_by(97) {
            assert_eq!(table.intern(&stack(i)), Ok(i as u32));
            assert_eq!(table.last_frame(i as u32), Some(0x3000));
        }
        assert_eq!(table.intern(&[1, 2, 3]), Err(InternError::Full));
        // SAFETY: nothing else uses this table.
        unsafe { table.unmap() };
        assert_eq!(table.intern(&stack(1)), Err(InternError::NoTable));
    }
}
