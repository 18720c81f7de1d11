//! Growth ranking: which stacks keep growing over a window of snapshots, fastest first.
//!
//! A least-squares slope over the window rewards anything that grew once: a cache that filled
//! during warm-up and then stayed flat slopes upwards over any window that includes the
//! warm-up, and a single large allocation (a step) slopes like a leak. A leak is growth that
//! goes on, so the ranking asks for growth in every part of the window, the most recent
//! included, and for more of it than sampling noise explains:
//!
//! 1. **Segments.** The window's intervals are split into [`SEGMENTS`] consecutive runs of
//!    (nearly) equal length, and each segment's rate is its value's change over its duration.
//! 2. **Sustained rate.** The lowest of the segments' rates. A leak grows in each segment;
//!    warm-up then flat has a last segment of about 0; a step has segments of 0 before and
//!    after it; a sawtooth falls in some segment.
//! 3. **Noise.** Every estimate of a sampled heap has a standard error ([`standard_error`]);
//!    so does a change between two snapshots, from the samples drawn and freed in between
//!    ([`standard_error_of_change`]). A stack ranks only when its value grew over the window by
//!    more than [`NOISE_SIGMAS`] times the error of that change, and its sustained rate exceeds
//!    [`SEGMENT_SIGMAS`] times the error of the slowest segment's rate. (Each segment holds a
//!    third of the samples, so it is held to a lower bar: noise that clears one standard error
//!    in all three segments at once is rare, about 0.4% of flat stacks.)
//! 4. **Order.** By the sustained rate less one standard error: the growth the samples vouch
//!    for. Near the noise, a slower rate measured on many samples outranks a faster one
//!    measured on few.
//! 5. **Ages.** Where the last snapshot knows when each sampled block in use was allocated
//!    ([`ages`]), the last segment's rate is at most the value of the blocks allocated in that
//!    segment and still held, over its duration: growth now is made of blocks allocated now.
//!    A stack whose estimate rose while it holds no young blocks (a rise from how the samples
//!    of its old blocks were weighed, or frees miscounted against another stack) does not rank.
//!    The ages are reported with each ranked stack: a leak holds blocks of every age
//!    ([`AgePattern::EveryAge`]); a vector or map that grows by reallocating holds mostly young
//!    ones, since each move allocates anew, which is why ages cap the rate but never replace
//!    the snapshots' segments.
//!
//! A worked example, seven snapshots 10 s apart (six intervals, three segments of 20 s), values
//! in KiB, sampled at rate 1 (no noise):
//!
//! | stack | values at t = 0 .. 60 s | segment rates (KiB/s) | sustained |
//! |---|---|---|---|
//! | leak | 0, 10, 20, 30, 40, 50, 60 | 1, 1, 1 | **1** |
//! | warm-up | 0, 300, 600, 600, 600, 600, 600 | 30, 0, 0 | 0 |
//! | step | 0, 0, 0, 900, 900, 900, 900 | 0, 45, 0 | 0 |
//! | sawtooth | 0, 400, 0, 400, 0, 400, 0 | 0, 0, 0 | 0 |
//!
//! Only the leak ranks, although its least-squares slope (1 KiB/s) is the smallest of the four
//! that grew: the warm-up's is 8.6 KiB/s and the step's 19.3 KiB/s.
//!
//! ```
//! use heapsight_profile::growth;
//! let t = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0];
//! let leak = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0];
//! let warm_up = [0.0, 300.0, 600.0, 600.0, 600.0, 600.0, 600.0];
//! assert_eq!(growth::sustained_rate(&t, &leak), Some(1.0));
//! assert_eq!(growth::sustained_rate(&t, &warm_up), Some(0.0));
//! assert!(growth::slope(&t, &warm_up).unwrap() > 8.0, "the slope ranks warm-up first");
//! ```

use crate::profile::{HeapView, Profile};
use heapsight::{Snapshot, StackId, StackTotals, OBJECT_UNIT};
use std::collections::HashMap;
use std::time::SystemTime;

/// The value of one of the four heap sample types in a stack's totals; unknown types read as
/// `alloc_objects`, the last of them.
pub fn value(t: &StackTotals, sample_type: &str) -> i64 {
    match sample_type {
        "inuse_space" => t.inuse_space(),
        "inuse_objects" => t.inuse_objects(),
        "alloc_space" => t.alloc_space(),
        _ => t.alloc_objects(),
    }
}

/// The least-squares slope of `ys` against `xs`; `None` when the `xs` do not vary.
pub fn slope(xs: &[f64], ys: &[f64]) -> Option<f64> {
    let n = xs.len().min(ys.len());
    if n < 2 {
        return None;
    }
    let mean_x = xs[..n].iter().sum::<f64>() / n as f64;
    let mean_y = ys[..n].iter().sum::<f64>() / n as f64;
    let var_x: f64 = xs[..n].iter().map(|x| (x - mean_x).powi(2)).sum();
    if var_x == 0.0 {
        return None;
    }
    let cov: f64 = xs[..n]
        .iter()
        .zip(&ys[..n])
        .map(|(x, y)| (x - mean_x) * (y - mean_y))
        .sum();
    Some(cov / var_x)
}

