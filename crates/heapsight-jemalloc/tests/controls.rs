//! jemalloc's run-time controls through heapsight-jemalloc: pausing and resuming sampling, and
//! changing the rate, seen in what the dumps then hold.

#[path = "../../heapsight-profile/tests/common/mod.rs"]
mod common;

use common::site;
use heapsight::SnapshotSource;
use heapsight_jemalloc::{dump, set_active, set_sample_rate, status, JemallocSource};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"prof:true,prof_accum:true,lg_prof_sample:19\0";

/// Estimated bytes in use under stacks through `function`, in a fresh dump.
fn sampled_bytes_at(function: &str) -> i64 {
    let snapshot = JemallocSource::new().snapshot().unwrap();
    site(
        &heapsight_profile::Profile::heap(&snapshot, heapsight_profile::HeapView::InUse),
        function,
    )[3]
}

#[inline(never)]
fn while_paused(keep: &mut Vec<Vec<u8>>) {
    for _ in 0..64 {
        keep.push(vec![1; 1 << 20]);
    }
}

#[inline(never)]
fn while_active(keep: &mut Vec<Vec<u8>>) {
    for _ in 0..64 {
        keep.push(vec![1; 1 << 20]);
    }
}

#[test]
fn pausing_rates_and_resets_do_what_they_say() {
    let s = status().unwrap();
    assert!(s.active && s.accumulating);
    assert_eq!(s.sample_rate, 512 * 1024);

    // 64 MiB in 1 MiB blocks: at a 512 KiB rate nearly every block is sampled when active.
    let mut keep = Vec::with_capacity(128);
    set_active(false).unwrap();
    assert!(!status().unwrap().active);
    while_paused(&mut keep);
    set_active(true).unwrap();
    while_active(&mut keep);
    assert_eq!(sampled_bytes_at("controls::while_paused"), 0);
    let active = sampled_bytes_at("controls::while_active");
    assert!(active > 48 << 20, "only {active} bytes seen while active");

    // A new rate, rounded to a power of two, in status and in the dump; the reset forgets what
    // was sampled before it.
    assert_eq!(set_sample_rate(5000).unwrap(), 4096);
    assert_eq!(status().unwrap().sample_rate, 4096);
    let text = heapsight_jemalloc::ctl::dump().unwrap();
    assert_eq!(dump::parse(&text).unwrap().sample_period, 4096);
    assert_eq!(sampled_bytes_at("controls::while_active"), 0);
    drop(keep);
}
