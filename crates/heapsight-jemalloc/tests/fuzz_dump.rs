//! Fuzzes the `heap_v2` parser with seeded random mutations of real dumps (this process's own,
//! taken by jemalloc, and a hand-written one with thread names and cumulative counts).
//!
//! Whatever the input, parsing returns a result and never panics; what it accepts satisfies the
//! parser's promises; and a snapshot and a profile can be built from anything it accepts. The
//! seed is fixed so that a failure reproduces; `HEAPSIGHT_FUZZ_SEED` and
//! `HEAPSIGHT_FUZZ_ITERATIONS` explore further.

use heapsight_jemalloc::dump::{self, MAX_FRAMES};
use heapsight_jemalloc::JemallocSource;
use heapsight_profile::{HeapView, Profile};
use std::panic::{catch_unwind, AssertUnwindSafe};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"prof:true,prof_accum:true,lg_prof_sample:10\0";

/// Hand-written: thread names and cumulative counts.
const HANDWRITTEN: &str = include_str!("data/two-stacks.heap");

/// xorshift64*: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"0",
    b"1",
    b"18446744073709551615",
    b"18446744073709551616",
    b"99999999999999999999999",
    b"0x",
    b"0xffffffffffffffff",
    b"0x10000000000000000",
    b"@",
    b"@ ",
    b"  t*: ",
    b"  t1: ",
    b": ",
    b" [",
    b"]",
    b"\n",
    b"\n\n",
    b"MAPPED_LIBRARIES:",
    b"heap_v2/",
    b"\xff\xfe",
    b"\xc3\xa9",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(at..at, piece.iter().copied());
            }
            2 => {
                let end = (at + rng.below(40)).min(out.len());
                out.drain(at..end);
            }
            3 => out.truncate(at),
            4 => {
                // Copy a random line somewhere else: duplicated stacks, misplaced counts.
                let lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
                let mut line = lines[rng.below(lines.len())].to_vec();
                line.push(b'\n');
                out.splice(at..at, line);
            }
            5 => {
                // A very deep stack.
                let frames = " 0x10".repeat(MAX_FRAMES - 2 + rng.below(4));
                out.splice(at..at, format!("@{frames}\n").into_bytes());
            }
            _ => {
                let byte = b"0123456789abcdefx:[]@t* \n"[rng.below(25)];
                out.insert(at, byte);
            }
        }
    }
    out
}

#[test]
fn mutated_dumps_never_panic_and_what_parses_is_sound() {
    let seed: u64 = std::env::var("HEAPSIGHT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f0d0);
    let iterations: usize = std::env::var("HEAPSIGHT_FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60_000);
    let keep: Vec<Vec<u8>> = (0..2000).map(|i| vec![i as u8; 64 + i % 900]).collect();
    let real = heapsight_jemalloc::ctl::dump().expect("jemalloc dumps in this test");
    drop(keep);
    assert!(dump::parse(&real).is_ok(), "this process's own dump parses");
    let seeds = [real, HANDWRITTEN.as_bytes().to_vec()];

    let mut rng = Rng(seed | 1);
    let (mut accepted, mut rejected, mut built) = (0usize, 0usize, 0usize);
    let source = JemallocSource::new();
    for i in 0..iterations {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        let parsed = catch_unwind(AssertUnwindSafe(|| dump::parse(&input))).unwrap_or_else(|_| {
            panic!(
                "the parser panicked on {:?}",
                String::from_utf8_lossy(&input)
            )
        });
        match parsed {
            Err(e) => {
                rejected += 1;
                assert!(e.line >= 1 && !e.message.is_empty());
            }
            Ok(d) => {
                accepted += 1;
                assert!(d.sample_period > 0);
                for s in &d.stacks {
                    assert!(s.frames.len() <= MAX_FRAMES);
                    for c in [s.in_use, s.allocated] {
                        assert!(c.objects > 0 || c.bytes == 0);
                        let (objects, bytes) = c.unbiased(d.sample_period);
                        assert!(objects.is_finite() && bytes.is_finite() && objects >= 0.0);
                    }
                }
                // Now and then, the whole way: snapshot, then a symbolized profile.
                if accepted % 200 == 1 {
                    let snapshot = source.snapshot_of(&input).expect("it parsed");
                    let profile = Profile::heap(&snapshot, HeapView::InUse);
                    assert!(profile.to_pprof_bytes().len() > 10);
                    built += 1;
                }
            }
        }
    }
    eprintln!(
        "fuzz: {iterations} mutated dumps (seed {seed:#x}): {accepted} accepted, {rejected} rejected, {built} built into profiles"
    );
    // Both paths must really be exercised, or the mutations are not reaching the parser.
    assert!(accepted > iterations / 20, "only {accepted} accepted");
    assert!(rejected > iterations / 4, "only {rejected} rejected");
}
