//! Fuzzes what a client can send a real server: profiles uploaded to the UI's tree endpoint
//! (seeded mutations of this process's own heap profile, raw and gzip-compressed, decoded by
//! the same path as the UI's "Open pprof files") and query strings on every endpoint (made of
//! the endpoints' own parameter names and values chosen to break parsers: huge numbers, bad
//! percent-escapes, regexes that do not compile or compile too large, 100 KB values).
//!
//! Every answer is a status below 500 with a text a person can read, within the client's
//! timeout, and the server keeps serving. An upload it accepts is a well-formed tree: every
//! byte in exactly one node's self. The seed is fixed, and the query strings repeat from run
//! to run; the uploaded profiles start from this process's heap, which does not, so a failing
//! upload is saved to the target's tmp directory. `HEAPSIGHT_FUZZ_SEED` and
//! `HEAPSIGHT_FUZZ_ITERATIONS` explore further.
//!
//! Runs without the test harness: the sample rate is global, and the two parts share a server.

mod common;

use common::request_to;
use flate2::write::GzEncoder;
use std::io::{Read, Write};
use std::net::SocketAddr;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

/// splitmix64: one add and three mixes a draw, the same sequence everywhere.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().expect("a whole number"))
}

/// Protobuf pieces that stress a decoder: varints at and past 64 bits, lengths past the end,
/// field numbers and wire types out of range, and an empty message.
const PROTO_PIECES: &[&[u8]] = &[
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    ],
    &[0x80, 0x80, 0x80, 0x80, 0x80],
    &[0x0a, 0xff, 0xff, 0xff, 0x0f],
    &[0x12, 0x00],
    &[0x1a, 0x02, 0x08, 0x01],
    &[0x22, 0x04, 0x08, 0xff, 0xff, 0x03],
    &[0x2a, 0x00],
    &[0x32, 0x01, 0xff],
    &[0x07],
    &[0x00],
    &[0x78, 0x01],
];

