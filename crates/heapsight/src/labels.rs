//! Labels: which request, tenant or task an allocation was made for.
//!
//! A [`Labels`] value is a small set of key/value pairs, interned once in a bounded table and
//! named by a number from then on. Making a set current on a thread ([`Labels::enter`],
//! [`Labels::run`]) stores that number in a thread-local; nothing else. The allocation fast path
//! never reads it: only a sampled allocation, already on the slow path, records the current set
//! with its stack, so a free on any thread subtracts from the labels the block was allocated
//! under. Profiles carry the pairs as pprof sample labels (`go tool pprof -tags`).
//!
//! ```
//! heapsight::global_allocator!(std::alloc::System);
//! use heapsight::Labels;
//!
//! heapsight::set_sample_rate(1);
//! let checkout = Labels::new([("route", "/checkout")]);
//! let before = heapsight::snapshot();
//! let cart: Vec<Vec<u8>> = checkout.run(|| (0..64).map(|_| vec![0; 1024]).collect());
//! let held = heapsight::snapshot().delta(&before);
//! let under_checkout = held.inuse_space_under(checkout);
//! assert!(under_checkout >= 64 * 1024, "{under_checkout} bytes");
//! # drop(cart);
//! ```
//!
//! **Futures.** A task can move between a runtime's worker threads at each poll, so a label set
//! entered in one poll does not follow it into the next. [`Labels::bind`] wraps a future so that
//! its set is current during each of its polls, and the thread's previous set comes back after.
//! Spawned tasks start with no labels: the runtime polls them from its own threads. To give one
//! the labels current where it is spawned, wrap it with [`inherit`] (`tokio::spawn(inherit(f))`);
//! the labels are read once, when `inherit` is called, not when the task first runs. What the
//! spawn itself allocates (tokio's task cell, which holds the future) is allocated by the
//! spawning code, so it counts under the spawner's labels, not the task's.
//!
//! **Bounds.** The table holds [`MAX_LABEL_SETS`] sets of at most [`MAX_PAIRS`] pairs, with keys
//! and values cut to [`MAX_TEXT`] bytes. Once it is nearly full, a new set is recorded under its
//! keys with every value `other` (so a label with one value per request id costs a bounded
//! table, and shows as `other` once past it). [`crate::stats`] counts those sets in
//! `label_sets_overflowed`.

use crate::sampler;
use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::task::{Context, Poll};

/// How many distinct label sets the table holds, the `other` sets among them.
pub const MAX_LABEL_SETS: usize = 4096;

/// Of [`MAX_LABEL_SETS`], how many are kept for the `other` sets of key combinations seen after
/// the table filled.
const OTHER_RESERVE: usize = 256;

/// The most pairs one label set keeps; later pairs are dropped.
pub const MAX_PAIRS: usize = 8;

/// The longest key or value kept, in bytes; longer ones are cut at a character boundary.
pub const MAX_TEXT: usize = 128;

/// The value a label takes once the table is full.
pub const OTHER: &str = "other";

/// A label set's pairs, sorted by key, keys unique.
type Pairs = Arc<[(Box<str>, Box<str>)]>;

/// The interned sets. Id 0 is the empty set; id `i` is `sets[i - 1]`.
#[derive(Default)]
struct Table {
    sets: Vec<Pairs>,
    ids: HashMap<Pairs, u32>,
    overflowed: u64,
}

/// The table behind a lock of its own that a fork never copies held: `pthread_atfork` takes it
/// before each fork and gives it back on both sides, so a child (a pre-fork server's worker, a
/// child that writes a heap profile) finds the table whole and free whatever its parent's other
/// threads were doing. With a `std::sync::Mutex`, which cannot be taken over a fork, a child
/// forked while another thread interned a set waited forever to name a profile's labels (the
/// soak, `crates/heapsight-server/tests/soak.rs`, found it after 996 forks).
struct Shared {
    held: AtomicBool,
    table: UnsafeCell<Option<Table>>,
}

// SAFETY: the table is reached only through a `TableGuard`, which exists only while its thread
// holds `held`.
unsafe impl Sync for Shared {}

