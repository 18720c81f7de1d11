//! The sampled-block region: one reserved address range that holds every sampled allocation
//! smaller than [`LARGE`].
//!
//! Its purpose is the free path. A free must learn whether its block was sampled, and most frees
//! are of small blocks that were not. The region is always placed inside one fixed address window
//! (64 to 80 TiB) where nothing else is mapped in practice, so that question is a shift and a
//! compare of the pointer against constants ([`in_window`]): no lock, no hash probe, no memory
//! read at all, not even of the region's own address (a load that, from the user's crate, would
//! also go through the GOT). A pointer in the window that is not a slot of the region (another
//! copy of heapsight, or an inner allocator that mapped memory there) only costs the slow path,
//! which checks the exact range ([`contains`]).
//!
//! The range is split into one span per power-of-two size class. A span hands out fixed-size
//! slots: fresh ones from a bump counter, reused ones from lock-free LIFO free lists (Treiber
//! stacks whose heads carry a generation tag against ABA: [`free_list`]). Each slot has a metadata record in a
//! parallel array, so a free finds what its allocation recorded by index arithmetic alone.
//!
//! Each class has [`SHARDS`] free lists, each head on its own cache line. A thread frees into and
//! takes from its own shard first (the caller passes it), so threads that sample and free their
//! own blocks never pass a head's cache line back and forth; a thread whose shard is empty takes
//! from the others before it bumps, so reuse, and the region's footprint, stay as with one list.
//!
//! Must never: allocate through the global allocator, block, or hand out a slot twice.

use crate::lockfree::free_list;
use crate::os;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Sampled blocks whose size or alignment reaches this go to the inner allocator instead and are
/// tracked in [`crate::live`]. A power of two, so `size | align >= LARGE` tests both at once.
pub(crate) const LARGE: usize = 128 << 10;
const MIN_CLASS_SHIFT: u32 = 4; // 16 bytes
/// 16 B ..= 256 KiB: a marked block (see `sampler::mark`) just under [`LARGE`] needs a slot up to
/// 15 bytes longer.
const CLASS_COUNT: usize = 15;
const MAX_SLOT: usize = 1 << (MIN_CLASS_SHIFT as usize + CLASS_COUNT - 1);
/// Address space reserved per size class. Only touched pages are ever resident.
const SPAN: usize = 512 << 20;
pub(crate) const REGION_LEN: usize = SPAN * CLASS_COUNT;
/// The region's start before it exists: kernel space on every 64-bit Linux, so `contains` is
/// false for any user pointer without a separate "initialised" check.
const NO_REGION: usize = 0xFFFF_F000_0000_0000;
/// The region is always placed inside the address window `[WINDOW, WINDOW + 2^WINDOW_SHIFT)`
/// (64 TiB to 80 TiB). On 47-bit (and larger) address spaces nothing else maps there in practice:
/// the kernel places mappings top-down from just under 128 TiB and position-independent
/// executables at about 85 TiB; sanitizer shadows lie below 48 TiB. Where the window cannot be
/// had (a 39-bit address space), the tables are not set up and every sample is a counted drop.
const WINDOW_SHIFT: u32 = 44;
const WINDOW: usize = 4 << WINDOW_SHIFT;
/// Places tried inside the window, this far apart, should an earlier one be taken.
const PLACEMENT_STEP: usize = 1 << 40;
const PLACEMENTS: usize = (1 << WINDOW_SHIFT) / PLACEMENT_STEP;
// The region fits in the window from its last place, and every place is aligned for the largest
// slot class.
const _: () = assert!(REGION_LEN <= PLACEMENT_STEP && PLACEMENT_STEP % MAX_SLOT == 0);

static BASE: AtomicUsize = AtomicUsize::new(NO_REGION);

/// What an allocation recorded about a sampled slot, read back when it is freed.
#[repr(C)]
pub(crate) struct SlotMeta {
    /// Stack table id while in use; the next free slot (index + 1) while on the free list.
    pub(crate) stack_or_next: AtomicU32,
    pub(crate) size: AtomicU32,
    pub(crate) weight_fx: AtomicU64,
    /// The allocation's [`crate::clock::stamp`] while in use; 0 while on the free list. Written
    /// last on allocation (Release) and cleared first on free, so a [`live_slots`] scan that
    /// sees a stamp sees the fields above as that allocation wrote them.
    pub(crate) allocated: AtomicU32,
}

