//! jemalloc's heap profile dump, the `heap_v2` text format: parsing it and unbiasing its counts.
//!
//! A dump looks like this (addresses leaf first; `[...]` counts are zero unless jemalloc runs
//! with `prof_accum:true`):
//!
//! ```text
//! heap_v2/524288
//!   t*: 28: 14680064 [0: 0]
//!   t0: 20: 10485760 [0: 0]
//!   t1: 8: 4194304 [0: 0] worker-1
//! @ 0x55d0c0a1b2c3 0x55d0c0a1b4d5 0x7f1e2a3b4c5d
//!   t*: 28: 14680064 [0: 0]
//!   t0: 20: 10485760 [0: 0]
//!
//! MAPPED_LIBRARIES:
//! 55d0c0a00000-55d0c0b00000 r-xp 00000000 08:01 1234 /usr/bin/service
//! ```
//!
//! The parser is strict: anything else (a truncated dump, a number that does not fit, a stack
//! without counts) is a [`DumpError`] naming the line, never a panic.

use std::fmt;

/// The most frames a stack may have (jemalloc records at most 128).
pub const MAX_FRAMES: usize = 1024;

const MAPS_MARKER: &str = "MAPPED_LIBRARIES:";

/// Objects and bytes, as one line of a dump states them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub objects: u64,
    pub bytes: u64,
}

impl Counts {
    /// What these sampled counts stand for, as `(objects, bytes)`, at a mean sample period of
    /// `period` bytes: both scaled by `1 / (1 - exp(-s/period))`, `s` the mean size per object.
    ///
    /// This is the rule every reader of `heap_v2` applies (jeprof, pprof). jemalloc (5.3 and
    /// later, with its default `prof_unbias:true`) weighs each sample on its own as it records
    /// it and writes the counts that this rule turns back into those unbiased sums, so applying
    /// it is right for every dump.
    ///
    /// ```
    /// use heapsight_jemalloc::dump::Counts;
    /// // One 1 MiB object sampled at a 512 KiB period stands for 1/(1-e^-2) objects.
    /// let (objects, bytes) = Counts { objects: 1, bytes: 1 << 20 }.unbiased(512 * 1024);
    /// assert!((objects - 1.1565).abs() < 1e-4);
    /// assert!((bytes - 1.1565 * (1 << 20) as f64).abs() < 200.0);
    /// ```
    pub fn unbiased(self, period: u64) -> (f64, f64) {
        if self.objects == 0 || self.bytes == 0 || period == 0 {
            return (0.0, 0.0);
        }
        let mean_size = self.bytes as f64 / self.objects as f64;
        // 1 - exp(-x), without losing precision when x is small.
        let kept = -(-mean_size / period as f64).exp_m1();
        (self.objects as f64 / kept, self.bytes as f64 / kept)
    }
}

/// One stack of a dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpStack {
    /// Return addresses, leaf first.
    pub frames: Vec<u64>,
    /// Sampled objects allocated at this stack and not yet freed.
    pub in_use: Counts,
    /// Sampled objects ever allocated at this stack (zero unless `prof_accum:true`).
    pub allocated: Counts,
}

/// A parsed `heap_v2` dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeapDump {
    /// The mean bytes between samples (`2^lg_prof_sample`).
    pub sample_period: u64,
    /// The whole process, as the dump's first `t*` line states it.
    pub total_in_use: Counts,
    pub total_allocated: Counts,
    pub stacks: Vec<DumpStack>,
}

/// Why a dump was rejected: the line (1-based) and what was wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed jemalloc heap dump, line {}: {}",
            self.line, self.message
        )
    }
}

impl std::error::Error for DumpError {}

