//! The profiler's own memory: what heapsight holds for itself, by part, kept apart from the
//! service's heap and still measured.
//!
//! Work the profiler does for itself (symbolizing, keeping the snapshot history, answering
//! requests) runs inside [`run`] with the [`Part`] it belongs to. Its allocations are sampled all
//! the same, at [`OWN_SAMPLE_RATE`] (finer than the service's default, so that a few megabytes
//! are estimated to a few percent), and each such sample's stack gets one more outermost frame:
//! the address of its part's marker function, so that a profile that includes them names the
//! part at the root, as `heapsight::own::symbolizer`. [`crate::snapshot`] leaves these stacks
//! out; [`crate::snapshot_with_own`] keeps them; [`crate::stats`] sums them by part.
//!
//! The hook's own tables are not heap: they are counted exactly, as the pages the kernel has
//! made resident for them.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: heapsight::Sampler<std::alloc::System> =
//!     heapsight::Sampler::new(std::alloc::System);
//!
//! use heapsight::own::{self, Part};
//! let before = heapsight::stats().own.history;
//! // 8 MiB that the profiler keeps for its history: not the service's heap, but counted.
//! let kept: Vec<Vec<u8>> = own::run(Part::History, || (0..128).map(|_| vec![1u8; 64 << 10]).collect());
//! let held = heapsight::stats().own.history - before;
//! assert!((6 << 20..10 << 20).contains(&held), "{held} bytes");
//! let in_profile = heapsight::snapshot().inuse_space();
//! assert!(in_profile < 4 << 20, "the service's heap leaves it out: {in_profile}");
//! # drop(kept);
//! ```

use std::hint::black_box;

/// Mean bytes between samples of the profiler's own allocations (while the service's sampling
/// is on; off, they are not sampled either).
pub const OWN_SAMPLE_RATE: usize = 64 << 10;

/// What part of the profiler an allocation belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Part {
    /// The hook's tables (stacks, sampled blocks) and the unwinder's.
    Tables = 1,
    /// Debug info opened to name frames, and the names found.
    Symbolizer = 2,
    /// The snapshot history.
    History = 3,
    /// Answering requests: the server's runtime and connections, profiles being built.
    Requests = 4,
    /// A CPU profile being collected.
    CpuProfile = 5,
}

impl Part {
    pub const ALL: [Part; 5] = [
        Part::Tables,
        Part::Symbolizer,
        Part::History,
        Part::Requests,
        Part::CpuProfile,
    ];

    fn from_u8(v: u8) -> Option<Part> {
        Part::ALL.into_iter().find(|p| *p as u8 == v)
    }

    /// A word for people: `"symbolizer"`.
    pub fn name(self) -> &'static str {
        match self {
            Part::Tables => "tables",
            Part::Symbolizer => "symbolizer",
            Part::History => "history",
            Part::Requests => "requests",
            Part::CpuProfile => "cpu profile",
        }
    }
}

/// Runs `f` with the calling thread's allocations counted as the profiler's own, of `part`.
/// Nested calls take the innermost part.
pub fn run<R>(part: Part, f: impl FnOnce() -> R) -> R {
    struct Leave(u8);
    impl Drop for Leave {
        fn drop(&mut self) {
            crate::sampler::leave_own(self.0);
        }
    }
    let _leave = Leave(crate::sampler::enter_own(part as u8));
    f()
}

/// Runs `f` as the profiler's own work: in the part the thread is already in, or in `part`.
pub fn run_or<R>(part: Part, f: impl FnOnce() -> R) -> R {
    match current() {
        Some(p) => run(p, f),
        None => run(part, f),
    }
}

/// The part the calling thread is working in, if any.
pub fn current() -> Option<Part> {
    Part::from_u8(crate::sampler::own_part())
}