/// Freed slots this large give their pages back to the kernel ([`release_free_slots`]), so that
/// the region's resident memory follows the sampled blocks in use, not the most ever in use.
/// Smaller slots share pages and are kept for reuse.
const RELEASE_CLASSES_FROM: usize = (14 - MIN_CLASS_SHIFT) as usize; // 16 KiB slots

/// [`SlotMeta::size`] of a freed slot of the classes above that still holds its pages (while a
/// slot is free the field is otherwise unused: 0 means released, or never used).
///
/// A freed slot keeps its pages until [`release_free_slots`] gives them back, which the
/// profiler calls after each profile it builds. Releasing each slot as it was freed cost a
/// service whose sampled blocks of 16 KiB and more come and go a system call and the page faults
/// of refilling the slot, per sample: byte-heavy churn (`benches/overhead.rs`) ran 2.5-3.3x
/// slower than bare instead of about 1.0x, and with a cap of 2 MiB kept it still did.
const SIZE_KEPT: u32 = u32::MAX;

/// Gives back the pages of every freed slot of 16 KiB and more that still holds them: the
/// region's resident memory then follows the sampled blocks in use rather than the most ever in
/// use. Takes each class's free lists whole while it works (allocations meanwhile carve fresh
/// slots), so no slot it releases can be in anyone's hands. Not for the allocator hook: it makes
/// a system call per slot released.
pub(crate) fn release_free_slots() {
    if BASE.load(Ordering::Acquire) == NO_REGION {
        return;
    }
    for class in RELEASE_CLASSES_FROM..CLASS_COUNT {
        for shard in 0..SHARDS {
            // The whole list at once, in one exchange: popping slot by slot would go on for as
            // long as other threads kept freeing into the list.
            let mut chain = take_all(class, shard);
            while chain != 0 {
                let index = chain - 1;
                let meta = meta_ptr(class, index);
                chain = meta.stack_or_next.load(Ordering::Relaxed);
                if meta.size.load(Ordering::Relaxed) == SIZE_KEPT {
                    meta.size.store(0, Ordering::Relaxed);
                    release_slot(class, index);
                }
                push_free(class, index, shard);
            }
        }
    }
}

/// Gives a freed slot's pages back to the kernel (see [`RELEASE_CLASSES_FROM`]).
#[cold]
#[inline(never)]
fn release_slot(class: usize, index: u32) {
    let size = slot_size(class);
    let slot = BASE.load(Ordering::Relaxed) + class * SPAN + index as usize * size;
    // SAFETY: the slot is page-aligned (slots are aligned to their size), lies inside the
    // region's mapping, and is no one's until its free pushes it; its pages read as zeros
    // afterwards, which every user of a slot allows for (zeroed allocations clear it anyway).
    unsafe { os::release(slot, size) };
}

/// Free lists per class. A power of two; threads are spread over them by [`alloc`]'s and
/// [`free`]'s `shard` argument.
pub(crate) const SHARDS: usize = 8;

/// A free-list head alone on its cache line: generation tag in the high half, slot index + 1 in
/// the low half.
#[repr(align(64))]
struct Head(AtomicU64);

#[repr(align(64))]
struct Class {
    /// Slots ever handed out from the bump counter.
    bumped: AtomicU32,
    meta: AtomicUsize,
    heads: [Head; SHARDS],
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_HEAD: Head = Head(AtomicU64::new(0));
#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_CLASS: Class = Class {
    bumped: AtomicU32::new(0),
    meta: AtomicUsize::new(0),
    heads: [EMPTY_HEAD; SHARDS],
};
static CLASSES: [Class; CLASS_COUNT] = [EMPTY_CLASS; CLASS_COUNT];

/// False for every pointer that is not a slot of the region: the free path's whole test for small
/// blocks, a shift and a compare with no memory read. True may still be a pointer of the inner
/// allocator; [`contains`] then decides.
#[inline(always)]
pub(crate) fn in_window(ptr: *mut u8) -> bool {
    window_tag(ptr as usize) == WINDOW >> WINDOW_SHIFT
}

/// `addr >> WINDOW_SHIFT`. On x86-64 the shift is written out, because the compiler otherwise
/// rewrites `tag == 4` as a mask-and-compare whose two 64-bit constants each take an extra
/// instruction; in a loop around a fast allocator every instruction on the free path shows.
#[inline(always)]
fn window_tag(addr: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let mut tag = addr;
        // SAFETY: shifts a register; reads and writes no memory and leaves the stack alone.
        unsafe {
            std::arch::asm!(
                "shr {0}, {shift}",
                inout(reg) tag,
                shift = const WINDOW_SHIFT,
                options(pure, nomem, nostack),
            )
        };
        tag
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        addr >> WINDOW_SHIFT
    }
}

