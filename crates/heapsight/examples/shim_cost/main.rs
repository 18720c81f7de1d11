//! What the hook costs a real program that reaches it through the `#[global_allocator]` shims
//! (`__rust_alloc`, `__rust_dealloc`, ...), counted in instructions and timed.
//!
//! The workload is `syn` parsing the sources of two crates pinned in this workspace's
//! `Cargo.lock` (serde and axum): a real crate's allocation-heavy job, mostly small strings and
//! syntax-tree nodes, on a fixed input. Each set-up is a program of its own, because a global
//! allocator is chosen when a program is linked: `shim_system` and `shim_jemalloc` (bare),
//! `shim_system_hooked` and `shim_jemalloc_hooked` (`heapsight::global_allocator!`),
//! `shim_system_static` and `shim_jemalloc_static` (a `#[global_allocator]` static made with
//! `Sampler::new`), and `shim_count`, which counts the allocator calls. jemalloc's own profiler runs as `shim_jemalloc` with
//! `prof:true,lg_prof_sample:19`, the same mean sample distance as the hook's default 512 KiB.
//!
//! ```text
//! cargo build --release -p heapsight --examples
//! target/release/examples/shim_cost [runs=3] [pairs=11] [rounds=3] [quick]
//! ```
//!
//! - Instructions: each set-up under `valgrind --tool=callgrind`, `runs` times; the median, its
//!   ratio to the bare allocator's, and the added instructions per allocation (the added
//!   instructions over the number of allocation calls, each of which has its free). The hooked
//!   set-ups also run with sampling off (rate 0), which leaves only the fast paths. The last
//!   column gives the instructions libc's `memcpy` and `memmove` added: callgrind counts a
//!   `rep movsb` copy as one instruction per byte, so a sampled `realloc`, which moves its block
//!   where the free can recognise it, shows there in full.
//! - Wall clock: the bare and the hooked program alternated, `pairs` pairs, each parsing the
//!   corpus `rounds` times; the median ratio of the pairs' parse times and its spread.
//!
//! jemalloc's purging is driven by time, and under valgrind's slow clock it made the bare
//! allocator's count vary by half a percent from run to run; every jemalloc set-up here runs with
//! `dirty_decay_ms:-1,muzzy_decay_ms:-1`, which leaves a spread of about 0.1%.
//!
//! A benchmark, not a test: nothing here passes or fails.

use std::path::{Path, PathBuf};
use std::process::Command;

const NO_DECAY: &str = "dirty_decay_ms:-1,muzzy_decay_ms:-1";

