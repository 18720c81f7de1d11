//! The web UI's JSON API on a real server with a fast snapshot history (every 100 ms), while one
//! call site grows steadily: the timeline shows the growth, the growing list names the site
//! first, trees against a baseline show what is new, and bad parameters get clear errors.

mod common;

use common::request_to;
use serde_json::Value;
use std::time::Duration;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

#[inline(never)]
fn grows_steadily(kept: &mut Vec<Vec<u8>>, i: usize) {
    kept.push(vec![i as u8; 256 << 10]);
}

fn get_json(addr: std::net::SocketAddr, path: &str) -> Value {
    let r = request_to(addr, &format!("GET {path} HTTP/1.1"), b"");
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
    serde_json::from_slice(&r.body).unwrap()
}

fn names(tree: &Value) -> Vec<String> {
    let strings = tree["strings"].as_array().unwrap();
    tree["name"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            strings[i.as_u64().unwrap() as usize]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A server with a snapshot every 100 ms, after `steps` steps of one site growing by 256 KiB
/// every 50 ms; returns it with what the site holds.
fn server_watching_growth(steps: usize) -> (heapsight_server::Server, Vec<Vec<u8>>) {
    heapsight::set_sample_rate(64 * 1024);
    let server = heapsight_server::Options::new()
        .history(Duration::from_millis(100), 50, 64 << 20)
        .spawn("127.0.0.1:0")
        .unwrap();
    let mut kept = Vec::new();
    for i in 0..steps {
        grows_steadily(&mut kept, i);
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, kept)
}

/// The site keeps growing, at `server_watching_growth`'s pace, on a thread of its own until
/// dropped: every part of the growing list's window then holds growth, as a leak's does.
struct KeepGrowing {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Vec<u8>>>>,
}

fn keep_growing() -> KeepGrowing {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut i = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            grows_steadily(&mut kept, i);
            i += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        kept
    });
    KeepGrowing {
        stop,
        thread: Some(thread),
    }
}

impl Drop for KeepGrowing {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn timeline_growing_list_and_trees_follow_a_growing_site() {
    let (server, kept) = server_watching_growth(30);
    let addr = server.local_addr();

    let timeline = get_json(addr, "/debug/pprof/ui/api/snapshots");
    assert_eq!(timeline["interval_ms"], 100);
    let snaps = timeline["snapshots"].as_array().unwrap();
    assert!(snaps.len() >= 5, "{} snapshots", snaps.len());
    let first = snaps[0]["inuse_space"].as_i64().unwrap();
    let last = snaps.last().unwrap()["inuse_space"].as_i64().unwrap();
    assert!(
        last > first + (2 << 20),
        "the timeline shows the growth: {first} -> {last}"
    );

    let growing = get_json(addr, "/debug/pprof/ui/api/growing?window=20");
    let top = &growing["stacks"][0];
    let frames: Vec<&str> = top["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        frames.iter().any(|f| f.ends_with("grows_steadily")),
        "{growing}"
    );
    assert!(top["rate_per_second"].as_f64().unwrap() > 1e6, "{top}");
    assert!(
        !frames.last().unwrap().ends_with("grows_steadily"),
        "the leaf is the standard library's vec! internals: {frames:?}"
    );
    assert_eq!(
        top["site"], "ui_api::grows_steadily",
        "named by the first frame of the test's own code"
    );
    // What it holds was allocated all through the window, as a leak's is.
    let ages = &top["ages"];
    assert_eq!(ages["pattern"], "every_age", "{top}");
    let segments: Vec<i64> = ages["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert!(
        segments.len() == 3 && segments.iter().all(|v| *v > 0),
        "{ages}"
    );
    assert!(ages["oldest_seconds"].as_f64().unwrap() > ages["median_seconds"].as_f64().unwrap());