static TABLE: Shared = Shared {
    held: AtomicBool::new(false),
    table: UnsafeCell::new(None),
};

fn lock() {
    // Held only for a lookup or an insert; a waiter yields rather than sleeps.
    while TABLE
        .held
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
}

fn unlock() {
    TABLE.held.store(false, Ordering::Release);
}

extern "C" fn lock_before_fork() {
    lock();
}

extern "C" fn unlock_after_fork() {
    unlock();
}

/// The table, held until the guard is dropped (a panic while holding it leaves it whole: every
/// change is one push and one insert).
struct TableGuard;

impl std::ops::Deref for TableGuard {
    type Target = Table;
    fn deref(&self) -> &Table {
        // SAFETY: this guard's thread holds the lock, and `table()` filled the table in.
        unsafe { (*TABLE.table.get()).as_ref().expect("filled in by table()") }
    }
}

impl std::ops::DerefMut for TableGuard {
    fn deref_mut(&mut self) -> &mut Table {
        // SAFETY: as for `deref`; the lock makes this the only reference.
        unsafe { (*TABLE.table.get()).as_mut().expect("filled in by table()") }
    }
}

impl Drop for TableGuard {
    fn drop(&mut self) {
        unlock();
    }
}

fn table() -> TableGuard {
    static AT_FORK: Once = Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: both handlers are plain functions that only take or give back the lock; a
        // failure to register (ENOMEM) leaves the table as fork-unsafe as a mutex, no worse.
        unsafe {
            libc::pthread_atfork(
                Some(lock_before_fork),
                Some(unlock_after_fork),
                Some(unlock_after_fork),
            )
        };
    });
    lock();
    // SAFETY: the lock is held; no other reference to the table exists.
    unsafe { (*TABLE.table.get()).get_or_insert_with(Table::default) };
    TableGuard
}

impl Table {
    fn intern(&mut self, pairs: Vec<(Box<str>, Box<str>)>) -> u32 {
        if pairs.is_empty() {
            return 0;
        }
        let pairs: Pairs = pairs.into();
        if let Some(&id) = self.ids.get(&pairs) {
            return id;
        }
        if self.sets.len() < MAX_LABEL_SETS - OTHER_RESERVE {
            return self.push(pairs);
        }
        self.overflowed += 1;
        let other: Pairs = pairs
            .iter()
            .map(|(k, _)| (k.clone(), Box::from(OTHER)))
            .collect::<Vec<_>>()
            .into();
        if let Some(&id) = self.ids.get(&other) {
            return id;
        }
        if self.sets.len() < MAX_LABEL_SETS {
            return self.push(other);
        }
        0
    }

    fn push(&mut self, pairs: Pairs) -> u32 {
        self.sets.push(pairs.clone());
        let id = self.sets.len() as u32;
        self.ids.insert(pairs, id);
        id
    }

    fn pairs(&self, id: u32) -> Option<&Pairs> {
        id.checked_sub(1).and_then(|i| self.sets.get(i as usize))
    }
}

fn cut(s: &str) -> Box<str> {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Box::from(&s[..end])
}

/// Sorts by key, keeping the last value given for each key, and bounds the set.
fn normalise(mut pairs: Vec<(Box<str>, Box<str>)>) -> Vec<(Box<str>, Box<str>)> {
    // A stable sort keeps equal keys in the order given; the last one wins.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(Box<str>, Box<str>)> = Vec::with_capacity(pairs.len());
    for p in pairs {
        match out.last_mut() {
            Some(last) if last.0 == p.0 => *last = p,
            _ => out.push(p),
        }
    }
    out.truncate(MAX_PAIRS);
    out
}

/// An interned set of labels: cheap to copy, to compare and to make current.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Labels(u32);

impl Labels {
    /// The empty set: no labels.
    pub const NONE: Labels = Labels(0);

