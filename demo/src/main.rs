//! `timer-leak`: the story's leak, profiled by heapsight's sampler. See [`timer_leak_demo::cli`].

use heapsight::SamplerSource;
use std::sync::Arc;

heapsight::global_allocator!(std::alloc::System);

/// Finer than the library default (about 1% of a core at the demo's allocation rate): the demo
/// wants a sharp picture of a megabyte-sized leak within seconds.
const SAMPLE_RATE: usize = 4 * 1024;

fn main() {
    heapsight::set_sample_rate(SAMPLE_RATE);
    timer_leak_demo::cli::run("timer-leak", Arc::new(SamplerSource));
}
