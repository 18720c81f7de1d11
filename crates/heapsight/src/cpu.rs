//! The CPU profiler: a signal at a fixed rate of the process's CPU time, and in its handler the
//! interrupted thread's stack, walked by frame pointers and counted in a stack table of its own.
//!
//! The timer is `ITIMER_PROF`, which counts the CPU time of all the process's threads and sends
//! `SIGPROF` when each period of it has been used; the kernel delivers it to a thread that was
//! running, so threads are sampled in proportion to the CPU they use. The handler walks the
//! stack as the allocator hook does (frame pointers, every read inside the thread's stack), so
//! it takes no lock and allocates nothing, and interns the stack in a table mapped for the
//! profile alone: a profile's stacks (every leaf is a different instruction) never take room in
//! the heap's table, and the memory goes back to the kernel when the profile ends.
//!
//! Only one profile runs at a time. The handler stays installed once a profile has run, and does
//! nothing between profiles, so a signal still on its way when a profile stops is harmless (the
//! default action would end the process).
//!
//! Must never: allocate, lock, or read outside the interrupted thread's stack in the handler.

use crate::os;
use crate::stacks::StackTable;
use crate::unwind;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Distinct stacks one profile keeps; samples of further new stacks are counted as lost.
const MAX_STACKS: usize = 1 << 13;
/// Frames one profile keeps, all stacks together (4 MiB of address space, resident as used).
const MAX_FRAMES: usize = 1 << 19;
/// Frames walked per sample.
const MAX_DEPTH: usize = 128;

static TABLE: StackTable = StackTable::new(MAX_STACKS, MAX_FRAMES);
/// Samples per stack id: an array of `MAX_STACKS` counters, mapped while a profile runs.
static COUNTS: AtomicUsize = AtomicUsize::new(0);
const COUNTS_LEN: usize = MAX_STACKS * std::mem::size_of::<AtomicU64>();

/// A profile is running (between `start` and the end of `stop`).
static RUNNING: AtomicBool = AtomicBool::new(false);
/// Handlers count samples only while this is set.
static COLLECTING: AtomicBool = AtomicBool::new(false);
/// Handlers between their check of [`COLLECTING`] and their last touch of the table.
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);
static LOST: AtomicU64 = AtomicU64::new(0);
static HANDLER_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Why a CPU profile could not start.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CpuProfileError {
    /// Another CPU profile is running in this process.
    Busy,
    /// Something else handles `SIGPROF` (another profiler): heapsight leaves it alone.
    SignalInUse,
    /// The kernel refused the table's memory or the timer.
    System(String),
}

impl std::fmt::Display for CpuProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CpuProfileError::Busy => {
                f.write_str("a CPU profile is already running in this process")
            }
            CpuProfileError::SignalInUse => {
                f.write_str("another handler of SIGPROF is installed (another profiler?)")
            }
            CpuProfileError::System(e) => write!(f, "could not start the CPU profiler: {e}"),
        }
    }
}

impl std::error::Error for CpuProfileError {}

/// A CPU profile's result: stacks of code addresses (leaf first; the leaf is the interrupted
/// instruction's address plus one, so that it reads as a return address like the rest) with
/// how many samples landed on each.
#[derive(Clone, Debug)]
pub struct CpuProfile {
    pub stacks: Vec<(Vec<u64>, u64)>,
    /// Samples that found the profile's table full.
    pub lost: u64,
    /// The CPU time each sample stands for.
    pub period: Duration,
    pub start: SystemTime,
    pub duration: Duration,
}

impl CpuProfile {
    /// Samples taken, lost ones included.
    pub fn samples(&self) -> u64 {
        self.stacks.iter().map(|(_, n)| n).sum::<u64>() + self.lost
    }
}

/// A running CPU profile; [`CpuProfiler::stop`] ends it and returns what it saw. Dropped
/// without `stop`, it ends and its samples are discarded.
#[derive(Debug)]
pub struct CpuProfiler {
    period: Duration,
    start: SystemTime,
    started: Instant,
    stopped: bool,
}