    /// The set of these pairs, interned (once per distinct set: keep the value, or make it where
    /// the labels are known, as a request's route, rather than in a loop). Pairs with an empty
    /// key are dropped; of two pairs with one key, the later is kept.
    ///
    /// ```
    /// use heapsight::Labels;
    /// let a = Labels::new([("tenant", "acme"), ("route", "/")]);
    /// let b = Labels::new([("route", "/"), ("tenant", "acme")]);
    /// assert_eq!(a, b);
    /// assert_eq!(a.pairs(), [("route".to_string(), "/".to_string()), ("tenant".into(), "acme".into())]);
    /// ```
    pub fn new<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> Labels {
        let pairs: Vec<(Box<str>, Box<str>)> = pairs
            .into_iter()
            .filter(|(k, _)| !k.as_ref().is_empty())
            .map(|(k, v)| (cut(k.as_ref()), cut(v.as_ref())))
            .collect();
        Labels::interned(pairs)
    }

    fn interned(pairs: Vec<(Box<str>, Box<str>)>) -> Labels {
        // The table's memory is the profiler's, not the service's.
        crate::own::run(crate::own::Part::Tables, || {
            Labels(table().intern(normalise(pairs)))
        })
    }

    /// This set with more pairs added; a key already in it takes the new value.
    ///
    /// ```
    /// use heapsight::Labels;
    /// let route = Labels::new([("route", "/orders")]);
    /// let both = route.with([("tenant", "acme")]);
    /// assert_eq!(both, Labels::new([("route", "/orders"), ("tenant", "acme")]));
    /// ```
    pub fn with<K: AsRef<str>, V: AsRef<str>>(
        self,
        more: impl IntoIterator<Item = (K, V)>,
    ) -> Labels {
        let mut pairs: Vec<(Box<str>, Box<str>)> = self
            .pairs()
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
            .collect();
        pairs.extend(
            more.into_iter()
                .filter(|(k, _)| !k.as_ref().is_empty())
                .map(|(k, v)| (cut(k.as_ref()), cut(v.as_ref()))),
        );
        Labels::interned(pairs)
    }

    /// The set current on this thread.
    #[inline]
    pub fn current() -> Labels {
        Labels(sampler::current_labels())
    }

    /// Makes this set current on this thread until the guard is dropped, which brings back the
    /// set that was current before.
    ///
    /// ```
    /// use heapsight::Labels;
    /// let job = Labels::new([("job", "reindex")]);
    /// {
    ///     let _labelled = job.enter();
    ///     assert_eq!(Labels::current(), job);
    /// }
    /// assert_eq!(Labels::current(), Labels::NONE);
    /// ```
    #[inline]
    pub fn enter(self) -> LabelGuard {
        LabelGuard {
            previous: swap(self),
            _not_send: std::marker::PhantomData,
        }
    }

    /// Runs `f` with this set current on this thread.
    pub fn run<R>(self, f: impl FnOnce() -> R) -> R {
        let _guard = self.enter();
        f()
    }

    /// Wraps `future` so that this set is current while it is polled, on whichever thread.
    pub fn bind<F: Future>(self, future: F) -> Labeled<F> {
        Labeled {
            labels: self,
            future,
        }
    }

    /// The set's pairs, sorted by key; empty for [`Labels::NONE`].
    pub fn pairs(self) -> Vec<(String, String)> {
        label_pairs(self.0)
    }

    /// The set's number in the table (0 for none): what a stack recorded under it carries.
    pub fn id(self) -> u32 {
        self.0
    }
}

/// Makes `labels` current on this thread and returns the set that was: the low-level form of
/// [`Labels::enter`], for code whose enter and exit are separate calls (a `tracing` layer's
/// `on_enter` and `on_exit`). Give the returned set back with another `swap`.
#[inline]
pub fn swap(labels: Labels) -> Labels {
    Labels(sampler::swap_labels(labels.0))
}

/// Wraps `future` with the labels current now, for spawning: `tokio::spawn(inherit(work))`.
pub fn inherit<F: Future>(future: F) -> Labeled<F> {
    Labels::current().bind(future)
}

