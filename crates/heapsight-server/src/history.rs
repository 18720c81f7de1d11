//! Snapshot history: a snapshot of the heap every `interval`, kept for `capacity` snapshots and
//! at most `max_bytes` of memory, oldest dropped first. The web UI's timeline and growth views
//! read it.
//!
//! Snapshots are cheap (counters, no symbols), and they are taken on a thread of the history's
//! own, so a busy or stalled async runtime does not leave gaps.

use heapsight::{Snapshot, SnapshotSource};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Default: one snapshot every 10 s for an hour.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_CAPACITY: usize = 360;
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

/// A snapshot in the history, with the id the JSON API names it by.
pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) snapshot: Arc<Snapshot>,
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
    bytes: usize,
    next_id: u64,
    /// Why the last snapshot could not be taken, if it could not.
    last_error: Option<String>,
}

fn size_of(s: &Snapshot) -> usize {
    std::mem::size_of::<Snapshot>()
        + s.stacks.len() * std::mem::size_of::<(heapsight::StackId, heapsight::StackTotals)>()
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
                bytes: 0,
                next_id: 1,
                last_error: None,
            }),
        });
        h.record();
        let weak: Weak<History> = Arc::downgrade(&h);
        let _ = std::thread::Builder::new()
            .name("heapsight-history".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                match weak.upgrade() {
                    Some(h) => {
                        h.record();
                    }
                    None => return,
                }
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
        self.source
            .unprofiled(&mut || id = self.record_unprofiled());
        id
    }

    fn record_unprofiled(&self) -> Option<u64> {
        let taken = self.source.snapshot();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = match taken {
            Ok(s) => Arc::new(s),
            Err(e) => {
                inner.last_error = Some(e.message);
                return None;
            }
        };
        inner.last_error = None;
        let size = size_of(&snapshot);
        let id = inner.next_id;
        inner.next_id += 1;
        inner.bytes += size;
        inner.entries.push_back(Entry { id, snapshot });
        while inner.entries.len() > self.capacity
            || (inner.bytes > self.max_bytes && inner.entries.len() > 1)
        {
            if let Some(old) = inner.entries.pop_front() {
                inner.bytes -= size_of(&old.snapshot);
            }
        }
        Some(id)
    }

    /// Why the last snapshot failed, if it did.
    pub(crate) fn last_error(&self) -> Option<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.last_error.clone()
    }

    /// The snapshots held, oldest first.
    pub(crate) fn entries(&self) -> Vec<(u64, Arc<Snapshot>)> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .entries
            .iter()
            .map(|e| (e.id, e.snapshot.clone()))
            .collect()
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<Snapshot>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .entries
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.snapshot.clone())
    }

    /// Bytes the held snapshots take.
    pub(crate) fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).bytes
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
        let ids: Vec<u64> = h.entries().iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![4, 5, 6]);
        assert!(h.get(1).is_none() && h.get(6).is_some());
    }

    #[test]
    fn memory_bound_drops_the_oldest_but_keeps_the_newest() {
        let h = History::start(Arc::new(SamplerSource), Duration::from_secs(3600), 100, 1);
        h.record();
        h.record();
        assert_eq!(
            h.entries().len(),
            1,
            "over the byte bound, only the newest stays"
        );
        assert!(h.bytes() > 0);
    }
}
