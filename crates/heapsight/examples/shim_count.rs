//! The shim benchmark's workload (`examples/shim_cost`) under an allocator that counts the calls
//! it gets, for the runner's per-call figures: `System` behind four relaxed counters.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[path = "shim_cost/workload.rs"]
mod workload;

struct Counting {
    allocs: AtomicU64,
    frees: AtomicU64,
    reallocs: AtomicU64,
}

// SAFETY: every call is passed on to System unchanged; the counters touch no memory of a block.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocs.fetch_add(1, Relaxed);
        // SAFETY: forwarded unchanged from our caller.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.allocs.fetch_add(1, Relaxed);
        // SAFETY: forwarded unchanged from our caller.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.frees.fetch_add(1, Relaxed);
        // SAFETY: forwarded unchanged from our caller.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.reallocs.fetch_add(1, Relaxed);
        // SAFETY: forwarded unchanged from our caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting {
    allocs: AtomicU64::new(0),
    frees: AtomicU64::new(0),
    reallocs: AtomicU64::new(0),
};

fn main() {
    workload::run();
    println!(
        "allocs={} frees={} reallocs={}",
        GLOBAL.allocs.load(Relaxed),
        GLOBAL.frees.load(Relaxed),
        GLOBAL.reallocs.load(Relaxed)
    );
}
