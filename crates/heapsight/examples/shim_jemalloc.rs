//! The shim benchmark's workload (`examples/shim_cost`) with jemalloc as the global allocator.
//! The runner also runs it with jemalloc's own profiler on (`_RJEM_MALLOC_CONF`).

#[path = "shim_cost/workload.rs"]
mod workload;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    workload::run();
}