    // Retained by when it was allocated: the timeline's first half and second half (times in
    // the past, so the growth going on does not move them) add up to the whole.
    let time = |i: usize| snaps[i]["time_ms"].as_u64().unwrap();
    let (first, middle, last) = (time(0), time(snaps.len() / 2), time(snaps.len() - 1));
    let retained = |since: u64, until: u64| {
        let t = get_json(
            addr,
            &format!("/debug/pprof/ui/api/tree?since={since}&until={until}"),
        );
        assert!(names(&t).iter().any(|n| n == "ui_api::grows_steadily"));
        t["total"][0].as_i64().unwrap()
    };
    let (early, late, both) = (
        retained(first, middle),
        retained(middle, last),
        retained(first, last),
    );
    assert!(early > (1 << 20) && late > (1 << 20), "{early} and {late}");
    // Each request reads allocation times anew, to the coarse clock's 10 ms tick: a block
    // allocated at a boundary may land on either side of it (one block, 256 KiB sampled).
    let block = 300 << 10;
    assert!(
        (early + late - both).abs() <= block,
        "the halves of the window make the whole: {early} + {late} vs {both}"
    );
    // Open-ended: since the middle, to now, holds at least the second half.
    let since = get_json(addr, &format!("/debug/pprof/ui/api/tree?since={middle}"));
    assert!(since["total"][0].as_i64().unwrap() >= late - block);
    for bad in [
        format!("/debug/pprof/ui/api/tree?since={middle}&at=1"),
        format!("/debug/pprof/ui/api/tree?since={middle}&base=1"),
        "/debug/pprof/ui/api/tree?since=yesterday".to_string(),
    ] {
        let r = request_to(addr, &format!("GET {bad} HTTP/1.1"), b"");
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    // Named a library, the test's own crate is plumbing too: the site moves down the stack,
    // to the test harness that called it (crate `test`).
    let as_library = get_json(addr, "/debug/pprof/ui/api/growing?libraries=ui_api");
    let site = as_library["stacks"][0]["site"].as_str().unwrap();
    assert!(site.starts_with("test::"), "{site}");
    let bad = request_to(
        addr,
        "GET /debug/pprof/ui/api/growing?libraries=not%20a%20crate HTTP/1.1",
        b"",
    );
    assert_eq!(bad.status, 400, "{}", bad.text());

    // Folded: the runtime's run at the root is one frame, and the test's frames come right
    // after it.
    let folded = get_json(addr, "/debug/pprof/ui/api/tree?fold=1");
    let n = names(&folded);
    let parent = folded["parent"].as_array().unwrap();
    let first_level: Vec<&String> = (1..n.len())
        .filter(|&i| parent[i] == 0)
        .map(|i| &n[i])
        .collect();
    assert!(
        first_level.iter().any(|f| *f == "[thread start]"),
        "{first_level:?}"
    );
    let user = folded["user"].as_array().unwrap();
    let strings = folded["strings"].as_array().unwrap();
    let is_user = |name: &str| {
        let i = strings.iter().position(|s| s == name).unwrap();
        user[i].as_bool().unwrap()
    };
    assert!(is_user("ui_api::grows_steadily") && !is_user("[thread start]"));

    let now = get_json(addr, "/debug/pprof/ui/api/tree?type=inuse_space");
    let n = names(&now);
    assert_eq!(n[0], "root");
    let total = now["total"].as_array().unwrap();
    let selfs = now["self"].as_array().unwrap();
    let sum_self: i64 = selfs.iter().map(|v| v.as_i64().unwrap()).sum();
    assert_eq!(
        total[0].as_i64().unwrap(),
        sum_self,
        "every byte is in exactly one node's self"
    );
    assert!(n.iter().any(|f| f.ends_with("grows_steadily")));

    let base_id = snaps[0]["id"].as_u64().unwrap();
    let diff = get_json(addr, &format!("/debug/pprof/ui/api/tree?base={base_id}"));
    assert_eq!(diff["has_base"], true);
    let n = names(&diff);
    let site = n
        .iter()
        .position(|f| f.ends_with("grows_steadily"))
        .unwrap();
    let (now_v, base_v) = (
        diff["total"][site].as_i64().unwrap(),
        diff["base"][site].as_i64().unwrap(),
    );
    assert!(
        now_v > base_v,
        "the site grew since the baseline: {base_v} -> {now_v}"
    );

    let last_id = snaps.last().unwrap()["id"].as_u64().unwrap();
    let full = get_json(addr, &format!("/debug/pprof/ui/api/tree?at={last_id}"));
    let small = get_json(
        addr,
        &format!("/debug/pprof/ui/api/tree?at={last_id}&max_nodes=5"),
    );
    assert!(small["name"].as_array().unwrap().len() <= 5);
    assert!(names(&full).len() > 5);
    assert_eq!(
        small["total"][0], full["total"][0],
        "capping loses no bytes"
    );

    let folded = request_to(addr, "GET /debug/pprof/ui/api/folded HTTP/1.1", b"");
    assert!(folded.text().lines().any(|l| l.contains("grows_steadily")));
    let svg = request_to(
        addr,
        "GET /debug/pprof/ui/api/flamegraph.svg?type=inuse_space HTTP/1.1",
        b"",
    );
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert!(svg.text().contains("<svg") && svg.text().contains("grows_steadily"));

    // Focus, hide and the callers view, done by the server.
    let site = n
        .iter()
        .find(|f| f.ends_with("grows_steadily"))
        .unwrap()
        .clone();
    let focused = get_json(
        addr,
        &format!("/debug/pprof/ui/api/tree?at={last_id}&focus=grows_steadily"),
    );
    let (f_total, all_total) = (
        focused["total"][0].as_i64().unwrap(),
        full["total"][0].as_i64().unwrap(),
    );
    // Focus keeps exactly the stacks through the site: all of the focused tree is under it.
    let f_names = names(&focused);
    let f_parent = focused["parent"].as_array().unwrap();
    let through: i64 = (1..f_names.len())
        .filter(|&i| f_names[i].ends_with("grows_steadily"))
        .filter(|&i| {
            let mut p = f_parent[i].as_u64().unwrap() as usize;
            while p != 0 && !f_names[p].ends_with("grows_steadily") {
                p = f_parent[p].as_u64().unwrap() as usize;
            }
            p == 0
        })
        .map(|i| focused["total"][i].as_i64().unwrap())
        .sum();
    assert!(
        f_total > 0 && f_total <= all_total,
        "focus: {f_total} of {all_total}"
    );
    assert_eq!(
        through, f_total,
        "everything kept by focus passes through the site"
    );
    let hidden = get_json(
        addr,
        &format!("/debug/pprof/ui/api/tree?at={last_id}&hide=grows_steadily"),
    );
    assert!(!names(&hidden).iter().any(|f| f.ends_with("grows_steadily")));
    assert_eq!(
        hidden["total"][0], full["total"][0],
        "hidden frames keep their bytes"
    );
    let callers = get_json(
        addr,
        &format!("/debug/pprof/ui/api/tree?at={last_id}&callers={site}"),
    );
    let c = names(&callers);
    assert_eq!(c[1], site, "the callers view starts at the function");
    let parent = callers["parent"].as_array().unwrap();
    assert!(
        (2..c.len()).any(|i| parent[i] == 1 && c[i].ends_with("::server_watching_growth")),
        "its caller is below it: {c:?}"
    );

    // Profiles from disk: one file, and two for a diff.
    let heap = request_to(addr, "GET /debug/pprof/heap HTTP/1.1", b"").body;
    let one = request_to(addr, "POST /debug/pprof/ui/api/tree HTTP/1.1", &heap);
    assert_eq!(one.status, 200, "{}", one.text());
    let one: Value = serde_json::from_slice(&one.body).unwrap();
    assert_eq!(
        one["type"], "inuse_space",
        "a heap file opens on its default type"
    );
    assert_eq!(one["sample_types"].as_array().unwrap().len(), 4);
    let mut two = heap.clone();
    two.extend_from_slice(&heap);
    let diff = request_to(
        addr,
        &format!(
            "POST /debug/pprof/ui/api/tree?base_bytes={}&type=alloc_space HTTP/1.1",
            heap.len()
        ),
        &two,
    );
    let diff: Value = serde_json::from_slice(&diff.body).unwrap();
    assert_eq!(
        (diff["has_base"].as_bool(), diff["type"].as_str()),
        (Some(true), Some("alloc_space"))
    );
    assert_eq!(
        diff["total"][0], diff["base"][0],
        "a file against itself has not changed"
    );

    for (method, path, body, status) in [
        (
            "POST",
            "/debug/pprof/ui/api/tree",
            &b"not a profile"[..],
            400,
        ),
        (
            "POST",
            "/debug/pprof/ui/api/tree?base_bytes=999999",
            &heap[..],
            400,
        ),
        ("POST", "/debug/pprof/ui/api/tree?type=cpu", &heap[..], 400),
        ("GET", "/debug/pprof/ui/api/tree?focus=(", &b""[..], 400),
    ] {
        let r = request_to(addr, &format!("{method} {path} HTTP/1.1"), body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
    }

    for (path, status) in [
        ("/debug/pprof/ui/api/tree?type=bogus", 400),
        ("/debug/pprof/ui/api/tree?at=abc", 400),
        ("/debug/pprof/ui/api/tree?at=99999999", 404),
        ("/debug/pprof/ui/api/growing?window=x", 400),
        ("/debug/pprof/ui/api/nothing", 404),
    ] {
        let r = request_to(addr, &format!("GET {path} HTTP/1.1"), b"");
        assert_eq!(r.status, status, "{path}: {}", r.text());
    }
    drop(kept);
}

/// A server of its own that keeps no snapshot history.
fn server_without_history() -> heapsight_server::Server {
    heapsight_server::Options::new()
        .without_history()
        .spawn("127.0.0.1:0")
        .unwrap()
}

#[test]
fn without_history_the_timeline_says_so() {
    let server = server_without_history();
    let r = request_to(
        server.local_addr(),
        "GET /debug/pprof/ui/api/snapshots HTTP/1.1",
        b"",
    );
    assert_eq!(r.status, 404);
    assert!(r.text().contains("history is turned off"));
    let r = request_to(
        server.local_addr(),
        "GET /debug/pprof/ui/api/tree HTTP/1.1",
        b"",
    );
    assert_eq!(r.status, 200, "the current heap needs no history");
}

/// A heap profile written by a Go program (`runtime/pprof`), opened as a file from disk.
#[test]
fn a_heap_profile_written_by_go_opens() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-heap");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("main.go"),
        r#"package main

import (
	"os"
	"runtime"
	"runtime/pprof"
)

var keep [][]byte

func grow() {
	for i := 0; i < 64; i++ {
		keep = append(keep, make([]byte, 1<<20))
	}
}

func main() {
	runtime.MemProfileRate = 4096
	grow()
	runtime.GC()
	f, err := os.Create(os.Args[1])
	if err != nil {
		panic(err)
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		panic(err)
	}
	f.Close()
}
"#,
    )
    .unwrap();
    let out = dir.join("go-heap.pb.gz");
    let status = std::process::Command::new("go")
        .args(["run", "main.go"])
        .arg(&out)
        .current_dir(&dir)
        .env("GO111MODULE", "off")
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("gopath"))
        .status()
        .expect("`go` not found: the README's test command installs golang-go");
    assert!(status.success());
    let go_profile = std::fs::read(&out).unwrap();

