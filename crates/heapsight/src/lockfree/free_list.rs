//! Lock-free LIFO lists of slot indices (Treiber stacks), whose links live beside the slots.
//!
//! A list is one 64-bit head word: a generation tag in its high half and the top slot's index + 1
//! in its low half (0: empty). Each slot's link holds the next slot's index + 1. The tag changes
//! with every push, pop and take, so that a pop which read `top` and `top`'s link, and was then
//! overtaken by other threads that popped `top`, pushed others and pushed `top` again (the ABA
//! problem), fails its exchange instead of installing a link that is no longer true.
//!
//! A slot is on at most one list, and its link is written only by the thread that holds it
//! (the one pushing it); a stale link read by a pop that then fails is harmless.

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// The head word of an empty list with a new tag: what `head` becomes when taken whole.
fn emptied(head: u64) -> u64 {
    (head >> 32).wrapping_add(1) << 32
}

/// `head` with a new tag and `top` (slot index + 1, 0 for none).
fn with_top(head: u64, top: u32) -> u64 {
    emptied(head) | top as u64
}

/// Pushes slot `index`, which the calling thread holds, onto the list at `head`; `link` is the
/// slot's link.
pub(crate) fn push(head: &AtomicU64, link: &AtomicU32, index: u32) {
    let mut now = head.load(Ordering::Relaxed);
    loop {
        link.store(now as u32, Ordering::Relaxed);
        // Release: the link written above is visible to the thread that pops this slot.
        match head.compare_exchange_weak(
            now,
            with_top(now, index + 1),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => return,
            Err(seen) => now = seen,
        }
    }
}

/// Pops the top slot of the list at `head`, if any; `link_of(i)` is slot `i`'s link. The
/// caller then holds the slot.
pub(crate) fn pop<'a>(head: &AtomicU64, link_of: impl Fn(u32) -> &'a AtomicU32) -> Option<u32> {
    let mut now = head.load(Ordering::Acquire);
    loop {
        let top = now as u32;
        if top == 0 {
            return None;
        }
        // The link may be stale if another thread pops and re-pushes `top` meanwhile; the tag in
        // the head then differs and the exchange below fails, so a stale link is never installed.
        let next = link_of(top - 1).load(Ordering::Relaxed);
        match head.compare_exchange_weak(
            now,
            with_top(now, next),
            Ordering::Acquire,
            Ordering::Acquire,
        ) {
            Ok(_) => return Some(top - 1),
            Err(seen) => now = seen,
        }
    }
}

/// Empties the list at `head` and returns its top (slot index + 1, 0 for none): the caller then
/// holds every slot of the chain, linked from the top through each slot's link.
pub(crate) fn take_all(head: &AtomicU64) -> u32 {
    let mut now = head.load(Ordering::Acquire);
    loop {
        if now as u32 == 0 {
            return 0;
        }
        // A new tag, so that a pop that read the old top cannot install its stale link.
        match head.compare_exchange_weak(now, emptied(now), Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => return now as u32,
            Err(seen) => now = seen,
        }
    }
}
