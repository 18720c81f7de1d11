//! The soak: the hook and the server under everything a service does to them at once, for a
//! set time, with a watchdog.
//!
//! At once, until the time is up:
//! - `HEAPSIGHT_SOAK_THREADS` workers (8 by default) allocate, reallocate and free blocks of
//!   every size class the hook has (1 B to 512 KiB, alignments 1 to 4096), each under a label
//!   set of its own that it changes as it goes, and hand half of their blocks to the next
//!   worker, which frees them;
//! - short-lived threads start, allocate, hand some blocks over and exit;
//! - a thread forks: one child writes a heap profile and leaves, the next execs `/bin/true`;
//! - two clients read every endpoint of a real server over HTTP, CPU profiles included.
//!
//! A watchdog aborts the process (a failed test) when any of these makes no progress for 60 s.
//! At the end everything is freed, and the in-use estimate of every label set the soak used
//! must be back to 0: each free subtracts what its sample added, whichever thread frees it.
//! The drop counters are reported, and the profiler's own memory by its own count must stay
//! within the 8 MiB budget (docs/performance.md, "Memory") throughout, at the default sample
//! rate the budget is set at (`HEAPSIGHT_SOAK_RATE` changes it).
//!
//!     cargo test --release -p heapsight-server --test soak                  # 60 s, as in CI
//!     HEAPSIGHT_SOAK_SECONDS=600 cargo test --release -p heapsight-server --test soak
//!
//! Runs without the test harness: the sample rate is process-wide, and the soak owns the
//! process.

mod common;

use heapsight::Labels;
use std::alloc::{Layout, System};
use std::ffi::CString;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: heapsight::Sampler<System> = heapsight::Sampler::new(System);

/// The budget of the profiler's own memory.
const OWN_BUDGET: u64 = 8 << 20;
/// Blocks a worker holds at most; with sizes spread evenly over the classes, 8 workers hold
/// about 40 MiB.
const HELD: usize = 128;
/// The watchdog's limit on an activity that makes no progress.
const STALL: Duration = Duration::from_secs(60);

/// A block allocated through the global allocator, freed when dropped (on any thread).
struct Block {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: a Block owns its memory alone; the global allocator frees from any thread.
unsafe impl Send for Block {}

impl Block {
    fn new(size: usize, align: usize) -> Block {
        let layout = Layout::from_size_align(size.max(1), align).unwrap();
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        assert!(!ptr.is_null(), "out of memory for {layout:?}");
        // SAFETY: `ptr` holds `layout.size()` bytes; touching the ends makes them resident.
        unsafe {
            ptr.add(layout.size() - 1).write(2);
            ptr.write(1);
        }
        Block { ptr, layout }
    }

