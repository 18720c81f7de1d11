//! The shim benchmark's workload (`examples/shim_cost`) with `Sampler<Jemalloc>` as the global allocator,
//! declared as a `#[global_allocator]` static with `Sampler::new` (its countdown is a
//! thread-local of heapsight's own), at the default sample rate.

#[path = "shim_cost/workload.rs"]
mod workload;

#[global_allocator]
static GLOBAL: heapsight::Sampler<tikv_jemallocator::Jemalloc> =
    heapsight::Sampler::new(tikv_jemallocator::Jemalloc);

fn main() {
    workload::rate_from_env();
    workload::run();
}
