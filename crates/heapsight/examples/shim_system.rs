//! The shim benchmark's workload (`examples/shim_cost`) with `System` as the global allocator.

#[path = "shim_cost/workload.rs"]
mod workload;

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    workload::run();
}
