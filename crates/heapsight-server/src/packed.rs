//! Snapshots packed small for the history.
//!
//! A history holds hundreds of snapshots of the same stacks, and between two of them most
//! stacks' totals do not change at all: a stack is sampled a few times a minute at most, and a
//! service's startup stacks never again. Stored whole, each snapshot costs 72 bytes a stack
//! (10,000 stacks, 360 snapshots: 247 MiB). Packed, it costs what changed since the next newer
//! snapshot:
//!
//! - **Delta** (most entries): the stacks whose totals differ from the newer snapshot's, each as
//!   its position among the newer snapshot's stacks (a gap from the previous one) and the eight
//!   field differences, all as LEB128 varints (differences zigzagged, so a source whose totals
//!   may fall is packed too). A stack unchanged since costs nothing; a changed one 12 to 25
//!   bytes.
//! - **Whole** (one entry in [`KEY_EVERY`]): every stack, its id as a gap from the previous id
//!   and its eight totals. Unpacking an entry starts at the nearest whole entry (or the newest
//!   snapshot, kept unpacked) at or after it and applies the deltas from there, so it never walks
//!   more than `KEY_EVERY - 1` of them, however long the history.
//!
//! Deltas run backwards, from newer to older, so dropping the oldest entry never touches another.
//!
//! A worked example: the newer snapshot has stacks 3, 8 and 9 with totals `a`, `b`, `c`; the
//! older one has 3 and 8, with `a` and `b'`. The delta holds the newer snapshot's stack count
//! (3), its record count (2), then position 1 (one position skipped) tagged "changed" with the
//! eight fields of `b' - b`, then position 2 (none skipped) tagged "absent": 4 + 8 varints.

use heapsight::{Snapshot, StackFrames, StackId, StackTotals};
use std::sync::Arc;
use std::time::SystemTime;

/// One entry in this many is packed whole.
pub(crate) const KEY_EVERY: u64 = 32;

const CHANGED: u64 = 0;
const ABSENT: u64 = 1;

/// A snapshot as the history keeps it.
pub(crate) struct Packed {
    pub(crate) time: SystemTime,
    sample_rate: usize,
    frames: Arc<dyn StackFrames>,
    form: Form,
    bytes: Box<[u8]>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    Whole,
    /// Differences from the next newer snapshot of the history.
    Delta,
}

impl Packed {
    /// Packs `s` whole.
    pub(crate) fn whole(s: &Snapshot) -> Packed {
        let mut out = Vec::with_capacity(s.stacks.len() * 16);
        let mut prev = 0u32;
        for (id, t) in &s.stacks {
            put(&mut out, (id.as_u32() - prev) as u64);
            prev = id.as_u32();
            for f in fields(t) {
                put(&mut out, f);
            }
        }
        Packed::new(s, Form::Whole, out)
    }

    /// Packs `older` as its differences from `newer`, the next snapshot of the history.
    pub(crate) fn delta(older: &Snapshot, newer: &Snapshot) -> Packed {
        let mut out = Vec::new();
        let mut extra: Vec<(StackId, StackTotals)> = Vec::new();
        let mut records = Vec::new();
        let mut count = 0usize;
        let mut o = older.stacks.iter().peekable();
        let mut next = 0usize;
        for (p, (id, t)) in newer.stacks.iter().enumerate() {
            while let Some(gone) = o.next_if(|(oid, _)| oid < id) {
                extra.push(*gone);
            }
            let record = match o.next_if(|(oid, _)| oid == id) {
                Some((_, ot)) if ot == t => continue,
                Some((_, ot)) => (CHANGED, Some(*ot)),
                None => (ABSENT, None),
            };
            put(&mut records, (((p - next) as u64) << 1) | record.0);
            next = p + 1;
            count += 1;
            if let Some(ot) = record.1 {
                for (a, b) in fields(&ot).into_iter().zip(fields(t)) {
                    put(&mut records, zigzag(a.wrapping_sub(b) as i64));
                }
            }
        }
        extra.extend(o.copied());
        put(&mut out, newer.stacks.len() as u64);
        put(&mut out, count as u64);
        out.extend_from_slice(&records);
        // The older snapshot's stacks the newer one lacks (a source whose stacks can vanish).
        let mut prev = 0u32;
        for (id, t) in &extra {
            put(&mut out, (id.as_u32() - prev) as u64);
            prev = id.as_u32();
            for f in fields(t) {
                put(&mut out, f);
            }
        }
        Packed::new(older, Form::Delta, out)
    }

