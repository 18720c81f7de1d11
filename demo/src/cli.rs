//! The `timer-leak` command line, shared by the binaries: `timer-leak` (heapsight's sampler) and
//! `timer-leak-jemalloc` (jemalloc's profiler). Runs the story's leak (or its fix) and serves
//! heap profiles of it.
//!
//! ```text
//! timer-leak [--scenario loop|broker|service] [--fixed] [--addr HOST:PORT] [--rate N] [--delay SECS]
//!   [--unwinder frame-pointers|dwarf]
//! ```

use crate::{busy_loop, Broker, Message};
use heapsight::SnapshotSource;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Loop,
    Broker,
    Service,
}

struct Args {
    scenario: Scenario,
    fixed: bool,
    addr: String,
    rate: Option<u64>,
    delay: Duration,
    dwarf: bool,
}

const USAGE: &str = "\
[--scenario loop|broker|service] [--fixed] [--addr HOST:PORT] [--rate N] [--delay SECS]
  [--unwinder frame-pointers|dwarf]

  --scenario loop     a busy channel read in a loop with a 3-minute `after` timeout (default)
  --scenario broker   a broker sending each message to 3000 subscribers, 5 ms `after` per send
  --scenario service  an axum service with per-request buffers, a cache that fills over its
                      first 10-20 s, and a session registry that never forgets (the leak)
  --fixed            one timer re-armed with `reset` instead of a new `after` each time
                     (service: sessions idle for 5 s are forgotten)
  --addr HOST:PORT   where to serve /debug/pprof (default 127.0.0.1:6060; port 0 picks one)
  --rate N           messages per second (loop: default 20000), broadcasts (broker: 150) or
                     requests (service: 1200)
  --delay SECS       wait this long before starting the load, to take a baseline profile
  --unwinder dwarf   walk stacks with heapsight's DWARF unwinder, for a build without frame
                     pointers (default: frame pointers)";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        scenario: Scenario::Loop,
        fixed: false,
        addr: "127.0.0.1:6060".into(),
        rate: None,
        delay: Duration::ZERO,
        dwarf: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--fixed" => a.fixed = true,
            "--scenario" => {
                a.scenario = match value()?.as_str() {
                    "loop" => Scenario::Loop,
                    "broker" => Scenario::Broker,
                    "service" => Scenario::Service,
                    other => {
                        return Err(format!(
                            "unknown scenario {other:?}: loop, broker or service"
                        ))
                    }
                }
            }
            "--addr" => a.addr = value()?,
            "--rate" => {
                a.rate = Some(
                    value()?
                        .parse()
                        .map_err(|_| "--rate takes a whole number".to_string())?,
                )
            }
            "--delay" => {
                a.delay = Duration::from_secs(
                    value()?
                        .parse()
                        .map_err(|_| "--delay takes whole seconds".to_string())?,
                )
            }
            "--unwinder" => {
                a.dwarf = match value()?.as_str() {
                    "dwarf" => true,
                    "frame-pointers" => false,
                    other => {
                        return Err(format!(
                            "unknown unwinder {other:?}: frame-pointers or dwarf"
                        ))
                    }
                }
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

/// Runs the demo as the binary `program`, with heap snapshots from `source` (whose sample rate
/// the binary has set).
pub fn run(program: &str, source: Arc<dyn SnapshotSource>) {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{program}: {e}");
            }
            eprintln!("usage: {program} {USAGE}");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    if args.dwarf && !heapsight::set_unwinder(heapsight::Unwinder::Dwarf) {
        eprintln!("{program}: the DWARF unwinder is not built in on this target");
        std::process::exit(2);
    }
    // Snapshots every 2 s (for an hour): the UI's timeline and growth views come alive quickly.
    let options = heapsight_server::Options::new()
        .source(source.clone())
        .history(Duration::from_secs(2), 1800, 64 << 20);
    // The service mounts the endpoints beside its own routes, as services do; the other
    // scenarios serve them from a thread of their own.
    let (server, listener) = if args.scenario == Scenario::Service {
        match std::net::TcpListener::bind(args.addr.as_str()) {
            Ok(l) => (None, Some(l)),
            Err(e) => {
                eprintln!("{program}: cannot serve on {}: {e}", args.addr);
                std::process::exit(1);
            }
        }
    } else {
        match options.clone().spawn(args.addr.as_str()) {
            Ok(s) => (Some(s), None),
            Err(e) => {
                eprintln!("{program}: cannot serve profiles on {}: {e}", args.addr);
                std::process::exit(1);
            }
        }
    };
    let addr = match (&server, &listener) {
        (Some(s), _) => s.local_addr(),
        (_, Some(l)) => l.local_addr().expect("a bound listener has an address"),
        _ => unreachable!("one of the two is set"),
    };
    let what = match (args.scenario, args.fixed) {
        (Scenario::Loop, false) => "loop, leaky: every message leaves a 3-minute timer behind",
        (Scenario::Loop, true) => "loop, fixed: one timer, re-armed for every message",
        (Scenario::Broker, false) => "broker, leaky: every send leaves a 5 ms timer behind",
        (Scenario::Broker, true) => {
            "broker, fixed: one timer per publisher, re-armed for every send"
        }
        (Scenario::Service, false) => {
            "service, leaky: every session is remembered for ever, among per-request buffers and a filling cache"
        }
        (Scenario::Service, true) => "service, fixed: sessions idle for 5 s are forgotten",
    };
    println!("{program}: {what}");
    println!("  heap profiles from the {}", source.name());
    println!("  profiles: http://{addr}/debug/pprof/");
    println!("  web UI:   http://{addr}/debug/pprof/ui/");
    println!("  go tool pprof -http=:8081 http://{addr}/debug/pprof/heap");
    if !args.delay.is_zero() {
        println!(
            "  starting the load in {} s (take a baseline now)",
            args.delay.as_secs()
        );
    }
    // Flushed at once so that scripts reading the address do not wait for the buffer.
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        tokio::spawn(report_heap(source));
        match args.scenario {
            Scenario::Loop => run_loop(args.fixed, args.rate.unwrap_or(20_000), args.delay).await,
            Scenario::Broker => run_broker(args.fixed, args.rate.unwrap_or(150), args.delay).await,
            Scenario::Service => {
                let listener = listener.expect("bound above for the service");
                // The frameworks under the service's handlers are not its code: the UI names
                // stacks, and folds their roots, past them.
                let app = options
                    .libraries([
                        "axum",
                        "hyper",
                        "hyper_util",
                        "tower",
                        "tower_service",
                        "http",
                    ])
                    .router();
                run_service(
                    listener,
                    app,
                    args.fixed,
                    args.rate.unwrap_or(1200),
                    args.delay,
                )
                .await
            }
        }
    });
    drop(server);
}