/// Gives free pages back to the kernel after the profiler let go of a large working set (debug
/// info, a profile being built): those the C allocator holds (glibc's `malloc_trim`; nothing
/// with other C libraries), and those of the sampled-block region's freed slots of 16 KiB and
/// more. Both keep freed memory for reuse, so without this the process's resident memory stays
/// at its peak.
pub fn return_freed_memory() {
    crate::region::release_free_slots();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of glibc's own arenas; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The profiler's own memory by part, in bytes, as [`crate::Stats::own`] reports it. Heap
/// parts are estimates from their samples; `tables` is exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OwnMemory {
    /// Resident pages of the hook's mapped tables, plus the heap the unwinder's tables take.
    pub tables: u64,
    pub symbolizer: u64,
    pub history: u64,
    pub requests: u64,
    /// A CPU profile's table while one is collected (exact, as `tables`), and the heap of
    /// building its profile.
    pub cpu_profile: u64,
}

impl OwnMemory {
    /// All parts together.
    pub fn total(&self) -> u64 {
        self.tables + self.symbolizer + self.history + self.requests + self.cpu_profile
    }

    /// `(part, bytes)` for every part.
    pub fn parts(&self) -> [(Part, u64); 5] {
        [
            (Part::Tables, self.tables),
            (Part::Symbolizer, self.symbolizer),
            (Part::History, self.history),
            (Part::Requests, self.requests),
            (Part::CpuProfile, self.cpu_profile),
        ]
    }

    pub(crate) fn add(&mut self, part: Part, bytes: u64) {
        let slot = match part {
            Part::Tables => &mut self.tables,
            Part::Symbolizer => &mut self.symbolizer,
            Part::History => &mut self.history,
            Part::Requests => &mut self.requests,
            Part::CpuProfile => &mut self.cpu_profile,
        };
        *slot = slot.saturating_add(bytes);
    }
}

// The marker functions: one per part, never called, only their addresses recorded. Each returns
// a different value, so that no linker folds them into one.
macro_rules! markers {
    ($($name:ident = $value:literal),*) => {
        $(
            #[inline(never)]
            fn $name() -> u8 {
                black_box($value)
            }
        )*
    };
}
markers!(
    tables = 1,
    symbolizer = 2,
    history = 3,
    requests = 4,
    cpu_profile = 5
);

/// The frame recorded outermost for `part` (a raw [`Part`] value): its marker's address plus
/// one, as a return address into it would be, so that symbolizers name the marker.
pub(crate) fn marker_frame(part: u8) -> usize {
    let f: fn() -> u8 = match part {
        1 => tables,
        2 => symbolizer,
        3 => history,
        4 => requests,
        _ => cpu_profile,
    };
    f as usize + 1
}

/// The part whose marker `frame` is, if it is one.
pub(crate) fn part_of_frame(frame: usize) -> Option<Part> {
    Part::ALL
        .into_iter()
        .find(|p| marker_frame(*p as u8) == frame)
}

/// The part whose allocation recorded stack `id`, if the profiler's.
pub(crate) fn part_of_stack(id: u32) -> Option<Part> {
    crate::stacks::last_frame(id).and_then(part_of_frame)
}

/// The profiler's own memory now: heap parts summed from their stacks' in-use estimates, the
/// tables from their resident pages.
pub(crate) fn memory() -> OwnMemory {
    let mut m = OwnMemory::default();
    for id in 0..crate::stacks::len() {
        let Some(t) = crate::stacks::totals_if_any(id) else {
            continue;
        };
        use std::sync::atomic::Ordering::Relaxed;
        if t.alloc_samples.load(Relaxed) == 0 {
            continue;
        }
        if let Some(part) = part_of_stack(id) {
            let held = t
                .alloc_space
                .load(Relaxed)
                .saturating_sub(t.free_space.load(Relaxed));
            m.add(part, held);
        }
    }
    m.add(Part::Tables, crate::tables::resident_bytes() as u64);
    m.add(Part::CpuProfile, crate::cpu::resident_bytes() as u64);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_has_a_marker_of_its_own() {
        let frames: Vec<usize> = Part::ALL.iter().map(|p| marker_frame(*p as u8)).collect();
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(part_of_frame(*f), Some(Part::ALL[i]));
            assert!(!frames[..i].contains(f), "two parts share a marker");
        }
        assert_eq!(part_of_frame(frames[0] + 1), None);
    }
}