struct SetUp {
    name: &'static str,
    program: &'static str,
    env: Vec<(&'static str, String)>,
    /// The set-up this one is compared with.
    baseline: Option<&'static str>,
}

fn set_ups() -> Vec<SetUp> {
    let jemalloc = |extra: &str| vec![("_RJEM_MALLOC_CONF", format!("{NO_DECAY}{extra}"))];
    let mut rate0 = jemalloc("");
    rate0.push(("SHIM_COST_RATE", "0".into()));
    vec![
        SetUp {
            name: "System",
            program: "shim_system",
            env: vec![],
            baseline: None,
        },
        SetUp {
            name: "Sampler<System>",
            program: "shim_system_hooked",
            env: vec![],
            baseline: Some("System"),
        },
        SetUp {
            name: "Sampler::new(System)",
            program: "shim_system_static",
            env: vec![],
            baseline: Some("System"),
        },
        SetUp {
            name: "Sampler<System>, sampling off",
            program: "shim_system_hooked",
            env: vec![("SHIM_COST_RATE", "0".into())],
            baseline: Some("System"),
        },
        SetUp {
            name: "jemalloc",
            program: "shim_jemalloc",
            env: jemalloc(""),
            baseline: None,
        },
        SetUp {
            name: "Sampler<Jemalloc>",
            program: "shim_jemalloc_hooked",
            env: jemalloc(""),
            baseline: Some("jemalloc"),
        },
        SetUp {
            name: "Sampler::new(Jemalloc)",
            program: "shim_jemalloc_static",
            env: jemalloc(""),
            baseline: Some("jemalloc"),
        },
        SetUp {
            name: "Sampler<Jemalloc>, sampling off",
            program: "shim_jemalloc_hooked",
            env: rate0,
            baseline: Some("jemalloc"),
        },
        SetUp {
            name: "jemalloc prof (lg_prof_sample:19)",
            program: "shim_jemalloc",
            env: jemalloc(",prof:true,lg_prof_sample:19"),
            baseline: Some("jemalloc"),
        },
    ]
}

fn main() {
    let mut runs = 3;
    let mut pairs = 11;
    let mut rounds = 3;
    for arg in std::env::args().skip(1) {
        match arg.split_once('=') {
            Some(("runs", n)) => runs = n.parse().expect("runs=N"),
            Some(("pairs", n)) => pairs = n.parse().expect("pairs=N"),
            Some(("rounds", n)) => rounds = n.parse().expect("rounds=N"),
            None if arg == "quick" => (runs, pairs, rounds) = (1, 5, 1),
            _ => panic!("unknown argument {arg}: runs=N pairs=N rounds=N quick"),
        }
    }
    let dir = std::env::current_exe()
        .expect("the runner's own path")
        .parent()
        .expect("a directory")
        .to_path_buf();
    for s in set_ups() {
        let p = dir.join(s.program);
        assert!(
            p.exists(),
            "{} is missing: cargo build --release -p heapsight --examples",
            p.display()
        );
    }
    let corpus = write_corpus();
    let calls = count_calls(&dir, &corpus);
    println!(
        "workload: syn parsing {} ({} allocations, {} frees, {} reallocs)\n",
        corpus.describe, calls.allocs, calls.frees, calls.reallocs
    );

    println!("instructions, valgrind --tool=callgrind, median of {runs}:");
    println!(
        "{:<36} {:>14} {:>8} {:>9} {:>14} {:>12}",
        "set-up", "instructions", "spread", "ratio", "added / alloc", "of it copies"
    );
    let mut medians: Vec<(&'static str, u64, u64)> = Vec::new();
    for s in set_ups() {
        let counts: Vec<(u64, u64)> = (0..runs)
            .map(|_| callgrind(&dir.join(s.program), &s.env, &corpus.list))
            .collect();
        let totals: Vec<u64> = counts.iter().map(|c| c.0).collect();
        let m = median_u64(&totals);
        let copies = median_u64(&counts.iter().map(|c| c.1).collect::<Vec<_>>());
        let spread =
            (totals.iter().max().unwrap() - totals.iter().min().unwrap()) as f64 / m as f64;
        let (ratio, per, copied) = match s.baseline {
            Some(b) => {
                let &(_, base, base_copies) = medians.iter().find(|(n, ..)| *n == b).unwrap();
                let added = m as f64 - base as f64;
                let added_copies = copies as f64 - base_copies as f64;
                (
                    format!("{:.4}", m as f64 / base as f64),
                    format!("{:+.1}", added / calls.allocs as f64),
                    format!("{:+.1}", added_copies / calls.allocs as f64),
                )
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<36} {:>14} {:>7.2}% {:>9} {:>14} {:>12}",
            s.name,
            m,
            spread * 100.0,
            ratio,
            per,
            copied
        );
        medians.push((s.name, m, copies));
    }

    println!("\nwall clock, parse time of {rounds} rounds, {pairs} alternated pairs:");
    println!(
        "{:<36} {:>10} {:>10} {:>9} {:>17}",
        "set-up", "bare ms", "hooked ms", "ratio", "pair ratios"
    );
    let all = set_ups();
    for hooked in [
        "Sampler<System>",
        "Sampler<Jemalloc>",
        "jemalloc prof (lg_prof_sample:19)",
    ] {
        let h = all.iter().find(|s| s.name == hooked).unwrap();
        let b = all.iter().find(|s| Some(s.name) == h.baseline).unwrap();
        let mut bare = Vec::new();
        let mut hook = Vec::new();
        for i in 0..pairs {
            // Alternate which side runs first, so that neither always follows the other.
            let (x, y) = if i % 2 == 0 { (b, h) } else { (h, b) };
            let tx = parse_ns(&dir.join(x.program), &x.env, &corpus.list, rounds);
            let ty = parse_ns(&dir.join(y.program), &y.env, &corpus.list, rounds);
            let (tb, th) = if i % 2 == 0 { (tx, ty) } else { (ty, tx) };
            bare.push(tb);
            hook.push(th);
        }
        let mut ratios: Vec<f64> = bare.iter().zip(&hook).map(|(b, h)| h / b).collect();
        ratios.sort_by(f64::total_cmp);
        println!(
            "{:<36} {:>10.1} {:>10.1} {:>9.3} {:>8.3}-{:<8.3}",
            hooked,
            median(&bare) / 1e6,
            median(&hook) / 1e6,
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
    let _ = std::fs::remove_file(&corpus.list);
}

struct Corpus {
    list: PathBuf,
    describe: String,
}

/// The corpus: every `.rs` file under `src/` of the serde and axum packages this workspace's
/// `Cargo.lock` pins, as `cargo metadata` locates them, in path order.
fn write_corpus() -> Corpus {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed");
    let meta = String::from_utf8(out.stdout).expect("UTF-8 metadata");
    let mut files = Vec::new();
    let mut describe = Vec::new();
    for name in ["serde", "axum"] {
        let (version, manifest) = package(&meta, name);
        let src = Path::new(&manifest)
            .parent()
            .expect("a package directory")
            .join("src");
        let before = files.len();
        collect_rs(&src, &mut files);
        describe.push(format!("{name} {version} ({} files)", files.len() - before));
    }
    files.sort();
    let list = std::env::temp_dir().join(format!("shim-cost-corpus-{}", std::process::id()));
    let text: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    std::fs::write(&list, text).expect("the corpus list is written");
    Corpus {
        list,
        describe: describe.join(", "),
    }
}

/// The version and manifest path of the package `name` in `cargo metadata`'s output (the first
/// one, should the lock hold two versions).
fn package(meta: &str, name: &str) -> (String, String) {
    let field = |from: &str, key: &str| -> String {
        let at = from.find(&format!("\"{key}\":\"")).expect("the field") + key.len() + 4;
        from[at..].split('"').next().unwrap().to_owned()
    };
    let at = meta
        .find(&format!("{{\"name\":\"{name}\",\"version\":"))
        .unwrap_or_else(|| panic!("{name} is in the lock file"));
    let entry = &meta[at..];
    (field(entry, "version"), field(entry, "manifest_path"))
}

fn collect_rs(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect_rs(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

struct Calls {
    allocs: u64,
    frees: u64,
    reallocs: u64,
}

fn count_calls(dir: &Path, corpus: &Corpus) -> Calls {
    let out = run(&dir.join("shim_count"), &[], &corpus.list, 1);
    let get = |key: &str| -> u64 {
        let at = out.find(&format!("{key}=")).expect("the count") + key.len() + 1;
        out[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    Calls {
        allocs: get("allocs"),
        frees: get("frees"),
        reallocs: get("reallocs"),
    }
}

fn run(program: &Path, env: &[(&str, String)], list: &Path, rounds: usize) -> String {
    let out = Command::new(program)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("SHIM_COST_CORPUS", list)
        .env("SHIM_COST_ROUNDS", rounds.to_string())
        .output()
        .expect("the set-up runs");
    assert!(out.status.success(), "{} failed", program.display());
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn parse_ns(program: &Path, env: &[(&str, String)], list: &Path, rounds: usize) -> f64 {
    let out = run(program, env, list, rounds);
    let at = out.find("parse_ns=").expect("the parse time") + 9;
    out[at..].trim().parse().expect("a number")
}

/// The instructions the program ran, from callgrind's summary, and those of them in libc's
/// `memcpy` and `memmove` (from `callgrind_annotate`).
fn callgrind(program: &Path, env: &[(&str, String)], list: &Path) -> (u64, u64) {
    let out_file = std::env::temp_dir().join(format!("shim-cost-{}.callgrind", std::process::id()));
    let out = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(program)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("SHIM_COST_CORPUS", list)
        .output()
        .expect("valgrind runs (apt-get install valgrind)");
    assert!(
        out.status.success(),
        "valgrind {} failed",
        program.display()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let at = err.find("Collected : ").expect("callgrind's summary") + 12;
    let total = err[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .expect("a count");
    let annotated = Command::new("callgrind_annotate")
        .args(["--threshold=100", "--auto=no"])
        .arg(&out_file)
        .output()
        .expect("callgrind_annotate runs");
    let _ = std::fs::remove_file(&out_file);
    let copies = String::from_utf8_lossy(&annotated.stdout)
        .lines()
        .filter(|l| l.contains(":__memcpy") || l.contains(":__memmove"))
        .filter_map(|l| {
            l.split_whitespace()
                .next()?
                .replace(',', "")
                .parse::<u64>()
                .ok()
        })
        .sum();
    (total, copies)
}

fn median_u64(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