/// True when `ptr` is a slot of the region.
#[inline]
pub(crate) fn contains(ptr: *mut u8) -> bool {
    (ptr as usize).wrapping_sub(BASE.load(Ordering::Relaxed)) < REGION_LEN
}

fn class_of(size: usize, align: usize) -> Option<usize> {
    let need = size
        .max(align)
        .max(1 << MIN_CLASS_SHIFT)
        .next_power_of_two();
    let class = (need.trailing_zeros() - MIN_CLASS_SHIFT) as usize;
    (class < CLASS_COUNT).then_some(class)
}

fn slot_size(class: usize) -> usize {
    1 << (class as u32 + MIN_CLASS_SHIFT)
}

fn slots_per_class(class: usize) -> u32 {
    (SPAN / slot_size(class)) as u32
}

/// Reserves the region and the metadata arrays. Called once by [`crate::tables::ready`].
/// Returns the bytes of address space reserved, or `None` if it could not be had.
pub(crate) fn init() -> Option<usize> {
    // Every place tried is aligned to the largest slot: slots are then naturally aligned to their
    // own size, which satisfies any alignment up to the class size.
    let reserve = REGION_LEN;
    let raw =
        (0..PLACEMENTS).find_map(|i| os::map_zeroed_at(WINDOW + i * PLACEMENT_STEP, reserve))?;
    let base = raw.as_ptr() as usize;
    let mut reserved = reserve;
    for (class, c) in CLASSES.iter().enumerate() {
        let len = slots_per_class(class) as usize * std::mem::size_of::<SlotMeta>();
        let Some(meta) = os::map_zeroed(len) else {
            // Without metadata for every class the region cannot serve; give it all back.
            for (earlier, e) in CLASSES.iter().enumerate().take(class) {
                let len = slots_per_class(earlier) as usize * std::mem::size_of::<SlotMeta>();
                if let Some(p) = NonNull::new(e.meta.swap(0, Ordering::Relaxed) as *mut u8) {
                    // SAFETY: mapped above by this function and not yet published.
                    unsafe { os::unmap(p, len) };
                }
            }
            // SAFETY: the reservation was never published.
            unsafe { os::unmap(raw, reserve) };
            return None;
        };
        c.meta.store(meta.as_ptr() as usize, Ordering::Relaxed);
        reserved += len;
    }
    // Release: the metadata pointers above are visible to whoever sees the base.
    BASE.store(base, Ordering::Release);
    Some(reserved)
}

fn meta_ptr(class: usize, index: u32) -> &'static SlotMeta {
    let base = CLASSES[class].meta.load(Ordering::Relaxed) as *const SlotMeta;
    // SAFETY: `index < slots_per_class(class)` (callers derive it from a slot inside the span),
    // and the array holds that many zero-initialised records (valid atomics) for the process's
    // whole life: it is never unmapped once published.
    unsafe { &*base.add(index as usize) }
}

/// A sampled slot: its address and the record to fill in.
pub(crate) struct Slot {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) meta: &'static SlotMeta,
}

/// Takes a slot that fits `size` bytes at `align`, starting `offset` bytes into the slot (slots
/// are aligned to their size, so a block at `offset` lies that far past a 16-byte boundary),
/// from the calling thread's `shard` of the free lists if it can. `None` if the region was not reserved,
/// the class is too large, or the class's span is used up; the caller then falls back to the
/// inner allocator and counts a drop.
pub(crate) fn alloc(size: usize, align: usize, offset: usize, shard: usize) -> Option<Slot> {
    let base = BASE.load(Ordering::Acquire);
    if base == NO_REGION {
        return None;
    }
    let class = class_of(size + offset, align)?;
    let c = &CLASSES[class];
    let index = (0..SHARDS)
        .find_map(|i| pop_free(class, (shard + i) % SHARDS))
        .or_else(|| {
            c.bumped
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < slots_per_class(class)).then_some(n + 1)
                })
                .ok()
        })?;
    let addr = base + class * SPAN + index as usize * slot_size(class) + offset;
    let meta = meta_ptr(class, index);
    Some(Slot {
        ptr: NonNull::new(addr as *mut u8)?,
        meta,
    })
}

/// The class and slot index of a pointer for which [`contains`] is true.
fn locate(ptr: *mut u8) -> (usize, u32) {
    let offset = (ptr as usize).wrapping_sub(BASE.load(Ordering::Relaxed));
    let class = offset / SPAN;
    (class, ((offset % SPAN) / slot_size(class)) as u32)
}