/// Parses a `heap_v2` dump.
///
/// ```
/// let text = "heap_v2/1024\n  t*: 2: 96 [0: 0]\n@ 0x1000 0x2000\n  t*: 2: 96 [0: 0]\n\
///             \nMAPPED_LIBRARIES:\n";
/// let dump = heapsight_jemalloc::dump::parse(text.as_bytes())?;
/// assert_eq!(dump.sample_period, 1024);
/// assert_eq!(dump.stacks[0].frames, vec![0x1000, 0x2000]);
/// assert_eq!(dump.stacks[0].in_use.bytes, 96);
///
/// let err = heapsight_jemalloc::dump::parse(b"heap_v2/1024\n@ 0x1000\n").unwrap_err();
/// assert_eq!(err.line, 2);
/// # Ok::<(), heapsight_jemalloc::dump::DumpError>(())
/// ```
pub fn parse(text: &[u8]) -> Result<HeapDump, DumpError> {
    let mut lines = Lines {
        rest: text,
        number: 0,
    };
    let header = lines
        .next()?
        .ok_or_else(|| lines.error("empty dump: expected a heap_v2 header"))?;
    let period = header
        .strip_prefix("heap_v2/")
        .ok_or_else(|| lines.error(format!("expected \"heap_v2/<period>\", found {header:?}")))?;
    let sample_period: u64 = parse_number(period).map_err(|m| lines.error(m))?;
    if sample_period == 0 {
        return Err(lines.error("the sample period is 0"));
    }
    let (total_in_use, total_allocated) = expect_totals(&mut lines)?;
    let mut dump = HeapDump {
        sample_period,
        total_in_use,
        total_allocated,
        stacks: Vec::new(),
    };
    loop {
        let line = lines.next()?.ok_or_else(|| {
            lines.error(format!("the dump ends before {MAPS_MARKER}: cut short?"))
        })?;
        if line == MAPS_MARKER {
            // The process's memory map follows; heapsight reads its own.
            return Ok(dump);
        }
        if line.is_empty() || is_thread_line(line) {
            continue;
        }
        let Some(addresses) = line.strip_prefix('@') else {
            return Err(lines.error(format!(
                "expected a stack (\"@ 0x...\"), found {:?}",
                truncated(line)
            )));
        };
        let mut frames = Vec::new();
        for word in addresses.split_ascii_whitespace() {
            if frames.len() == MAX_FRAMES {
                return Err(lines.error(format!("a stack of more than {MAX_FRAMES} frames")));
            }
            frames.push(parse_address(word).map_err(|m| lines.error(m))?);
        }
        let (in_use, allocated) = expect_totals(&mut lines)?;
        dump.stacks.push(DumpStack {
            frames,
            in_use,
            allocated,
        });
    }
}

/// Reads a `  t*: a: b [c: d]` line: in use, then allocated.
fn expect_totals(lines: &mut Lines<'_>) -> Result<(Counts, Counts), DumpError> {
    let line = lines
        .next()?
        .ok_or_else(|| lines.error("the dump ends where a \"t*:\" line belongs"))?;
    let counts = line.strip_prefix("  t*: ").ok_or_else(|| {
        lines.error(format!(
            "expected \"  t*: ...\", found {:?}",
            truncated(line)
        ))
    })?;
    parse_counts(counts).map_err(|m| lines.error(m))
}

/// `  t<id>: a: b [c: d]` with an optional thread name after: per-thread detail, not needed.
fn is_thread_line(line: &str) -> bool {
    line.strip_prefix("  t")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(id, counts)| {
            !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && parse_counts(counts).is_ok()
        })
}

/// `a: b [c: d]`, possibly followed by a thread name.
fn parse_counts(text: &str) -> Result<(Counts, Counts), String> {
    let bad = || format!("expected \"<objects>: <bytes> [<objects>: <bytes>]\", found {text:?}");
    let text = text.trim_start();
    let (now, rest) = text.split_once(" [").ok_or_else(bad)?;
    let (ever, _thread_name) = rest.split_once(']').ok_or_else(bad)?;
    Ok((parse_pair(now)?, parse_pair(ever)?))
}

fn parse_pair(text: &str) -> Result<Counts, String> {
    let (objects, bytes) = text
        .split_once(": ")
        .ok_or_else(|| format!("expected \"<objects>: <bytes>\", found {text:?}"))?;
    let counts = Counts {
        objects: parse_number(objects)?,
        bytes: parse_number(bytes)?,
    };
    if counts.objects == 0 && counts.bytes != 0 {
        return Err(format!("{} bytes in 0 objects", counts.bytes));
    }
    Ok(counts)
}

fn parse_number(text: &str) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a number, found {:?}", truncated(text)));
    }
    text.parse()
        .map_err(|_| format!("{} does not fit in 64 bits", truncated(text)))
}

fn parse_address(word: &str) -> Result<u64, String> {
    if word == "0" {
        return Ok(0);
    }
    let hex = word
        .strip_prefix("0x")
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            format!(
                "expected an address like 0x7f00, found {:?}",
                truncated(word)
            )
        })?;
    u64::from_str_radix(hex, 16)
        .map_err(|_| format!("address {} does not fit in 64 bits", truncated(word)))
}

