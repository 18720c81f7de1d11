//! Snapshots: a cheap copy of every stack's running totals at one moment.
//!
//! Taking one reads a handful of counters per stack and copies no frames (stacks are immutable
//! and named by id), so a server can take one every few seconds and keep many. Because totals
//! only grow, the difference of two snapshots ([`Snapshot::delta`]) is itself a snapshot: what
//! was allocated and freed in between. A snapshot carries the store its stack ids belong to
//! ([`StackFrames`]): the sampler's stack table for [`snapshot()`], a source's own
//! [`crate::StackStore`] for other profilers. Symbols are looked up later, by whoever turns the
//! snapshot into a profile.

use crate::poisson::{self, WEIGHT_ONE};
use crate::{clock, labels, live, own, region, stacks};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A stack in a [`StackFrames`] store. The sampler's ids are stable for the life of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StackId(pub(crate) u32);

impl StackId {
    /// The id as a number, for keys in maps and JSON.
    pub fn as_u32(self) -> u32 {
        self.0
    }

    /// The id [`StackId::as_u32`] gave, for whoever stores snapshots and reads them back.
    pub fn from_u32(id: u32) -> StackId {
        StackId(id)
    }
}

/// Where the frames of a snapshot's stacks are kept.
pub trait StackFrames: Send + Sync {
    /// The return addresses of stack `id`, leaf first; empty for an id the store does not hold.
    fn frames(&self, id: StackId) -> Vec<u64>;

    /// The labels stack `id` was recorded under (see [`crate::Labels`]), sorted by key; empty
    /// for none, and for stores whose source has no labels.
    fn labels(&self, id: StackId) -> Vec<(String, String)> {
        let _ = id;
        Vec::new()
    }
}

/// The sampler's own stack table, which [`snapshot()`]'s stack ids name.
#[derive(Clone, Copy, Debug, Default)]
pub struct SamplerStacks;

impl StackFrames for SamplerStacks {
    fn frames(&self, id: StackId) -> Vec<u64> {
        let mut frames: Vec<u64> = stacks::with_frames(id.0, |it| it.map(|a| a as u64).collect());
        // A label set's frame is not code: it comes out as the stack's labels instead.
        if frames
            .last()
            .is_some_and(|&f| labels::labels_of_frame(f as usize).is_some())
        {
            frames.pop();
        }
        frames
    }

    fn labels(&self, id: StackId) -> Vec<(String, String)> {
        stacks::last_frame(id.0)
            .and_then(labels::labels_of_frame)
            .map_or_else(Vec::new, labels::label_pairs)
    }
}

/// One object in the fixed-point object counts of [`StackTotals`] (`alloc_objects_fx`,
/// `free_objects_fx`): estimates are fractional, and keeping the fraction lets frees cancel
/// allocations exactly.
pub const OBJECT_UNIT: u64 = WEIGHT_ONE;

/// One stack's totals in a snapshot: estimates (weighted) and raw sample counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackTotals {
    /// Estimated objects allocated, in [`OBJECT_UNIT`]s.
    pub alloc_objects_fx: u64,
    /// Estimated bytes allocated.
    pub alloc_space: u64,
    /// Estimated objects freed, in [`OBJECT_UNIT`]s.
    pub free_objects_fx: u64,
    /// Estimated bytes freed.
    pub free_space: u64,
    /// Sampled allocations, unweighted.
    pub alloc_samples: u64,
    /// Bytes of sampled allocations, unweighted.
    pub alloc_sample_bytes: u64,
    /// Sampled allocations since freed, unweighted.
    pub free_samples: u64,
    /// Bytes of sampled allocations since freed, unweighted.
    pub free_sample_bytes: u64,
}

impl StackTotals {
    /// Estimated objects allocated.
    pub fn alloc_objects(&self) -> i64 {
        fx_to_count(self.alloc_objects_fx)
    }
    /// Estimated objects allocated and not yet freed (negative in a delta where frees win).
    pub fn inuse_objects(&self) -> i64 {
        fx_to_count(self.alloc_objects_fx) - fx_to_count(self.free_objects_fx)
    }
    /// Estimated bytes allocated and not yet freed (negative in a delta where frees win).
    pub fn inuse_space(&self) -> i64 {
        self.alloc_space as i64 - self.free_space as i64
    }
    /// Estimated bytes allocated.
    pub fn alloc_space(&self) -> i64 {
        self.alloc_space as i64
    }
    /// Sampled allocations not yet freed.
    pub fn inuse_samples(&self) -> i64 {
        self.alloc_samples as i64 - self.free_samples as i64
    }
    /// Bytes of sampled allocations not yet freed.
    pub fn inuse_sample_bytes(&self) -> i64 {
        self.alloc_sample_bytes as i64 - self.free_sample_bytes as i64
    }