    fn new(s: &Snapshot, form: Form, bytes: Vec<u8>) -> Packed {
        Packed {
            time: s.time,
            sample_rate: s.sample_rate,
            frames: s.frames.clone(),
            form,
            bytes: bytes.into_boxed_slice(),
        }
    }

    pub(crate) fn is_whole(&self) -> bool {
        self.form == Form::Whole
    }

    /// Memory it takes.
    pub(crate) fn size(&self) -> usize {
        std::mem::size_of::<Packed>() + self.bytes.len()
    }

    /// The stacks of a whole entry.
    pub(crate) fn stacks(&self) -> Vec<(StackId, StackTotals)> {
        debug_assert!(self.is_whole());
        let mut r = Reader(&self.bytes);
        let mut out = Vec::new();
        let mut id = 0u32;
        while !r.0.is_empty() {
            id += r.next() as u32;
            out.push((StackId::from_u32(id), r.totals()));
        }
        out
    }

    /// Turns `stacks`, the stacks of the next newer snapshot, into this delta entry's.
    pub(crate) fn undo_onto(&self, stacks: &mut Vec<(StackId, StackTotals)>) {
        debug_assert!(!self.is_whole());
        let mut r = Reader(&self.bytes);
        let len = r.next() as usize;
        debug_assert_eq!(
            len,
            stacks.len(),
            "a delta is applied to the snapshot it was made against"
        );
        let records = r.next();
        let mut next = 0usize;
        let mut absent = false;
        for _ in 0..records {
            let header = r.next();
            let p = next + (header >> 1) as usize;
            next = p + 1;
            debug_assert!(p < stacks.len(), "delta record past the end");
            if p >= stacks.len() {
                // Not the snapshot this delta was made against: leave it as it is.
                return;
            }
            if header & 1 == ABSENT {
                // Marked for removal below: a stack with no samples is never in a snapshot.
                stacks[p].1 = StackTotals::default();
                absent = true;
            } else {
                let mut f = fields(&stacks[p].1);
                for x in &mut f {
                    *x = x.wrapping_add(unzigzag(r.next()) as u64);
                }
                stacks[p].1 = from_fields(f);
            }
        }
        if absent {
            stacks.retain(|(_, t)| *t != StackTotals::default());
        }
        if !r.0.is_empty() {
            let mut id = 0u32;
            while !r.0.is_empty() {
                id += r.next() as u32;
                stacks.push((StackId::from_u32(id), r.totals()));
            }
            stacks.sort_unstable_by_key(|(id, _)| *id);
        }
    }

    /// The snapshot, given its stacks.
    pub(crate) fn snapshot(&self, stacks: Vec<(StackId, StackTotals)>) -> Snapshot {
        Snapshot {
            time: self.time,
            duration: None,
            sample_rate: self.sample_rate,
            stacks,
            blocks: Vec::new(),
            frames: self.frames.clone(),
        }
    }
}

fn fields(t: &StackTotals) -> [u64; 8] {
    [
        t.alloc_objects_fx,
        t.alloc_space,
        t.free_objects_fx,
        t.free_space,
        t.alloc_samples,
        t.alloc_sample_bytes,
        t.free_samples,
        t.free_sample_bytes,
    ]
}

