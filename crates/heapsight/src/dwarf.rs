//! The DWARF unwinder for programs built without frame pointers: `framehop` over the unwind
//! tables (`.eh_frame`) that every Rust binary carries for panics, read in place from memory.
//!
//! Everything that allocates happens in [`prepare`], which [`crate::set_unwinder`] calls outside
//! the hook: the loaded objects are listed with `dl_iterate_phdr`, and each one's
//! `.eh_frame_hdr` (its `PT_GNU_EH_FRAME` segment), `.eh_frame` and text are handed to framehop
//! as slices of the process's own memory; a pool of framehop caches is allocated with them. A
//! sample then takes a cache from the pool with one compare-and-swap (a thread that finds none
//! free falls back to the frame-pointer walk and counts it), and unwinds without allocating or
//! locking (framehop's `MustNotAllocateDuringUnwind`), reading the stack only inside the
//! thread's bounds.
//!
//! Objects loaded after [`prepare`] (a later `dlopen`) are not known: stacks end at their first
//! frame. Calling [`crate::set_unwinder`] again prepares afresh.
//!
//! Must never: allocate, lock, or read outside the current thread's stack while unwinding.

use crate::unwind::StackBounds;
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, MustNotAllocateDuringUnwind};
use framehop::{Module, Unwinder as _};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

/// Caches in the pool: as many threads can unwind at once.
const CACHES: usize = 16;

type Dwarf = UnwinderX86_64<&'static [u8], MustNotAllocateDuringUnwind>;
type Cache = CacheX86_64<MustNotAllocateDuringUnwind>;

struct Prepared {
    unwinder: Dwarf,
    caches: Vec<(AtomicBool, UnsafeCell<Cache>)>,
}

// SAFETY: each cache is only touched by the thread that won its flag (see `with_cache`); the
// unwinder is only read after it is published.
unsafe impl Sync for Prepared {}

static PREPARED: AtomicPtr<Prepared> = AtomicPtr::new(std::ptr::null_mut());

/// Lists the loaded objects and builds the unwinder and its caches. Allocates: call it outside
/// the hook, with sampling paused. A previous preparation stays allocated (a thread may still be
/// using it); preparing again costs its memory once more.
pub(crate) fn prepare() {
    let mut unwinder = Dwarf::new();
    for module in modules() {
        unwinder.add_module(module);
    }
    let caches = (0..CACHES)
        .map(|_| (AtomicBool::new(false), UnsafeCell::new(Cache::new_in())))
        .collect();
    let prepared = Box::into_raw(Box::new(Prepared { unwinder, caches }));
    PREPARED.store(prepared, Ordering::Release);
}

/// Fills `out` with the return addresses of the frames above `caller_frame` (the address of a
/// local of the capturing function), leaf first. `None` when no cache is free or nothing is
/// prepared: the caller then walks frame pointers.
#[inline(never)]
pub(crate) fn capture(
    bounds: StackBounds,
    out: &mut [usize],
    caller_frame: usize,
) -> Option<(usize, bool)> {
    // SAFETY: published by `prepare` and never freed.
    let prepared = unsafe { PREPARED.load(Ordering::Acquire).as_ref()? };
    let Some((busy, cache)) = prepared.caches.iter().find(|(busy, _)| {
        busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }) else {
        crate::tables::DWARF_FALLBACKS.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    struct Release<'a>(&'a AtomicBool);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let _release = Release(busy);
    // SAFETY: this thread won the cache's flag above and gives it back when `_release` drops.
    let cache = unsafe { &mut *cache.get() };
    Some(walk(&prepared.unwinder, cache, bounds, out, caller_frame))
}

#[inline(always)]
fn walk(
    unwinder: &Dwarf,
    cache: &mut Cache,
    bounds: StackBounds,
    out: &mut [usize],
    caller_frame: usize,
) -> (usize, bool) {
    let (ip, sp, bp): (u64, u64, u64);
    // SAFETY: reads the instruction pointer, stack pointer and frame pointer into registers;
    // no memory is touched.
    unsafe {
        std::arch::asm!(
            "lea {ip}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            ip = out(reg) ip,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags),
        )
    };
    let mut regs = UnwindRegsX86_64::new(ip, sp, bp);
    let mut read_stack = |addr: u64| -> Result<u64, ()> {
        let a = addr as usize;
        if a < bounds.low || a % 8 != 0 || a.saturating_add(8) > bounds.high {
            return Err(());
        }
        // SAFETY: the word lies inside the current thread's stack, mapped and readable while
        // this thread runs.
        Ok(unsafe { *(a as *const u64) })
    };
    let mut address = FrameAddress::from_instruction_pointer(ip);
    let mut n = 0;
    loop {
        let ret = match unwinder.unwind_frame(address, &mut regs, cache, &mut read_stack) {
            Ok(Some(ret)) if ret != 0 => ret,
            _ => return (n, false),
        };
        // After unwinding a frame, the stack pointer is its caller's: frames whose caller's
        // stack pointer is at or below the capturing function's locals are the unwinder's own.
        if regs.sp() as usize > caller_frame {
            if n == out.len() {
                return (n, true);
            }
            out[n] = ret as usize;
            n += 1;
        }
        address = match FrameAddress::from_return_address(ret) {
            Some(a) => a,
            None => return (n, false),
        };
    }
}