    fn is_zero(&self) -> bool {
        *self == StackTotals::default()
    }

    fn minus(&self, base: &StackTotals) -> StackTotals {
        StackTotals {
            alloc_objects_fx: self.alloc_objects_fx.saturating_sub(base.alloc_objects_fx),
            alloc_space: self.alloc_space.saturating_sub(base.alloc_space),
            free_objects_fx: self.free_objects_fx.saturating_sub(base.free_objects_fx),
            free_space: self.free_space.saturating_sub(base.free_space),
            alloc_samples: self.alloc_samples.saturating_sub(base.alloc_samples),
            alloc_sample_bytes: self
                .alloc_sample_bytes
                .saturating_sub(base.alloc_sample_bytes),
            free_samples: self.free_samples.saturating_sub(base.free_samples),
            free_sample_bytes: self
                .free_sample_bytes
                .saturating_sub(base.free_sample_bytes),
        }
    }
}

fn fx_to_count(fx: u64) -> i64 {
    ((fx + WEIGHT_ONE / 2) / WEIGHT_ONE) as i64
}

/// A sampled block still in use when a snapshot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveBlock {
    pub stack: StackId,
    /// When it was allocated, to the hook's coarse clock: within about 20 ms (10 ms ticks of a
    /// clock that itself advances every few milliseconds). Blocks older than 248 days come out
    /// younger than they are.
    pub allocated: SystemTime,
    /// Its size in bytes.
    pub size: u64,
    /// Its weight: the objects it stands for, in [`OBJECT_UNIT`]s.
    pub weight_fx: u64,
}

impl LiveBlock {
    /// The bytes it stands for in the estimates.
    pub fn space(&self) -> u64 {
        poisson::weighted_bytes(self.size, self.weight_fx)
    }
}

