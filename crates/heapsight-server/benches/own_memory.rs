//! The profiler's own memory in a real service: a small axum JSON service under load, once with
//! the profiler off (sampling off, no endpoint) and once with heapsight's endpoint mounted at
//! default settings, side by side. Each reads its RssAnon and RssFile from `/proc/self/status`
//! after each step: the service warmed up, the first heap profile, each endpoint once, a CPU
//! profile, continuous scraping of every endpoint, and a full hour of history. The profiler's
//! cost is the difference; the budget is 8 MiB of anonymous memory.
//!
//! The history is filled at one snapshot every 50 ms instead of every 10 s, so that its hour
//! (360 snapshots, the default capacity) takes 18 s; what it holds depends on how many
//! snapshots it keeps, not on how fast they came.
//!
//! Run with `cargo bench -p heapsight-server --bench own_memory` (`-- quick` for a shorter
//! scraping step, `-- scrape=SECONDS` for another length). Exits non-zero when a step is over
//! budget.

mod http;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

const ROLE: &str = "HEAPSIGHT_MEMORY_BENCH_ROLE";
const BUDGET: u64 = 8 << 20;
const HISTORY_INTERVAL: Duration = Duration::from_millis(50);

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let scrape: Vec<String> = std::env::args()
        .filter(|a| a.starts_with("scrape="))
        .collect();
    match std::env::var(ROLE).as_deref() {
        Ok("off") => service(false, quick),
        Ok("on") => service(true, quick),
        _ => compare(quick, &scrape),
    }
}

/// Runs both services at once and prints their figures step by step.
fn compare(quick: bool, scrape: &[String]) {
    let exe = std::env::current_exe().unwrap();
    let run = |role: &str| {
        let mut c = Command::new(&exe);
        c.env(ROLE, role).stdout(Stdio::piped());
        if quick {
            c.arg("quick");
        }
        c.args(scrape);
        c.spawn().unwrap()
    };
    let (off, on) = (run("off"), run("on"));
    let parse = |text: &str| -> Vec<(String, u64, u64, u64)> {
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.len() == 5 && f[0] == "step").then(|| {
                    (
                        f[1].to_string(),
                        f[2].parse().unwrap(),
                        f[3].parse().unwrap(),
                        f[4].parse().unwrap(),
                    )
                })
            })
            .collect()
    };
    let read = |child: std::process::Child| {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "the service failed");
        parse(&String::from_utf8_lossy(&out.stdout))
    };
    let out_on = on.wait_with_output().unwrap();
    assert!(out_on.status.success(), "the profiled service failed");
    let text_on = String::from_utf8_lossy(&out_on.stdout).into_owned();
    let (off, on) = (read(off), parse(&text_on));
    println!(
        "heapsight's own memory in an axum JSON service under load (RSS from /proc/self/status)"
    );
    println!(
        "{:<34} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
        "step", "anon off", "anon on", "anon +", "file +", "own (est.)", "budget"
    );
    let mut over = false;
    for ((step, anon_off, file_off, _), (_, anon_on, file_on, own)) in off.iter().zip(&on) {
        let extra = anon_on.saturating_sub(*anon_off);
        let within = extra <= BUDGET;
        over |= !within;
        println!(
            "{:<34} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
            step,
            mib(*anon_off),
            mib(*anon_on),
            mib(extra),
            mib(file_on.saturating_sub(*file_off)),
            mib(*own),
            if within { "within" } else { "OVER" }
        );
    }
    if let Some(parts) = text_on.lines().find_map(|l| l.strip_prefix("parts\t")) {
        println!("the profiler's own memory by part at the end (heapsight::stats().own): {parts}");
    }
    if over {
        std::process::exit(1);
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// The service: JSON answers built per request (churn) from a cache that holds a few MiB.
fn service(profiled: bool, quick: bool) {
    if !profiled {
        heapsight::set_sample_rate(0);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cache: Cache = Arc::default();
    let mut app = Router::new().route("/items", get(items)).with_state(cache);
    if profiled {
        app = app.merge(
            heapsight_server::Options::new()
                .history(
                    HISTORY_INTERVAL,
                    heapsight_server::DEFAULT_HISTORY_CAPACITY,
                    heapsight_server::DEFAULT_HISTORY_MAX_BYTES,
                )
                .router(),
        );
    }
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, app).await });
    std::thread::spawn(move || load(addr));

    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    report("service warmed up (3 s of load)");
    let endpoints = [
        "/debug/pprof/heap",
        "/debug/pprof/allocs",
        "/debug/pprof/heap?seconds=1",
        "/debug/pprof/heap?debug=1",
        "/debug/pprof/ui/api/tree",
        "/debug/pprof/ui/api/growing",
        "/debug/pprof/ui/api/flamegraph.svg",
        "/debug/pprof/profile?seconds=2",
    ];
    for (i, path) in endpoints.iter().enumerate() {
        step(profiled, addr, path);
        report(&if i == 0 {
            "first heap profile".to_string()
        } else {
            path.trim_start_matches("/debug/pprof/").to_string()
        });
    }
    let scraping = Duration::from_secs(
        std::env::args()
            .find_map(|a| a.strip_prefix("scrape=").and_then(|n| n.parse().ok()))
            .unwrap_or(if quick { 6 } else { 20 }),
    );
    let until = Instant::now() + scraping;
    let mut peak = (0, 0);
    while Instant::now() < until {
        for path in endpoints {
            step(profiled, addr, path);
            let (anon, file) = rss();
            peak = (peak.0.max(anon), peak.1.max(file));
        }
    }
    report(&format!("{} s of scraping, after", scraping.as_secs()));
    println!(
        "step\t{} s of scraping, highest\t{}\t{}\t{}",
        scraping.as_secs(),
        peak.0,
        peak.1,
        own()
    );
    // The history's hour: 360 snapshots at HISTORY_INTERVAL.
    let hour = HISTORY_INTERVAL * heapsight_server::DEFAULT_HISTORY_CAPACITY as u32;
    if let Some(left) = (hour + Duration::from_secs(1)).checked_sub(started.elapsed()) {
        std::thread::sleep(left);
    }
    if profiled {
        let timeline = http::get(addr, "/debug/pprof/ui/api/snapshots");
        let held = String::from_utf8_lossy(&timeline)
            .matches("\"id\":")
            .count();
        eprintln!("history: {held} snapshots held");
    }
    report("an hour of history (360 snapshots)");
    let own = heapsight::stats().own;
    let parts: Vec<String> = own
        .parts()
        .iter()
        .map(|(p, b)| format!("{} {}", p.name(), mib(*b)))
        .collect();
    println!("parts\t{}", parts.join(", "));
}

