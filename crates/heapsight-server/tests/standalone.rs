//! A plain program (no async runtime of its own) serves its profiles with `spawn` while its main
//! thread keeps allocating: every request is answered, and the profile shows the main thread's
//! allocation site.

mod common;

use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

#[inline(never)]
fn main_thread_allocates(cache: &mut Vec<Vec<u8>>, i: usize) {
    cache.push(vec![i as u8; 16 << 10]);
}

fn main() {
    heapsight::set_sample_rate(64 * 1024);
    let server = heapsight_server::spawn("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = server.local_addr();
    let client = std::thread::spawn(move || {
        let mut profiles = Vec::new();
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(100));
            let r = common::request_to(addr, "GET /debug/pprof/heap HTTP/1.1", b"");
            assert_eq!(r.status, 200);
            profiles.push(r.body);
        }
        profiles
    });
    let mut cache = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    while !client.is_finished() {
        main_thread_allocates(&mut cache, i);
        if cache.len() > 2048 {
            cache.drain(..1024);
        }
        i += 1;
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the server stopped answering"
        );
    }
    let profiles = client.join().expect("every request answered");
    let last = heapsight_profile::Profile::from_pprof_bytes(profiles.last().unwrap()).unwrap();
    let names: Vec<&str> = last
        .samples
        .iter()
        .flat_map(|s| last.stack_names(s))
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("main_thread_allocates")),
        "the main thread's site is in the profile"
    );
    server.shutdown();
    println!("standalone: 1 passed, 0 failed ({i} allocations while serving 10 profiles)");
}
