//! `Options::remote_symbolization`: the heap profile carries addresses and mappings only, and
//! the real `go tool pprof`, fetching it by URL, names its frames through `/debug/pprof/symbol`,
//! as it does for a Go service.

mod common;

use common::pprof_tool::go_pprof;
use common::request_to;
use heapsight_profile::Profile;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

#[inline(never)]
fn held_for_the_symbol_server() -> Vec<Vec<u8>> {
    let held = (0..32).map(|i| vec![i as u8; 256 << 10]).collect();
    // Used after the call, so that the call is not a tail call that leaves no frame here.
    std::hint::black_box(held)
}

#[test]
fn go_tool_pprof_names_an_unnamed_profile_through_the_symbol_endpoint() {
    heapsight::set_sample_rate(64 << 10);
    let kept = held_for_the_symbol_server();
    let server = heapsight_server::Options::new()
        .without_history()
        .remote_symbolization()
        .spawn("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();

    let r = request_to(addr, "GET /debug/pprof/heap HTTP/1.1", b"");
    assert_eq!(r.status, 200);
    let p = Profile::from_pprof_bytes(&r.body).unwrap();
    assert!(
        p.functions.is_empty(),
        "named in process: {:?}",
        &p.functions[..3]
    );
    assert!(p.mappings.iter().all(|m| !m.has_functions));
    assert!(p.total("inuse_space") >= 4 << 20, "8 MiB held");

    // The test binary is on this machine, where pprof would read it itself: ask for the
    // symbol server, as pprof does on a machine without the binary.
    let (top, _) = go_pprof(&[
        "-symbolize=remote",
        "-top",
        "-nodecount=100",
        &format!("http://{addr}/debug/pprof/heap"),
    ]);
    assert!(
        top.contains("remote_symbols::held_for_the_symbol_server"),
        "{top}"
    );
    server.shutdown();
    drop(kept);
}