/// How many consecutive parts of the window must each grow.
pub const SEGMENTS: usize = 3;

/// How many standard errors a stack's growth over the whole window must exceed.
pub const NOISE_SIGMAS: f64 = 2.0;

/// How many standard errors its slowest segment's rate must exceed.
pub const SEGMENT_SIGMAS: f64 = 1.0;

/// The sustained growth rate of `ys` against `xs` (see the module's rules 1 and 2): the lowest
/// of its segments' rates. `None` with fewer than two points or no time between them.
pub fn sustained_rate(xs: &[f64], ys: &[f64]) -> Option<f64> {
    slowest_segment(xs, ys).map(|(rate, _)| rate)
}

/// The rate of the slowest segment, and which segment it is.
fn slowest_segment(xs: &[f64], ys: &[f64]) -> Option<(f64, usize)> {
    let bounds = segment_bounds(xs.len().min(ys.len()))?;
    let mut slowest: Option<(f64, usize)> = None;
    for (j, &(a, b)) in bounds.iter().enumerate() {
        let dt = xs[b] - xs[a];
        if dt <= 0.0 {
            return None;
        }
        let rate = (ys[b] - ys[a]) / dt;
        if slowest.map_or(true, |(r, _)| rate < r) {
            slowest = Some((rate, j));
        }
    }
    slowest
}

/// The first and last point of each segment of `points` points: [`SEGMENTS`] runs of nearly
/// equal numbers of intervals, fewer when there are fewer intervals.
fn segment_bounds(points: usize) -> Option<Vec<(usize, usize)>> {
    let intervals = points.checked_sub(1).filter(|&n| n > 0)?;
    let k = SEGMENTS.min(intervals);
    Some(
        (0..k)
            .map(|j| (j * intervals / k, (j + 1) * intervals / k))
            .collect(),
    )
}

/// The standard error of a stack's estimate of `sample_type` at sample rate `rate`, from its
/// sampled blocks: each sample of `s` bytes was drawn with chance `p = 1 - exp(-s/rate)` and
/// stands for `w = s/p` bytes, so an estimate over `n` of them has variance `n w² (1 - p)`
/// (a sum of independent Bernoulli draws, each scaled by its weight). Blocks are taken at the
/// stack's mean sampled size. Zero at rate 1, where every allocation is recorded.
pub fn standard_error(t: &StackTotals, sample_type: &str, rate: usize) -> f64 {
    let (n, bytes) = if sample_type.starts_with("alloc") {
        (t.alloc_samples as f64, t.alloc_sample_bytes as f64)
    } else {
        (t.inuse_samples() as f64, t.inuse_sample_bytes() as f64)
    };
    error_of_samples(n, bytes, sample_type, rate)
}

/// The standard error of the change of a stack's estimate from `before` to `after`: the
/// samples drawn in between are independent of those before, and a change in use is made of
/// the samples allocated and the samples freed in between. (Counting the freed ones as fresh
/// draws overstates the error a little: their draws were made before.)
pub fn standard_error_of_change(
    before: &StackTotals,
    after: &StackTotals,
    sample_type: &str,
    rate: usize,
) -> f64 {
    let drawn = |a: u64, b: u64| b.saturating_sub(a) as f64;
    let mut n = drawn(before.alloc_samples, after.alloc_samples);
    let mut bytes = drawn(before.alloc_sample_bytes, after.alloc_sample_bytes);
    if !sample_type.starts_with("alloc") {
        n += drawn(before.free_samples, after.free_samples);
        bytes += drawn(before.free_sample_bytes, after.free_sample_bytes);
    }
    error_of_samples(n, bytes, sample_type, rate)
}

/// The standard error of an estimate over `n` samples of `bytes` raw bytes in all.
fn error_of_samples(n: f64, bytes: f64, sample_type: &str, rate: usize) -> f64 {
    if rate <= 1 || n <= 0.0 {
        return 0.0;
    }
    let size = bytes / n;
    let p = -(-size / rate as f64).exp_m1();
    if p <= 0.0 {
        return 0.0;
    }
    let per_sample = if sample_type.ends_with("space") {
        size / p
    } else {
        1.0 / p
    };
    per_sample * (n * (1.0 - p)).sqrt()
}

/// One growing stack.
#[derive(Clone, Debug, PartialEq)]
pub struct Growth {
    pub stack: StackId,
    /// The sustained rate, in units of the sample type per second.
    pub rate_per_second: f64,
    /// The standard error of the slowest segment's rate, which the sustained rate beat
    /// [`SEGMENT_SIGMAS`] times over.
    pub stderr_per_second: f64,
    /// The value at the window's first snapshot.
    pub first: i64,
    /// The value at its last.
    pub last: i64,
    /// When the blocks it holds at the window's end were allocated, for the in-use types of a
    /// source that records it.
    pub ages: Option<Ages>,
}