/// The loaded objects, as framehop modules over their unwind tables in memory.
fn modules() -> Vec<Module<&'static [u8]>> {
    let mut out: Vec<Module<&'static [u8]>> = Vec::new();
    // SAFETY: dl_iterate_phdr calls `collect` with each loaded object's headers, which stay
    // valid during the call; `out` outlives the iteration.
    unsafe {
        libc::dl_iterate_phdr(
            Some(collect),
            (&mut out as *mut Vec<Module<&'static [u8]>>).cast(),
        )
    };
    out
}

unsafe extern "C" fn collect(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: `data` is the Vec passed by `modules`, and `info` the object dl_iterate_phdr
    // describes, valid for this call.
    let (out, info) = unsafe { (&mut *(data as *mut Vec<Module<&'static [u8]>>), &*info) };
    if info.dlpi_phdr.is_null() {
        return 0;
    }
    // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let base = info.dlpi_addr;
    let text = phdrs
        .iter()
        .find(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0);
    let hdr = phdrs.iter().find(|p| p.p_type == libc::PT_GNU_EH_FRAME);
    let (Some(text), Some(hdr)) = (text, hdr) else {
        return 0;
    };
    let memory = |svma: u64, len: u64| -> &'static [u8] {
        // SAFETY: callers pass ranges inside the object's loaded segments, which stay mapped
        // and readable for as long as the object stays loaded; `modules` runs only for objects
        // loaded now (see the module's docs on dlopen).
        unsafe { std::slice::from_raw_parts((base + svma) as *const u8, len as usize) }
    };
    let hdr_data = memory(hdr.p_vaddr, hdr.p_memsz);
    let Some(eh_frame_svma) = eh_frame_address(hdr_data, hdr.p_vaddr) else {
        return 0;
    };
    // `.eh_frame` runs to the end of the loaded segment that holds it, at most.
    let Some(holder) = phdrs.iter().find(|p| {
        p.p_type == libc::PT_LOAD
            && p.p_vaddr <= eh_frame_svma
            && eh_frame_svma < p.p_vaddr + p.p_memsz
    }) else {
        return 0;
    };
    let eh_frame_len = holder.p_vaddr + holder.p_filesz.min(holder.p_memsz) - eh_frame_svma;
    let text_svma = text.p_vaddr..text.p_vaddr + text.p_memsz;
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string owned by the dynamic loader.
        unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }
            .to_string_lossy()
            .into_owned()
    };
    let section_info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: Some(text_svma.clone()),
        text: Some(memory(text.p_vaddr, text.p_filesz.min(text.p_memsz))),
        eh_frame_svma: Some(eh_frame_svma..eh_frame_svma + eh_frame_len),
        eh_frame: Some(memory(eh_frame_svma, eh_frame_len)),
        eh_frame_hdr_svma: Some(hdr.p_vaddr..hdr.p_vaddr + hdr.p_memsz),
        eh_frame_hdr: Some(hdr_data),
        ..Default::default()
    };
    out.push(Module::new(
        name,
        base + text_svma.start..base + text_svma.end,
        base,
        section_info,
    ));
    0
}

/// The stated address of `.eh_frame`, from the `.eh_frame_hdr` at `hdr_svma`: its second field,
/// in the encoding its first byte names (in practice 4 bytes relative to the field itself).
fn eh_frame_address(hdr: &[u8], hdr_svma: u64) -> Option<u64> {
    const PCREL_SDATA4: u8 = 0x1b;
    const UDATA4: u8 = 0x03;
    const SDATA4: u8 = 0x0b;
    const PCREL_UDATA4: u8 = 0x13;
    let (&version, rest) = hdr.split_first()?;
    let (&encoding, rest) = rest.split_first()?;
    if version != 1 || rest.len() < 2 + 4 {
        return None;
    }
    let field: [u8; 4] = rest[2..6].try_into().ok()?;
    let field_svma = hdr_svma + 4;
    match encoding {
        PCREL_SDATA4 => Some(field_svma.wrapping_add(i32::from_le_bytes(field) as i64 as u64)),
        PCREL_UDATA4 => Some(field_svma.wrapping_add(u32::from_le_bytes(field) as u64)),
        SDATA4 => Some(i32::from_le_bytes(field) as i64 as u64),
        UDATA4 => Some(u32::from_le_bytes(field) as u64),
        _ => None,
    }
}
