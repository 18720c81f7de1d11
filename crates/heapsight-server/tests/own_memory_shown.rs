//! The profiler's own memory, told apart and shown: the heap profile includes it when asked,
//! under each part's root frame, and the memory API and the index page say how much of the
//! process the profiler holds, by part.

mod common;

use common::request_to;
use std::time::Duration;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

/// Asked to (`own=1`), the heap profile shows the profiler's own allocations, each under its
/// part's root frame; by default it leaves them out. The memory API and the index page say how
/// much the profiler holds, by part.
#[test]
fn the_profilers_own_memory_is_told_and_shown_when_asked() {
    heapsight::set_sample_rate(64 << 10);
    let server = heapsight_server::Options::new()
        .history(Duration::from_millis(20), 1000, 4 << 20)
        .spawn("127.0.0.1:0")
        .unwrap();
    // 8 MiB the profiler keeps for its history, as far as the sampler can tell.
    let kept: Vec<Vec<u8>> = heapsight::own::run(heapsight::own::Part::History, || {
        (0..128).map(|i| vec![i as u8; 64 << 10]).collect()
    });
    let addr = server.local_addr();
    let profile = |path: &str| {
        let r = request_to(addr, &format!("GET {path} HTTP/1.1"), b"");
        assert_eq!(r.status, 200);
        heapsight_profile::Profile::from_pprof_bytes(&r.body).unwrap()
    };
    let under = |p: &heapsight_profile::Profile, root: &str| -> i64 {
        p.samples
            .iter()
            .filter(|s| p.stack_names(s).last().is_some_and(|f| f.ends_with(root)))
            .map(|s| s.values[3])
            .sum()
    };
    let plain = profile("/debug/pprof/heap");
    assert_eq!(under(&plain, "heapsight::own::history"), 0);
    let own = profile("/debug/pprof/heap?own=1");
    let history = under(&own, "heapsight::own::history");
    assert!(
        (6 << 20..10 << 20).contains(&history),
        "{history} bytes under heapsight::own::history"
    );

    let r = request_to(addr, "GET /debug/pprof/ui/api/memory HTTP/1.1", b"");
    assert_eq!(r.status, 200);
    let m: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    assert!(m["rss_anon"].as_u64().unwrap() > 8 << 20, "{m}");
    let parts = m["profiler"]["parts"].as_array().unwrap();
    let bytes = |name: &str| {
        parts
            .iter()
            .find(|p| p["part"] == name)
            .and_then(|p| p["bytes"].as_u64())
            .unwrap_or_else(|| panic!("no part {name}: {m}"))
    };
    assert!((6 << 20..10 << 20).contains(&bytes("history")), "{m}");
    assert!(bytes("tables") > 0, "the hook's tables are resident: {m}");
    assert!(m["profiler"]["total"].as_u64().unwrap() >= bytes("history") + bytes("tables"));

    let index = request_to(addr, "GET /debug/pprof/ HTTP/1.1", b"").text();
    let line = index
        .lines()
        .find(|l| l.contains("The profiler itself holds"))
        .unwrap_or_else(|| panic!("no memory line on the index page:\n{index}"));
    assert!(line.contains("history"), "{line}");
    drop(kept);
    heapsight::set_sample_rate(heapsight::DEFAULT_SAMPLE_RATE);
}
