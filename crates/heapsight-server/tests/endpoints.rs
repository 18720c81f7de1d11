//! The endpoints on a real server (127.0.0.1:0), read by the real `go tool pprof` and checked
//! byte for byte where tools depend on them.

mod common;

use common::pprof_tool::{go_pprof, go_pprof_fails};
use common::{request_to, Reply};
use heapsight_profile::Profile;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

/// One server for the whole test binary, with something on the heap at a known call site.
fn server() -> SocketAddr {
    static SERVER: OnceLock<(heapsight_server::Server, Vec<Vec<u8>>)> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            heapsight::set_sample_rate(64 * 1024);
            let kept = held_by_the_endpoint_test();
            (
                heapsight_server::Options::new()
                    .max_seconds(60)
                    .spawn("127.0.0.1:0")
                    .unwrap(),
                kept,
            )
        })
        .0
        .local_addr()
}

/// Allocates in its own body (no tail call into `collect`), so that its frame is on the stack
/// and is the function its allocation addresses lie in.
#[inline(never)]
fn held_by_the_endpoint_test() -> Vec<Vec<u8>> {
    let mut kept = Vec::with_capacity(64);
    for i in 0..64 {
        kept.push(vec![i as u8; 256 << 10]);
    }
    std::hint::black_box(&mut kept);
    kept
}

fn request(method: &str, path: &str, body: &[u8]) -> Reply {
    request_to(server(), &format!("{method} {path} HTTP/1.1"), body)
}

fn url(path: &str) -> String {
    format!("http://{}{path}", server())
}

#[test]
fn heap_and_allocs_open_on_inuse_and_alloc_space_in_go_tool_pprof() {
    let (top, _) = go_pprof(&["-top", &url("/debug/pprof/heap")]);
    assert!(top.contains("Type: inuse_space"), "{top}");
    assert!(
        top.contains("endpoints::held_by_the_endpoint_test"),
        "{top}"
    );
    let (top, _) = go_pprof(&["-top", &url("/debug/pprof/allocs")]);
    assert!(top.contains("Type: alloc_space"), "{top}");
}

#[test]
fn profiles_are_sent_as_go_sends_them() {
    for (path, file) in [
        ("/debug/pprof/heap", "heap"),
        ("/debug/pprof/allocs", "allocs"),
        ("/debug/pprof/heap?gc=1", "heap"),
    ] {
        let r = request("GET", path, b"");
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(
            r.header("content-disposition"),
            Some(format!("attachment; filename=\"{file}\"").as_str())
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        let p = Profile::from_pprof_bytes(&r.body).expect("a valid profile");
        assert_eq!(p.duration_nanos, None, "only deltas carry a duration");
        assert!(p.time_nanos > 0);
    }
}

#[inline(never)]
fn allocated_during_the_delta() -> Vec<Vec<u8>> {
    (0..32).map(|i| vec![i as u8; 512 << 10]).collect()
}

#[test]
fn seconds_gives_a_delta_with_what_happened_in_between() {
    let during = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(500));
        allocated_during_the_delta()
    });
    let r = request("GET", "/debug/pprof/heap?seconds=2", b"");
    let kept = during.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"heap-delta\"")
    );
    let p = Profile::from_pprof_bytes(&r.body).unwrap();
    let duration = p.duration_nanos.expect("a delta has a duration");
    assert!(
        (1_900_000_000..5_000_000_000).contains(&duration),
        "{duration}"
    );
    let names: Vec<Vec<&str>> = p.samples.iter().map(|s| p.stack_names(s)).collect();
    assert!(
        names
            .iter()
            .any(|n| n.iter().any(|f| f.contains("allocated_during_the_delta"))),
        "new allocations in the delta"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.iter().any(|f| f.contains("held_by_the_endpoint_test"))),
        "older allocations are not"
    );
    drop(kept);

    let (top, _) = go_pprof(&["-top", "-seconds", "2", &url("/debug/pprof/heap")]);
    assert!(top.contains("Type: inuse_space"), "{top}");
}