/// Serves the service, with the profiling endpoints mounted beside its routes, and drives it.
async fn run_service(
    listener: std::net::TcpListener,
    profiling: axum::Router,
    fixed: bool,
    per_second: u64,
    delay: Duration,
) {
    let service = crate::service::Service::new(fixed);
    let app = crate::service::routes(service).merge(profiling);
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let _ = listener.set_nonblocking(true);
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        eprintln!("cannot serve on {addr}");
        return;
    };
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        crate::service::load(addr, per_second).await;
    });
    let _ = axum::serve(listener, app).await;
}

/// Prints the estimated heap in use every five seconds, so the growth is visible without tools.
async fn report_heap(source: Arc<dyn SnapshotSource>) {
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let source = source.clone();
        let Ok(Ok(snapshot)) = tokio::task::spawn_blocking(move || source.snapshot()).await else {
            continue;
        };
        let inuse = snapshot.inuse_space();
        println!(
            "[{:>4}s] heap in use (estimated): {:.1} MiB",
            start.elapsed().as_secs(),
            inuse as f64 / (1 << 20) as f64
        );
    }
}

/// Sends `per_second` messages a second, in batches every millisecond.
async fn paced(per_second: u64, mut send: impl FnMut() -> bool) {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut owed = 0u64;
    loop {
        tick.tick().await;
        owed += per_second;
        while owed >= 1000 {
            owed -= 1000;
            if !send() {
                return;
            }
        }
    }
}

async fn run_loop(fixed: bool, per_second: u64, delay: Duration) {
    let (tx, rx) = mpsc::channel::<Message>(100);
    tokio::time::sleep(delay).await;
    let consumer = tokio::spawn(busy_loop(rx, fixed));
    let song: Message = Arc::from("asong");
    paced(per_second, || match tx.try_send(song.clone()) {
        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    })
    .await;
    let _ = consumer.await;
}

/// Sets up the subscribers (before `delay`, so that a baseline profile includes them), then
/// publishes `per_second` broadcasts a second.
async fn run_broker(fixed: bool, per_second: u64, delay: Duration) {
    const SUBSCRIBERS: usize = 3000;
    let (_stop, exit) = watch::channel(false);
    let broker = Broker::new(exit, fixed);
    let mut senders = Vec::with_capacity(SUBSCRIBERS);
    for i in 0..SUBSCRIBERS {
        let (tx, mut rx) = mpsc::channel::<Message>(8);
        senders.push(tx);
        tokio::spawn(async move {
            let mut n = 0u64;
            while rx.recv().await.is_some() {
                n += 1;
                // One subscriber in ten is sometimes slow.
                if i % 10 == 0 && n % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
    }
    // Prime every channel: a channel allocates its buffer blocks as messages first flow through
    // it, and that warm-up is not the leak. A baseline taken after this shows steady state.
    let primer: Message = Arc::from("hello");
    for _ in 0..128 {
        for tx in &senders {
            let _ = tx.try_send(primer.clone());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let subscribers: Arc<[mpsc::Sender<Message>]> = senders.into();
    tokio::time::sleep(delay).await;
    let mut seq = 0u64;
    paced(per_second, || {
        seq += 1;
        broker.broadcast(Arc::from(format!("message {seq}")), subscribers.clone());
        true
    })
    .await;
}
