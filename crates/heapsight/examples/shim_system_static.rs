//! The shim benchmark's workload (`examples/shim_cost`) with `Sampler<System>` as the global allocator,
//! declared as a `#[global_allocator]` static with `Sampler::new` (its countdown is a
//! thread-local of heapsight's own), at the default sample rate.

#[path = "shim_cost/workload.rs"]
mod workload;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

fn main() {
    workload::rate_from_env();
    workload::run();
}
