//! Where sampled blocks are placed, and frees that must tell them apart by address alone.
//!
//! A sampled block of alignment 8 or less starts `16 - align` bytes past a 16-byte boundary (its
//! mark), so that a free of a block whose address plus alignment is not a multiple of 16 is
//! known not to be sampled after one test (`src/sampler.rs`). The cases here check that:
//! - sampled blocks of every kind (small or large, tagged or of larger alignment, zeroed or not)
//!   keep their layout's alignment, carry the mark when they should, hold their bytes, and are
//!   counted out again when freed;
//! - `realloc` from and to each kind keeps the contents and the counts, including a large
//!   tagged block resized in place by the inner allocator, sampled again or not;
//! - an inner allocator whose own blocks all sit where sampled ones do (this binary's global
//!   allocator, [`Shifted`]) still works: its frees take the longer test and are never mistaken
//!   for sampled ones, whatever the rate.
//!
//! Runs without the test harness: the sample rate is global, so the cases run one after another.

mod common;

use common::site;
use heapsight::Sampler;
use heapsight_profile::{HeapView, Profile};
use std::alloc::{GlobalAlloc, Layout, System};

/// An inner allocator that hands out every block of alignment 8 or less at the sampler's mark,
/// `16 - align` bytes past a 16-byte boundary: the worst case for the sampler's free test, which
/// then never rules a free out early.
struct Shifted;

fn padded(layout: Layout) -> Layout {
    Layout::from_size_align(layout.size() + 16, 16).expect("test sizes are small")
}

// SAFETY: blocks of alignment 8 or less are System blocks of 16 more bytes, handed out
// `16 - align` bytes in (so still aligned, with `align` spare bytes after); larger alignments go
// to System unchanged.
unsafe impl GlobalAlloc for Shifted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > 8 {
            // SAFETY: forwarded unchanged.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: a non-zero layout; the offset stays inside the block.
        unsafe {
            let p = System.alloc(padded(layout));
            if p.is_null() {
                p
            } else {
                p.add(16 - layout.align())
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: undoes `alloc` for the same layout.
        unsafe {
            if layout.align() > 8 {
                System.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr.sub(16 - layout.align()), padded(layout))
            }
        }
    }
}

#[global_allocator]
static GLOBAL: Sampler<Shifted> = Sampler::new(Shifted);

/// A second sampler over plain System, called directly, so that every block's address can be
/// checked against its layout.
static DIRECT: Sampler<System> = Sampler::new(System);

const LARGE: usize = 128 << 10;

/// Layouts of every kind: tagged small, tagged small just under and at the large threshold,
/// tagged large, and larger alignments small and large.
fn layouts() -> Vec<Layout> {
    [
        (1, 1),
        (3, 2),
        (24, 8),
        (100, 4),
        (LARGE - 1, 8),
        (LARGE, 8),
        (1 << 20, 1),
        (24, 16),
        (200, 64),
        (5000, 4096),
        (LARGE, 64),
        (200 << 10, 1 << 16),
    ]
    .into_iter()
    .map(|(size, align)| Layout::from_size_align(size, align).unwrap())
    .collect()
}

fn fill(p: *mut u8, len: usize, seed: u8) {
    for i in 0..len {
        // SAFETY: the caller's block has at least `len` bytes.
        unsafe { p.add(i).write(seed.wrapping_add(i as u8)) };
    }
}

fn holds(p: *mut u8, len: usize, seed: u8) -> bool {
    // SAFETY: the caller's block has at least `len` initialised bytes.
    (0..len).all(|i| unsafe { p.add(i).read() } == seed.wrapping_add(i as u8))
}

fn assert_placed(p: *mut u8, layout: Layout) {
    assert!(!p.is_null(), "{layout:?}");
    let addr = p as usize;
    assert_eq!(addr % layout.align(), 0, "{layout:?} at {p:p}");
    if layout.align() <= 8 {
        assert_eq!(
            (addr + layout.align()) % 16,
            0,
            "sampled {layout:?} at {p:p} lacks the mark"
        );
    }
}

fn profile() -> Profile {
    heapsight_profile::heap_profile(HeapView::InUse)
}

#[inline(never)]
fn place_every_kind(layouts: &[Layout]) {
    for (i, &layout) in layouts.iter().enumerate() {
        for zeroed in [false, true] {
            // SAFETY: non-zero layouts; each block is freed below with its layout.
            unsafe {
                let p = if zeroed {
                    DIRECT.alloc_zeroed(layout)
                } else {
                    DIRECT.alloc(layout)
                };
                assert_placed(p, layout);
                if zeroed {
                    assert!(holds_zeroes(p, layout.size()), "{layout:?} not zeroed");
                }
                fill(p, layout.size(), i as u8);
                assert!(holds(p, layout.size(), i as u8));
                DIRECT.dealloc(p, layout);
            }
        }
    }
}