/// The metadata record of a slot of the region.
pub(crate) fn slot_of(ptr: *mut u8) -> &'static SlotMeta {
    let (class, index) = locate(ptr);
    meta_ptr(class, index)
}

/// Returns a slot to the calling thread's `shard` of its class's free lists.
pub(crate) fn free(ptr: *mut u8, shard: usize) {
    let (class, index) = locate(ptr);
    let meta = meta_ptr(class, index);
    meta.allocated.store(0, Ordering::Relaxed);
    if class >= RELEASE_CLASSES_FROM {
        meta.size.store(SIZE_KEPT, Ordering::Relaxed);
    }
    push_free(class, index, shard);
}

/// Pushes a slot this thread holds onto `shard`'s free list of its class.
fn push_free(class: usize, index: u32, shard: usize) {
    let head = &CLASSES[class].heads[shard % SHARDS].0;
    free_list::push(head, &meta_ptr(class, index).stack_or_next, index);
}

/// Empties `shard`'s free list of `class` and returns its top (slot index + 1, 0 for none): the
/// caller then holds every slot of the chain, linked through `stack_or_next`.
fn take_all(class: usize, shard: usize) -> u32 {
    free_list::take_all(&CLASSES[class].heads[shard].0)
}

fn pop_free(class: usize, shard: usize) -> Option<u32> {
    free_list::pop(&CLASSES[class].heads[shard].0, |i| {
        &meta_ptr(class, i).stack_or_next
    })
}

/// Calls `f(stack, size, weight_fx, stamp)` for every slot in use. The scan reads the metadata of
/// every slot ever handed out, as many as the sampled blocks live at the busiest moment, and
/// takes no lock: a slot allocated or freed while it runs may be seen either way.
pub(crate) fn live_slots(mut f: impl FnMut(u32, u32, u64, u32)) {
    if BASE.load(Ordering::Acquire) == NO_REGION {
        return;
    }
    for (class, c) in CLASSES.iter().enumerate() {
        for index in 0..c.bumped.load(Ordering::Relaxed) {
            let m = meta_ptr(class, index);
            // Acquire pairs with the Release of the allocation that wrote the stamp.
            let at = m.allocated.load(Ordering::Acquire);
            if at != 0 {
                f(
                    m.stack_or_next.load(Ordering::Relaxed),
                    m.size.load(Ordering::Relaxed),
                    m.weight_fx.load(Ordering::Relaxed),
                    at,
                );
            }
        }
    }
}

/// Bytes of slot records in use: records are handed out densely from the start of each class's
/// array, so this is what is resident of them, to within a page per class.
pub(crate) fn meta_bytes() -> usize {
    CLASSES
        .iter()
        .map(|c| {
            let used = c.bumped.load(Ordering::Relaxed) as usize * std::mem::size_of::<SlotMeta>();
            used.next_multiple_of(4096)
        })
        .sum()
}