/// One request to the profiler's endpoint, or as long a pause without one.
fn step(profiled: bool, addr: SocketAddr, path: &str) {
    if profiled {
        http::get(addr, path);
    } else {
        let secs = path
            .split("seconds=")
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        std::thread::sleep(Duration::from_millis(20) + Duration::from_secs(secs));
    }
}

fn report(step: &str) {
    let (anon, file) = rss();
    println!("step\t{step}\t{anon}\t{file}\t{}", own());
}

fn own() -> u64 {
    heapsight::stats().own.total()
}

fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("RssAnon:"), field("RssFile:"))
}

/// Answers kept by the service, by key.
type Cache = Arc<Mutex<HashMap<u64, Arc<Vec<Item>>>>>;

#[derive(Clone, serde::Serialize)]
struct Item {
    id: u64,
    name: String,
    tags: Vec<String>,
    price: f64,
}

#[derive(serde::Deserialize)]
struct ItemsQuery {
    n: u64,
}

/// `GET /items?n=`: `n` items as JSON; every 16th answer's items are kept in the cache (at most
/// 256 entries, replaced as keys repeat).
async fn items(State(cache): State<Cache>, Query(q): Query<ItemsQuery>) -> Vec<u8> {
    let n = q.n.min(500);
    let items: Vec<Item> = (0..n)
        .map(|i| Item {
            id: i,
            name: format!("item {i} of {n}"),
            tags: vec![format!("t{}", i % 7), format!("group-{}", i % 13)],
            price: i as f64 * 1.25,
        })
        .collect();
    let body = serde_json::to_vec(&items).unwrap();
    if n % 16 == 0 {
        cache.lock().unwrap().insert(n % 256, Arc::new(items));
    }
    body
}

/// Requests `/items` over one keep-alive connection, as fast as answers come.
fn load(addr: SocketAddr) {
    let stream = TcpStream::connect(addr).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut n = 1u64;
    loop {
        n = (n * 7919 + 13) % 500;
        if write!(writer, "GET /items?n={n} HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
    }
}
