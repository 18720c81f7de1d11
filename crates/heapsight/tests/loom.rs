//! Model-checks the hook's lock-free structures under loom: the region's free lists (with their
//! ABA tag), the stack table's intern, and the large-block table's insert and remove.
//!
//! The structure files of `src/lockfree/` are compiled here a second time, against the module
//! `sync` below, which gives loom's atomics in place of std's; the tests lend them small arrays
//! of those atomics in place of the hook's mappings. Loom then runs each test's threads through
//! every interleaving (up to three preemptions a run), and every run must keep each claim.
//!
//!     cargo test --release -p heapsight --test loom
//!
//! `LOOM_MAX_PREEMPTIONS=4` explores further (minutes, not seconds).

#![allow(dead_code)] // the structures' other functions serve the library, not these tests

mod sync {
    pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
}

#[path = "../src/lockfree/free_list.rs"]
mod free_list;
#[path = "../src/lockfree/large_blocks.rs"]
mod large_blocks;
#[path = "../src/lockfree/stack_index.rs"]
mod stack_index;

use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Runs `f` under loom with the preemption bound this file documents.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

/// A free list of `n` slots, all on it, and who holds each slot.
struct Slots {
    head: AtomicU64,
    links: Vec<AtomicU32>,
    held: Vec<AtomicBool>,
}

impl Slots {
    fn new(n: u32) -> Arc<Slots> {
        let s = Slots {
            head: AtomicU64::new(0),
            links: (0..n).map(|_| AtomicU32::new(0)).collect(),
            held: (0..n).map(|_| AtomicBool::new(false)).collect(),
        };
        for i in (0..n).rev() {
            free_list::push(&s.head, &s.links[i as usize], i);
        }
        Arc::new(s)
    }

    fn pop(&self) -> Option<u32> {
        let i = free_list::pop(&self.head, |i| &self.links[i as usize])?;
        let was = self.held[i as usize].swap(true, Ordering::Relaxed);
        assert!(!was, "slot {i} handed out while another thread held it");
        Some(i)
    }

    fn push(&self, i: u32) {
        self.held[i as usize].store(false, Ordering::Relaxed);
        free_list::push(&self.head, &self.links[i as usize], i);
    }

    /// Every slot is on the list exactly once (no thread holds any now).
    fn assert_whole(&self) {
        let mut seen = vec![false; self.links.len()];
        let mut top = free_list::take_all(&self.head);
        while top != 0 {
            let i = (top - 1) as usize;
            assert!(!seen[i], "slot {i} is on the list twice");
            seen[i] = true;
            top = self.links[i].load(Ordering::Relaxed);
        }
        assert!(seen.iter().all(|&s| s), "a slot was lost: {seen:?}");
    }
}

#[test]
fn free_list_slots_are_handed_out_once_each_through_pops_and_pushes_that_race() {
    model(|| {
        // The ABA case: one thread pops the top and its link; meanwhile the other pops that
        // slot and the next, and pushes the first back. The tag makes the first thread's
        // exchange fail instead of installing the stale link (a slot given out twice).
        let s = Slots::new(3);
        let t = {
            let s = s.clone();
            thread::spawn(move || {
                if let Some(i) = s.pop() {
                    s.push(i);
                }
            })
        };
        let a = s.pop();
        let b = s.pop();
        if let Some(a) = a {
            s.push(a);
        }
        if let Some(b) = b {
            s.push(b);
        }
        t.join().unwrap();
        s.assert_whole();
    });
}

#[test]
fn free_list_taken_whole_while_others_pop_and_push_loses_no_slot() {
    model(|| {
        // What the region's release does: take a list whole, then push each slot back, while
        // the hook pops and pushes.
        let s = Slots::new(2);
        let t = {
            let s = s.clone();
            thread::spawn(move || {
                if let Some(i) = s.pop() {
                    s.push(i);
                }
            })
        };
        let mut top = free_list::take_all(&s.head);
        let mut taken = Vec::new();
        while top != 0 {
            let i = top - 1;
            top = s.links[i as usize].load(Ordering::Relaxed);
            let was = s.held[i as usize].swap(true, Ordering::Relaxed);
            assert!(!was, "slot {i} taken while another thread held it");
            taken.push(i);
        }
        for i in taken {
            s.push(i);
        }
        t.join().unwrap();
        s.assert_whole();
    });
}

/// The stack table's arrays at a size loom can explore: an index of two tiers (2 + 4 slots),
/// four entries and sixteen frames.
struct Stacks {
    index: Vec<AtomicU64>,
    entries: Vec<stack_index::Entry>,
    frames: Vec<AtomicUsize>,
    next_entry: AtomicU32,
    next_frame: AtomicU32,
}

const TIER0: usize = 2;
const TIERS: u32 = 2;

