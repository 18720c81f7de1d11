//! Runs the real `timer-leak` binaries (heapsight's sampler, and jemalloc's profiler behind
//! heapsight) in each scenario, leaky and fixed, and reads two heap
//! profiles from its endpoint: a baseline taken while it waits (`--delay`), and one a few seconds
//! into the load. Leaky: at least 60% of the growth in use is under `after`. Fixed: the growth is
//! at most a tenth of the leaky one.

use heapsight_profile::Profile;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The demo process, killed when dropped.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The two builds of the demo: heapsight's sampler, and jemalloc's profiler behind heapsight.
const SAMPLER: &str = env!("CARGO_BIN_EXE_timer-leak");
const JEMALLOC: &str = env!("CARGO_BIN_EXE_timer-leak-jemalloc");

fn start(binary: &str, args: &[&str]) -> (Demo, SocketAddr) {
    let mut child = Command::new(binary)
        .args(["--addr", "127.0.0.1:0", "--delay", "2"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the timer-leak binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("the demo prints its address").unwrap();
        if let Some(rest) = line.trim().strip_prefix("profiles: http://") {
            break rest.trim_end_matches("/debug/pprof/").parse().unwrap();
        }
    };
    // Keep draining stdout so the demo never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Demo(child), addr)
}

fn heap_profile(addr: SocketAddr) -> Profile {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET /debug/pprof/heap HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(raw.starts_with(b"HTTP/1.1 200"));
    Profile::from_pprof_bytes(&raw[split + 4..]).expect("a heap profile")
}

/// (in-use bytes in total, in-use bytes under `after`).
fn inuse(p: &Profile) -> (i64, i64) {
    let i = p.sample_type_index("inuse_space").unwrap();
    let total = p.samples.iter().map(|s| s.values[i]).sum();
    let after = p
        .samples
        .iter()
        .filter(|s| p.stack_names(s).contains(&"timer_leak_demo::after"))
        .map(|s| s.values[i])
        .sum();
    (total, after)
}

/// (growth in total, growth under `after`) over `seconds` of load.
fn growth(binary: &str, args: &[&str], seconds: u64) -> (i64, i64) {
    let (_demo, addr) = start(binary, args);
    std::thread::sleep(Duration::from_millis(1000));
    let before = inuse(&heap_profile(addr));
    // The load starts 2 s after launch.
    std::thread::sleep(Duration::from_millis(1000 + seconds * 1000));
    let after = inuse(&heap_profile(addr));
    (after.0 - before.0, after.1 - before.1)
}

/// The demos take the machine's cores in turns: the broker's leak is as large as its send rate.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check(binary: &str, scenario: &str) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (leaky_total, leaky_after) = growth(binary, &["--scenario", scenario], 4);
    let (fixed_total, fixed_after) = growth(binary, &["--scenario", scenario, "--fixed"], 4);
    let binary = binary.rsplit('/').next().unwrap_or(binary);
    eprintln!(
        "{binary} {scenario}: leaky grew {leaky_total} B ({leaky_after} B under after); fixed grew {fixed_total} B ({fixed_after} B under after)"
    );
    // The broker's leak is its send rate times 5 ms (about 1-1.5 MB here); the loop's grows
    // by megabytes a second. Either way, well over half a megabyte in four seconds.
    assert!(
        leaky_total > 512 << 10,
        "{scenario}: the leaky demo should grow measurably, grew {leaky_total} B"
    );
    assert!(
        leaky_after as f64 >= 0.6 * leaky_total as f64,
        "{scenario}: only {leaky_after} of {leaky_total} B of growth is under after"
    );
    assert!(
        fixed_total <= leaky_total / 10,
        "{scenario}: fixed grew {fixed_total} B, leaky {leaky_total} B"
    );
    assert_eq!(
        fixed_after, 0,
        "{scenario}: the fixed demo never calls after"
    );
}

#[test]
fn the_loop_leaks_under_after_and_the_fix_stays_flat() {
    check(SAMPLER, "loop");
}

#[test]
fn the_broker_leaks_under_after_and_the_fix_stays_flat() {
    check(SAMPLER, "broker");
}

#[test]
fn jemallocs_profiler_shows_the_same_loop_leak() {
    check(JEMALLOC, "loop");
}

