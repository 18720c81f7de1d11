//! Where the sampled-block region goes when its address window is partly or wholly taken.
//!
//! The free path recognises sampled blocks by address alone, so the region must lie inside its
//! fixed window (64 to 80 TiB; see `src/region.rs`). This test runs itself once per case, in a
//! fresh process whose window is occupied before anything in it allocates:
//! - `first-taken`: the first place in the window is mapped already; the region takes the next,
//!   and sampling, profiles and frees work as usual;
//! - `window-taken`: the whole window is mapped; the profiler stays off, every sample is a counted
//!   drop, and the program's allocations and frees still work.
//!
//! Runs without the test harness, which would allocate (and so might set the tables up) before a
//! case had occupied the window.

use heapsight_profile::HeapView;
use std::process::Command;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

/// The window and the region's size, as `src/region.rs` defines them.
const WINDOW: usize = 4 << 44;
const WINDOW_LEN: usize = 1 << 44;
const REGION_LEN: usize = 15 * (512 << 20);

const CASE_VAR: &str = "HEAPSIGHT_REGION_CASE";

fn occupy(addr: usize, len: usize) {
    // SAFETY: a fresh inaccessible mapping that never replaces an existing one.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_NORESERVE
                | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_eq!(p as usize, addr, "could not occupy {addr:#x}");
}

/// Runs before `main`, so before the Rust runtime or the test allocates anything.
extern "C" fn occupy_before_main() {
    // SAFETY: getenv with a NUL-terminated name; nothing changes the environment this early.
    let case = unsafe { libc::getenv(c"HEAPSIGHT_REGION_CASE".as_ptr()) };
    if case.is_null() {
        return;
    }
    // SAFETY: getenv returned a NUL-terminated string that lives as long as the environment.
    match unsafe { std::ffi::CStr::from_ptr(case) }.to_bytes() {
        b"first-taken" => occupy(WINDOW, REGION_LEN),
        b"window-taken" => occupy(WINDOW, WINDOW_LEN),
        _ => {}
    }
}

#[used]
#[link_section = ".init_array"]
static OCCUPY: extern "C" fn() = occupy_before_main;

fn in_window(p: usize) -> bool {
    (WINDOW..WINDOW + WINDOW_LEN).contains(&p)
}

#[inline(never)]
fn keep_small_blocks() -> Vec<Vec<u8>> {
    (0..1000).map(|i| vec![i as u8; 512]).collect()
}

fn inuse_here(view: HeapView) -> i64 {
    let profile = heapsight_profile::heap_profile(view);
    let index = profile.sample_type_index("inuse_space").unwrap();
    profile
        .samples
        .iter()
        .filter(|s| {
            profile
                .stack_names(s)
                .iter()
                .any(|n| n.contains("keep_small_blocks"))
        })
        .map(|s| s.values[index])
        .sum()
}

fn first_taken() {
    heapsight::set_sample_rate(1);
    let kept = keep_small_blocks();
    for b in &kept {
        let p = b.as_ptr() as usize;
        assert!(in_window(p), "sampled block at {p:#x}, outside the window");
        assert!(
            p >= WINDOW + REGION_LEN,
            "sampled block at {p:#x}, in the occupied place"
        );
    }
    assert_eq!(inuse_here(HeapView::InUse), 512_000);
    drop(kept);
    assert_eq!(inuse_here(HeapView::InUse), 0);
    heapsight::set_sample_rate(heapsight::DEFAULT_SAMPLE_RATE);
    let stats = heapsight::stats();
    assert_eq!(stats.dropped_samples(), 0, "{stats:?}");
}

fn window_taken() {
    heapsight::set_sample_rate(1);
    let kept = keep_small_blocks();
    assert!(kept.iter().all(|b| !in_window(b.as_ptr() as usize)));
    assert!(kept.iter().enumerate().all(|(i, b)| b[511] == i as u8));
    drop(kept);
    let grown: Vec<Vec<u8>> = (0..100).map(|i| vec![i as u8; 300 << 10]).collect();
    drop(grown);
    heapsight::set_sample_rate(heapsight::DEFAULT_SAMPLE_RATE);
    let stats = heapsight::stats();
    assert!(stats.dropped_no_tables >= 1100, "{stats:?}");
    assert_eq!(stats.reserved_bytes, 0, "{stats:?}");
    assert!(heapsight_profile::heap_profile(HeapView::Allocs)
        .samples
        .is_empty());
}

fn main() {
    if let Ok(case) = std::env::var(CASE_VAR) {
        match case.as_str() {
            "first-taken" => first_taken(),
            "window-taken" => window_taken(),
            other => panic!("unknown case {other}"),
        }
        return;
    }
    let me = std::env::current_exe().unwrap();
    let cases = ["first-taken", "window-taken"];
    for case in cases {
        let out = Command::new(&me).env(CASE_VAR, case).output().unwrap();
        assert!(
            out.status.success(),
            "case {case}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        println!("test {case} ... ok");
    }
    println!("region_placement: {} passed, 0 failed", cases.len());
}