/// When a stack's blocks in use at the end of a window were allocated, as values of the sample
/// type: a leak holds blocks from every part of the window, churn only young ones, and a cache
/// that filled before the window only old ones.
#[derive(Clone, Debug, PartialEq)]
pub struct Ages {
    /// Held, and allocated before the window began.
    pub before: i64,
    /// Held, and allocated in each segment of the window, oldest first.
    pub segments: Vec<i64>,
    /// The age of the oldest block held, in seconds.
    pub oldest_seconds: f64,
    /// The age that half the held value is younger than, in seconds.
    pub median_seconds: f64,
}

/// How the value a stack holds is spread over the window, from its [`Ages`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgePattern {
    /// Some from every segment: what is allocated stays. A leak looks like this.
    EveryAge,
    /// All from the last segment: what is allocated is soon freed (churn).
    YoungOnly,
    /// None from the window: it was filled before and holds on (a warmed-up cache).
    OldOnly,
    /// Anything else: a cache that turns over, a pool that drains now and then.
    Mixed,
}

impl AgePattern {
    /// A word for it, as the JSON API gives it.
    pub fn name(self) -> &'static str {
        match self {
            AgePattern::EveryAge => "every_age",
            AgePattern::YoungOnly => "young_only",
            AgePattern::OldOnly => "old_only",
            AgePattern::Mixed => "mixed",
        }
    }
}

impl Ages {
    /// The pattern, `None` when nothing is held.
    pub fn pattern(&self) -> Option<AgePattern> {
        let (last, earlier) = self.segments.split_last()?;
        let in_window: i64 = self.segments.iter().sum();
        if self.before + in_window <= 0 {
            None
        } else if self.segments.iter().all(|v| *v > 0) {
            Some(AgePattern::EveryAge)
        } else if in_window <= 0 {
            Some(AgePattern::OldOnly)
        } else if *last > 0 && self.before <= 0 && earlier.iter().all(|v| *v <= 0) {
            Some(AgePattern::YoungOnly)
        } else {
            Some(AgePattern::Mixed)
        }
    }
}

/// The [`Ages`] of `stack`'s blocks in `now` (the window's last snapshot), over a window whose
/// segments end at `times` (the window's [`marks`]' times). `None` for the `alloc_` types, for
/// fewer than two marks, and for a snapshot without allocation times.
pub fn ages(
    now: &Snapshot,
    stack: StackId,
    times: &[SystemTime],
    sample_type: &str,
) -> Option<Ages> {
    ages_of(now, &[stack], times, sample_type)
}

/// The [`Ages`] of the blocks of several stacks together (see [`ages`]).
fn ages_of(
    now: &Snapshot,
    stacks: &[StackId],
    times: &[SystemTime],
    sample_type: &str,
) -> Option<Ages> {
    if !sample_type.starts_with("inuse") || times.len() < 2 || !now.has_ages() {
        return None;
    }
    let mut blocks: Vec<&heapsight::LiveBlock> = Vec::new();
    for &stack in stacks {
        let from = now.blocks.partition_point(|b| b.stack < stack);
        let to = now.blocks.partition_point(|b| b.stack <= stack);
        blocks.extend(&now.blocks[from..to]);
    }
    // Each stack's blocks are sorted oldest first; several stacks' are merged.
    if stacks.len() > 1 {
        blocks.sort_by_key(|b| b.allocated);
    }
    let worth = |b: &heapsight::LiveBlock| -> i64 {
        if sample_type == "inuse_space" {
            b.space() as i64
        } else {
            ((b.weight_fx + OBJECT_UNIT / 2) / OBJECT_UNIT) as i64
        }
    };
    let mut ages = Ages {
        before: 0,
        segments: vec![0; times.len() - 1],
        oldest_seconds: 0.0,
        median_seconds: 0.0,
    };
    let age = |b: &heapsight::LiveBlock| {
        now.time
            .duration_since(b.allocated)
            .unwrap_or_default()
            .as_secs_f64()
    };
    for b in &blocks {
        // Segment j holds the blocks allocated after mark j and up to mark j + 1.
        match times[1..].iter().position(|t| b.allocated <= *t) {
            _ if b.allocated < times[0] => ages.before += worth(b),
            Some(j) => ages.segments[j] += worth(b),
            None => *ages.segments.last_mut()? += worth(b),
        }
    }
    ages.oldest_seconds = blocks.first().map_or(0.0, |b| age(b));
    let total: i64 = blocks.iter().map(|b| worth(b)).sum();
    let mut younger = total;
    for b in &blocks {
        younger -= worth(b);
        if 2 * younger < total {
            ages.median_seconds = age(b);
            break;
        }
    }
    Some(ages)
}