fn mutate(d: &mut Draw, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + d.below(4) {
        let at = d.below(out.len() + 1);
        match d.below(7) {
            0 if !out.is_empty() => {
                let i = d.below(out.len());
                out[i] ^= 1 << d.below(8);
            }
            1 => {
                let piece = *d.pick(PROTO_PIECES);
                out.splice(at..at, piece.iter().copied());
            }
            2 => {
                let end = (at + d.below(64)).min(out.len());
                out.drain(at..end);
            }
            3 => out.truncate(at),
            4 if !out.is_empty() => {
                // A run of the input repeated: repeated fields and duplicated ids.
                let start = d.below(out.len());
                let end = (start + 1 + d.below(256)).min(out.len());
                let run = out[start..end].to_vec();
                out.splice(at..at, run);
            }
            5 if !other.is_empty() => {
                // A piece of the other profile: valid messages with the wrong ids.
                let start = d.below(other.len());
                let end = (start + 1 + d.below(512)).min(other.len());
                out.splice(at..at, other[start..end].iter().copied());
            }
            _ if !out.is_empty() => {
                let i = d.below(out.len());
                out[i] = d.next() as u8;
            }
            _ => {}
        }
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// An answer a person can act on: not a server error, and a body that says something.
fn assert_handled(what: &str, r: &common::Reply) {
    assert!(
        r.status < 500,
        "{what}: {} {}",
        r.status,
        r.text().chars().take(300).collect::<String>()
    );
    // hyper itself refuses a request line over its limit (414) or headers over theirs (431),
    // before any handler runs, with the status alone.
    if r.status >= 400 && r.status != 414 && r.status != 431 {
        assert!(!r.body.is_empty(), "{what}: {} with no text", r.status);
    }
}

#[inline(never)]
fn hold(kept: &mut Vec<Vec<u8>>, i: usize) {
    kept.push(vec![i as u8; 1000 + 37 * i]);
}

fn uploads(addr: SocketAddr, d: &mut Draw, iterations: u64) {
    // Two real profiles of this process, at different moments, with labels on some samples.
    let mut kept = Vec::new();
    heapsight::Labels::new([("tenant", "acme")]).run(|| (0..50).for_each(|i| hold(&mut kept, i)));
    let first = request_to(addr, "GET /debug/pprof/heap HTTP/1.1", b"").body;
    (50..120).for_each(|i| hold(&mut kept, i));
    let second = request_to(addr, "GET /debug/pprof/allocs HTTP/1.1", b"").body;
    let raw = [gunzip(&first), gunzip(&second)];
    let mut accepted = 0;
    for i in 0..iterations {
        let which = d.below(2);
        let mut body = mutate(d, &raw[which], &raw[1 - which]);
        // A third goes through gzip, so that the decompressing path reads the damage too; a
        // few keep the damage in the gzip stream itself.
        match d.below(6) {
            0 | 1 => body = gzip(&body),
            2 => {
                body = [first.as_slice(), second.as_slice()][which].to_vec();
                let at = d.below(body.len());
                body[at] ^= 1 << d.below(8);
            }
            _ => {}
        }
        let base = if d.below(8) == 0 {
            format!("&base_bytes={}", d.below(body.len() + 2))
        } else {
            String::new()
        };
        let ty = *d.pick(&["", "&type=inuse_space", "&type=alloc_objects", "&type=x"]);
        let group = *d.pick(&["", "", "&group=tenant", "&group=nothing"]);
        let line = format!("POST /debug/pprof/ui/api/tree?max_nodes=200{base}{ty}{group} HTTP/1.1");
        let r = request_to(addr, &line, &body);
        if r.status >= 500 {
            // The inputs come from this process's heap, which differs from run to run: keep
            // the one that failed.
            let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-upload.pb");
            std::fs::write(&kept, &body).unwrap();
            eprintln!("the failing upload is in {}", kept.display());
        }
        assert_handled(&format!("upload {i} ({} bytes, {line})", body.len()), &r);
        if r.status == 200 {
            accepted += 1;
            let tree: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let total = tree["total"][0].as_i64().unwrap();
            let selfs: i64 = tree["self"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .sum();
            assert_eq!(total, selfs, "upload {i}: every byte in one node's self");
        }
    }
    eprintln!("uploads: {iterations} sent, {accepted} accepted");
    assert!(
        accepted > 0 && accepted < iterations,
        "the mutations reach both the accepting and the refusing paths: {accepted} of {iterations}"
    );
    drop(kept);
}

const PATHS: &[&str] = &[
    "/debug/pprof/",
    "/debug/pprof/heap",
    "/debug/pprof/allocs",
    "/debug/pprof/profile",
    "/debug/pprof/symbol",
    "/debug/pprof/cmdline",
    "/debug/pprof/goroutine",
    "/debug/pprof/ui/api/tree",
    "/debug/pprof/ui/api/growing",
    "/debug/pprof/ui/api/snapshots",
    "/debug/pprof/ui/api/memory",
    "/debug/pprof/ui/api/folded",
    "/debug/pprof/ui/api/flamegraph.svg",
    "/debug/pprof/ui/api/nothing",
];

const KEYS: &[&str] = &[
    "type",
    "at",
    "base",
    "max_nodes",
    "focus",
    "hide",
    "callers",
    "fold",
    "since",
    "until",
    "libraries",
    "group",
    "window",
    "limit",
    "seconds",
    "debug",
    "gc",
    "own",
    "base_bytes",
    "",
    "%zz",
    "a%00b",
];

const VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "now",
    "inuse_space",
    "alloc_objects",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999",
    "1e9",
    "0x10",
    "NaN",
    "(",
    "[a-",
    "a{99999}",
    "(a+)+$",
    ".*.*.*.*.*.*.*.*x",
    "\\",
    "%",
    "%f",
    "%ff%fe",
    "%00",
    "%E2%80%AE",
    "hyper,tower",
    "not a crate",
    "tenant",
];

/// A query string of the endpoints' own keys and parser-breaking values.
fn query(d: &mut Draw) -> String {
    let mut q = String::new();
    for _ in 0..1 + d.below(4) {
        if !q.is_empty() {
            q.push('&');
        }
        let key = *d.pick(KEYS);
        let mut value = match d.below(12) {
            0 => "x".repeat(100_000),
            1 => (0..1 + d.below(40))
                .map(|_| format!("%{:02x}", d.next() as u8))
                .collect(),
            _ => d.pick(VALUES).to_string(),
        };
        // A valid small `seconds` would make the request wait that long, as it should:
        // the fuzz keeps to the values that must be answered at once.
        if key == "seconds" && matches!(value.parse::<u64>(), Ok(1..=300)) {
            value = "x".into();
        }
        q.push_str(key);
        if d.below(10) != 0 {
            q.push('=');
            // A space would end the request line: sent escaped, as a browser sends it.
            q.push_str(&value.replace(' ', "%20"));
        }
    }
    q
}

fn queries(addr: SocketAddr, d: &mut Draw, iterations: u64) {
    let mut by_status = std::collections::BTreeMap::<u16, u64>::new();
    for i in 0..iterations {
        let path = *d.pick(PATHS);
        let mut q = query(d);
        if path.ends_with("/profile") {
            // Without a `seconds`, a CPU profile runs for Go's default 30 s: the first
            // `seconds` counts, so this one is refused at once, as the fuzz wants.
            q = format!("seconds={}&{q}", d.pick(&["x", "-1", "0", "301", "1.5"]));
        }
        let line = format!("GET {path}?{q} HTTP/1.1");
        let r = request_to(addr, &line, b"");
        let shown: String = line.chars().take(200).collect();
        assert_handled(&format!("query {i}: {shown}"), &r);
        *by_status.entry(r.status).or_default() += 1;
    }
    eprintln!("queries: {iterations} sent, by status {by_status:?}");
    assert!(by_status.contains_key(&200) && by_status.contains_key(&400));
}

fn main() {
    let seed = env("HEAPSIGHT_FUZZ_SEED", 0x5eed_0019);
    let iterations = env("HEAPSIGHT_FUZZ_ITERATIONS", 1500);
    heapsight::set_sample_rate(4096);
    let server = heapsight_server::Options::new()
        .without_history()
        .spawn("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let mut d = Draw(seed);
    eprintln!("seed {seed:#x}, {iterations} iterations of each");
    uploads(addr, &mut d, iterations);
    println!("test uploaded_profiles_mutated_get_an_answer_never_a_server_error ... ok");
    queries(addr, &mut d, iterations);
    println!("test hostile_query_strings_get_an_answer_never_a_server_error ... ok");
    // Still serving, and serving right.
    let heap = request_to(addr, "GET /debug/pprof/heap HTTP/1.1", b"");
    assert_eq!(heap.status, 200);
    heapsight_profile::Profile::from_pprof_bytes(&heap.body).expect("a readable profile");
}