/// A long piece of bad input, cut to fit in an error message.
fn truncated(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

struct Lines<'a> {
    rest: &'a [u8],
    number: usize,
}

impl<'a> Lines<'a> {
    /// The next line without its newline, `None` at the end.
    fn next(&mut self) -> Result<Option<&'a str>, DumpError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        self.number += 1;
        let end = self
            .rest
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(self.rest.len());
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest.get(1..).unwrap_or(&[]);
        std::str::from_utf8(line)
            .map(Some)
            .map_err(|_| self.error("not UTF-8 text"))
    }

    fn error(&self, message: impl Into<String>) -> DumpError {
        DumpError {
            line: self.number.max(1),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dump with thread names and cumulative counts, also a seed of `tests/fuzz_dump.rs`.
    const GOOD: &str = include_str!("../tests/data/two-stacks.heap");

    #[test]
    fn a_dump_parses_into_its_stacks_and_counts() {
        let d = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(d.sample_period, 524288);
        assert_eq!(
            d.total_in_use,
            Counts {
                objects: 30,
                bytes: 15728640
            }
        );
        assert_eq!(d.total_allocated.objects, 40);
        assert_eq!(d.stacks.len(), 2);
        assert_eq!(
            d.stacks[0].frames,
            vec![0x55d0c0a1b2c3, 0x55d0c0a1b4d5, 0x7f1e2a3b4c5d]
        );
        assert_eq!(d.stacks[1].in_use.objects, 10);
        assert_eq!(d.stacks[1].allocated.bytes, 7864320);
    }

    #[test]
    fn malformed_dumps_are_rejected_with_the_line_that_is_wrong() {
        let cases: [(&str, usize, &str); 11] = [
            ("", 1, "empty"),
            ("heap_v3/512\n", 1, "heap_v2"),
            ("heap_v2/0\n", 1, "period is 0"),
            ("heap_v2/x\n", 1, "a number"),
            ("heap_v2/512\n  t*: 1: 8 [0: 0]\n@ 0x10\n", 3, "t*:"),
            (
                "heap_v2/512\n  t*: 1: 8 [0: 0]\n@ 0x10\n  t*: 1: 8\n",
                4,
                "[<objects>",
            ),
            ("heap_v2/512\n  t*: 1: 8 [0: 0]\n@ 0xzz\n", 3, "address"),
            (
                "heap_v2/512\n  t*: 1: 99999999999999999999 [0: 0]\n",
                2,
                "64 bits",
            ),
            ("heap_v2/512\n  t*: 0: 8 [0: 0]\n", 2, "0 objects"),
            (
                "heap_v2/512\n  t*: 1: 8 [0: 0]\ngarbage\n",
                3,
                "expected a stack",
            ),
            (
                "heap_v2/512\n  t*: 1: 8 [0: 0]\n@ 0x10\n  t*: 1: 8 [0: 0]\n",
                4,
                "cut short",
            ),
        ];
        for (text, line, words) in cases {
            let e = parse(text.as_bytes()).expect_err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(words), "{text:?}: {e}");
        }
        let deep = format!(
            "heap_v2/512\n  t*: 1: 8 [0: 0]\n@{}\n",
            " 0x10".repeat(MAX_FRAMES + 1)
        );
        assert!(parse(deep.as_bytes())
            .unwrap_err()
            .message
            .contains("frames"));
        assert!(parse(b"heap_v2/512\n  t*: 1: 8 [0: 0]\n@ 0x\xff\n").is_err());
    }

    #[test]
    fn unbiasing_scales_by_the_mean_size_per_object() {
        // Small objects: each sample stands for about period/size objects.
        let (objects, bytes) = Counts {
            objects: 100,
            bytes: 6400,
        }
        .unbiased(512 * 1024);
        assert!((objects / 100.0 - 8192.5).abs() < 1.0, "{objects}");
        assert!((bytes / 6400.0 - 8192.5).abs() < 1.0);
        // Objects far above the period are all sampled: no scaling.
        let (objects, _) = Counts {
            objects: 3,
            bytes: 3 * (64 << 20),
        }
        .unbiased(512 * 1024);
        assert!((objects - 3.0).abs() < 1e-9);
        assert_eq!(Counts::default().unbiased(512), (0.0, 0.0));
    }
}