/// The seconds from the first snapshot of `points` to the last.
pub fn window_seconds(points: &[&Snapshot]) -> f64 {
    match (points.first(), points.last()) {
        (Some(a), Some(b)) => b
            .time
            .duration_since(a.time)
            .unwrap_or_default()
            .as_secs_f64(),
        _ => 0.0,
    }
}

/// Which of a window's `points` snapshots the ranking reads: the first, then each segment's
/// last. A history that keeps snapshots packed unpacks only these.
pub fn marks(points: usize) -> Vec<usize> {
    segment_bounds(points)
        .map(|bounds| {
            std::iter::once(0)
                .chain(bounds.iter().map(|&(_, b)| b))
                .collect()
        })
        .unwrap_or_default()
}

/// The stacks of `points` (oldest first) that keep growing, fastest first, at most `limit`.
pub fn growing(points: &[&Snapshot], sample_type: &str, limit: usize) -> Vec<Growth> {
    let marked: Vec<&Snapshot> = marks(points.len()).into_iter().map(|i| points[i]).collect();
    growing_at_marks(&marked, sample_type, limit)
}

/// [`growing`], given only the snapshots at its [`marks`].
pub fn growing_at_marks(marks: &[&Snapshot], sample_type: &str, limit: usize) -> Vec<Growth> {
    if marks.len() < 2 {
        return Vec::new();
    }
    let t0 = marks[0].time;
    let xs: Vec<f64> = marks
        .iter()
        .map(|p| p.time.duration_since(t0).unwrap_or_default().as_secs_f64())
        .collect();
    let rate = marks.last().map_or(1, |p| p.sample_rate);
    let end = marks.len() - 1;
    let times: Vec<SystemTime> = marks.iter().map(|p| p.time).collect();
    // Per stack: its totals at each mark (zero where it is absent).
    let mut series: HashMap<StackId, Vec<StackTotals>> = HashMap::new();
    for (i, p) in marks.iter().enumerate() {
        for (id, t) in &p.stacks {
            series
                .entry(*id)
                .or_insert_with(|| vec![StackTotals::default(); marks.len()])[i] = *t;
        }
    }
    let mut ranked: Vec<Growth> = series
        .into_iter()
        .filter_map(|(stack, totals)| {
            let ys: Vec<f64> = totals
                .iter()
                .map(|t| value(t, sample_type) as f64)
                .collect();
            let (first, last) = (ys[0], ys[end]);
            // Between marks, every segment is one step.
            let (mut rate_per_second, mut slowest) = slowest_segment(&xs, &ys)?;
            let ages = ages(marks[end], stack, &times, sample_type);
            // Rule 5: growth in the last segment is held by blocks allocated in it.
            if let Some(a) = &ages {
                let held_rate = *a.segments.last()? as f64 / (xs[end] - xs[end - 1]);
                if held_rate < rate_per_second {
                    (rate_per_second, slowest) = (held_rate, end - 1);
                }
            }
            let change_error = |a: usize, b: usize| {
                standard_error_of_change(&totals[a], &totals[b], sample_type, rate)
            };
            let stderr = change_error(slowest, slowest + 1) / (xs[slowest + 1] - xs[slowest]);
            let grew = last - first > NOISE_SIGMAS * change_error(0, end);
            let sustained = rate_per_second > 0.0 && rate_per_second > SEGMENT_SIGMAS * stderr;
            (grew && sustained).then_some(Growth {
                stack,
                rate_per_second,
                stderr_per_second: stderr,
                first: first as i64,
                last: last as i64,
                ages,
            })
        })
        .collect();
    // By the growth the samples vouch for: the sustained rate less its noise. A fast rate
    // measured on few samples ranks below a slower one measured on many.
    let assured = |g: &Growth| g.rate_per_second - SEGMENT_SIGMAS * g.stderr_per_second;
    ranked.sort_by(|a, b| {
        assured(b)
            .total_cmp(&assured(a))
            .then(a.stack.cmp(&b.stack))
    });
    ranked.truncate(limit);
    ranked
}

