//! What the growing list costs at scale: the `growing` endpoint over a history of 360 snapshots
//! of 10,000 stacks each (an hour at the default interval, for a large service), and the memory
//! that history takes. Run with `cargo bench -p heapsight-server --bench growing`.
//!
//! The snapshots come from a synthetic source: 10,000 stacks, of which one in a hundred grows
//! steadily, one in ten churns around a level, and the rest stay flat. Its stacks are real code
//! addresses of this binary, so the ranked stacks are symbolized as in a service.

mod http;

use heapsight::{Snapshot, SnapshotSource, SourceError, StackId, StackStore, StackTotals};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const STACKS: u64 = 10_000;
const SNAPSHOTS: usize = 360;
const RATE: u64 = 512 << 10;

struct Synthetic {
    stacks: Arc<StackStore>,
    ids: Vec<StackId>,
    taken: AtomicU64,
}

impl Synthetic {
    fn new() -> Synthetic {
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
            stacks,
            ids,
            taken: AtomicU64::new(0),
        }
    }
}

impl SnapshotSource for Synthetic {
    fn name(&self) -> &str {
        "synthetic"
    }

    fn snapshot(&self) -> Result<Snapshot, SourceError> {
        let t = self.taken.fetch_add(1, Ordering::Relaxed);
        let stacks = self
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let held = 1 + match i % 100 {
                    0 => t,                           // grows: one more sample a snapshot
                    1..=10 => (t * 7 + i as u64) % 5, // churns around a level
                    _ => 3,                           // flat
                };
                let allocated = held + t;
                let totals = StackTotals {
                    alloc_objects_fx: allocated << 16,
                    alloc_space: allocated * RATE,
                    free_objects_fx: (allocated - held) << 16,
                    free_space: (allocated - held) * RATE,
                    alloc_samples: allocated,
                    alloc_sample_bytes: allocated * 4096,
                    free_samples: allocated - held,
                    free_sample_bytes: (allocated - held) * 4096,
                };
                (*id, totals)
            })
            .collect();
        Ok(Snapshot {
            time: SystemTime::now(),
            duration: None,
            sample_rate: RATE as usize,
            stacks,
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
    for (what, max_bytes) in [
        ("unbounded", usize::MAX),
        ("default 64 MiB bound", 64 << 20),
    ] {
        let server = heapsight_server::Options::new()
            .source(Synthetic::new())
            .history(Duration::from_millis(10), SNAPSHOTS, max_bytes)
            .spawn("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        // Let the history fill (360 snapshots 10 ms apart, and the time to take them).
        let filling = Instant::now();
        while history_bytes(addr).1 < SNAPSHOTS && filling.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(200));
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
            "{what:<22} {held:>4} snapshots held, {:>7.1} MiB; growing over them: median {:.1} ms (min {:.1}, max {:.1})",
            bytes as f64 / (1 << 20) as f64,
            times[3],
            times[0],
            times[6]
        );
        server.shutdown();
    }
}