impl Stacks {
    fn new() -> Arc<Stacks> {
        Arc::new(Stacks {
            index: (0..stack_index::index_len(TIER0, TIERS))
                .map(|_| AtomicU64::new(0))
                .collect(),
            entries: (0..4).map(|_| Default::default()).collect(),
            frames: (0..16).map(|_| AtomicUsize::new(0)).collect(),
            next_entry: AtomicU32::new(0),
            next_frame: AtomicU32::new(0),
        })
    }

    fn table(&self) -> stack_index::StackIndex<'_, TIER0> {
        stack_index::StackIndex {
            tiers: TIERS,
            index: &self.index,
            entries: &self.entries,
            frames: &self.frames,
            next_entry: &self.next_entry,
            next_frame: &self.next_frame,
        }
    }

    /// Interns `stack` and checks that its id reads back as `stack`.
    fn intern(&self, stack: &[usize]) -> u32 {
        let t = self.table();
        let id = t
            .intern(stack)
            .expect("room for every stack of these tests");
        assert_eq!(t.frames_of(id).collect::<Vec<_>>(), stack, "stack {id}");
        id
    }
}

#[test]
fn stacks_interned_at_once_get_one_id_each_and_read_back_whole() {
    model(|| {
        // Two threads intern the same stack while a third interns another: the same stack gets
        // one id whoever wins the index slot, and each id reads back as the stack it names
        // (the entry is written before the index publishes it).
        let s = Stacks::new();
        let same = [0x10, 0x20, 0x30];
        let other = [0x40, 0x50];
        let spawn = |stack: &'static [usize]| {
            let s = s.clone();
            thread::spawn(move || s.intern(stack))
        };
        let a = spawn(&[0x10, 0x20, 0x30]);
        let b = spawn(&[0x40, 0x50]);
        let mine = s.intern(&same);
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_eq!(a, mine, "one stack, two ids");
        assert_ne!(a, b, "two stacks, one id");
        // Afterwards, every lookup finds the same ids.
        assert_eq!(s.intern(&same), mine);
        assert_eq!(s.intern(&other), b);
    });
}

/// The large-block table with one bucket: eight slots that every address shares, so that
/// threads race for the same slots.
struct Large {
    keys: Vec<AtomicUsize>,
    meta: Vec<large_blocks::Meta>,
}

impl Large {
    fn new() -> Arc<Large> {
        Arc::new(Large {
            keys: (0..large_blocks::BUCKET)
                .map(|_| AtomicUsize::new(0))
                .collect(),
            meta: (0..large_blocks::BUCKET)
                .map(|_| Default::default())
                .collect(),
        })
    }

    fn table(&self) -> large_blocks::Table<'_, 1> {
        large_blocks::Table {
            keys: &self.keys,
            meta: &self.meta,
        }
    }
}

fn sample(stack: u32) -> large_blocks::LargeSample {
    large_blocks::LargeSample {
        stack,
        allocated: 7 + stack,
        weight_fx: 1000 + stack as u64,
        size: (128 << 10) + stack as u64,
        mapped: stack % 2 == 1,
    }
}

#[test]
fn large_blocks_removed_while_others_insert_come_back_with_their_own_record() {
    model(|| {
        // Six slots hold blocks no thread touches; 0x1000 is the seventh. A thread that owns
        // 0x1000 frees it while another inserts two blocks into the last slot and the one
        // 0x1000 leaves: each removal returns the record its insert wrote, whole, and a block
        // is found exactly while it is in the table.
        let l = Large::new();
        for i in 0..6 {
            assert!(l.table().insert(0x9000 + i * 0x100, sample(10 + i as u32)));
        }
        assert!(l.table().insert(0x1000, sample(1)));
        let freer = {
            let l = l.clone();
            thread::spawn(move || {
                assert_eq!(l.table().remove(0x1000), Some(sample(1)));
                assert!(!l.table().contains(0x1000));
            })
        };
        let inserted: Vec<usize> = [0x2000, 0x3000]
            .into_iter()
            .filter(|&a| l.table().insert(a, sample(a as u32 >> 12)))
            .collect();
        assert!(!inserted.is_empty(), "the eighth slot was free all along");
        for &a in &inserted {
            assert!(l.table().contains(a));
            assert_eq!(l.table().is_mapped(a), sample(a as u32 >> 12).mapped);
        }
        freer.join().unwrap();
        for &a in &inserted {
            assert_eq!(l.table().remove(a), Some(sample(a as u32 >> 12)));
        }
        for i in 0..6 {
            assert_eq!(
                l.table().remove(0x9000 + i * 0x100),
                Some(sample(10 + i as u32))
            );
        }
        assert!(l
            .table()
            .keys
            .iter()
            .all(|k| k.load(Ordering::Relaxed) == 0));
    });
}