fn holds_zeroes(p: *mut u8, len: usize) -> bool {
    // SAFETY: the caller's block has at least `len` initialised bytes.
    (0..len).all(|i| unsafe { p.add(i).read() } == 0)
}

fn sampled_blocks_carry_the_mark_and_keep_their_alignment() {
    let layouts = layouts();
    heapsight::set_sample_rate(1);
    place_every_kind(&layouts);
    heapsight::set_sample_rate(0);
    let [alloc_objects, _, inuse_objects, inuse_space] = site(&profile(), "place_every_kind");
    assert_eq!(
        alloc_objects,
        2 * layouts.len() as i64,
        "every block sampled"
    );
    assert_eq!((inuse_objects, inuse_space), (0, 0), "every free counted");
}

/// Reallocates one block of each kind to each other kind's size, with the new block sampled or
/// not, and checks the bytes that must survive. Returns how many blocks were sampled.
#[inline(never)]
fn realloc_between_kinds(layouts: &[Layout], sample_new: bool) -> i64 {
    let mut sampled = 0;
    for (i, &from) in layouts.iter().enumerate() {
        for &to in layouts {
            let seed = i as u8 ^ 0x5a;
            heapsight::set_sample_rate(1);
            // SAFETY: a non-zero layout, reallocated then freed below.
            let p = unsafe { DIRECT.alloc(from) };
            sampled += 1;
            assert_placed(p, from);
            fill(p, from.size(), seed);
            heapsight::set_sample_rate(if sample_new { 1 } else { 0 });
            // SAFETY: `p` is live with `from`; `to.size()` is non-zero and, at `from`'s
            // alignment, a valid layout.
            let q = unsafe { DIRECT.realloc(p, from, to.size()) };
            let new = Layout::from_size_align(to.size(), from.align()).unwrap();
            assert!(!q.is_null());
            assert_eq!(q as usize % from.align(), 0, "{from:?} -> {new:?}");
            if sample_new {
                sampled += 1;
                assert_placed(q, new);
            }
            let kept = from.size().min(to.size());
            assert!(holds(q, kept, seed), "{from:?} -> {new:?} lost bytes");
            // SAFETY: `q` is live with `new`.
            unsafe { DIRECT.dealloc(q, new) };
        }
    }
    sampled
}

fn realloc_keeps_contents_and_counts() {
    let layouts = layouts();
    let mut sampled = 0;
    for sample_new in [false, true] {
        sampled += realloc_between_kinds(&layouts, sample_new);
        heapsight::set_sample_rate(0);
        let [alloc_objects, _, inuse_objects, inuse_space] =
            site(&profile(), "realloc_between_kinds");
        assert_eq!(alloc_objects, sampled, "sample_new {sample_new}");
        assert_eq!(
            (inuse_objects, inuse_space),
            (0, 0),
            "sample_new {sample_new}"
        );
    }
}

/// Grows one large block of alignment 1 step by step, each resize sampled or not, and returns
/// it with its layout.
#[inline(never)]
fn grow_large_block(steps: &[(usize, bool)]) -> (*mut u8, Layout, Vec<[i64; 4]>) {
    heapsight::set_sample_rate(1);
    let mut layout = Layout::from_size_align(LARGE, 1).unwrap();
    // SAFETY: a non-zero layout; resized and freed by the caller.
    let mut p = unsafe { DIRECT.alloc(layout) };
    fill(p, layout.size(), 3);
    let mut seen = Vec::new();
    for &(size, sampled) in steps {
        heapsight::set_sample_rate(if sampled { 1 } else { 0 });
        // SAFETY: `p` is live with `layout`; `size` is non-zero.
        p = unsafe { DIRECT.realloc(p, layout, size) };
        assert!(!p.is_null());
        let kept = layout.size().min(size);
        layout = Layout::from_size_align(size, 1).unwrap();
        assert!(holds(p, kept, 3), "lost bytes growing to {size}");
        fill(p, size, 3);
        heapsight::set_sample_rate(0);
        seen.push(site(&profile(), "grow_large_block"));
    }
    (p, layout, seen)
}