/// Starts profiling the process's CPU use, `frequency` samples per second of CPU time (100 is
/// what Go uses; at most 1000).
///
/// ```
/// // The process's CPU time, which the profile's clock counts (not the wall clock's, which a
/// // busy machine stretches).
/// fn cpu_time() -> std::time::Duration {
///     let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
///     // SAFETY: a valid clock id and a timespec to fill in.
///     unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
///     std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
/// }
/// let profiler = heapsight::start_cpu_profile(250).expect("no other CPU profile runs");
/// let start = cpu_time();
/// let mut x = 0u64;
/// while cpu_time() - start < std::time::Duration::from_millis(300) {
///     x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
/// }
/// let profile = profiler.stop();
/// // 300 ms of CPU at 250 Hz: about 75 samples.
/// assert!(profile.samples() > 20, "{} samples", profile.samples());
/// assert!(profile.stacks.iter().all(|(frames, _)| !frames.is_empty()));
/// ```
pub fn start_cpu_profile(frequency: u32) -> Result<CpuProfiler, CpuProfileError> {
    let frequency = frequency.clamp(1, 1000);
    if RUNNING.swap(true, Ordering::AcqRel) {
        return Err(CpuProfileError::Busy);
    }
    let fail = |e: CpuProfileError| {
        release_tables();
        RUNNING.store(false, Ordering::Release);
        Err(e)
    };
    if let Err(e) = install_handler() {
        return fail(e);
    }
    let Some(counts) = os::map_zeroed(COUNTS_LEN) else {
        return fail(CpuProfileError::System(
            "no memory for the profile's counts".into(),
        ));
    };
    COUNTS.store(counts.as_ptr() as usize, Ordering::Release);
    if TABLE.map().is_none() {
        return fail(CpuProfileError::System(
            "no memory for the profile's stacks".into(),
        ));
    }
    LOST.store(0, Ordering::Relaxed);
    COLLECTING.store(true, Ordering::SeqCst);
    let period = Duration::from_secs(1) / frequency;
    if let Err(e) = set_timer(period) {
        COLLECTING.store(false, Ordering::SeqCst);
        drain_handlers();
        return fail(CpuProfileError::System(format!("setitimer: {e}")));
    }
    Ok(CpuProfiler {
        period,
        start: SystemTime::now(),
        started: Instant::now(),
        stopped: false,
    })
}

impl CpuProfiler {
    /// Ends the profile and returns its stacks.
    pub fn stop(mut self) -> CpuProfile {
        let duration = self.started.elapsed();
        self.end();
        let stacks = (0..TABLE.len())
            .filter_map(|id| {
                let n = count(id)?.load(Ordering::Relaxed);
                (n > 0).then(|| {
                    let frames = TABLE.with_frames(id, |f| f.map(|a| a as u64).collect());
                    (frames, n)
                })
            })
            .collect();
        let profile = CpuProfile {
            stacks,
            lost: LOST.load(Ordering::Relaxed),
            period: self.period,
            start: self.start,
            duration,
        };
        self.release();
        profile
    }

    /// Stops the timer and waits for handlers still counting.
    fn end(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = set_timer(Duration::ZERO);
        COLLECTING.store(false, Ordering::SeqCst);
        drain_handlers();
    }

    fn release(&mut self) {
        release_tables();
        RUNNING.store(false, Ordering::Release);
    }
}

impl Drop for CpuProfiler {
    fn drop(&mut self) {
        if RUNNING.load(Ordering::Acquire) && !self.stopped {
            self.end();
            self.release();
        }
    }
}

/// Resident bytes of the running profile's table and counts (0 between profiles).
pub(crate) fn resident_bytes() -> usize {
    let counts = COUNTS.load(Ordering::Acquire);
    if counts == 0 {
        return 0;
    }
    TABLE.resident_bytes() + os::resident_bytes(counts, COUNTS_LEN)
}

/// Waits until no handler is between its check of [`COLLECTING`] and its last touch of the
/// tables. A handler that starts later sees `COLLECTING` clear (both are `SeqCst`).
fn drain_handlers() {
    while IN_HANDLER.load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
}

fn release_tables() {
    // SAFETY: called with COLLECTING clear and no handler inside (drained), or before the timer
    // started: nothing uses the table or the counts.
    unsafe { TABLE.unmap() };
    if let Some(p) = std::ptr::NonNull::new(COUNTS.swap(0, Ordering::AcqRel) as *mut u8) {
        // SAFETY: mapped by `start_cpu_profile` with this length; nothing uses it (as above).
        unsafe { os::unmap(p, COUNTS_LEN) };
    }
}

fn count(id: u32) -> Option<&'static AtomicU64> {
    let counts = COUNTS.load(Ordering::Acquire) as *const AtomicU64;
    if counts.is_null() || id as usize >= MAX_STACKS {
        return None;
    }
    // SAFETY: ids are below MAX_STACKS; the array is that long, zeroed (valid atomics), and
    // stays mapped while COLLECTING is set or a handler is inside (see `drain_handlers`), or
    // until `stop` has read it.
    Some(unsafe { &*counts.add(id as usize) })
}