#[test]
fn diff_base_between_two_snapshots() {
    let dir = env!("CARGO_TARGET_TMPDIR");
    let base = format!("{dir}/diff-base.pb.gz");
    let now = format!("{dir}/diff-now.pb.gz");
    std::fs::write(&base, request("GET", "/debug/pprof/heap", b"").body).unwrap();
    let grown = grown_between_snapshots();
    std::fs::write(&now, request("GET", "/debug/pprof/heap", b"").body).unwrap();
    let (top, _) = go_pprof(&["-top", "-diff_base", &base, &now]);
    let line = top
        .lines()
        .find(|l| l.contains("grown_between_snapshots"))
        .unwrap_or_else(|| panic!("{top}"));
    assert!(
        !line.trim_start().starts_with('-'),
        "growth is positive: {line}"
    );
    drop(grown);
}

#[inline(never)]
fn grown_between_snapshots() -> Vec<Vec<u8>> {
    (0..16).map(|i| vec![i as u8; 1 << 20]).collect()
}

#[test]
fn debug_1_is_the_legacy_text_that_pprof_reads() {
    let r = request("GET", "/debug/pprof/heap?debug=1", b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let text = r.text();
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("heap profile: ")
            && header.ends_with(&format!("@ heap/{}", 2 * 64 * 1024)),
        "{header}"
    );
    assert!(
        text.contains("held_by_the_endpoint_test"),
        "symbol lines name the site"
    );
    // Fetched by pprof itself, the text is named through /debug/pprof/symbol, as Go's is.
    let (top, _) = go_pprof(&["-top", &url("/debug/pprof/heap?debug=1")]);
    assert!(top.contains("Type: inuse_space"), "{top}");
    assert!(
        top.contains("endpoints::held_by_the_endpoint_test"),
        "{top}"
    );
}

#[inline(never)]
fn busy_for(d: Duration) -> u64 {
    let end = std::time::Instant::now() + d;
    let mut x = 0u64;
    while std::time::Instant::now() < end {
        // Allocate too, so the CPU profiler's signal lands inside the allocator hook.
        let v = vec![x as u8; 64 + (x as usize % 4096)];
        x = x.wrapping_add(v.len() as u64);
    }
    x
}

/// CPU profiles are one at a time per process: the tests that take them take turns.
static CPU: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn cpu_profile_while_heap_sampling_runs() {
    let _turn = CPU.lock().unwrap_or_else(|p| p.into_inner());
    let worker = std::thread::spawn(|| busy_for(Duration::from_secs(4)));
    // A longer fetch timeout than pprof's default (the window plus a few seconds): naming a
    // CPU profile's addresses reads debug info unit by unit, and with this binary's other tests
    // naming heap profiles at the same time it took 5-10 s on the CI machine (1.1 s alone).
    let (top, _) = go_pprof(&[
        "-top",
        "-seconds",
        "2",
        "-timeout",
        "60",
        &url("/debug/pprof/profile"),
    ]);
    assert!(top.contains("Type: cpu"), "{top}");
    assert!(top.contains("busy_for"), "{top}");
    worker.join().unwrap();
}

#[test]
fn a_second_cpu_profile_gets_a_conflict_not_a_hang() {
    let _turn = CPU.lock().unwrap_or_else(|p| p.into_inner());
    let first = std::thread::spawn(|| request("GET", "/debug/pprof/profile?seconds=3", b""));
    std::thread::sleep(Duration::from_millis(500));
    let second = request("GET", "/debug/pprof/profile?seconds=1", b"");
    let first = first.join().unwrap();
    // One of the two ran; whichever came second was refused at once.
    let statuses = [first.status, second.status];
    assert!(
        statuses.contains(&200) && statuses.contains(&409),
        "{statuses:?}"
    );
}

#[test]
fn errors_are_answered_as_go_answers_them() {
    let cases = [
        (
            "GET",
            "/debug/pprof/heap?seconds=abc",
            400,
            "invalid value for \"seconds\"",
        ),
        (
            "GET",
            "/debug/pprof/heap?seconds=0",
            400,
            "invalid value for \"seconds\"",
        ),
        (
            "GET",
            "/debug/pprof/allocs?seconds=-3",
            400,
            "invalid value for \"seconds\"",
        ),
        ("GET", "/debug/pprof/heap?seconds=100000", 400, "exceeds"),
        (
            "GET",
            "/debug/pprof/heap?seconds=99999999999999999999999999",
            400,
            "invalid value",
        ),
        (
            "GET",
            "/debug/pprof/heap?seconds=1&debug=1",
            400,
            "seconds and debug params are incompatible",
        ),
        (
            "GET",
            "/debug/pprof/profile?seconds=1000000",
            400,
            "exceeds",
        ),
        ("GET", "/debug/pprof/nope", 404, "Unknown profile"),
        ("GET", "/debug/pprof/../../etc/passwd", 404, ""),
        ("POST", "/debug/pprof/heap", 405, ""),
        ("DELETE", "/debug/pprof/allocs", 405, ""),
        ("PUT", "/debug/pprof/profile", 405, ""),
    ];
    for (method, path, status, message) in cases {
        let r = request(method, path, b"");
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert!(r.text().contains(message), "{method} {path}: {}", r.text());
        if status != 404 || message == "Unknown profile" {
            assert_eq!(r.header("x-go-pprof"), Some("1"), "{method} {path}");
            assert_eq!(
                r.header("content-type"),
                Some("text/plain; charset=utf-8"),
                "{method} {path}"
            );
        }
        assert_eq!(r.header("content-disposition"), None);
    }
}

