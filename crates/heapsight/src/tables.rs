//! One-time setup of the profiler's tables, the global sample rate, and the counters that make
//! every degradation visible.
//!
//! Setup happens on the first sampled allocation, inside the hook. A thread that finds setup in
//! progress on another thread does not wait: it lets its sample go (counted) and carries on.

use crate::{live, region, stacks};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// Go's `MemProfileRate`: one sample per 512 KiB allocated, on average.
pub const DEFAULT_SAMPLE_RATE: usize = 512 * 1024;

pub(crate) static SAMPLE_RATE: AtomicUsize = AtomicUsize::new(DEFAULT_SAMPLE_RATE);

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;
static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static RESERVED: AtomicUsize = AtomicUsize::new(0);

/// Whether the tables exist, setting them up if nobody has tried yet.
pub(crate) fn ready() -> bool {
    match STATE.load(Ordering::Acquire) {
        READY => true,
        UNINIT => {
            if STATE
                .compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Acquire)
                .is_err()
            {
                return STATE.load(Ordering::Acquire) == READY;
            }
            let reserved = stacks::init().and_then(|s| Some(s + live::init()? + region::init()?));
            RESERVED.store(reserved.unwrap_or(0), Ordering::Relaxed);
            let done = if reserved.is_some() { READY } else { FAILED };
            STATE.store(done, Ordering::Release);
            done == READY
        }
        _ => false,
    }
}

/// As [`ready`], but waits while another thread sets the tables up. Only for callers outside
/// the hook (which must never wait): unit tests that need the tables.
#[cfg(test)]
pub(crate) fn ready_or_wait() -> bool {
    loop {
        if ready() {
            return true;
        }
        if STATE.load(Ordering::Acquire) != BUSY {
            return false;
        }
        std::thread::yield_now();
    }
}

/// Why a sample was not recorded. Each has a counter in [`crate::Stats`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Loss {
    /// The tables were being set up by another thread, or could not be mapped.
    NoTables = 0,
    /// The stack table reached its capacity of distinct stacks or frames.
    StackTableFull = 1,
    /// The sampled-block region's span for this size class is used up.
    RegionFull = 2,
    /// The large-sample table is full.
    LargeTableFull = 3,
}

static DROPS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];
pub(crate) static TRUNCATED_STACKS: AtomicU64 = AtomicU64::new(0);

/// A stack this short almost never comes from a program built with frame pointers: `main` alone
/// sits under the standard library's start-up frames, and every thread under its start routine.
pub(crate) const SHALLOW_DEPTH: usize = 3;

/// Samples the DWARF unwinder left to the frame-pointer walk: every one of its caches was in use.
pub(crate) static DWARF_FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// Samples recorded with [`SHALLOW_DEPTH`] frames or fewer. Only such samples touch it.
pub(crate) static SHALLOW_SAMPLES: AtomicU64 = AtomicU64::new(0);

pub(crate) fn count_drop(why: Loss) {
    DROPS[why as usize].fetch_add(1, Ordering::Relaxed);
}

/// What the profiler holds and what it had to let go, as returned by [`crate::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The current sample rate (mean bytes between samples; 0 is off).
    pub sample_rate: usize,
    /// Distinct stacks recorded so far.
    pub stacks: usize,
    /// How many distinct stacks the table holds before new ones are dropped.
    pub stack_capacity: usize,
    /// Resident bytes of the stack table's entries and frames (grows with distinct stacks).
    pub stack_table_bytes: usize,
    /// Bytes of sampled-block slots ever carved from the region (reused after frees).
    pub sampled_block_bytes: usize,
    /// Address space reserved for all tables; only touched pages are resident.
    pub reserved_bytes: usize,
    /// Samples lost because the tables were not there yet, or could not be mapped (for instance
    /// when the sampled-block region's address window is taken).
    pub dropped_no_tables: u64,
    /// Samples lost because the stack table was full.
    pub dropped_stack_table_full: u64,
    /// Samples lost because a size class of the sampled-block region was full.
    pub dropped_region_full: u64,
    /// Samples lost because the large-sample table was full.
    pub dropped_large_table_full: u64,
    /// Samples whose stack was deeper than the unwinder keeps (leaf frames are kept).
    pub truncated_stacks: u64,
    /// Samples that [`crate::Unwinder::Dwarf`] left to the frame-pointer walk, because as many
    /// threads were unwinding at once as it has caches (16).
    pub dwarf_fallbacks: u64,
    /// Samples recorded so far.
    pub samples: u64,
    /// Of those, samples whose stack had three frames or fewer: most of them means the unwinder
    /// cannot walk this binary's stacks (see [`Stats::short_stacks`]).
    pub shallow_samples: u64,
    /// Label sets interned (see [`crate::Labels`]), out of [`crate::labels::MAX_LABEL_SETS`].
    pub label_sets: usize,
    /// New label sets recorded as `other` because the label table was full.
    pub label_sets_overflowed: u64,
    /// The profiler's own memory, by part (see [`crate::own`]).
    pub own: crate::own::OwnMemory,
}