#[test]
fn jemallocs_profiler_shows_the_same_broker_leak() {
    check(JEMALLOC, "broker");
}

/// In-use bytes under stacks through a function whose name contains `function`.
fn inuse_under(p: &Profile, function: &str) -> i64 {
    let i = p.sample_type_index("inuse_space").unwrap();
    p.samples
        .iter()
        .filter(|s| p.stack_names(s).iter().any(|n| n.contains(function)))
        .map(|s| s.values[i])
        .sum()
}

/// Growth under the session registry from 8 s to 16 s into the service's load: past the fixed
/// registry's 5 s idle limit, so that what it holds has stopped growing.
fn session_growth(args: &[&str]) -> i64 {
    let (_demo, addr) = start(SAMPLER, args);
    std::thread::sleep(Duration::from_secs(10));
    let before = inuse_under(&heap_profile(addr), "Sessions::remember");
    std::thread::sleep(Duration::from_secs(8));
    inuse_under(&heap_profile(addr), "Sessions::remember") - before
}

#[test]
fn the_service_leaks_sessions_and_the_fix_forgets_them() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let leaky = session_growth(&["--scenario", "service"]);
    let fixed = session_growth(&["--scenario", "service", "--fixed"]);
    eprintln!("service: sessions grew {leaky} B leaky, {fixed} B fixed, in 8 s");
    // 60 new sessions a second of about 1 KiB each: some 400 KiB in 8 s.
    assert!(leaky > 128 << 10, "the leaky registry grew only {leaky} B");
    assert!(fixed < leaky / 4, "fixed grew {fixed} B, leaky {leaky} B");
}

/// In-use bytes through `function`, by the value of label `key` ("" for samples without it).
fn inuse_by_label(p: &Profile, function: &str, key: &str) -> Vec<(String, i64)> {
    let i = p.sample_type_index("inuse_space").unwrap();
    let mut by: Vec<(String, i64)> = Vec::new();
    for s in &p.samples {
        if !p.stack_names(s).iter().any(|n| n.contains(function)) {
            continue;
        }
        let value = s.label(key).unwrap_or("").to_string();
        match by.iter_mut().find(|(v, _)| *v == value) {
            Some((_, b)) => *b += s.values[i],
            None => by.push((value, s.values[i])),
        }
    }
    by.sort();
    by
}

#[test]
fn the_brokers_timers_are_labelled_by_subscriber_group() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (_demo, addr) = start(SAMPLER, &["--scenario", "broker"]);
    std::thread::sleep(Duration::from_secs(5));
    let p = heap_profile(addr);
    let by = inuse_by_label(&p, "timer_leak_demo::after", "subscriber_group");
    let total: i64 = by.iter().map(|(_, b)| b).sum();
    eprintln!("broker: in use under after by subscriber_group: {by:?}");
    // Each publisher sends to a third of the subscribers, each send through `after`: the
    // timers' memory splits about evenly between the three groups.
    for group in ["0", "1", "2"] {
        let held = by.iter().find(|(v, _)| v == group).map_or(0, |(_, b)| *b);
        assert!(
            held as f64 > 0.15 * total as f64,
            "subscriber_group={group} holds {held} of {total} B under after: {by:?}"
        );
    }
}

#[test]
fn the_services_sessions_are_labelled_by_route() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (_demo, addr) = start(SAMPLER, &["--scenario", "service"]);
    std::thread::sleep(Duration::from_secs(8));
    let p = heap_profile(addr);
    let by = inuse_by_label(&p, "Sessions::remember", "route");
    eprintln!("service: in use under Sessions::remember by route: {by:?}");
    let total: i64 = by.iter().map(|(_, b)| b).sum();
    let unlabelled = by.iter().find(|(v, _)| v.is_empty()).map_or(0, |(_, b)| *b);
    // Every request remembers its session inside its route's handler, so what the registry
    // holds is labelled by the routes the load calls.
    assert!(
        by.iter().any(|(v, _)| v == "/item") && by.iter().any(|(v, _)| v == "/render"),
        "{by:?}"
    );
    assert!(
        (unlabelled as f64) < 0.1 * total as f64,
        "{unlabelled} of {total} B under no route: {by:?}"
    );
}
