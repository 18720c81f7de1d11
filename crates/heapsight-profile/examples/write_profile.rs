//! Allocates at a few call sites and writes `heap.pb.gz` and `allocs.pb.gz` to the current
//! directory (or the directory given as the first argument). Open them with
//! `go tool pprof -top heap.pb.gz`.

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

#[inline(never)]
fn keep_buffers(out: &mut Vec<Vec<u8>>) {
    for _ in 0..256 {
        out.push(vec![1u8; 256 * 1024]);
    }
}

#[inline(never)]
fn churn() {
    for i in 0..10_000 {
        std::hint::black_box(vec![i as u8; 4096]);
    }
}

fn main() -> std::io::Result<()> {
    heapsight::set_sample_rate(64 * 1024);
    let mut kept = Vec::with_capacity(256);
    keep_buffers(&mut kept);
    churn();
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    heapsight_profile::write_heap_profile(&mut std::fs::File::create(dir.join("heap.pb.gz"))?)?;
    heapsight_profile::write_allocs_profile(&mut std::fs::File::create(dir.join("allocs.pb.gz"))?)?;
    println!(
        "wrote {} and {}",
        dir.join("heap.pb.gz").display(),
        dir.join("allocs.pb.gz").display()
    );
    Ok(())
}