    let server = server_without_history();
    let r = request_to(
        server.local_addr(),
        "POST /debug/pprof/ui/api/tree HTTP/1.1",
        &go_profile,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let tree: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        tree["type"], "inuse_space",
        "Go's heap profile opens on in-use bytes"
    );
    let n = names(&tree);
    let grow = n
        .iter()
        .position(|f| f == "main.grow")
        .unwrap_or_else(|| panic!("{n:?}"));
    let held = tree["total"][grow].as_i64().unwrap();
    assert!(held >= 60 << 20, "main.grow holds its 64 MiB ({held} B)");
}

/// The keys of a JSON value, and of the first element of each array of objects, as dotted paths:
/// the shape of an answer, whatever its values.
fn shape(v: &Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let path = format!("{prefix}{k}");
                out.insert(path.clone());
                shape(v, &format!("{path}."), out);
            }
        }
        Value::Array(items) => {
            if let Some(first) = items.first() {
                shape(first, prefix, out);
            }
        }
        _ => {}
    }
}

/// The JSON example of `docs/ui-api.md` that follows the heading naming `endpoint`.
fn documented(endpoint: &str) -> Value {
    let doc = include_str!("../../../docs/ui-api.md");
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with(&format!("`GET {endpoint}")))
        .unwrap_or_else(|| panic!("docs/ui-api.md has no section on {endpoint}"));
    let json = section
        .split("```json\n")
        .nth(1)
        .and_then(|s| s.split("\n```").next())
        .unwrap_or_else(|| panic!("the {endpoint} section has no JSON example"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("the {endpoint} example: {e}"))
}