/// Bytes of slots handed out and not yet returned, by class, for [`crate::Stats`].
pub(crate) fn slots_ever_used_bytes() -> usize {
    CLASSES
        .iter()
        .enumerate()
        .map(|(class, c)| c.bumped.load(Ordering::Relaxed) as usize * slot_size(class))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_sizes_and_alignments() {
        assert_eq!(class_of(1, 1), Some(0));
        assert_eq!(class_of(16, 8), Some(0));
        assert_eq!(class_of(17, 8), Some(1));
        assert_eq!(class_of(24, 64), Some(2));
        assert_eq!(class_of(LARGE, 8), Some(CLASS_COUNT - 2));
        assert_eq!(class_of(LARGE - 1 + 8, 8), Some(CLASS_COUNT - 1));
        assert_eq!(class_of(MAX_SLOT + 1, 8), None);
        assert_eq!(slot_size(CLASS_COUNT - 1), MAX_SLOT);
        assert_eq!(MAX_SLOT, 2 * LARGE);
    }

    #[test]
    fn the_window_holds_every_place_and_nothing_the_process_maps_itself() {
        for i in 0..PLACEMENTS {
            let start = WINDOW + i * PLACEMENT_STEP;
            assert!(in_window(start as *mut u8));
            assert!(in_window((start + REGION_LEN - 1) as *mut u8));
        }
        assert!(!in_window((WINDOW - 1) as *mut u8));
        assert!(!in_window((WINDOW + (1 << WINDOW_SHIFT)) as *mut u8));
        let on_stack = 0u8;
        let on_heap = Box::new(0u8);
        let mapped = os::map_zeroed(1 << 20).unwrap();
        let code = in_window as *const () as *mut u8;
        for p in [
            &on_stack as *const u8 as *mut u8,
            &*on_heap as *const u8 as *mut u8,
            mapped.as_ptr(),
            code,
        ] {
            assert!(!in_window(p), "{p:p}");
        }
        // SAFETY: mapped above, referred to by nothing else.
        unsafe { os::unmap(mapped, 1 << 20) };
    }

    #[test]
    fn a_place_already_mapped_is_never_taken() {
        // An address below the window that the kernel does not hand out on its own.
        let addr = 3 << WINDOW_SHIFT;
        let first = os::map_zeroed_at(addr, 1 << 20).expect("the place is free");
        assert_eq!(first.as_ptr() as usize, addr);
        assert!(os::map_zeroed_at(addr, 1 << 20).is_none());
        assert!(os::map_zeroed_at(addr + (512 << 10), 1 << 20).is_none());
        // SAFETY: mapped above, referred to by nothing else.
        unsafe { os::unmap(first, 1 << 20) };
    }

    #[test]
    fn slots_freed_into_other_shards_are_reused_once_each_before_the_class_grows() {
        assert!(crate::tables::ready_or_wait());
        // 40,000 bytes: a class no other test of this binary takes slots from.
        let (size, class) = (40_000, class_of(40_000, 8).unwrap());
        let first = alloc(size, 8, 0, 0).unwrap().ptr;
        let second = alloc(size, 8, 0, 0).unwrap().ptr;
        let bumped = CLASSES[class].bumped.load(Ordering::Relaxed);
        free(first.as_ptr(), 3);
        free(second.as_ptr(), SHARDS - 1);
        let mut again = [0, 2].map(|shard| alloc(size, 8, 0, shard).unwrap().ptr);
        again.sort();
        let mut before = [first, second];
        before.sort();
        assert_eq!(again, before, "each freed slot comes back exactly once");
        assert_eq!(CLASSES[class].bumped.load(Ordering::Relaxed), bumped);
        for p in again {
            free(p.as_ptr(), 0);
        }
    }

    #[test]
    fn freed_large_slots_keep_their_pages_until_released() {
        assert!(crate::tables::ready_or_wait());
        // 100,000 bytes: a class (128 KiB slots) no other test of this binary takes slots from.
        let size = 100_000;
        let slot = slot_size(class_of(size, 8).unwrap());
        let slots: Vec<_> = (0..16).map(|_| alloc(size, 8, 0, 0).unwrap().ptr).collect();
        for p in &slots {
            // SAFETY: a slot of `slot` bytes that this test holds.
            unsafe { p.as_ptr().write_bytes(1, slot) };
        }
        let resident = || -> usize {
            let r = slots
                .iter()
                .map(|p| os::resident_bytes(p.as_ptr() as usize, slot));
            r.sum()
        };
        assert_eq!(resident(), 16 * slot, "every page touched");
        for (i, p) in slots.iter().enumerate() {
            free(p.as_ptr(), i);
        }
        assert_eq!(
            resident(),
            16 * slot,
            "freed slots keep their pages for reuse"
        );
        // Reused, a slot still holds what its last owner wrote: no page was given back.
        let again = alloc(size, 8, 0, 0).unwrap().ptr;
        // SAFETY: a slot this test holds again, written above.
        assert_eq!(unsafe { again.as_ptr().add(slot - 1).read() }, 1);
        free(again.as_ptr(), 0);
        release_free_slots();
        assert_eq!(resident(), 0, "every freed slot given back");
        // The lists are whole again: the 16 slots come back before the class grows.
        let bumped = CLASSES[class_of(size, 8).unwrap()]
            .bumped
            .load(Ordering::Relaxed);
        let mut back: Vec<_> = (0..16).map(|i| alloc(size, 8, 0, i).unwrap().ptr).collect();
        let mut before = slots.clone();
        back.sort();
        before.sort();
        assert_eq!(back, before);
        assert_eq!(
            CLASSES[class_of(size, 8).unwrap()]
                .bumped
                .load(Ordering::Relaxed),
            bumped
        );
        for p in back {
            free(p.as_ptr(), 0);
        }
    }

    #[test]
    fn pointers_outside_an_unreserved_region_are_never_inside() {
        for p in [
            0usize,
            8,
            0x1000,
            0x5555_5555_0000,
            0x7fff_ffff_f000,
            usize::MAX,
        ] {
            assert!(p.wrapping_sub(NO_REGION) >= REGION_LEN, "{p:#x}");
        }
    }
}