/// The growing stacks of `marks` (as [`growing_at_marks`] ranks them) summed by the value of
/// label `key` (see [`heapsight::Labels`]), fastest value first, at most `limit`: which
/// tenant's or route's memory keeps growing. Stacks without the key count under
/// [`crate::tree::NO_LABEL`].
///
/// Each stack is ranked on its own before the values are summed: a value's rate is the sum of
/// its growing stacks' (their errors in quadrature), its `first` and `last` theirs, its ages
/// those of all their blocks, and its `stack` the fastest of them. Summing a value's stacks
/// before ranking would let the churn under it hide its leaks: a route's requests hold their
/// buffers while in flight, so its total rises and falls between snapshots, and one falling
/// segment keeps the whole route out of the list.
pub fn growing_by_label(
    marks: &[&Snapshot],
    key: &str,
    sample_type: &str,
    limit: usize,
) -> Vec<(String, Growth)> {
    let Some(now) = marks.last() else {
        return Vec::new();
    };
    let times: Vec<SystemTime> = marks.iter().map(|p| p.time).collect();
    let mut values: Vec<(String, Vec<Growth>)> = Vec::new();
    for g in growing_at_marks(marks, sample_type, usize::MAX) {
        let value = now
            .frames
            .labels(g.stack)
            .into_iter()
            .find(|(k, _)| k == key)
            .map_or_else(|| crate::tree::NO_LABEL.to_string(), |(_, v)| v);
        match values.iter_mut().find(|(v, _)| *v == value) {
            Some((_, stacks)) => stacks.push(g),
            None => values.push((value, vec![g])),
        }
    }
    let mut summed: Vec<(String, Growth)> = values
        .into_iter()
        .map(|(value, stacks)| {
            let ids: Vec<StackId> = stacks.iter().map(|g| g.stack).collect();
            let sum = Growth {
                // Ranked fastest first, so the first is the fastest.
                stack: ids[0],
                rate_per_second: stacks.iter().map(|g| g.rate_per_second).sum(),
                stderr_per_second: stacks
                    .iter()
                    .map(|g| g.stderr_per_second.powi(2))
                    .sum::<f64>()
                    .sqrt(),
                first: stacks.iter().map(|g| g.first).sum(),
                last: stacks.iter().map(|g| g.last).sum(),
                ages: ages_of(now, &ids, &times, sample_type),
            };
            (value, sum)
        })
        .collect();
    let assured = |g: &Growth| g.rate_per_second - SEGMENT_SIGMAS * g.stderr_per_second;
    summed.sort_by(|a, b| assured(&b.1).total_cmp(&assured(&a.1)).then(a.0.cmp(&b.0)));
    summed.truncate(limit);
    summed
}