#[test]
fn symbol_and_cmdline() {
    let r = request("GET", "/debug/pprof/symbol", b"");
    assert_eq!((r.status, r.text()), (200, "num_symbols: 1\n".to_string()));
    let addr = held_by_the_endpoint_test as *const () as usize + 1;
    server();
    let r = request(
        "POST",
        "/debug/pprof/symbol",
        format!("{addr:#x}+0x0+junk").as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert!(
        r.text()
            .contains(&format!("{addr:#x} endpoints::held_by_the_endpoint_test")),
        "{}",
        r.text()
    );
    let r = request("GET", "/debug/pprof/cmdline", b"");
    assert!(
        r.text().split('\0').next().unwrap().contains("endpoints"),
        "{}",
        r.text()
    );
    let index = request("GET", "/debug/pprof/", b"");
    assert_eq!(index.status, 200);
    assert!(index
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    for link in [
        "href=\"heap\"",
        "href=\"allocs\"",
        "href=\"profile?seconds=10\"",
        "href=\"cmdline\"",
        "href=\"symbol\"",
    ] {
        assert!(index.text().contains(link), "{link}");
    }
}

#[test]
fn cmdline_and_symbol_can_be_turned_off() {
    let server = limited(
        heapsight_server::Options::new()
            .without_cmdline()
            .without_symbol(),
    );
    let addr = server.local_addr();
    for (path, option) in [
        ("GET /debug/pprof/cmdline", "without_cmdline"),
        ("GET /debug/pprof/symbol", "without_symbol"),
        ("POST /debug/pprof/symbol", "without_symbol"),
    ] {
        let r = request_to(addr, &format!("{path} HTTP/1.1"), b"0x1000");
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(r.text().contains(option), "{path}: {}", r.text());
    }
    let index = request_to(addr, "GET /debug/pprof/ HTTP/1.1", b"");
    assert!(
        !index.text().contains("href=\"cmdline\"") && !index.text().contains("href=\"symbol\""),
        "the index does not offer what is off"
    );
    // The profiles are still named in-process.
    let heap = request_to(addr, "GET /debug/pprof/heap HTTP/1.1", b"");
    let p = heapsight_profile::Profile::from_pprof_bytes(&heap.body).unwrap();
    assert!(p.functions.iter().any(|f| f.name.contains("::")));
}

/// What Parca and Grafana Alloy require of a scraped profile (both fetch /debug/pprof/allocs by
/// default): the right content type, gzip-compressed profile.proto, ids 1..n in order, every
/// location in a mapping with a unique address, string_table[0] empty, one value per sample type.
#[test]
fn allocs_meets_the_ingest_rules_of_parca_and_alloy() {
    use prost::Message;
    let r = request("GET", "/debug/pprof/allocs", b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(&r.body[..2], &[0x1f, 0x8b], "gzip");
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut raw).unwrap();
    let p = heapsight_profile::pprof::proto::Profile::decode(&raw[..]).unwrap();
    assert_eq!(p.string_table[0], "");
    let types: Vec<&str> = p
        .sample_type
        .iter()
        .map(|t| p.string_table[t.r#type as usize].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space"
        ]
    );
    assert_eq!(
        p.string_table[p.default_sample_type as usize],
        "alloc_space"
    );
    assert!(p.time_nanos > 0 && p.period > 0);
    for (i, m) in p.mapping.iter().enumerate() {
        assert_eq!(m.id, i as u64 + 1, "mapping ids run 1..n");
    }
    for (i, f) in p.function.iter().enumerate() {
        assert_eq!(f.id, i as u64 + 1, "function ids run 1..n");
    }
    let mut addresses = std::collections::HashSet::new();
    for (i, l) in p.location.iter().enumerate() {
        assert_eq!(l.id, i as u64 + 1, "location ids run 1..n");
        assert!(
            l.mapping_id >= 1 && l.mapping_id <= p.mapping.len() as u64,
            "location {} has a mapping",
            l.id
        );
        assert!(addresses.insert(l.address), "location addresses are unique");
    }
    assert!(!p.sample.is_empty());
    for s in &p.sample {
        assert_eq!(s.value.len(), 4);
        assert!(s
            .location_id
            .iter()
            .all(|&id| id >= 1 && id <= p.location.len() as u64));
        assert!(
            s.label
                .iter()
                .any(|l| p.string_table[l.key as usize] == "bytes" && l.num > 0),
            "bytes label"
        );
    }
}

/// A server of its own with tight limits, for the tests of limits.
fn limited(options: heapsight_server::Options) -> heapsight_server::Server {
    options.spawn("127.0.0.1:0").unwrap()
}

#[test]
fn waiting_deltas_are_bounded_and_a_client_that_leaves_frees_its_place() {
    let server = limited(heapsight_server::Options::new().max_waiting(1));
    let addr = server.local_addr();
    // The only place is taken by a client that asks for a minute and hangs up after 300 ms.
    let mut leaving = TcpStream::connect(addr).unwrap();
    write!(
        leaving,
        "GET /debug/pprof/heap?seconds=60 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = request_to(addr, "GET /debug/pprof/heap?seconds=1 HTTP/1.1", b"");
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("x-go-pprof"), Some("1"));
    drop(leaving);
    // Its wait is cancelled, so the place is free again well before the minute is up.
    let start = std::time::Instant::now();
    loop {
        let r = request_to(addr, "GET /debug/pprof/heap?seconds=1 HTTP/1.1", b"");
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 429);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the departed client's wait was not cancelled"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn clients_that_never_finish_their_headers_are_cut_off_and_others_are_served() {
    let server = limited(heapsight_server::Options::new());
    let addr = server.local_addr();
    // More half-sent requests than the server serves connections at once (64).
    let started = std::time::Instant::now();
    let mut stalled: Vec<TcpStream> = (0..70)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET /debug/pprof/heap HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    // A whole request still gets its answer, once the stalled ones have been cut off.
    let r = request_to(addr, "GET /debug/pprof/heap HTTP/1.1", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let served = started.elapsed();
    assert!(served < Duration::from_secs(30), "served after {served:?}");
    // Each stalled connection is closed by the server within its 10 s of grace, not held.
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut rest = Vec::new();
        let read = std::io::Read::read_to_end(s, &mut rest);
        let closed = match &read {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(closed, "a stalled connection was held: {read:?}");
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(35), "held for {waited:?}");
    }
}

#[test]
fn a_bearer_token_is_required_once_set() {
    let server = limited(heapsight_server::Options::new().bearer_token("s3cret"));
    let addr = server.local_addr();
    let r = request_to(addr, "GET /debug/pprof/heap HTTP/1.1", b"");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = request_to(
        addr,
        "GET /debug/pprof/heap HTTP/1.1\r\nAuthorization: Bearer wrong",
        b"",
    );
    assert_eq!(r.status, 401);
    let r = request_to(
        addr,
        "GET /debug/pprof/heap HTTP/1.1\r\nAuthorization: Bearer s3cret",
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
}

#[test]
fn oversized_request_bodies_are_refused() {
    let big = vec![b'1'; 2 << 20];
    let r = request("POST", "/debug/pprof/symbol", &big);
    assert_eq!(r.status, 413, "{}", r.text());
}

/// pprof shows a Go server's own error message (it looks for `X-Go-Pprof` and text/plain); ours
/// must reach the user the same way.
#[test]
fn go_tool_pprof_shows_our_error_messages() {
    for (path, message) in [
        ("/debug/pprof/nope", "Unknown profile"),
        (
            "/debug/pprof/heap?seconds=abc",
            "invalid value for \"seconds\"",
        ),
        (
            "/debug/pprof/heap?seconds=100000",
            "exceeds this server's limit",
        ),
        (
            "/debug/pprof/heap?seconds=1&debug=1",
            "seconds and debug params are incompatible",
        ),
    ] {
        let stderr = go_pprof_fails(&["-top", &url(path)]);
        assert!(stderr.contains(message), "{path}: {stderr}");
    }
}