fn set_timer(period: Duration) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: period.as_secs() as libc::time_t,
        tv_usec: period.subsec_micros() as libc::suseconds_t,
    };
    let timer = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: setitimer reads the struct we pass and writes nothing (no old value asked for).
    match unsafe { libc::setitimer(libc::ITIMER_PROF, &timer, std::ptr::null_mut()) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn install_handler() -> Result<(), CpuProfileError> {
    if HANDLER_INSTALLED.load(Ordering::Acquire) {
        return Ok(());
    }
    // SAFETY: sigaction with a zeroed, then filled, struct; the handler is an `extern "C"`
    // function with the SA_SIGINFO signature that only does async-signal-safe work.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut old) != 0 {
            return Err(CpuProfileError::System(
                std::io::Error::last_os_error().to_string(),
            ));
        }
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
            return Err(CpuProfileError::SignalInUse);
        }
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigprof as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGPROF, &action, std::ptr::null_mut()) != 0 {
            return Err(CpuProfileError::System(
                std::io::Error::last_os_error().to_string(),
            ));
        }
    }
    HANDLER_INSTALLED.store(true, Ordering::Release);
    Ok(())
}

extern "C" fn on_sigprof(
    _signal: libc::c_int,
    _info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: errno is this thread's; saved and restored around anything that might set it.
    let errno = unsafe { *libc::__errno_location() };
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    if COLLECTING.load(Ordering::SeqCst) {
        record(context);
    }
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Counts one sample of the thread interrupted at `context`.
fn record(context: *mut libc::c_void) {
    let mut frames = [0usize; MAX_DEPTH];
    let depth = interrupted_stack(context, &mut frames);
    if depth == 0 {
        LOST.fetch_add(1, Ordering::Relaxed);
        return;
    }
    match TABLE.intern(&frames[..depth]).ok().and_then(count) {
        Some(n) => {
            n.fetch_add(1, Ordering::Relaxed);
        }
        None => {
            LOST.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Fills `out` with the interrupted thread's stack: its instruction (plus one), then the return
/// addresses of its frame-pointer chain, read only inside its stack above its stack pointer.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn interrupted_stack(context: *mut libc::c_void, out: &mut [usize]) -> usize {
    if context.is_null() {
        return 0;
    }
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler; we only read it.
    let (ip, fp, sp) = unsafe {
        let uc = &*(context as *const libc::ucontext_t);
        let g = &uc.uc_mcontext.gregs;
        (
            g[libc::REG_RIP as usize] as usize,
            g[libc::REG_RBP as usize] as usize,
            g[libc::REG_RSP as usize] as usize,
        )
    };
    if ip == 0 {
        return 0;
    }
    out[0] = ip + 1;
    let bounds = crate::sampler::known_stack_bounds();
    if bounds.high != 0 && bounds.low <= sp && sp < bounds.high {
        let (n, _) = unwind::walk_from(fp, sp, bounds.high, &mut out[1..]);
        return 1 + n;
    }
    // A stack the hook has not learned (a thread that never allocated through it, as under
    // another global allocator), or code running on a signal stack: each frame record is read
    // through the kernel, which fails on an unmapped address instead of faulting.
    1 + walk_checked(fp, sp, &mut out[1..])
}

/// The frame-pointer walk for a stack of unknown bounds: records must lie above `sp`, within
/// [`UNKNOWN_STACK_SPAN`] of it, and be readable.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn walk_checked(mut fp: usize, sp: usize, out: &mut [usize]) -> usize {
    let limit = sp.saturating_add(UNKNOWN_STACK_SPAN);
    let mut n = 0;
    while n < out.len() && fp >= sp && fp % 8 == 0 && fp.saturating_add(16) <= limit {
        let mut record = [0usize; 2];
        let local = libc::iovec {
            iov_base: record.as_mut_ptr().cast(),
            iov_len: 16,
        };
        let remote = libc::iovec {
            iov_base: fp as *mut libc::c_void,
            iov_len: 16,
        };
        // SAFETY: process_vm_readv copies from our own address space into `record`, which we
        // own; it returns an error rather than faulting when the source is not mapped.
        let read = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        if read != 16 || record[1] == 0 {
            break;
        }
        out[n] = record[1];
        n += 1;
        if record[0] <= fp {
            break;
        }
        fp = record[0];
    }
    n
}

/// How far above the interrupted stack pointer a stack of unknown bounds is walked: the
/// default size of a thread's stack (8 MiB) twice over.
const UNKNOWN_STACK_SPAN: usize = 16 << 20;

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn interrupted_stack(_context: *mut libc::c_void, _out: &mut [usize]) -> usize {
    0
}
