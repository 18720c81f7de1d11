//! `timer-leak-jemalloc`: the story's leak on jemalloc, profiled by jemalloc's own profiler and
//! served through heapsight. See [`timer_leak_demo::cli`].

use heapsight_jemalloc::JemallocSource;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's profiler on from the start, counting every allocation, at the same 4 KiB mean
/// sample period (2^12) as the `timer-leak` binary.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"prof:true,prof_accum:true,lg_prof_sample:12\0";

fn main() {
    timer_leak_demo::cli::run("timer-leak-jemalloc", Arc::new(JemallocSource::new()));
}
