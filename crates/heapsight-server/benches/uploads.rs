//! What reading an uploaded profile costs in memory: the UI's "Open pprof files" posts the file
//! to `.../ui/api/tree`, and the server reads it, builds the tree and answers. The program
//! counts every byte its allocator hands out (a counting wrapper around `System`, so nothing
//! is estimated), and reports the highest live heap during each upload above the live heap
//! before it, for profiles of 0.5 to 8 MiB uncompressed shaped like a service's heap profile
//! (4 sample types, stacks 20-40 frames deep whose outer 12 frames are shared and which fork
//! three ways at each frame after that, 4,000 functions).
//! The ratio of that peak to the profile's uncompressed size is what
//! `Options::upload_limits` documents.
//!
//! `cargo bench -p heapsight-server --bench uploads`. A benchmark: nothing passes or fails.

use heapsight_profile::{Function, Line, Location, Mapping, Profile, Sample, ValueType};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to `System` unchanged; the counters only add and subtract the
// sizes of blocks `System` handed out and took back.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is `System::alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A heap profile of about `samples` samples, its stacks drawn from a tree of call paths
/// (branching 3 ways at each level) over `functions` functions.
fn synthetic(samples: usize, functions: usize) -> Profile {
    let mut p = Profile {
        sample_types: [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space",
        ]
        .iter()
        .map(|t| {
            ValueType::new(
                t,
                if t.ends_with("space") {
                    "bytes"
                } else {
                    "count"
                },
            )
        })
        .collect(),
        default_sample_type: Some("inuse_space".into()),
        mappings: vec![Mapping {
            id: 1,
            memory_start: 0x1000,
            memory_limit: 0x1000_0000,
            filename: "/usr/bin/service".into(),
            has_functions: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    for f in 1..=functions as u64 {
        p.functions.push(Function {
            id: f,
            name: format!("service::module_{}::Handler<T>::function_{f}", f % 97),
            system_name: format!(
                "_ZN7service9module_{}8function_{f}17h0123456789abcdefE",
                f % 97
            ),
            filename: format!("src/module_{}.rs", f % 97),
            start_line: 0,
        });
        p.locations.push(Location {
            id: f,
            mapping_id: 1,
            address: 0x1000 + 16 * f,
            lines: vec![Line {
                function_id: f,
                line: (f % 500) as i64,
            }],
        });
    }
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut draw = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..samples {
        let depth = 20 + (draw() % 21) as usize;
        // The outer 12 frames are the same for every stack (thread start, runtime, task
        // harness); from there the paths fork three ways at each frame.
        let mut path = 1u64;
        let mut stack = Vec::with_capacity(depth);
        for level in 0..depth {
            if level >= 12 {
                path = path * 3 + draw() % 3;
            }
            stack.push(1 + (path + level as u64 * 7919) % functions as u64);
        }
        stack.reverse(); // leaf first, as pprof stores them
        let bytes = (draw() % 65536) as i64;
        p.samples.push(Sample {
            location_ids: stack,
            values: vec![1, bytes, 1, bytes],
            labels: Vec::new(),
            num_labels: Vec::new(),
        });
    }
    p
}

/// The size of a gzip file unpacked.
fn unpacked_len(file: &[u8]) -> usize {
    std::io::copy(
        &mut flate2::read::GzDecoder::new(file),
        &mut std::io::sink(),
    )
    .unwrap() as usize
}

fn post(addr: std::net::SocketAddr, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /debug/pprof/ui/api/tree HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    String::from_utf8_lossy(&reply[..12])
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

fn main() {
    let server = heapsight_server::Options::new()
        .without_history()
        .upload_limits(64 << 20, 64 << 20)
        .spawn("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    println!(
        "upload (uncompressed / sent)   status   peak live heap above before   peak / uncompressed"
    );
    for samples in [5_000, 10_000, 20_000, 40_000, 80_000] {
        let file = synthetic(samples, 4000).to_pprof_bytes();
        let unpacked = unpacked_len(&file);
        drop(synthetic(1, 1)); // warm
                               // Twice: the first request of a kind also fills caches that stay.
        let mut peaks = Vec::new();
        for _ in 0..2 {
            let before = LIVE.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            let status = post(addr, &file);
            assert_eq!(status, 200);
            peaks.push((PEAK.load(Ordering::Relaxed) - before, status));
        }
        let (peak, status) = peaks[1];
        println!(
            "{:>8.2} MiB / {:>5.2} MiB      {status}      {:>8.2} MiB                  {:.1}x",
            unpacked as f64 / 1048576.0,
            file.len() as f64 / 1048576.0,
            peak as f64 / 1048576.0,
            peak as f64 / unpacked as f64
        );
    }
}