#[test]
fn answers_have_exactly_the_shape_docs_ui_api_md_shows() {
    // The site grows from the start and all through the requests, however long they take (the
    // first loads the symbolizer): the growing list has a stack to show.
    let (server, kept) = server_watching_growth(0);
    let _growing = keep_growing();
    std::thread::sleep(Duration::from_millis(600));
    let addr = server.local_addr();
    let timeline = get_json(addr, "/debug/pprof/ui/api/snapshots");
    let base = timeline["snapshots"][0]["id"].as_u64().unwrap();
    for (endpoint, path) in [
        ("snapshots", "/debug/pprof/ui/api/snapshots".to_string()),
        ("tree", format!("/debug/pprof/ui/api/tree?base={base}")),
        ("growing", "/debug/pprof/ui/api/growing".to_string()),
    ] {
        let (mut want, mut got) = Default::default();
        shape(&documented(endpoint), "", &mut want);
        shape(&get_json(addr, &path), "", &mut got);
        assert_eq!(got, want, "{endpoint}: the answer's keys against the doc's");
    }
    drop(kept);
}

#[test]
fn every_answer_says_nosniff() {
    let server = server_without_history();
    for path in [
        "/debug/pprof/ui/api/tree",
        "/debug/pprof/ui/api/flamegraph.svg",
        "/debug/pprof/ui/api/folded",
        "/debug/pprof/ui/api/snapshots",
        "/debug/pprof/ui/",
        "/debug/pprof/",
        "/debug/pprof/nonsense",
    ] {
        let r = request_to(server.local_addr(), &format!("GET {path} HTTP/1.1"), b"");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path} ({})",
            r.status
        );
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn uploads_are_bounded_as_sent_and_unpacked_and_read_one_at_a_time() {
    let server = heapsight_server::Options::new()
        .without_history()
        .upload_limits(256 << 10, 1 << 20)
        .spawn("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let post = |body: &[u8]| request_to(addr, "POST /debug/pprof/ui/api/tree HTTP/1.1", body);

    let heap = request_to(addr, "GET /debug/pprof/heap HTTP/1.1", b"").body;
    assert!(heap.len() < 256 << 10);
    assert_eq!(post(&heap).status, 200, "a profile within the limits opens");

    // 64 MiB of zeros packed into some 64 KiB: stopped at the 1 MiB it may unpack to.
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 256 << 10, "{} bytes", bomb.len());
    let r = post(&bomb);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        r.text().contains("1048576 bytes uncompressed"),
        "{}",
        r.text()
    );
    // The same bomb packed twice unpacks, once, into a small gzip file: its inside is held to
    // the same limit.
    let r = post(&gzip(&bomb));
    assert!(r.status == 400 || r.status == 413, "{}", r.text());
    assert!(r.text().contains("1048576 bytes"), "{}", r.text());

    let r = post(&vec![7u8; 300 << 10]);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("262144 bytes as sent"), "{}", r.text());
    for (junk, what) in [
        (&heap[..heap.len() / 2], "truncated gzip"),
        (&b"\x1f\x8b\x08\x00garbage"[..], "a broken gzip header"),
        (
            &b"\x0a\xff\xff\xff\x0f"[..],
            "protobuf that runs past its end",
        ),
    ] {
        let r = post(junk);
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert!(r.text().contains("not readable"), "{what}: {}", r.text());
    }

    // A client that stops half-way keeps its turn until it leaves; meanwhile a second upload is
    // told to come back, and after it leaves, uploads are read again.
    let mut stalled = std::net::TcpStream::connect(addr).unwrap();
    {
        use std::io::Write;
        write!(
            stalled,
            "POST /debug/pprof/ui/api/tree HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            heap.len()
        )
        .unwrap();
        stalled.write_all(&heap[..heap.len() / 2]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let r = post(&heap);
    assert_eq!(r.status, 429, "{}", r.text());
    drop(stalled);
    let start = std::time::Instant::now();
    while post(&heap).status != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the departed client kept its turn"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
