//! The shim benchmark's workload (`examples/shim_cost`) with `Sampler<Jemalloc>` as the global
//! allocator (declared with `heapsight::global_allocator!`), at the default sample rate.

#[path = "shim_cost/workload.rs"]
mod workload;

heapsight::global_allocator!(tikv_jemallocator::Jemalloc);

fn main() {
    workload::rate_from_env();
    workload::run();
}
