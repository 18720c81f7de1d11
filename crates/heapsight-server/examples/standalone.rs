//! A plain (non-async) program serving its profiles from a thread of its own while its main
//! thread allocates. Run it and open http://127.0.0.1:6060/debug/pprof/.
//!
//!   cargo run --release -p heapsight-server --example standalone [-- ADDR [SECONDS]]

heapsight::global_allocator!(std::alloc::System);

#[inline(never)]
fn grow(cache: &mut Vec<Vec<u8>>, i: usize) {
    cache.push(vec![i as u8; 64 << 10]);
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:6060".into());
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
    let server = heapsight_server::spawn(addr.as_str())?;
    println!("serving on http://{}/debug/pprof/", server.local_addr());
    let start = std::time::Instant::now();
    let mut cache = Vec::new();
    let mut i = 0;
    while start.elapsed().as_secs() < seconds {
        grow(&mut cache, i);
        if cache.len() > 4096 {
            cache.drain(..2048);
        }
        i += 1;
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    server.shutdown();
    Ok(())
}