    /// Grows or shrinks the block to `size`, keeping its first byte.
    fn resize(&mut self, size: usize) {
        let size = size.max(1);
        // SAFETY: `ptr` was allocated with `layout` and the new size is non-zero; realloc
        // keeps the alignment.
        let ptr = unsafe { std::alloc::realloc(self.ptr, self.layout, size) };
        assert!(!ptr.is_null(), "out of memory resizing to {size}");
        // SAFETY: `ptr` holds at least one byte, the first byte the block was given.
        let first = unsafe { ptr.read() };
        assert_eq!(first, 1, "realloc lost the block's contents");
        self.ptr = ptr;
        self.layout = Layout::from_size_align(size, self.layout.align()).unwrap();
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated (or last resized) with exactly this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// xorshift: each worker's own sequence, the same from run to run.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A size spread evenly over the powers of two from 1 B to 512 KiB, with odd sizes
    /// between them, so that every size class of the region and the large table is used.
    fn size(&mut self) -> usize {
        let class = self.below(20);
        (1usize << class) + self.below(1 << class) as usize
    }
    fn align(&mut self) -> usize {
        match self.below(16) {
            0 => 4096,
            1 => 64,
            2 => 32,
            3..=5 => 16,
            6..=8 => 1,
            _ => 8,
        }
    }
}

/// What each activity has done: the watchdog watches these move.
#[derive(Default)]
struct Progress {
    worker_steps: AtomicU64,
    threads_exited: AtomicU64,
    forks: AtomicU64,
    requests: AtomicU64,
    /// Bit `i`: `ENDPOINTS[i]` has answered.
    endpoints_seen: AtomicU64,
    cpu_profiles: AtomicU64,
}

fn settings(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().expect("a whole number"))
}

/// One worker: allocate, resize and free under its label sets, handing blocks on.
#[inline(never)]
fn work(
    id: usize,
    until: Instant,
    to_next: mpsc::Sender<Block>,
    from_last: mpsc::Receiver<Block>,
    labels: [Labels; 2],
    progress: &Progress,
) {
    let mut d = Draw(0x9E37_79B9_7F4A_7C15 ^ ((id as u64 + 1) * 0x1000_0001));
    let mut held: Vec<Block> = Vec::new();
    let mut step = 0u64;
    while Instant::now() < until {
        // Label changes: each set for a few hundred steps at a time.
        let _labels = labels[(step / 300 % 2) as usize].enter();
        for _ in 0..100 {
            match d.below(8) {
                0..=3 if held.len() < HELD => held.push(Block::new(d.size(), d.align())),
                4 if !held.is_empty() => {
                    let i = d.below(held.len() as u64) as usize;
                    held[i].resize(d.size());
                }
                5 if !held.is_empty() => {
                    let i = d.below(held.len() as u64) as usize;
                    // The next worker frees it; should it have gone, this one does.
                    let _ = to_next.send(held.swap_remove(i));
                }
                _ if !held.is_empty() => {
                    let i = d.below(held.len() as u64) as usize;
                    drop(held.swap_remove(i));
                }
                _ => {}
            }
        }
        // Blocks from the worker before: freed here, allocated there.
        while let Ok(b) = from_last.try_recv() {
            drop(b);
        }
        step += 1;
        progress.worker_steps.fetch_add(1, Ordering::Relaxed);
        // A service between bursts: the two cores are not all the workers'.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Threads that start, allocate and exit, leaving a block that is freed after they are gone.
fn churn_threads(until: Instant, labels: Labels, progress: &Progress) {
    let mut d = Draw(0xC0FF_EE00_1234_5678);
    while Instant::now() < until {
        let (size, align) = (d.size(), d.align());
        let left = std::thread::spawn(move || {
            labels.run(|| {
                let blocks: Vec<Block> = (0..32)
                    .map(|i| Block::new(size >> (i % 8), align))
                    .collect();
                drop(blocks);
                Block::new(size, align)
            })
        })
        .join()
        .expect("a short-lived thread panicked");
        drop(left);
        progress.threads_exited.fetch_add(1, Ordering::Relaxed);
    }
}

/// Forks in turn a child that writes a heap profile and one that execs `/bin/true`; each must
/// exit 0 within the watchdog's limit.
fn forks(until: Instant, progress: &Progress) {
    let true_bin = CString::new("/bin/true").unwrap();
    let argv = [true_bin.as_ptr(), std::ptr::null()];
    let mut exec = false;
    while Instant::now() < until {
        // SAFETY: the child either writes a profile into memory and leaves with _exit, as a
        // service's forked worker would, or execs at once with arguments built before the fork;
        // it never returns into this program.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if exec {
                // SAFETY: a valid path and a null-terminated argument array.
                unsafe { libc::execv(true_bin.as_ptr(), argv.as_ptr()) };
                // SAFETY: leaves the child at once.
                unsafe { libc::_exit(127) };
            }
            let kept: Vec<Vec<u8>> = (0..16).map(|i| vec![i as u8; 40 << 10]).collect();
            let mut out = Vec::new();
            let ok = heapsight_profile::write_heap_profile(&mut out).is_ok() && !out.is_empty();
            drop(kept);
            // SAFETY: leaves the child at once, running no destructors or atexit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child; the watchdog ends a wait that never returns.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "a forked child ({}) failed: status {status:#x}",
            if exec { "exec" } else { "heap profile" }
        );
        progress.forks.fetch_add(1, Ordering::Relaxed);
        exec = !exec;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every endpoint of the server; the CPU profile only from the client that asks for it.
const ENDPOINTS: &[&str] = &[
    "/debug/pprof/",
    "/debug/pprof/heap",
    "/debug/pprof/heap?debug=1",
    "/debug/pprof/heap?seconds=1",
    "/debug/pprof/allocs",
    "/debug/pprof/allocs?debug=1",
    "/debug/pprof/cmdline",
    "/debug/pprof/symbol",
    "/debug/pprof/ui/",
    "/debug/pprof/ui/app.js",
    "/debug/pprof/ui/api/snapshots",
    "/debug/pprof/ui/api/tree",
    "/debug/pprof/ui/api/tree?group=worker",
    "/debug/pprof/ui/api/tree?since=0",
    "/debug/pprof/ui/api/growing",
    "/debug/pprof/ui/api/growing?group=worker",
    "/debug/pprof/ui/api/memory",
    "/debug/pprof/ui/api/folded",
    "/debug/pprof/ui/api/flamegraph.svg",
];

fn read_endpoints(addr: SocketAddr, until: Instant, cpu: bool, progress: &Progress) {
    let mut turn = 0;
    while Instant::now() < until {
        // The clients walk the list from opposite ends; one asks for a CPU profile each round
        // in place of the index page, which the other reads.
        let i = turn % ENDPOINTS.len();
        let (path, cpu_now) = match cpu {
            true if i == 0 => ("/debug/pprof/profile?seconds=1", true),
            true => (ENDPOINTS[i], false),
            false => (ENDPOINTS[ENDPOINTS.len() - 1 - i], false),
        };
        let r = common::request_to(addr, &format!("GET {path} HTTP/1.1"), b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        progress.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = ENDPOINTS.iter().position(|e| *e == path) {
            progress.endpoints_seen.fetch_or(1 << i, Ordering::Relaxed);
        }
        if cpu_now {
            progress.cpu_profiles.fetch_add(1, Ordering::Relaxed);
        }
        turn += 1;
    }
}

/// Aborts the process when an activity stops moving; returns the highest own memory seen.
fn watch(progress: Arc<Progress>, done: Arc<AtomicBool>, own_max: Arc<Mutex<(u64, String)>>) {
    let read = |p: &Progress| {
        [
            ("workers", p.worker_steps.load(Ordering::Relaxed)),
            ("thread starts", p.threads_exited.load(Ordering::Relaxed)),
            ("forks", p.forks.load(Ordering::Relaxed)),
            ("HTTP requests", p.requests.load(Ordering::Relaxed)),
        ]
    };
    let mut last = read(&progress);
    let mut moved = [Instant::now(); 4];
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(500));
        let own = heapsight::stats().own;
        let mut max = own_max.lock().unwrap();
        if own.total() > max.0 {
            *max = (own.total(), parts(&own));
        }
        drop(max);
        let now = read(&progress);
        for i in 0..now.len() {
            if now[i].1 != last[i].1 {
                moved[i] = Instant::now();
            } else if moved[i].elapsed() > STALL && !done.load(Ordering::Relaxed) {
                eprintln!(
                    "soak: watchdog: {} made no progress for {:?} (at {}); aborting",
                    now[i].0, STALL, now[i].1
                );
                std::process::abort();
            }
        }
        last = now;
    }
}

/// The profiler's own memory by part, in MiB.
fn parts(own: &heapsight::own::OwnMemory) -> String {
    let parts: Vec<String> = own
        .parts()
        .iter()
        .map(|(part, bytes)| format!("{} {:.2}", part.name(), *bytes as f64 / (1 << 20) as f64))
        .collect();
    parts.join(", ")
}

fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let seconds = settings("HEAPSIGHT_SOAK_SECONDS", 60);
    let threads = settings("HEAPSIGHT_SOAK_THREADS", 8) as usize;
    // The default rate, at which the memory budget is set; HEAPSIGHT_SOAK_RATE=32768 loads the
    // sampled paths harder, and the tables grow past it with the stacks they then hold.
    let rate = settings("HEAPSIGHT_SOAK_RATE", heapsight::DEFAULT_SAMPLE_RATE as u64);
    heapsight::set_sample_rate(rate as usize);
    let server = heapsight_server::Options::new()
        .history(Duration::from_secs(1), 120, 4 << 20)
        .spawn("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let progress = Arc::new(Progress::default());
    let done = Arc::new(AtomicBool::new(false));
    let own_max = Arc::new(Mutex::new((0, String::new())));
    let watchdog = {
        let (p, d, m) = (progress.clone(), done.clone(), own_max.clone());
        std::thread::spawn(move || watch(p, d, m))
    };
    println!(
        "soak: {seconds} s, {threads} workers, sample rate {rate}, server on {addr}, RssAnon {} KiB",
        rss_anon_kib()
    );

    let label_sets: Vec<[Labels; 2]> = (0..threads)
        .map(|i| {
            let w = i.to_string();
            [
                Labels::new([("worker", w.as_str()), ("phase", "a")]),
                Labels::new([("worker", w.as_str()), ("phase", "b")]),
            ]
        })
        .collect();
    let churn_labels = Labels::new([("worker", "short-lived")]);
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel()).unzip();
    let mut handles = Vec::new();
    for (i, from_last) in receivers.into_iter().enumerate() {
        let to_next = senders[(i + 1) % threads].clone();
        let (labels, progress) = (label_sets[i], progress.clone());
        handles.push(std::thread::spawn(move || {
            work(i, until, to_next, from_last, labels, &progress)
        }));
    }
    drop(senders);
    {
        let progress = progress.clone();
        handles.push(std::thread::spawn(move || {
            churn_threads(until, churn_labels, &progress)
        }));
    }
    {
        let progress = progress.clone();
        handles.push(std::thread::spawn(move || forks(until, &progress)));
    }
    for cpu in [true, false] {
        let progress = progress.clone();
        handles.push(std::thread::spawn(move || {
            read_endpoints(addr, until, cpu, &progress)
        }));
    }
    let mut failed = Vec::new();
    for h in handles {
        if h.join().is_err() {
            failed.push("an activity panicked (its message is above)".to_string());
        }
    }
    done.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();

    let stats = heapsight::stats();
    let heap = heapsight::snapshot();
    let mut held = Vec::new();
    for labels in label_sets.iter().flatten().chain([&churn_labels]) {
        let inuse = heap.inuse_space_under(*labels);
        if inuse != 0 {
            held.push(format!("{labels:?}: {inuse} bytes"));
        }
    }
    let p = &progress;
    println!(
        "soak: {:.0} s: {} worker steps of 100 operations, {} threads started and exited (each leaving a block freed after it), {} forks, {} HTTP requests ({} CPU profiles)",
        started.elapsed().as_secs_f64(),
        p.worker_steps.load(Ordering::Relaxed),
        p.threads_exited.load(Ordering::Relaxed),
        p.forks.load(Ordering::Relaxed),
        p.requests.load(Ordering::Relaxed),
        p.cpu_profiles.load(Ordering::Relaxed),
    );
    println!(
        "soak: samples {}, dropped {} (no tables {}, stack table full {}, region full {}, large table full {}), truncated stacks {}, label sets {} (overflowed {})",
        stats.samples,
        stats.dropped_samples(),
        stats.dropped_no_tables,
        stats.dropped_stack_table_full,
        stats.dropped_region_full,
        stats.dropped_large_table_full,
        stats.truncated_stacks,
        stats.label_sets,
        stats.label_sets_overflowed,
    );
    let (own_highest, own_parts) = own_max.lock().unwrap().clone();
    let own_highest = own_highest.max(stats.own.total());
    println!(
        "soak: the profiler's own memory {:.2} MiB now ({}), {:.2} MiB at most ({own_parts}; budget {} MiB); RssAnon {} KiB",
        stats.own.total() as f64 / (1 << 20) as f64,
        parts(&stats.own),
        own_highest as f64 / (1 << 20) as f64,
        OWN_BUDGET >> 20,
        rss_anon_kib()
    );
    if !held.is_empty() {
        failed.push(format!(
            "in use after everything was freed: {}",
            held.join(", ")
        ));
    }
    if own_highest > OWN_BUDGET {
        failed.push(format!(
            "the profiler's own memory reached {own_highest} bytes"
        ));
    }
    if p.cpu_profiles.load(Ordering::Relaxed) == 0 || p.forks.load(Ordering::Relaxed) < 2 {
        failed.push("a CPU profile and both kinds of fork each ran at least once".to_string());
    }
    let seen = p.endpoints_seen.load(Ordering::Relaxed);
    let unseen: Vec<&str> = (0..ENDPOINTS.len())
        .filter(|i| seen & (1 << i) == 0)
        .map(|i| ENDPOINTS[i])
        .collect();
    if !unseen.is_empty() {
        failed.push(format!("endpoints never read: {unseen:?}"));
    }
    for f in &failed {
        println!("soak: FAILED: {f}");
    }
    println!(
        "soak: {} passed, {} failed",
        u32::from(failed.is_empty()),
        u32::from(!failed.is_empty())
    );
    std::process::exit(i32::from(!failed.is_empty()));
}
