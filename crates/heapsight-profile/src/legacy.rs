//! The legacy text heap profile (`/debug/pprof/heap?debug=1`), as Go's runtime writes it.
//!
//! ```text
//! heap profile: <inuse objects>: <inuse bytes> [<alloc objects>: <alloc bytes>] @ heap/<2 x rate>
//! <inuse objects>: <inuse bytes> [<alloc objects>: <alloc bytes>] @ 0x4a1 0x4b2 0x4c3
//! #<TAB>0x4a0<TAB>myapp::cache::insert+0x0<TAB>src/cache.rs:42
//! ```
//!
//! Counts are the raw sample counts and bytes, unscaled: readers (`go tool pprof`) undo the
//! sampling themselves from the rate in the header. Records are sorted by in-use bytes, largest
//! first. Addresses on the record line are return addresses; the `#` lines name each frame
//! (fields separated by tabs).

use crate::plumbing::{is_plumbing, plumbing_prefix};
use crate::symbolize::{self, Symbolizer};
use heapsight::Snapshot;
use std::io::{self, Write};

/// Writes `snapshot` in the legacy text format. It symbolizes, and so allocates: run it inside
/// the source's [`heapsight::SnapshotSource::unprofiled`].
///
/// ```
/// use heapsight::{SamplerSource, SnapshotSource};
///
/// #[global_allocator]
/// static GLOBAL: heapsight::Sampler<std::alloc::System> =
///     heapsight::Sampler::new(std::alloc::System);
///
/// #[inline(never)]
/// fn buffer_pool() -> Vec<Vec<u8>> {
///     (0..16).map(|_| vec![0; 64 << 10]).collect()
/// }
///
/// heapsight::set_sample_rate(1);
/// let pool = buffer_pool();
/// let mut text = Vec::new();
/// SamplerSource.unprofiled(&mut || {
///     heapsight_profile::write_legacy_heap_text(&heapsight::snapshot(), &mut text).unwrap()
/// });
/// let text = String::from_utf8(text).unwrap();
/// assert!(text.starts_with("heap profile: "));
/// // The pool's record: 16 blocks in use, 1 MiB, then its frames named.
/// assert!(text.contains("16: 1048576 [16: 1048576] @"), "{text}");
/// assert!(text.contains("buffer_pool"), "{text}");
/// # drop(pool);
/// ```
pub fn write_legacy_heap_text(snapshot: &Snapshot, w: &mut impl Write) -> io::Result<()> {
    symbolize::with_symbolizer(|s| write_with(snapshot, s, w))
}

/// A count and its bytes as readers accept them: both positive, or both 0. A snapshot reads a
/// stack's counters one by one while other threads sample and free, so it can catch a count
/// updated and its bytes not yet (`go tool pprof` rejects "inuse count was 0 but inuse bytes
/// was 4096").
fn consistent(count: i64, bytes: i64) -> (i64, i64) {
    if count > 0 && bytes > 0 {
        (count, bytes)
    } else {
        (0, 0)
    }
}

fn write_with(
    snapshot: &Snapshot,
    symbolizer: &mut Symbolizer,
    w: &mut impl Write,
) -> io::Result<()> {
    symbolizer.refresh();
    let mut records: Vec<_> = snapshot
        .stacks
        .iter()
        .map(|(id, t)| {
            let (inuse_n, inuse_b) = consistent(t.inuse_samples(), t.inuse_sample_bytes());
            let (alloc_n, alloc_b) =
                consistent(t.alloc_samples as i64, t.alloc_sample_bytes as i64);
            (inuse_n, inuse_b, alloc_n, alloc_b, *id)
        })
        .collect();
    records.sort_by_key(|r| std::cmp::Reverse(r.1));
    let total = records.iter().fold([0i64; 4], |acc, r| {
        [acc[0] + r.0, acc[1] + r.1, acc[2] + r.2, acc[3] + r.3]
    });
    let mut out = io::BufWriter::new(w);
    writeln!(
        out,
        "heap profile: {}: {} [{}: {}] @ heap/{}",
        total[0],
        total[1],
        total[2],
        total[3],
        2 * snapshot.sample_rate.max(1)
    )?;
    for (inuse_n, inuse_b, alloc_n, alloc_b, id) in records {
        // The same trimming as the protobuf profile: the stack starts at the code that allocated.
        let frames: Vec<(u64, std::sync::Arc<[symbolize::Frame]>)> = snapshot
            .frames
            .frames(id)
            .into_iter()
            .map(|ret| (ret, symbolizer.frames(ret.wrapping_sub(1))))
            .collect();
        let (skip, _) = plumbing_prefix(frames.iter().map(|(_, f)| &f[..]));
        let frames = &frames[skip.min(frames.len().saturating_sub(1))..];
        write!(out, "{inuse_n}: {inuse_b} [{alloc_n}: {alloc_b}] @")?;
        for (ret, _) in frames {
            write!(out, " {ret:#x}")?;
        }
        writeln!(out)?;
        for (ret, names) in frames {
            let pc = ret.wrapping_sub(1);
            for f in names.iter().filter(|f| !is_plumbing(&f.function)) {
                let file = f.file.as_deref().unwrap_or("?");
                writeln!(out, "#\t{pc:#x}\t{}+0x0\t{file}:{}", f.function, f.line)?;
            }
        }
        writeln!(out)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::consistent;

    #[test]
    fn a_count_and_its_bytes_are_both_positive_or_both_zero() {
        assert_eq!(consistent(3, 4096), (3, 4096));
        assert_eq!(
            consistent(0, 4096),
            (0, 0),
            "caught between two counter updates"
        );
        assert_eq!(consistent(1, 0), (0, 0));
        assert_eq!(consistent(-1, 64), (0, 0));
    }
}