/// The pairs of label set `id`, sorted by key; empty for 0 or an id the table does not hold.
pub(crate) fn label_pairs(id: u32) -> Vec<(String, String)> {
    if id == 0 {
        return Vec::new();
    }
    let t = table();
    t.pairs(id).map_or_else(Vec::new, |p| {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

/// How many label sets are interned, and how many new sets were recorded as `other`.
pub(crate) fn table_counts() -> (usize, u64) {
    let t = table();
    (t.sets.len(), t.overflowed)
}

/// Brings back the label set that was current before [`Labels::enter`].
#[must_use = "the labels are current only while the guard lives"]
pub struct LabelGuard {
    previous: Labels,
    // Enter and leave on one thread: the guard restores that thread's set.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for LabelGuard {
    #[inline]
    fn drop(&mut self) {
        swap(self.previous);
    }
}

/// A future whose label set is current during each of its polls ([`Labels::bind`]).
#[must_use = "futures do nothing unless polled"]
pub struct Labeled<F> {
    labels: Labels,
    future: F,
}

impl<F> Labeled<F> {
    /// The labels the future runs under.
    pub fn labels(&self) -> Labels {
        self.labels
    }
}

impl<F: Future> Future for Labeled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of `self` nor handed out
        // unpinned, and `Labeled` has no Drop of its own that could move it.
        let this = unsafe { self.get_unchecked_mut() };
        let _guard = this.labels.enter();
        // SAFETY: as above; `this` came from a pinned reference, so `future` stays where it is.
        unsafe { Pin::new_unchecked(&mut this.future) }.poll(cx)
    }
}

/// The frame a stack recorded under label set `id` carries outermost: an address no code is
/// mapped at (the top of the canonical address space), so no symbolizer names it.
pub(crate) const fn label_frame(id: u32) -> usize {
    LABEL_FRAME_BASE | id as usize
}

/// The label set a stack's outermost frame names, if it is a label frame.
pub(crate) fn labels_of_frame(frame: usize) -> Option<u32> {
    (frame & !(u32::MAX as usize) == LABEL_FRAME_BASE).then_some(frame as u32)
}

const LABEL_FRAME_BASE: usize = 0xffff_fe00_0000_0000_u64 as usize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_frames_are_told_apart_from_code() {
        assert_eq!(labels_of_frame(label_frame(7)), Some(7));
        assert_eq!(labels_of_frame(label_frame(u32::MAX)), Some(u32::MAX));
        assert_eq!(labels_of_frame(0x5555_5555_1234), None);
        assert_eq!(labels_of_frame(usize::MAX), None);
    }

    #[test]
    fn a_full_table_records_new_sets_as_other_under_their_keys() {
        let mut t = Table::default();
        let set = |k: &str, v: String| vec![(Box::from(k), v.into_boxed_str())];
        for i in 0..MAX_LABEL_SETS - OTHER_RESERVE {
            assert_eq!(t.intern(set("request", i.to_string())), i as u32 + 1);
        }
        let other = t.intern(set("request", "late".into()));
        assert_eq!(t.pairs(other).unwrap()[0].1.as_ref(), OTHER);
        assert_eq!(t.intern(set("request", "later".into())), other);
        assert_eq!(
            t.intern(set("request", "0".into())),
            1,
            "known sets keep their ids"
        );
        let tenant = t.intern(set("tenant", "x".into()));
        assert_ne!(tenant, other);
        assert_eq!(t.pairs(tenant).unwrap()[0].0.as_ref(), "tenant");
        assert_eq!(t.overflowed, 3);
        for i in 0..OTHER_RESERVE {
            t.intern(set(&format!("k{i}"), "v".into()));
        }
        assert_eq!(t.sets.len(), MAX_LABEL_SETS);
        assert_eq!(
            t.intern(set("new", "v".into())),
            0,
            "past the reserve: no labels"
        );
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let long = "é".repeat(100);
        let c = cut(&long);
        assert!(c.len() <= MAX_TEXT && long.starts_with(&*c));
        let many: Vec<_> = (0..20)
            .map(|i| (Box::from(format!("k{i:02}")), Box::from("v")))
            .collect();
        assert_eq!(normalise(many).len(), MAX_PAIRS);
    }
}
