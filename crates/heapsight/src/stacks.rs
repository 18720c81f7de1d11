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

/// Distinct stacks kept; further new stacks are counted as dropped samples.
pub(crate) const MAX_STACKS: usize = 1 << 18;
/// Frames kept in all stacks together.
const MAX_FRAMES: usize = 1 << 23;
const INDEX_LEN: usize = MAX_STACKS * 2;

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

struct Table {
    index: *const AtomicU64,
    entries: *const Entry,
    totals: *const Totals,
    frames: *const AtomicUsize,
}

static INDEX: AtomicUsize = AtomicUsize::new(0);
static ENTRIES: AtomicUsize = AtomicUsize::new(0);
static TOTALS: AtomicUsize = AtomicUsize::new(0);
static FRAMES: AtomicUsize = AtomicUsize::new(0);
static NEXT_ENTRY: AtomicU32 = AtomicU32::new(0);
static NEXT_FRAME: AtomicU32 = AtomicU32::new(0);

/// Maps the four arrays. Returns the address space reserved.
pub(crate) fn init() -> Option<usize> {
    let sizes = [
        INDEX_LEN * std::mem::size_of::<AtomicU64>(),
        MAX_STACKS * std::mem::size_of::<Entry>(),
        MAX_STACKS * std::mem::size_of::<Totals>(),
        MAX_FRAMES * std::mem::size_of::<AtomicUsize>(),
    ];
    let mut maps = [0usize; 4];
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
    FRAMES.store(maps[3], Ordering::Relaxed);
    TOTALS.store(maps[2], Ordering::Relaxed);
    ENTRIES.store(maps[1], Ordering::Relaxed);
    // Release: whoever sees the index sees the other three arrays.
    INDEX.store(maps[0], Ordering::Release);
    Some(sizes.iter().sum())
}

fn table() -> Option<Table> {
    let index = INDEX.load(Ordering::Acquire);
    if index == 0 {
        return None;
    }
    Some(Table {
        index: index as *const AtomicU64,
        entries: ENTRIES.load(Ordering::Relaxed) as *const Entry,
        totals: TOTALS.load(Ordering::Relaxed) as *const Totals,
        frames: FRAMES.load(Ordering::Relaxed) as *const AtomicUsize,
    })
}

impl Table {
    fn slot(&self, i: usize) -> &'static AtomicU64 {
        // SAFETY: callers mask `i` below INDEX_LEN; the index mapping is that long, zeroed
        // (valid atomics) and never unmapped.
        unsafe { &*self.index.add(i) }
    }

    fn entry(&self, id: u32) -> &'static Entry {
        debug_assert!((id as usize) < MAX_STACKS);
        // SAFETY: ids are only created below MAX_STACKS; the mapping is that long, zeroed and
        // never unmapped.
        unsafe { &*self.entries.add(id as usize) }
    }

    fn totals(&self, id: u32) -> &'static Totals {
        debug_assert!((id as usize) < MAX_STACKS);
        // SAFETY: as for `entry`; the mapping is page-aligned, so every record is 64-byte aligned.
        unsafe { &*self.totals.add(id as usize) }
    }

    fn frame(&self, i: u32) -> &'static AtomicUsize {
        debug_assert!((i as usize) < MAX_FRAMES);
        // SAFETY: frame indices are only handed out below MAX_FRAMES; as above.
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
    /// [`MAX_STACKS`] distinct stacks or `MAX_FRAMES` frames are already stored.
    Full,
}

/// The id of `frames` (leaf first), adding it if it is new.
pub(crate) fn intern(frames: &[usize]) -> Result<u32, InternError> {
    let t = table().ok_or(InternError::NoTable)?;
    let h = hash(frames);
    let tag = (h >> 32) as u32 | 1; // never zero, so a used slot is never 0
    let mut pos = h as usize & (INDEX_LEN - 1);
    let mut new_id: Option<u32> = None;
    for _ in 0..INDEX_LEN {
        let slot = t.slot(pos);
        let mut word = slot.load(Ordering::Acquire);
        if word == 0 {
            let id = match new_id {
                Some(id) => id,
                None => {
                    let id = append(&t, frames)?;
                    new_id = Some(id);
                    id
                }
            };
            let mine = (tag as u64) << 32 | (id as u64 + 1);
            // Release: the entry written by `append` is visible to whoever reads this word.
            match slot.compare_exchange(0, mine, Ordering::Release, Ordering::Acquire) {
                Ok(_) => return Ok(id),
                Err(now) => word = now,
            }
        }
        if (word >> 32) as u32 == tag {
            let id = (word as u32) - 1;
            if t.same_stack(id, frames) {
                // An entry appended for a lost race stays unused, with all-zero totals.
                return Ok(id);
            }
        }
        pos = (pos + 1) & (INDEX_LEN - 1);
    }
    Err(InternError::Full)
}

fn append(t: &Table, frames: &[usize]) -> Result<u32, InternError> {
    let id = NEXT_ENTRY
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            ((n as usize) < MAX_STACKS).then_some(n + 1)
        })
        .map_err(|_| InternError::Full)?;
    let depth = frames.len() as u32;
    let first = NEXT_FRAME
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            ((n as usize + depth as usize) <= MAX_FRAMES).then_some(n + depth)
        })
        .map_err(|_| InternError::Full)?;
    for (i, &f) in frames.iter().enumerate() {
        t.frame(first + i as u32).store(f, Ordering::Relaxed);
    }
    let e = t.entry(id);
    e.first_frame.store(first, Ordering::Relaxed);
    e.depth.store(depth, Ordering::Relaxed);
    Ok(id)
}

/// The running totals of a stack returned by [`intern`].
pub(crate) fn totals(id: u32) -> &'static Totals {
    let t = table().expect("a stack id exists only once the table does");
    t.totals(id)
}

/// How many entries exist (some may be unused leftovers of lost races, with zero totals).
pub(crate) fn len() -> u32 {
    NEXT_ENTRY.load(Ordering::Acquire).min(MAX_STACKS as u32)
}

/// Calls `f` with the frames (return addresses, leaf first) of stack `id`.
pub(crate) fn with_frames<R>(id: u32, f: impl FnOnce(&mut dyn Iterator<Item = usize>) -> R) -> R {
    match table() {
        Some(t) if id < len() => {
            let e = t.entry(id);
            let first = e.first_frame.load(Ordering::Relaxed);
            let depth = e.depth.load(Ordering::Relaxed);
            f(&mut (first..first + depth).map(|i| t.frame(i).load(Ordering::Relaxed)))
        }
        _ => f(&mut std::iter::empty()),
    }
}

/// Frames stored so far, for [`crate::Stats`].
pub(crate) fn frames_used() -> usize {
    NEXT_FRAME.load(Ordering::Relaxed) as usize
}

/// Bytes of the entry, counters and frame arrays in use (the parts that grow with distinct
/// stacks).
pub(crate) fn bytes_used() -> usize {
    len() as usize * (std::mem::size_of::<Entry>() + std::mem::size_of::<Totals>())
        + frames_used() * std::mem::size_of::<usize>()
}

/// The totals of entry `id` if it exists (ids up to [`len`]).
/// Samples recorded over all stacks.
pub(crate) fn samples() -> u64 {
    (0..len())
        .filter_map(totals_if_any)
        .map(|t| t.alloc_samples.load(Ordering::Relaxed))
        .sum()
}

pub(crate) fn totals_if_any(id: u32) -> Option<&'static Totals> {
    let t = table()?;
    (id < len()).then(|| t.totals(id))
}
