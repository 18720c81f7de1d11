//! Snapshot history: a snapshot of the heap every `interval`, kept for `capacity` snapshots and
//! at most `max_bytes` of memory, oldest dropped first. The web UI's timeline and growth views
//! read it.
//!
//! Snapshots are cheap (counters, no symbols), and they are taken on a thread of the history's
//! own, so a busy or stalled async runtime does not leave gaps. They are kept packed
//! ([`crate::packed`]): an entry costs what changed since the next one, so an hour of a large
//! service fits the default bound.

use crate::packed::{Packed, KEY_EVERY};
use heapsight::{Snapshot, SnapshotSource};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

/// Default: one snapshot every 10 s for an hour.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_CAPACITY: usize = 360;
pub const DEFAULT_MAX_BYTES: usize = 4 << 20;

/// One snapshot's totals over all stacks, for the timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) id: u64,
    pub(crate) time: SystemTime,
    pub(crate) inuse_space: i64,
    pub(crate) inuse_objects: i64,
    pub(crate) alloc_space: i64,
    pub(crate) alloc_objects: i64,
}

impl Summary {
    fn of(id: u64, s: &Snapshot) -> Summary {
        let sum = |f: fn(&heapsight::StackTotals) -> i64| s.stacks.iter().map(|(_, t)| f(t)).sum();
        Summary {
            id,
            time: s.time,
            inuse_space: sum(|t| t.inuse_space()),
            inuse_objects: sum(|t| t.inuse_objects()),
            alloc_space: sum(|t| t.alloc_space()),
            alloc_objects: sum(|t| t.alloc_objects()),
        }
    }
}

/// A snapshot in the history: packed (see [`crate::packed`]), except the newest, which later
/// entries' deltas are made against and which is kept whole in [`Inner::newest`].
struct Entry {
    summary: Summary,
    packed: Option<Packed>,
}

pub(crate) struct History {
    source: Arc<dyn SnapshotSource>,
    pub(crate) interval: Duration,
    pub(crate) capacity: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: VecDeque<Entry>,
    /// The newest snapshot, whole (without its blocks: the history keeps totals only).
    newest: Option<Arc<Snapshot>>,
    bytes: usize,
    next_id: u64,
    /// Why the last snapshot could not be taken, if it could not.
    last_error: Option<String>,
}

fn whole_size(s: &Snapshot) -> usize {
    std::mem::size_of::<Snapshot>()
        + s.stacks.len() * std::mem::size_of::<(heapsight::StackId, heapsight::StackTotals)>()
}

fn entry_size(e: &Entry) -> usize {
    std::mem::size_of::<Entry>() + e.packed.as_ref().map_or(0, Packed::size)
}

impl History {
    /// A history that records on a thread of its own until the last handle is dropped.
    pub(crate) fn start(
        source: Arc<dyn SnapshotSource>,
        interval: Duration,
        capacity: usize,
        max_bytes: usize,
    ) -> Arc<History> {
        let h = Arc::new(History {
            source,
            interval,
            capacity: capacity.max(2),
            max_bytes,
            inner: Mutex::new(Inner {
                entries: VecDeque::new(),
                newest: None,
                bytes: 0,
                next_id: 1,
                last_error: None,
            }),
        });
        let first = h.clone();
        crate::worker::run(move || first.record());
        let weak: Weak<History> = Arc::downgrade(&h);
        // The thread keeps time; the snapshots are taken and packed on the profiler's worker,
        // with the rest of its work (see `worker`).
        let _ = std::thread::Builder::new()
            .name("heapsight-history".into())
            .spawn(move || {
                heapsight::own::run(heapsight::own::Part::History, || loop {
                    std::thread::sleep(interval);
                    match weak.upgrade() {
                        Some(h) => {
                            crate::worker::run(move || h.record());
                        }
                        None => return,
                    }
                })
            });
        h
    }

    /// Takes a snapshot now and adds it, dropping the oldest beyond the bounds. If the source
    /// fails, nothing is added and the error is kept for [`History::last_error`].
    ///
    /// The history is the profiler's memory, not the service's: the snapshot and its place in
    /// the history are allocated with the source's sampling paused.
    pub(crate) fn record(&self) -> Option<u64> {
        let mut id = None;
        heapsight::own::run(heapsight::own::Part::History, || {
            self.source
                .unprofiled(&mut || id = self.record_unprofiled())
        });
        id
    }

    fn record_unprofiled(&self) -> Option<u64> {
        let taken = self.source.snapshot();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut snapshot = match taken {
            Ok(s) => s,
            Err(e) => {
                inner.last_error = Some(e.message);
                return None;
            }
        };
        inner.last_error = None;
        snapshot.blocks = Vec::new();
        let id = inner.next_id;
        inner.next_id += 1;
        // The newest so far becomes a packed entry: whole now and then, else a delta against
        // the snapshot just taken.
        if let (Some(prev), Some(last)) = (inner.newest.take(), inner.entries.back_mut()) {
            let packed = if last.summary.id % KEY_EVERY == 0 {
                Packed::whole(&prev)
            } else {
                Packed::delta(&prev, &snapshot)
            };
            inner.bytes -= whole_size(&prev) + entry_size(last);
            last.packed = Some(packed);
            inner.bytes += entry_size(last);
        }
        let entry = Entry {
            summary: Summary::of(id, &snapshot),
            packed: None,
        };
        inner.bytes += entry_size(&entry) + whole_size(&snapshot);
        inner.entries.push_back(entry);
        inner.newest = Some(Arc::new(snapshot));
        while inner.entries.len() > self.capacity
            || (inner.bytes > self.max_bytes && inner.entries.len() > 1)
        {
            if let Some(old) = inner.entries.pop_front() {
                inner.bytes -= entry_size(&old);
            }
        }
        Some(id)
    }