/// Every stack's totals at one moment (or, for a delta, over one interval).
#[derive(Clone)]
pub struct Snapshot {
    /// When it was taken (for a delta: when the interval ended).
    pub time: SystemTime,
    /// For a delta, the interval's length.
    pub duration: Option<Duration>,
    /// The sample rate when it was taken.
    pub sample_rate: usize,
    /// Stacks with any sample, sorted by id.
    pub stacks: Vec<(StackId, StackTotals)>,
    /// The sampled blocks in use, with when each was allocated, sorted by stack and then by
    /// time; empty from a source that does not know (and in the server's history, which keeps
    /// totals only).
    pub blocks: Vec<LiveBlock>,
    /// The store the ids of `stacks` belong to.
    pub frames: Arc<dyn StackFrames>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("time", &self.time)
            .field("duration", &self.duration)
            .field("sample_rate", &self.sample_rate)
            .field("stacks", &self.stacks)
            .field("blocks", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

/// Copies every stack's running totals from the sampler's tables, and the sampled blocks in use
/// with their allocation times. Cheap: no symbols, no frames, no locks; it reads the records of
/// as many blocks as were ever sampled and live at once (a few thousand at the default rate).
///
/// ```
/// #[global_allocator]
/// static GLOBAL: heapsight::Sampler<std::alloc::System> =
///     heapsight::Sampler::new(std::alloc::System);
///
/// heapsight::set_sample_rate(1);
/// let before = heapsight::snapshot();
/// let kept = vec![0u8; 1 << 20];
/// let after = heapsight::snapshot();
/// let delta = after.delta(&before);
/// assert!(delta.duration.is_some());
/// // The one megabyte still held, on the stack that allocated it.
/// let grown = delta.stacks.iter().find(|(_, t)| t.inuse_space() >= 1 << 20);
/// let (id, _) = grown.expect("the vector's stack");
/// assert!(!delta.frames.frames(*id).is_empty());
/// # drop(kept);
/// ```
///
/// The profiler's own allocations (see [`crate::own`]) are left out; [`snapshot_with_own`]
/// keeps them.
pub fn snapshot() -> Snapshot {
    take(false)
}

/// As [`snapshot`], with the profiler's own allocations too, each on a stack whose outermost
/// frame names its part (`heapsight::own::symbolizer`, ...).
pub fn snapshot_with_own() -> Snapshot {
    take(true)
}

fn take(with_own: bool) -> Snapshot {
    let n = stacks::len();
    let mut out = Vec::new();
    let mut own_stacks = Vec::new();
    for id in 0..n {
        let t = stacks::totals_if_any(id);
        let Some(t) = t else { continue };
        if !with_own
            && t.alloc_samples.load(Ordering::Relaxed) > 0
            && own::part_of_stack(id).is_some()
        {
            own_stacks.push(id);
            continue;
        }
        // Acquire pairs with the Release in the sampler: frames are visible once a count is.
        let totals = StackTotals {
            alloc_samples: t.alloc_samples.load(Ordering::Acquire),
            alloc_objects_fx: t.alloc_objects_fx.load(Ordering::Relaxed),
            alloc_space: t.alloc_space.load(Ordering::Relaxed),
            free_objects_fx: t.free_objects_fx.load(Ordering::Relaxed),
            free_space: t.free_space.load(Ordering::Relaxed),
            alloc_sample_bytes: t.alloc_sample_bytes.load(Ordering::Relaxed),
            free_samples: t.free_samples.load(Ordering::Relaxed),
            free_sample_bytes: t.free_sample_bytes.load(Ordering::Relaxed),
        };
        if totals.alloc_samples > 0 {
            out.push((StackId(id), totals));
        }
    }
    let epoch = clock::Epoch::now();
    let mut blocks = Vec::new();
    region::live_slots(|stack, size, weight_fx, at| {
        blocks.push(LiveBlock {
            stack: StackId(stack),
            allocated: epoch.time_of(at),
            size: size as u64,
            weight_fx,
        })
    });
    live::each(|s| {
        blocks.push(LiveBlock {
            stack: StackId(s.stack),
            allocated: epoch.time_of(s.allocated),
            size: s.size,
            weight_fx: s.weight_fx,
        })
    });
    if !own_stacks.is_empty() {
        blocks.retain(|b| own_stacks.binary_search(&b.stack.0).is_err());
    }
    blocks.sort_unstable_by_key(|b| (b.stack, b.allocated));
    Snapshot {
        time: SystemTime::now(),
        duration: None,
        sample_rate: crate::sample_rate(),
        stacks: out,
        blocks,
        frames: Arc::new(SamplerStacks),
    }
}

impl Snapshot {
    /// What happened between `base` and `self`: allocations and frees in the interval, per stack.
    /// In-use values of the result may be negative (more freed than allocated). Its blocks are
    /// those allocated in the interval and still in use at its end.
    pub fn delta(&self, base: &Snapshot) -> Snapshot {
        let mut out = Vec::with_capacity(self.stacks.len());
        let mut b = base.stacks.iter().peekable();
        for (id, totals) in &self.stacks {
            while b.next_if(|(bid, _)| bid < id).is_some() {}
            let d = match b.next_if(|(bid, _)| bid == id) {
                Some((_, bt)) => totals.minus(bt),
                None => *totals,
            };
            if !d.is_zero() {
                out.push((*id, d));
            }
        }
        Snapshot {
            time: self.time,
            duration: Some(self.time.duration_since(base.time).unwrap_or_default()),
            sample_rate: self.sample_rate,
            stacks: out,
            blocks: self.blocks_between(base.time, self.time).collect(),
            frames: self.frames.clone(),
        }
    }

    fn blocks_between(
        &self,
        since: SystemTime,
        until: SystemTime,
    ) -> impl Iterator<Item = LiveBlock> + '_ {
        self.blocks
            .iter()
            .filter(move |b| b.allocated >= since && b.allocated <= until)
            .copied()
    }

    /// The heap retained since `since`: the blocks allocated at or after it and still in use,
    /// as a snapshot of their stacks' totals (allocated = in use, nothing freed). Empty when the
    /// snapshot has no blocks. This is the leak view: a leak's blocks stay, churn's are gone.
    ///
    /// ```
    /// #[global_allocator]
    /// static GLOBAL: heapsight::Sampler<std::alloc::System> =
    ///     heapsight::Sampler::new(std::alloc::System);
    ///
    /// use std::time::{Duration, SystemTime};
    /// heapsight::set_sample_rate(1);
    /// let old = vec![1u8; 1 << 20];
    /// std::thread::sleep(Duration::from_millis(200));
    /// // Allocation times are to within a tick or two of the coarse clock: leave a margin.
    /// let since = SystemTime::now() - Duration::from_millis(50);
    /// let new = vec![2u8; 1 << 20];
    /// let retained = heapsight::snapshot().retained_since(since);
    /// // The megabyte allocated after `since` is there; the one before is not.
    /// assert!((1 << 20..2 << 20).contains(&retained.inuse_space()));
    /// # drop((old, new));
    /// ```
    pub fn retained_since(&self, since: SystemTime) -> Snapshot {
        self.retained_between(since, self.time)
    }

    /// The blocks allocated from `since` to `until` (both included) and still in use, as
    /// [`Snapshot::retained_since`] gives them.
    pub fn retained_between(&self, since: SystemTime, until: SystemTime) -> Snapshot {
        let mut stacks: Vec<(StackId, StackTotals)> = Vec::new();
        for b in self.blocks_between(since, until) {
            if stacks.last().map(|(id, _)| *id) != Some(b.stack) {
                stacks.push((b.stack, StackTotals::default()));
            }
            let (_, t) = stacks.last_mut().expect("pushed above");
            t.alloc_objects_fx += b.weight_fx;
            t.alloc_space += b.space();
            t.alloc_samples += 1;
            t.alloc_sample_bytes += b.size;
        }
        Snapshot {
            time: self.time,
            duration: Some(self.time.duration_since(since).unwrap_or_default()),
            sample_rate: self.sample_rate,
            stacks,
            blocks: self.blocks_between(since, until).collect(),
            frames: self.frames.clone(),
        }
    }

    /// Whether its source records allocation times: false when it has samples in use but no
    /// blocks (a source other than the sampler, or the server's history).
    pub fn has_ages(&self) -> bool {
        !self.blocks.is_empty() || self.stacks.iter().all(|(_, t)| t.inuse_samples() <= 0)
    }

    /// The estimated bytes in use over all stacks.
    pub fn inuse_space(&self) -> i64 {
        self.stacks.iter().map(|(_, t)| t.inuse_space()).sum()
    }

    /// The estimated bytes allocated over all stacks.
    pub fn alloc_space(&self) -> i64 {
        self.stacks.iter().map(|(_, t)| t.alloc_space()).sum()
    }

    /// The estimated bytes in use over the stacks recorded under exactly `labels`
    /// ([`crate::Labels::NONE`]: under no labels). It looks each stack's labels up, so it is
    /// for tests and tools, not for a hot loop.
    pub fn inuse_space_under(&self, labels: crate::Labels) -> i64 {
        let want = labels.pairs();
        self.stacks
            .iter()
            .filter(|(id, _)| self.frames.labels(*id) == want)
            .map(|(_, t)| t.inuse_space())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(alloc: u64, free: u64) -> StackTotals {
        StackTotals {
            alloc_objects_fx: alloc * WEIGHT_ONE,
            alloc_space: alloc * 100,
            free_objects_fx: free * WEIGHT_ONE,
            free_space: free * 100,
            alloc_samples: alloc,
            alloc_sample_bytes: alloc * 100,
            free_samples: free,
            free_sample_bytes: free * 100,
        }
    }

    fn snap(secs: u64, stacks: Vec<(u32, StackTotals)>) -> Snapshot {
        Snapshot {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            duration: None,
            sample_rate: 1,
            stacks: stacks.into_iter().map(|(id, t)| (StackId(id), t)).collect(),
            blocks: Vec::new(),
            frames: Arc::new(SamplerStacks),
        }
    }

    #[test]
    fn delta_subtracts_per_stack_and_keeps_new_stacks() {
        let base = snap(
            10,
            vec![(1, totals(5, 1)), (2, totals(3, 3)), (4, totals(1, 0))],
        );
        let now = snap(
            25,
            vec![
                (1, totals(9, 2)),
                (2, totals(3, 3)),
                (3, totals(2, 0)),
                (4, totals(1, 1)),
            ],
        );
        let d = now.delta(&base);
        assert_eq!(d.duration, Some(Duration::from_secs(15)));
        let ids: Vec<u32> = d.stacks.iter().map(|(id, _)| id.0).collect();
        assert_eq!(ids, vec![1, 3, 4], "unchanged stack 2 is left out");
        assert_eq!(d.stacks[0].1.alloc_objects(), 4);
        assert_eq!(d.stacks[0].1.inuse_objects(), 3);
        assert_eq!(d.stacks[1].1.inuse_space(), 200);
        assert_eq!(
            d.stacks[2].1.inuse_space(),
            -100,
            "a free of an older block is negative"
        );
        assert_eq!(d.inuse_space(), 300 + 200 - 100);
    }
}
