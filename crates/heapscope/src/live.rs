//! The large-sample table: sampled blocks of [`crate::region::LARGE`] bytes or more, which stay
//! in the inner allocator, keyed by address.
//!
//! Only frees of large blocks probe it, and those are rare next to small frees and cost the
//! inner allocator far more (often an `munmap`) than a probe. It is an open-addressing table
//! of fixed capacity: an insert claims an empty or dead slot with a compare-and-swap, a removal
//! marks its slot dead. Addresses in it are unique, since a block is inserted before its pointer
//! is handed out and removed before it is given back.
//!
//! Must never: allocate through the global allocator, block, or grow.

use crate::os;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

const CAPACITY: usize = 1 << 16;
const EMPTY: usize = 0;
const DEAD: usize = 1;

#[repr(C)]
struct Entry {
    addr: AtomicUsize,
    stack: AtomicU32,
    weight_fx: AtomicU64,
}

static TABLE: AtomicUsize = AtomicUsize::new(0);

/// What a large sampled allocation recorded.
pub(crate) struct LargeSample {
    pub(crate) stack: u32,
    pub(crate) weight_fx: u64,
}

pub(crate) fn init() -> Option<usize> {
    let len = CAPACITY * std::mem::size_of::<Entry>();
    let table = os::map_zeroed(len)?;
    TABLE.store(table.as_ptr() as usize, Ordering::Release);
    Some(len)
}

fn entries() -> Option<&'static [Entry]> {
    let table = TABLE.load(Ordering::Acquire) as *const Entry;
    if table.is_null() {
        return None;
    }
    // SAFETY: the mapping holds CAPACITY zeroed entries (valid atomics), is never unmapped once
    // published, and is only ever accessed through atomics.
    Some(unsafe { std::slice::from_raw_parts(table, CAPACITY) })
}

fn home(addr: usize) -> usize {
    // Blocks this large are at least page aligned in most allocators: mix the high bits down.
    (addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize >> (64 - CAPACITY.trailing_zeros())
}

/// Records a sampled large block. False when the table is full or missing (a counted drop).
pub(crate) fn insert(addr: usize, stack: u32, weight_fx: u64) -> bool {
    let Some(table) = entries() else { return false };
    let start = home(addr);
    for i in 0..CAPACITY {
        let e = &table[(start + i) & (CAPACITY - 1)];
        let cur = e.addr.load(Ordering::Relaxed);
        if (cur == EMPTY || cur == DEAD)
            && e.addr.compare_exchange(cur, addr, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            e.stack.store(stack, Ordering::Relaxed);
            e.weight_fx.store(weight_fx, Ordering::Relaxed);
            return true;
        }
    }
    false
}

/// Removes a block if it was sampled, returning what its allocation recorded.
///
/// The block's owner publishes the pointer to the freeing thread, so the entry's fields, written
/// before the pointer left the allocating thread, are visible here.
pub(crate) fn remove(addr: usize) -> Option<LargeSample> {
    let table = entries()?;
    let start = home(addr);
    for i in 0..CAPACITY {
        let e = &table[(start + i) & (CAPACITY - 1)];
        let cur = e.addr.load(Ordering::Relaxed);
        if cur == EMPTY {
            return None;
        }
        if cur == addr {
            let sample = LargeSample {
                stack: e.stack.load(Ordering::Relaxed),
                weight_fx: e.weight_fx.load(Ordering::Relaxed),
            };
            e.addr.store(DEAD, Ordering::Relaxed);
            return Some(sample);
        }
    }
    None
}
