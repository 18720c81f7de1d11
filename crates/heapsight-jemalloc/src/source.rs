//! jemalloc's profile as a [`SnapshotSource`]: each snapshot is a fresh dump, unbiased, with its
//! stacks interned in the source's own [`StackStore`] (none of the sampler's tables is mapped)
//! and its counts turned into running totals.
//!
//! heapsight's totals only grow (allocated, freed), so that any two snapshots subtract. A dump
//! states what is in use now and, with `prof_accum:true`, what was ever allocated. The source
//! keeps each stack's previous state and derives the totals: allocated is the larger of
//! jemalloc's own count and the previous total plus any growth in use; freed is allocated minus
//! in use. Both then never shrink, and in-use is exactly what jemalloc said. Without
//! `prof_accum` "allocated" is only the growth seen between snapshots.

use crate::{ctl, dump};
use heapsight::{
    Snapshot, SnapshotSource, SourceError, StackId, StackStore, StackTotals, OBJECT_UNIT,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// jemalloc's heap profiler, as a source of heapsight snapshots.
///
/// ```no_run
/// use heapsight::SnapshotSource;
/// let source = heapsight_jemalloc::JemallocSource::new();
/// let now = source.snapshot()?;
/// println!("{} bytes in use", now.inuse_space());
/// # Ok::<(), heapsight::SourceError>(())
/// ```
#[derive(Default)]
pub struct JemallocSource {
    running: Mutex<Running>,
}

#[derive(Default)]
struct Running {
    /// Every stack any dump named, for the life of the source.
    store: Arc<StackStore>,
    stacks: HashMap<StackId, Quantities>,
    /// Dumped stacks that found no room in the stack store.
    dropped_stacks: u64,
}

/// The four quantities heapsight keeps per stack: estimated objects (in [`OBJECT_UNIT`]s) and
/// bytes, sampled objects and their bytes.
type Four = [u64; 4];

#[derive(Clone, Copy, Default)]
struct Quantities {
    in_use: Four,
    allocated: Four,
}

impl JemallocSource {
    pub fn new() -> JemallocSource {
        JemallocSource::default()
    }

    /// Dumped stacks left out because the source's stack store was full.
    pub fn dropped_stacks(&self) -> u64 {
        self.lock().dropped_stacks
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A snapshot from a dump's text (what [`ctl::dump`] returns). The dump must come from this
    /// process: its addresses are named with this process's symbols.
    pub fn snapshot_of(&self, text: &[u8]) -> Result<Snapshot, SourceError> {
        advance_all(&mut self.lock(), text)
    }
}

/// Parses a dump and moves every stack's running state on by it. Called with the state locked
/// from before the dump is taken to after it is applied, so that dumps apply in the order taken.
fn advance_all(running: &mut Running, text: &[u8]) -> Result<Snapshot, SourceError> {
    let parsed = dump::parse(text).map_err(|e| SourceError::failed(e.to_string()))?;
    let period = parsed.sample_period;
    let mut now: HashMap<StackId, Quantities> = HashMap::new();
    for stack in &parsed.stacks {
        let Some(id) = running.store.intern(&stack.frames) else {
            running.dropped_stacks += 1;
            continue;
        };
        let q = now.entry(id).or_default();
        add(&mut q.in_use, estimate(stack.in_use, period));
        add(&mut q.allocated, estimate(stack.allocated, period));
    }
    // Stacks seen before and missing now had everything freed (jemalloc leaves them out).
    let mut ids: Vec<StackId> = running.stacks.keys().chain(now.keys()).copied().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut stacks = Vec::with_capacity(ids.len());
    for id in ids {
        let before = running.stacks.get(&id).copied().unwrap_or_default();
        let after = advance(before, now.get(&id).copied().unwrap_or_default());
        running.stacks.insert(id, after);
        let t = totals(after);
        if t.alloc_samples > 0 || t.alloc_space > 0 {
            stacks.push((id, t));
        }
    }
    Ok(Snapshot {
        time: SystemTime::now(),
        duration: None,
        sample_rate: usize::try_from(period).unwrap_or(usize::MAX),
        stacks,
        blocks: Vec::new(),
        frames: running.store.clone(),
    })
}

impl SnapshotSource for JemallocSource {
    fn name(&self) -> &str {
        "jemalloc profiler"
    }

    fn snapshot(&self) -> Result<Snapshot, SourceError> {
        ctl::with_thread_sampling_paused(|| {
            let mut running = self.lock();
            advance_all(&mut running, &ctl::dump()?)
        })
    }

    fn unprofiled(&self, work: &mut dyn FnMut()) {
        ctl::with_thread_sampling_paused(work)
    }
}

/// A dump line's counts as the four quantities, estimates unbiased.
fn estimate(c: dump::Counts, period: u64) -> Four {
    let (objects, bytes) = c.unbiased(period);
    [
        (objects * OBJECT_UNIT as f64).round() as u64,
        bytes.round() as u64,
        c.objects,
        c.bytes,
    ]
}

fn add(to: &mut Four, more: Four) {
    for (t, m) in to.iter_mut().zip(more) {
        *t = t.saturating_add(m);
    }
}

/// A stack's running state after a dump: in use as dumped; allocated grows by any growth in use
/// and never falls below jemalloc's own cumulative count.
fn advance(before: Quantities, dumped: Quantities) -> Quantities {
    let mut after = Quantities {
        in_use: dumped.in_use,
        allocated: before.allocated,
    };
    for i in 0..4 {
        let growth = dumped.in_use[i].saturating_sub(before.in_use[i]);
        after.allocated[i] = before.allocated[i]
            .saturating_add(growth)
            .max(dumped.allocated[i])
            .max(dumped.in_use[i]);
    }
    after
}

fn totals(q: Quantities) -> StackTotals {
    let freed = |i: usize| q.allocated[i] - q.in_use[i].min(q.allocated[i]);
    StackTotals {
        alloc_objects_fx: q.allocated[0],
        alloc_space: q.allocated[1],
        free_objects_fx: freed(0),
        free_space: freed(1),
        alloc_samples: q.allocated[2],
        alloc_sample_bytes: q.allocated[3],
        free_samples: freed(2),
        free_sample_bytes: freed(3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump_text(stacks: &[(u64, u64, u64, u64)]) -> String {
        // (frame, in-use objects, in-use bytes, allocated objects): 64-byte objects.
        let mut s = String::from("heap_v2/1\n  t*: 0: 0 [0: 0]\n");
        for &(frame, objects, bytes, allocated) in stacks {
            s += &format!(
                "@ {frame:#x}\n  t*: {objects}: {bytes} [{allocated}: {}]\n",
                allocated * 64
            );
        }
        s + "\nMAPPED_LIBRARIES:\n"
    }

    fn inuse(s: &Snapshot) -> i64 {
        s.inuse_space()
    }

    #[test]
    fn totals_only_grow_and_in_use_is_what_jemalloc_said() {
        let source = JemallocSource::new();
        // At period 1 every object is sampled: estimates equal the counts.
        let a = source
            .snapshot_of(dump_text(&[(0x1000, 10, 640, 0), (0x2000, 5, 320, 0)]).as_bytes())
            .unwrap();
        assert_eq!(inuse(&a), 960);
        assert_eq!(a.alloc_space(), 960, "without prof_accum: growth seen");
        // Stack 0x2000 freed everything (jemalloc leaves it out); 0x1000 grew.
        let b = source
            .snapshot_of(dump_text(&[(0x1000, 12, 768, 0)]).as_bytes())
            .unwrap();
        assert_eq!(inuse(&b), 768);
        assert_eq!(b.alloc_space(), 960 + 128);
        let d = b.delta(&a);
        assert_eq!(d.inuse_space(), 768 - 960, "the delta sees the frees");
        assert_eq!(d.alloc_space(), 128);
        for ((ia, ta), (ib, tb)) in a.stacks.iter().zip(&b.stacks) {
            assert_eq!(ia, ib);
            assert!(tb.alloc_space >= ta.alloc_space && tb.free_space >= ta.free_space);
        }
    }

    #[test]
    fn with_prof_accum_allocated_is_jemallocs_cumulative_count() {
        let source = JemallocSource::new();
        let a = source
            .snapshot_of(dump_text(&[(0x3000, 2, 128, 100)]).as_bytes())
            .unwrap();
        assert_eq!(a.alloc_space(), 6400);
        assert_eq!(a.inuse_space(), 128);
        assert_eq!(a.stacks[0].1.inuse_objects(), 2);
        assert_eq!(a.stacks[0].1.alloc_objects(), 100);
    }

    #[test]
    fn a_malformed_dump_is_an_error_that_says_so() {
        let e = JemallocSource::new()
            .snapshot_of(b"heap_v2/512\n  t*: 1: 8 [0: 0]\n")
            .unwrap_err();
        assert_eq!(e.kind, heapsight::SourceErrorKind::Failed);
        assert!(e.message.contains("malformed"), "{e}");
    }
}