/// What [`Stats::short_stacks`] says, and the index page, the UI and the profiles' comments with it.
pub const SHORT_STACKS: &str = "most recorded stacks are 3 frames or fewer: this binary was \
     probably built without frame pointers, which heapsight's unwinder walks. Build with \
     RUSTFLAGS=\"-C force-frame-pointers=yes\" (or `rustflags` in .cargo/config.toml), or enable \
     heapsight's `dwarf-unwind` feature and call \
     heapsight::set_unwinder(heapsight::Unwinder::Dwarf) at start-up";

impl Stats {
    /// Whether stacks come out short, with what to do about it: `Some` once at least 16 samples
    /// are recorded and more than half of them have three frames or fewer.
    ///
    /// ```
    /// #[global_allocator]
    /// static GLOBAL: heapsight::Sampler<std::alloc::System> =
    ///     heapsight::Sampler::new(std::alloc::System);
    ///
    /// // Built with frame pointers (this workspace's .cargo/config.toml): stacks are whole.
    /// heapsight::set_sample_rate(1);
    /// let kept: Vec<Vec<u8>> = (0..100).map(|i| vec![0; 100 + i]).collect();
    /// let stats = heapsight::stats();
    /// assert!(stats.samples >= 100);
    /// assert_eq!(stats.short_stacks(), None, "{stats:?}");
    /// # drop(kept);
    /// ```
    pub fn short_stacks(&self) -> Option<&'static str> {
        (self.samples >= 16 && self.shallow_samples * 2 > self.samples).then_some(SHORT_STACKS)
    }

    /// All samples that were drawn but not recorded, whatever the reason.
    pub fn dropped_samples(&self) -> u64 {
        self.dropped_no_tables
            + self.dropped_stack_table_full
            + self.dropped_region_full
            + self.dropped_large_table_full
    }
}

/// The profiler's own footprint and losses so far.
///
/// ```
/// let stats = heapsight::stats();
/// assert_eq!(stats.stack_capacity, 1 << 18);
/// assert_eq!(stats.dropped_samples(), 0);
/// ```
pub fn stats() -> Stats {
    let d = |w: Loss| DROPS[w as usize].load(Ordering::Relaxed);
    let labels = crate::labels::table_counts();
    Stats {
        sample_rate: SAMPLE_RATE.load(Ordering::Relaxed),
        stacks: stacks::len() as usize,
        stack_capacity: stacks::MAX_STACKS,
        stack_table_bytes: stacks::bytes_used(),
        sampled_block_bytes: region::slots_ever_used_bytes(),
        reserved_bytes: RESERVED.load(Ordering::Relaxed),
        dropped_no_tables: d(Loss::NoTables),
        dropped_stack_table_full: d(Loss::StackTableFull),
        dropped_region_full: d(Loss::RegionFull),
        dropped_large_table_full: d(Loss::LargeTableFull),
        truncated_stacks: TRUNCATED_STACKS.load(Ordering::Relaxed),
        dwarf_fallbacks: DWARF_FALLBACKS.load(Ordering::Relaxed),
        samples: stacks::samples(),
        shallow_samples: SHALLOW_SAMPLES.load(Ordering::Relaxed),
        label_sets: labels.0,
        label_sets_overflowed: labels.1,
        own: crate::own::memory(),
    }
}

/// Resident bytes of the hook's mapped tables: the stack table, the large-sample table and the
/// sampled slots' records (not the sampled blocks themselves, which are the service's).
pub(crate) fn resident_bytes() -> usize {
    if STATE.load(Ordering::Acquire) != READY {
        return 0;
    }
    stacks::resident_bytes() + live::resident_bytes() + region::meta_bytes()
}
