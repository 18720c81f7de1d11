//! What the growing list costs at scale: the `growing` endpoint over a history of 360 snapshots
//! of 10,000 stacks each (an hour at the default interval, for a large service), and the memory
//! that history takes. Run with `cargo bench -p heapsight-server --bench growing`.
//!
//! The snapshots come from a synthetic source of 10,000 stacks whose stacks are real code
//! addresses of this binary, so the ranked stacks are symbolized as in a service. It runs two
//! models, since what the packed history takes depends on how many stacks change between
//! snapshots:
//!
//! - **service**: each stack draws a Poisson number of new samples every snapshot, its mean
//!   falling with its rank as 300 / rank (a few hot stacks, a long tail): about 3,000 samples a
//!   snapshot, 150 MB/s of allocation at the default rate and interval, and about one stack in
//!   seven sampled. One stack in a hundred keeps what it allocates (grows), one in ten holds a
//!   level, the rest free what they allocate.
//! - **every stack changes**: the worst case, every stack allocating and freeing one sample in
//!   every snapshot (one in a hundred keeps it).

mod http;

use heapsight::{Snapshot, SnapshotSource, SourceError, StackId, StackStore, StackTotals};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const STACKS: u64 = 10_000;
const SNAPSHOTS: usize = 360;
const RATE: u64 = 512 << 10;

#[derive(Clone, Copy, Debug)]
enum Model {
    Service,
    EveryStackChanges,
}

struct Synthetic {
    model: Model,
    stacks: Arc<StackStore>,
    ids: Vec<StackId>,
    taken: AtomicU64,
    /// Per stack: samples allocated and samples held, and the random state.
    state: Mutex<(Vec<(u64, u64)>, u64)>,
}

impl Synthetic {
    fn new(model: Model) -> Synthetic {
        let stacks = Arc::new(StackStore::new());
        let here = main as fn() as usize as u64;
        let ids = (0..STACKS)
            .map(|i| {
                stacks
                    .intern(&[here + 1 + i % 64, here + 1, i + 1])
                    .unwrap()
            })
            .collect();
        Synthetic {
            model,
            stacks,
            ids,
            taken: AtomicU64::new(0),
            state: Mutex::new((vec![(1, 1); STACKS as usize], 0x9E37_79B9_7F4A_7C15)),
        }
    }
}

fn uniform(s: &mut u64) -> f64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    (*s >> 11) as f64 / (1u64 << 53) as f64
}

/// A Poisson draw of mean `mean`: by inversion when small, else its normal approximation.
fn poisson(mean: f64, s: &mut u64) -> u64 {
    if mean > 30.0 {
        let z = (-2.0 * uniform(s).max(1e-12).ln()).sqrt()
            * (2.0 * std::f64::consts::PI * uniform(s)).cos();
        return (mean + mean.sqrt() * z).round().max(0.0) as u64;
    }
    let (mut k, mut p, limit) = (0, 1.0, (-mean).exp());
    loop {
        p *= uniform(s);
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

impl SnapshotSource for Synthetic {
    fn name(&self) -> &str {
        "synthetic"
    }

    fn snapshot(&self) -> Result<Snapshot, SourceError> {
        let t = self.taken.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.state.lock().unwrap();
        let (counts, rng) = &mut *guard;
        let stacks = self
            .ids
            .iter()
            .zip(counts.iter_mut())
            .enumerate()
            .map(|(i, (id, (allocated, held)))| {
                let new = match self.model {
                    Model::Service if t > 0 => poisson(300.0 / (i + 1) as f64, rng),
                    Model::Service => 0,
                    Model::EveryStackChanges => 1,
                };
                *allocated += new;
                *held = match i % 100 {
                    0 => *held + new,                     // grows
                    1..=10 => 1 + (t * 7 + i as u64) % 5, // holds a level
                    _ => 1,                               // frees what it allocates
                };
                *held = (*held).min(*allocated);
                let (a, h) = (*allocated, *held);
                let totals = StackTotals {
                    alloc_objects_fx: a << 16,
                    alloc_space: a * RATE,
                    free_objects_fx: (a - h) << 16,
                    free_space: (a - h) * RATE,
                    alloc_samples: a,
                    alloc_sample_bytes: a * 4096,
                    free_samples: a - h,
                    free_sample_bytes: (a - h) * 4096,
                };
                (*id, totals)
            })
            .collect();
        Ok(Snapshot {
            time: SystemTime::now(),
            duration: None,
            sample_rate: RATE as usize,
            stacks,
            blocks: Vec::new(),
            frames: self.stacks.clone(),
        })
    }
}

fn get(addr: std::net::SocketAddr, path: &str) -> String {
    String::from_utf8_lossy(&http::get(addr, path)).into_owned()
}

fn history_bytes(addr: std::net::SocketAddr) -> (usize, usize) {
    let body = get(addr, "/debug/pprof/ui/api/snapshots");
    let json = &body[body.find("\r\n\r\n").unwrap() + 4..];
    let number = |key: &str| -> usize {
        let at = json.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
        json[at..]
            .split([',', '}'])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (number("bytes"), json.matches("\"id\":").count())
}

fn main() {
    println!("heapsight-server growing benchmark: {STACKS} stacks x {SNAPSHOTS} snapshots");
    for (model, what, max_bytes) in [
        (Model::Service, "service, unbounded", usize::MAX),
        (Model::Service, "service, 64 MiB bound", 64 << 20),
        (
            Model::EveryStackChanges,
            "every stack changes, unbounded",
            usize::MAX,
        ),
        (
            Model::EveryStackChanges,
            "every stack changes, 64 MiB",
            64 << 20,
        ),
    ] {
        let server = heapsight_server::Options::new()
            .source(Synthetic::new(model))
            .history(Duration::from_millis(10), SNAPSHOTS, max_bytes)
            .spawn("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        // Let the history fill (360 snapshots 10 ms apart, and the time to take them).
        let filling = Instant::now();
        // Under the bound the count stops short of 360: stop once it stays put.
        let mut held_before = 0;
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let held = history_bytes(addr).1;
            if held >= SNAPSHOTS
                || (held == held_before && filling.elapsed() > Duration::from_secs(6))
                || filling.elapsed() > Duration::from_secs(30)
            {
                break;
            }
            held_before = held;
        }
        let (bytes, held) = history_bytes(addr);
        let mut times: Vec<f64> = (0..7)
            .map(|_| {
                let t = Instant::now();
                let body = get(
                    addr,
                    &format!("/debug/pprof/ui/api/growing?window={SNAPSHOTS}"),
                );
                assert!(body.contains("\"site\""), "a ranked stack");
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "{what:<32} {held:>4} snapshots held, {:>7.1} MiB; growing over them: median {:.1} ms (min {:.1}, max {:.1})",
            bytes as f64 / (1 << 20) as f64,
            times[3],
            times[0],
            times[6]
        );
        server.shutdown();
    }
}