/// A large tagged block resized again and again (a growing vector) is resized by the inner
/// allocator around its padding; each resize counts the old sample out and the new one in, or
/// leaves the block counted nowhere when the resize is not sampled.
fn a_large_block_resized_in_place_keeps_its_counts() {
    let steps = [
        (2 * LARGE, true),
        (4 * LARGE, false),
        (8 * LARGE, true),
        (3 * LARGE, true),
        (16 * LARGE, false),
        (32 * LARGE, true),
    ];
    let (p, layout, seen) = grow_large_block(&steps);
    for (&(size, sampled), counts) in steps.iter().zip(&seen) {
        let [_, _, inuse_objects, inuse_space] = *counts;
        if sampled {
            assert_eq!(
                (inuse_objects, inuse_space),
                (1, size as i64),
                "after {size}"
            );
        } else {
            assert_eq!((inuse_objects, inuse_space), (0, 0), "after {size}");
        }
    }
    let sampled = 1 + steps.iter().filter(|s| s.1).count() as i64;
    assert_eq!(
        seen.last().unwrap()[0],
        sampled,
        "every sampled resize counted"
    );
    // SAFETY: `p` is live with `layout`.
    unsafe { DIRECT.dealloc(p, layout) };
    let [_, _, inuse_objects, inuse_space] = site(&profile(), "grow_large_block");
    assert_eq!((inuse_objects, inuse_space), (0, 0), "the free counted");
}

/// Four threads allocate, grow, shrink and free blocks of every kind through the global
/// allocator, each handing half of its blocks to another thread to free.
fn churn_through_shifted(rounds: usize) {
    let (senders, mut receivers): (Vec<_>, Vec<_>) =
        (0..4).map(|_| std::sync::mpsc::channel()).unzip();
    receivers.rotate_left(1);
    std::thread::scope(|scope| {
        for (t, (tx, rx)) in senders.into_iter().zip(receivers).enumerate() {
            scope.spawn(move || shifted_worker(t as u64, rounds, tx, rx));
        }
    });
}

#[inline(never)]
fn shifted_worker(
    t: u64,
    rounds: usize,
    tx: std::sync::mpsc::Sender<Vec<u8>>,
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
) {
    let mut s = 0x9E37_79B9u64 + t;
    for round in 0..rounds {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let len = match s % 10 {
            0 => (LARGE - 8) + (s as usize >> 8) % 1024,
            1 => 300 << 10,
            _ => 1 + (s as usize >> 8) % 2000,
        };
        let mut v: Vec<u8> = (0..len).map(|i| (i + round) as u8).collect();
        v.extend_from_slice(&[7; 300]);
        v.truncate(len / 2 + 1);
        v.shrink_to_fit();
        let wide: Vec<u128> = vec![round as u128; len / 16 + 1];
        assert!(v.iter().enumerate().all(|(i, &b)| b == (i + round) as u8));
        assert!(wide.iter().all(|&w| w == round as u128));
        if round % 2 == 0 {
            tx.send(v).unwrap();
        }
        while let Ok(theirs) = rx.try_recv() {
            drop(theirs);
        }
    }
    drop(tx);
    for theirs in rx {
        drop(theirs);
    }
}

fn an_inner_allocator_whose_blocks_carry_the_mark() {
    for rate in [0, 64 << 10, 1] {
        heapsight::set_sample_rate(rate);
        churn_through_shifted(if rate == 1 { 400 } else { 2000 });
    }
    heapsight::set_sample_rate(0);
    // A worker's last free can come just after the scope has joined it: std's channel keeps a
    // small per-thread context for blocking receives, dropped by a thread-local destructor that
    // runs once the worker's closure has returned. Give those a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let [alloc_objects, _, inuse_objects, inuse_space] = loop {
        let counts = site(&profile(), "shifted_worker");
        if counts[2..] == [0, 0] || std::time::Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(
        alloc_objects > 1000,
        "rate 1 sampled {alloc_objects} blocks"
    );
    assert_eq!((inuse_objects, inuse_space), (0, 0), "every free counted");
}

fn main() {
    let cases: [(&str, fn()); 4] = [
        (
            "sampled_blocks_carry_the_mark_and_keep_their_alignment",
            sampled_blocks_carry_the_mark_and_keep_their_alignment,
        ),
        (
            "realloc_keeps_contents_and_counts",
            realloc_keeps_contents_and_counts,
        ),
        (
            "a_large_block_resized_in_place_keeps_its_counts",
            a_large_block_resized_in_place_keeps_its_counts,
        ),
        (
            "an_inner_allocator_whose_blocks_carry_the_mark",
            an_inner_allocator_whose_blocks_carry_the_mark,
        ),
    ];
    for (name, case) in cases {
        case();
        println!("test {name} ... ok");
    }
    let stats = heapsight::stats();
    assert_eq!(stats.dropped_samples(), 0, "{stats:?}");
    println!("tagged_blocks: {} passed, 0 failed", cases.len());
}