fn from_fields(f: [u64; 8]) -> StackTotals {
    StackTotals {
        alloc_objects_fx: f[0],
        alloc_space: f[1],
        free_objects_fx: f[2],
        free_space: f[3],
        alloc_samples: f[4],
        alloc_sample_bytes: f[5],
        free_samples: f[6],
        free_sample_bytes: f[7],
    }
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// Reads varints off bytes this module wrote.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn next(&mut self) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        while let Some((&b, rest)) = self.0.split_first() {
            self.0 = rest;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                break;
            }
            shift += 7;
        }
        v
    }

    fn totals(&mut self) -> StackTotals {
        from_fields(std::array::from_fn(|_| self.next()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heapsight::SamplerStacks;
    use std::time::Duration;

    fn rng(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// A run of snapshots in which stacks appear, change by small and huge amounts, stay put,
    /// and (as a source other than the sampler may do) vanish and fall.
    fn series(n: usize) -> Vec<Snapshot> {
        let mut state = 0x2545_f491_4f6c_dd1d;
        let mut stacks: Vec<(StackId, StackTotals)> = Vec::new();
        (0..n)
            .map(|i| {
                for (_, t) in stacks.iter_mut() {
                    match rng(&mut state) % 4 {
                        0 => {}
                        1 => {
                            t.alloc_samples += 1;
                            t.alloc_space += rng(&mut state) % 1_000_000;
                            t.alloc_objects_fx += rng(&mut state) % (1 << 40);
                        }
                        2 => t.free_sample_bytes = t.free_sample_bytes.wrapping_sub(3),
                        _ => t.free_space = rng(&mut state),
                    }
                }
                stacks.retain(|_| rng(&mut state) % 50 != 0);
                for _ in 0..rng(&mut state) % 20 {
                    let id = StackId::from_u32((rng(&mut state) % 5_000) as u32);
                    if stacks.iter().all(|(s, _)| *s != id) {
                        let t = StackTotals {
                            alloc_samples: 1 + rng(&mut state) % 9,
                            alloc_space: u64::MAX - rng(&mut state) % 7,
                            ..StackTotals::default()
                        };
                        stacks.push((id, t));
                    }
                }
                stacks.sort_unstable_by_key(|(id, _)| *id);
                Snapshot {
                    time: SystemTime::UNIX_EPOCH + Duration::from_secs(i as u64),
                    duration: None,
                    sample_rate: 4096,
                    stacks: stacks.clone(),
                    blocks: Vec::new(),
                    frames: Arc::new(SamplerStacks),
                }
            })
            .collect()
    }

    #[test]
    fn whole_and_delta_entries_unpack_to_the_snapshot_packed() {
        let snaps = series(200);
        for s in &snaps {
            assert_eq!(Packed::whole(s).stacks(), s.stacks);
        }
        // Undo a chain of deltas from the newest back to the oldest, as the history does.
        let mut stacks = snaps.last().unwrap().stacks.clone();
        for pair in snaps.windows(2).rev() {
            let p = Packed::delta(&pair[0], &pair[1]);
            p.undo_onto(&mut stacks);
            assert_eq!(stacks, pair[0].stacks);
            let back = p.snapshot(stacks.clone());
            assert_eq!((back.time, back.sample_rate), (pair[0].time, 4096));
        }
    }

    #[test]
    fn a_delta_costs_only_the_stacks_that_changed() {
        let snaps = series(2);
        let same = Packed::delta(&snaps[1], &snaps[1]);
        assert!(
            same.bytes.len() <= 4,
            "{} bytes for no change",
            same.bytes.len()
        );
        let mut one = snaps[1].clone();
        one.stacks[0].1.alloc_samples += 1;
        one.stacks[0].1.alloc_space += 500_000;
        // Position 0 tagged changed, two small differences and six zeros.
        let d = Packed::delta(&snaps[1], &one);
        assert!(
            d.bytes.len() <= 4 + 1 + 2 + 1 + 3 + 6,
            "{} bytes",
            d.bytes.len()
        );
    }
}