    /// Why the last snapshot failed, if it did.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The held snapshots' totals, oldest first.
    pub(crate) fn summaries(&self) -> Vec<Summary> {
        self.lock().entries.iter().map(|e| e.summary).collect()
    }

    /// Snapshot `id`, unpacked; `None` when it is not (or no longer) held.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<Snapshot>> {
        self.get_many(&[id]).pop().flatten()
    }

    /// Snapshots `ids`, unpacked, each `None` when it is not held. Unpacking one walks at most
    /// [`KEY_EVERY`] entries back from the nearest whole one, under the history's lock (the
    /// recording thread waits that long at most; requests never wait for each other's walks
    /// longer than that either).
    pub(crate) fn get_many(&self, ids: &[u64]) -> Vec<Option<Arc<Snapshot>>> {
        let inner = self.lock();
        let first = inner.entries.front().map_or(0, |e| e.summary.id);
        ids.iter()
            .map(|&id| {
                let i = usize::try_from(id.checked_sub(first)?).ok()?;
                (i < inner.entries.len()).then(|| inner.unpack(i))
            })
            .collect()
    }

    /// Bytes the held snapshots take.
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl Inner {
    /// Entry `i`, unpacked: from the nearest whole entry at or after it (or the newest
    /// snapshot), undoing the deltas in between.
    fn unpack(&self, i: usize) -> Arc<Snapshot> {
        let newest = self.newest.clone().expect("the newest entry is kept whole");
        let Some(packed) = &self.entries[i].packed else {
            return newest;
        };
        let start = (i..self.entries.len())
            .find(|&k| {
                self.entries[k]
                    .packed
                    .as_ref()
                    .map_or(true, Packed::is_whole)
            })
            .unwrap_or(self.entries.len() - 1);
        let mut stacks = match &self.entries[start].packed {
            Some(p) => p.stacks(),
            None => newest.stacks.clone(),
        };
        for k in (i..start).rev() {
            if let Some(p) = &self.entries[k].packed {
                p.undo_onto(&mut stacks);
            }
        }
        Arc::new(packed.snapshot(stacks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heapsight::SamplerSource;

    #[test]
    fn keeps_at_most_capacity_snapshots_newest_last() {
        let h = History::start(
            Arc::new(SamplerSource),
            Duration::from_secs(3600),
            3,
            usize::MAX,
        );
        for _ in 0..5 {
            h.record();
        }
        let ids: Vec<u64> = h.summaries().iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![4, 5, 6]);
        assert!(h.get(1).is_none() && h.get(6).is_some());
    }

    #[test]
    fn memory_bound_drops_the_oldest_but_keeps_the_newest() {
        let h = History::start(Arc::new(SamplerSource), Duration::from_secs(3600), 100, 1);
        h.record();
        h.record();
        assert_eq!(
            h.summaries().len(),
            1,
            "over the byte bound, only the newest stays"
        );
        assert!(h.bytes() > 0);
    }

    /// A source whose stacks change a little between snapshots, some of them not at all.
    struct Drifting(std::sync::atomic::AtomicU64, Arc<heapsight::StackStore>);

    impl SnapshotSource for Drifting {
        fn name(&self) -> &str {
            "drifting"
        }
        fn snapshot(&self) -> Result<Snapshot, heapsight::SourceError> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let stacks = (0..(100 + n as u32))
                .map(|i| {
                    let changes = if i % 3 == 0 { n } else { 0 };
                    let t = heapsight::StackTotals {
                        alloc_samples: 1 + changes,
                        alloc_space: 4096 * (1 + changes) + i as u64,
                        free_samples: changes / 2,
                        ..Default::default()
                    };
                    (heapsight::StackId::from_u32(i * 7), t)
                })
                .collect();
            Ok(Snapshot {
                time: SystemTime::UNIX_EPOCH + Duration::from_secs(n),
                duration: None,
                sample_rate: 4096,
                stacks,
                blocks: Vec::new(),
                frames: self.1.clone(),
            })
        }
    }

    #[test]
    fn every_held_snapshot_unpacks_to_what_was_recorded_and_takes_less_room() {
        let source = Arc::new(Drifting(
            Default::default(),
            Arc::new(heapsight::StackStore::new()),
        ));
        let h = History::start(source.clone(), Duration::from_secs(3600), 100, usize::MAX);
        for _ in 0..129 {
            h.record();
        }
        // 130 taken, the first 30 dropped; snapshot n was taken n seconds after the epoch.
        let ids: Vec<u64> = h.summaries().iter().map(|s| s.id).collect();
        assert_eq!(ids, (31..=130).collect::<Vec<_>>());
        let whole = Drifting(Default::default(), Arc::new(heapsight::StackStore::new()));
        let expected: Vec<Snapshot> = (0..130).map(|_| whole.snapshot().unwrap()).collect();
        let got = h.get_many(&ids);
        for (id, snap) in ids.iter().zip(&got) {
            let snap = snap.as_ref().expect("held");
            let want = &expected[*id as usize - 1];
            assert_eq!(snap.time, want.time, "snapshot {id}");
            assert_eq!(snap.stacks, want.stacks, "snapshot {id}");
        }
        assert!(h.get(30).is_none() && h.get(131).is_none());
        let unpacked: usize = expected[30..].iter().map(whole_size).sum();
        assert!(
            h.bytes() * 3 < unpacked,
            "packed {} bytes, whole {unpacked}",
            h.bytes()
        );
    }
}
