//! The stack table: every distinct sampled call stack once, with its running totals.
//!
//! Stacks are stored densely and found through a tiered open-addressing index
//! ([`crate::lockfree::stack_index`], over arrays mapped here). Nobody ever waits for anybody.
//!
//! Entries and frames are immutable once published and live as long as the process, so a
//! [`crate::Snapshot`] can name stacks by id and read their frames later without copying them.
//! Totals only ever grow (frees are counted, not subtracted), so two snapshots subtract cleanly.
//!
//! Must never: allocate through the global allocator, block, or grow past its fixed capacity.

pub(crate) use crate::lockfree::stack_index::InternError;
use crate::lockfree::stack_index::{self, Entry, StackIndex};
use crate::os;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Slots in the index's first tier: one page. Each further tier is twice the last, so that the
/// index's resident pages grow with the stacks stored, not with the table's capacity: a hash
/// index over the whole capacity touches a page per stack until all of its pages are resident
/// (4 MiB for the sampler's, reached at a few thousand stacks).
const INDEX_TIER0: usize = 512;

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
        stack_index::index_len(INDEX_TIER0, self.tiers())
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

    fn view(&self) -> Option<StackIndex<'_, INDEX_TIER0>> {
        let index = self.index.load(Ordering::Acquire);
        if index == 0 {
            return None;
        }
        let entries = self.entries.load(Ordering::Relaxed) as *const Entry;
        let frames = self.frames.load(Ordering::Relaxed) as *const AtomicUsize;
        // SAFETY: `map` made each array this long, zeroed (valid atomics and entries), and
        // published it before the index (Acquire above); it stays mapped while the table is in
        // use (`unmap`'s contract), and it is only accessed through atomics.
        Some(unsafe {
            StackIndex {
                tiers: self.tiers(),
                index: std::slice::from_raw_parts(index as *const AtomicU64, self.index_len()),
                entries: std::slice::from_raw_parts(entries, self.max_stacks),
                frames: std::slice::from_raw_parts(frames, self.max_frames),
                next_entry: &self.next_entry,
                next_frame: &self.next_frame,
            }
        })
    }

    /// The id of `frames` (leaf first), adding it if it is new. Lock-free, allocation-free and
    /// safe to call from a signal handler, even one that interrupted another `intern`.
    pub(crate) fn intern(&self, frames: &[usize]) -> Result<u32, InternError> {
        self.view().ok_or(InternError::NoTable)?.intern(frames)
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
            Some(t) if id < t.len() => f(&mut t.frames_of(id)),
            _ => f(&mut std::iter::empty()),
        }
    }

    /// The outermost frame of stack `id`, if it has any.
    pub(crate) fn last_frame(&self, id: u32) -> Option<usize> {
        let t = self.view()?;
        if id >= t.len() {
            return None;
        }
        t.frames_of(id).last()
    }

    /// Frames stored so far.
    pub(crate) fn frames_used(&self) -> usize {
        self.view().map_or(0, |t| t.frames_used())
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