/// The function names of one stack of `snapshot`, root first, trimmed as profiles trim them.
/// It symbolizes: run it inside the source's [`heapsight::SnapshotSource::unprofiled`].
pub fn stack_names(snapshot: &Snapshot, id: StackId) -> Vec<String> {
    let one = Snapshot {
        stacks: snapshot
            .stacks
            .iter()
            .filter(|(i, _)| *i == id)
            .cloned()
            .collect(),
        // Field by field: `..snapshot.clone()` would copy every stack's totals to drop them.
        time: snapshot.time,
        duration: snapshot.duration,
        sample_rate: snapshot.sample_rate,
        blocks: Vec::new(),
        frames: snapshot.frames.clone(),
    };
    let p = Profile::heap(&one, HeapView::InUse);
    p.samples
        .first()
        .map(|s| {
            p.stack_names(s)
                .into_iter()
                .rev()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use heapsight::{StackFrames, StackStore};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    /// Snapshots 10 s apart at rate 1 (exact values); `series[k]` is stack k's in-use bytes.
    fn exact(series: &[&[u64]]) -> Vec<Snapshot> {
        let totals: Vec<Vec<StackTotals>> = series
            .iter()
            .map(|s| {
                s.iter()
                    .map(|&v| StackTotals {
                        alloc_space: v,
                        alloc_samples: 1,
                        ..Default::default()
                    })
                    .collect()
            })
            .collect();
        snapshots(&totals, 1)
    }

    fn snapshots(series: &[Vec<StackTotals>], rate: usize) -> Vec<Snapshot> {
        let store = Arc::new(StackStore::new());
        let ids: Vec<StackId> = (0..series.len())
            .map(|k| store.intern(&[0x1000 + k as u64]).unwrap())
            .collect();
        let frames: Arc<dyn StackFrames> = store;
        (0..series[0].len())
            .map(|i| Snapshot {
                time: SystemTime::UNIX_EPOCH + Duration::from_secs(10 * i as u64),
                duration: None,
                sample_rate: rate,
                stacks: ids.iter().zip(series).map(|(id, s)| (*id, s[i])).collect(),
                blocks: Vec::new(),
                frames: frames.clone(),
            })
            .collect()
    }

    /// One call site's live blocks, sampled as the hook samples them: each allocation of `size`
    /// bytes is recorded with chance `1 - exp(-size/rate)`, weighted by its inverse.
    struct Site {
        rate: f64,
        rng: u64,
        /// Live blocks: size, and whether sampled.
        live: std::collections::VecDeque<(u64, bool)>,
        totals: StackTotals,
        history: Vec<StackTotals>,
    }

    impl Site {
        fn new(rate: usize, seed: u64) -> Site {
            Site {
                rate: rate as f64,
                rng: seed | 1,
                live: Default::default(),
                totals: StackTotals::default(),
                history: Vec::new(),
            }
        }

        fn uniform(&mut self) -> f64 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            (self.rng >> 11) as f64 / (1u64 << 53) as f64
        }

        fn alloc(&mut self, n: usize, size: u64) {
            let p = -(-(size as f64) / self.rate).exp_m1();
            for _ in 0..n {
                let sampled = self.uniform() < p;
                if sampled {
                    self.totals.alloc_samples += 1;
                    self.totals.alloc_sample_bytes += size;
                    self.totals.alloc_space += (size as f64 / p) as u64;
                }
                self.live.push_back((size, sampled));
            }
        }

        /// Frees the `n` oldest blocks.
        fn free(&mut self, n: usize) {
            for _ in 0..n.min(self.live.len()) {
                let (size, sampled) = self.live.pop_front().unwrap();
                if sampled {
                    let p = -(-(size as f64) / self.rate).exp_m1();
                    self.totals.free_samples += 1;
                    self.totals.free_sample_bytes += size;
                    self.totals.free_space += (size as f64 / p) as u64;
                }
            }
        }

        fn snapshot(&mut self) {
            self.history.push(self.totals);
        }
    }

    const RATE: usize = 512 << 10;
    const KIB: u64 = 1024;

    /// Runs a leak (site 0) beside `other` (site 1) for 31 snapshots, 10 s apart, at the
    /// default rate, and ranks them; once for each of 20 seeds of the sampling. The leak keeps
    /// 40 KiB/s (400 blocks of 1 KiB per interval) and frees nothing.
    fn rank_with(other: impl Fn(&mut Site, usize)) -> Vec<Vec<Growth>> {
        (1..=20).map(|seed| rank_seeded(&other, seed)).collect()
    }

    fn rank_seeded(other: &impl Fn(&mut Site, usize), seed: u64) -> Vec<Growth> {
        let (mut leak, mut site) = (
            Site::new(RATE, seed * 7919),
            Site::new(RATE, seed * 104_729),
        );
        for i in 0..31 {
            if i > 0 {
                leak.alloc(400, KIB);
            }
            other(&mut site, i);
            leak.snapshot();
            site.snapshot();
        }
        let snaps = snapshots(&[leak.history, site.history], RATE);
        let points: Vec<&Snapshot> = snaps.iter().collect();
        growing(&points, "inuse_space", 10)
    }

    /// In every seed's ranking the leak is first, at its rate within sampling noise.
    fn assert_the_leak_ranks_first(what: &str, rankings: &[Vec<Growth>]) {
        for ranked in rankings {
            let order: Vec<u32> = ranked.iter().map(|g| g.stack.as_u32()).collect();
            assert_eq!(order.first(), Some(&0), "{what}: {ranked:?}");
            // The slowest of three segments is biased low; it is never above the true rate by
            // more than its noise, nor far below it.
            let leak = &ranked[0];
            let truth = 40.0 * 1024.0;
            assert!(
                leak.rate_per_second < truth + 3.0 * leak.stderr_per_second
                    && leak.rate_per_second > truth / 4.0,
                "{what}: {leak:?}"
            );
        }
    }

    /// No seed's ranking has more than the leak.
    fn assert_only_the_leak(what: &str, rankings: &[Vec<Growth>]) {
        for ranked in rankings {
            assert_eq!(ranked.len(), 1, "{what}: {ranked:?}");
        }
    }

    #[test]
    fn the_leak_outranks_a_cache_that_filled_during_warm_up() {
        // 20 MiB in the first 60 s (5 times the leak's rate), then flat, replacing 5% a step.
        let ranked = rank_with(|s, i| {
            if (1..=6).contains(&i) {
                s.alloc(3400, KIB);
            } else if i > 6 {
                s.free(1000);
                s.alloc(1000, KIB);
            }
        });
        assert_the_leak_ranks_first("warm-up then flat", &ranked);
        // Replacing 5% a step, the full cache's estimate moves by about the leak's rate: now
        // and then all three segments clear one standard error, and it ranks, below the leak.
        let ranked_too = ranked.iter().filter(|r| r.len() > 1).count();
        assert!(
            ranked_too <= 4,
            "the full cache ranked in {ranked_too} of 20 runs"
        );
    }

    #[test]
    fn the_leak_outranks_noise_and_noise_alone_is_not_growth() {
        // 20 MiB held, half of it replaced every step: the estimate moves by its noise only.
        let noisy = |s: &mut Site, i: usize| {
            if i == 0 {
                s.alloc(20_000, KIB);
            } else {
                s.free(10_000);
                s.alloc(10_000, KIB);
            }
        };
        let ranked = rank_with(noisy);
        assert_the_leak_ranks_first("noisy flat", &ranked);
        assert_only_the_leak("noise is not growth", &ranked);
    }

    #[test]
    fn the_leak_outranks_a_buffer_pool_sawtooth() {
        // A pool that grows by 8 MiB a step for six steps, then is released.
        let ranked = rank_with(|s, i| {
            if i % 7 == 0 {
                s.free(usize::MAX);
            } else {
                s.alloc(8000, KIB);
            }
        });
        assert_the_leak_ranks_first("sawtooth", &ranked);
    }

    /// Labels by stack id, for [`growing_by_label`]'s tests.
    struct Routes(Vec<&'static str>);

    impl StackFrames for Routes {
        fn frames(&self, id: StackId) -> Vec<u64> {
            vec![0x1000 + id.as_u32() as u64]
        }
        fn labels(&self, id: StackId) -> Vec<(String, String)> {
            let route = self.0[id.as_u32() as usize];
            (!route.is_empty())
                .then(|| ("route".to_string(), route.to_string()))
                .into_iter()
                .collect()
        }
    }

    #[test]
    fn grouped_by_label_a_route_whose_requests_churn_still_ranks_by_its_leak() {
        for seed in 1..=20 {
            // Under /item: the leak (40 KiB/s) and the buffers of requests in flight, 2-8 MiB
            // at random at each snapshot (summed with them, the leak ranked in none of these
            // seeds); under /health: the same churn only; and
            // unlabelled, a second leak as fast.
            let mut sites = [seed * 7919, seed * 104_729, seed * 15_485_863, seed * 31]
                .map(|s| Site::new(RATE, s));
            for i in 0..31 {
                if i > 0 {
                    sites[0].alloc(400, KIB);
                    sites[3].alloc(400, KIB);
                }
                for churn in &mut sites[1..3] {
                    churn.free(usize::MAX);
                    let in_flight = 2000 + (churn.uniform() * 6000.0) as usize;
                    churn.alloc(in_flight, KIB);
                }
                for site in &mut sites {
                    site.snapshot();
                }
            }
            let series: Vec<Vec<StackTotals>> = sites.into_iter().map(|s| s.history).collect();
            let routes: Arc<dyn StackFrames> =
                Arc::new(Routes(vec!["/item", "/item", "/health", ""]));
            let snaps: Vec<Snapshot> = snapshots(&series, RATE)
                .into_iter()
                .map(|s| Snapshot {
                    frames: routes.clone(),
                    ..s
                })
                .collect();
            let points: Vec<&Snapshot> = snaps.iter().collect();
            let marked: Vec<&Snapshot> =
                marks(points.len()).into_iter().map(|i| points[i]).collect();
            let ranked = growing_by_label(&marked, "route", "inuse_space", 10);
            let mut values: Vec<&str> = ranked.iter().map(|(v, _)| v.as_str()).collect();
            values.sort();
            assert_eq!(
                values,
                [crate::tree::NO_LABEL, "/item"],
                "seed {seed}: {ranked:?}"
            );
            let item = &ranked.iter().find(|(v, _)| v == "/item").unwrap().1;
            let truth = 40.0 * 1024.0;
            assert!(
                item.rate_per_second < truth + 3.0 * item.stderr_per_second
                    && item.rate_per_second > truth / 4.0,
                "seed {seed}: {item:?}"
            );
        }
    }

    #[test]
    fn the_leak_outranks_a_step() {
        // 100 MiB at once, half way, then held.
        let ranked = rank_with(|s, i| {
            if i == 15 {
                s.alloc(100, 1 << 20);
            }
        });
        assert_the_leak_ranks_first("step", &ranked);
        assert_only_the_leak("a step is not sustained growth", &ranked);
    }

    #[test]
    fn a_steady_slow_leak_alone_ranks() {
        let ranked = rank_with(|_, _| {});
        assert_the_leak_ranks_first("alone", &ranked);
        assert_only_the_leak("alone", &ranked);
    }

    #[test]
    fn the_worked_example_of_the_module_docs() {
        let snaps = exact(&[
            &[0, 10, 20, 30, 40, 50, 60],
            &[0, 300, 600, 600, 600, 600, 600],
            &[0, 0, 0, 900, 900, 900, 900],
            &[0, 400, 0, 400, 0, 400, 0],
        ]);
        let points: Vec<&Snapshot> = snaps.iter().collect();
        let ranked = growing(&points, "inuse_space", 10);
        let order: Vec<u32> = ranked.iter().map(|g| g.stack.as_u32()).collect();
        assert_eq!(order, vec![0], "{ranked:?}");
        assert_eq!(ranked[0].rate_per_second, 1.0);
        assert_eq!(ranked[0].stderr_per_second, 0.0, "rate 1 has no noise");
        assert_eq!((ranked[0].first, ranked[0].last), (0, 60));
        assert_eq!(window_seconds(&points), 60.0);
    }

    #[test]
    fn the_standard_error_is_that_of_a_sum_of_weighted_bernoulli_draws() {
        // 100 samples of 64 KiB at 512 KiB: p = 1 - e^-(1/8), w = 64 KiB / p.
        let t = StackTotals {
            alloc_samples: 100,
            alloc_sample_bytes: 100 * 65536,
            ..Default::default()
        };
        let p = 1.0 - (-0.125f64).exp();
        let want = 65536.0 / p * (100.0 * (1.0 - p)).sqrt();
        let got = standard_error(&t, "inuse_space", RATE);
        assert!((got - want).abs() < 1e-6 * want, "{got} vs {want}");
        assert_eq!(standard_error(&t, "inuse_space", 1), 0.0);
        let objects = standard_error(&t, "inuse_objects", RATE);
        assert!((objects - want / 65536.0).abs() < 1e-9 * want);
    }

    #[test]
    fn one_snapshot_has_no_growth() {
        let snaps = exact(&[&[100]]);
        assert!(growing(&[&snaps[0]], "inuse_space", 10).is_empty());
    }

    /// `n` blocks of 1 KiB on `stack`, allocated evenly from `from` to `to` seconds (rate 1).
    fn blocks(stack: StackId, n: u64, from: u64, to: u64) -> Vec<heapsight::LiveBlock> {
        (0..n)
            .map(|i| heapsight::LiveBlock {
                stack,
                allocated: SystemTime::UNIX_EPOCH
                    + Duration::from_secs(from + (to - from) * i / (n - 1).max(1)),
                size: 1024,
                weight_fx: OBJECT_UNIT,
            })
            .collect()
    }

    #[test]
    fn ages_tell_a_leak_from_churn_and_a_filled_cache() {
        // Window: marks at 100, 200, 300, 400 s. A leak of 30 blocks over 100-400 s, churn of 5
        // blocks at 390-399 s, a cache of 50 blocks filled at 0-50 s.
        let mut snaps = exact(&[&[0, 10, 20, 30], &[5, 5, 5, 5], &[50, 50, 50, 50]]);
        for (i, s) in snaps.iter_mut().enumerate() {
            s.time = SystemTime::UNIX_EPOCH + Duration::from_secs(100 * (i as u64 + 1));
        }
        let ids: Vec<StackId> = snaps[3].stacks.iter().map(|(id, _)| *id).collect();
        let mut all = blocks(ids[0], 30, 101, 399);
        all.extend(blocks(ids[1], 5, 390, 399));
        all.extend(blocks(ids[2], 50, 0, 50));
        all.sort_by_key(|b| (b.stack, b.allocated));
        snaps[3].blocks = all;
        let times: Vec<SystemTime> = snaps.iter().map(|s| s.time).collect();
        let age = |k: usize| ages(&snaps[3], ids[k], &times, "inuse_space").unwrap();
        let leak = age(0);
        assert_eq!(leak.before, 0);
        assert_eq!(leak.segments.iter().sum::<i64>(), 30 * 1024);
        assert!(leak.segments.iter().all(|v| *v >= 9 * 1024), "{leak:?}");
        assert_eq!(leak.pattern(), Some(AgePattern::EveryAge));
        assert!((leak.oldest_seconds - 299.0).abs() < 1.0, "{leak:?}");
        assert!((140.0..160.0).contains(&leak.median_seconds), "{leak:?}");
        assert_eq!(age(1).pattern(), Some(AgePattern::YoungOnly));
        assert_eq!(age(2).pattern(), Some(AgePattern::OldOnly));
        assert_eq!(age(2).before, 50 * 1024);
        assert!(ages(&snaps[3], ids[0], &times, "alloc_space").is_none());
        assert!(
            ages(&snaps[2], ids[0], &times, "inuse_space").is_none(),
            "no blocks"
        );
    }

    #[test]
    fn growth_that_no_young_block_holds_does_not_rank() {
        // Two stacks whose estimates rise alike; only the first holds blocks allocated in the
        // last segment (300-400 s). The second's rise is not made of anything allocated then.
        let mut snaps = exact(&[&[0, 10240, 20480, 30720], &[0, 10240, 20480, 30720]]);
        for (i, s) in snaps.iter_mut().enumerate() {
            s.time = SystemTime::UNIX_EPOCH + Duration::from_secs(100 * (i as u64 + 1));
        }
        let ids: Vec<StackId> = snaps[3].stacks.iter().map(|(id, _)| *id).collect();
        let mut all = blocks(ids[0], 30, 101, 399);
        all.extend(blocks(ids[1], 30, 101, 280));
        all.sort_by_key(|b| (b.stack, b.allocated));
        snaps[3].blocks = all;
        let points: Vec<&Snapshot> = snaps.iter().collect();
        let ranked = growing(&points, "inuse_space", 10);
        let order: Vec<StackId> = ranked.iter().map(|g| g.stack).collect();
        assert_eq!(order, vec![ids[0]], "{ranked:?}");
        assert_eq!(
            ranked[0].ages.as_ref().unwrap().pattern(),
            Some(AgePattern::EveryAge)
        );
    }
}
