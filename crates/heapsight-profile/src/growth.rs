//! Growth ranking: which stacks grew over a window of snapshots, fastest first.
//!
//! Each stack's value (in-use bytes, say) is read at every snapshot of the window, 0 where the
//! stack is absent, and a least-squares line is fitted through those points against time. A
//! stack ranks when it ended higher than it started and its slope is positive; the slope, in
//! units per second, orders the ranking.
//!
//! A worked example, snapshots 10 s apart (t = 0, 10, 20, 30):
//!
//! | stack | values             | first < last | slope            | ranked |
//! |-------|--------------------|--------------|------------------|--------|
//! | A     | 0, 100, 200, 300   | yes          | 10.0 per second  | 1st    |
//! | B     | 50, 400, 60, 80    | yes          | -0.3 per second  | no     |
//! | C     | 500, 400, 300, 200 | no           | -                | no     |
//!
//! B ends above where it started, but a spike in the middle is not a trend: the fit says it
//! fell. With mean time 15 s, A's slope is Σ(t-15)(v-150) / Σ(t-15)² = 5000 / 500 = 10.
//!
//! ```
//! use heapsight_profile::growth;
//! let ts = [0.0, 10.0, 20.0, 30.0];
//! assert_eq!(growth::slope(&ts, &[0.0, 100.0, 200.0, 300.0]), Some(10.0));
//! assert!(growth::slope(&ts, &[50.0, 400.0, 60.0, 80.0]).unwrap() < 0.0);
//! ```

use crate::profile::{HeapView, Profile};
use heapsight::{Snapshot, StackId, StackTotals};
use std::collections::HashMap;
use std::time::UNIX_EPOCH;

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

/// One growing stack.
#[derive(Clone, Debug, PartialEq)]
pub struct Growth {
    pub stack: StackId,
    /// The fitted slope, in units of the sample type per second.
    pub rate_per_second: f64,
    /// The value at the window's first snapshot.
    pub first: i64,
    /// The value at its last.
    pub last: i64,
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

/// The stacks of `points` (oldest first) that grew, fastest first, at most `limit` of them.
pub fn growing(points: &[&Snapshot], sample_type: &str, limit: usize) -> Vec<Growth> {
    let t0 = points.first().map(|p| p.time).unwrap_or(UNIX_EPOCH);
    let xs: Vec<f64> = points
        .iter()
        .map(|p| p.time.duration_since(t0).unwrap_or_default().as_secs_f64())
        .collect();
    let mut series: HashMap<StackId, Vec<f64>> = HashMap::new();
    for (i, p) in points.iter().enumerate() {
        for (id, t) in &p.stacks {
            series.entry(*id).or_insert_with(|| vec![0.0; points.len()])[i] =
                value(t, sample_type) as f64;
        }
    }
    let mut ranked: Vec<Growth> = series
        .into_iter()
        .filter_map(|(stack, ys)| {
            let (first, last) = (ys[0], *ys.last()?);
            if last <= first {
                return None;
            }
            let rate_per_second = slope(&xs, &ys).filter(|s| *s > 0.0)?;
            Some(Growth {
                stack,
                rate_per_second,
                first: first as i64,
                last: last as i64,
            })
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.rate_per_second
            .total_cmp(&a.rate_per_second)
            .then(a.stack.cmp(&b.stack))
    });
    ranked.truncate(limit);
    ranked
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
        ..snapshot.clone()
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

    /// Snapshots 10 s apart; `series[k]` is stack k's in-use bytes at each.
    fn snapshots(series: &[&[u64]]) -> Vec<Snapshot> {
        let store = Arc::new(StackStore::new());
        let ids: Vec<StackId> = (0..series.len())
            .map(|k| store.intern(&[0x1000 + k as u64]).unwrap())
            .collect();
        let frames: Arc<dyn StackFrames> = store;
        (0..series[0].len())
            .map(|i| Snapshot {
                time: SystemTime::UNIX_EPOCH + Duration::from_secs(10 * i as u64),
                duration: None,
                sample_rate: 1,
                stacks: ids
                    .iter()
                    .zip(series)
                    .map(|(id, s)| {
                        let t = StackTotals {
                            alloc_space: s[i],
                            alloc_samples: 1,
                            ..Default::default()
                        };
                        (*id, t)
                    })
                    .collect(),
                frames: frames.clone(),
            })
            .collect()
    }

    #[test]
    fn a_steady_rise_ranks_first_and_a_spike_or_a_fall_does_not_rank() {
        let snaps = snapshots(&[
            &[50, 400, 60, 80],
            &[0, 100, 200, 300],
            &[500, 400, 300, 200],
            &[0, 10, 20, 30],
        ]);
        let points: Vec<&Snapshot> = snaps.iter().collect();
        let ranked = growing(&points, "inuse_space", 10);
        let order: Vec<u32> = ranked.iter().map(|g| g.stack.as_u32()).collect();
        assert_eq!(order, vec![1, 3], "steady growth only, fastest first");
        assert_eq!(ranked[0].rate_per_second, 10.0);
        assert_eq!((ranked[0].first, ranked[0].last), (0, 300));
        assert_eq!(window_seconds(&points), 30.0);
        assert_eq!(
            growing(&points, "inuse_space", 1).len(),
            1,
            "the limit holds"
        );
    }

    #[test]
    fn one_snapshot_has_no_growth() {
        let snaps = snapshots(&[&[100]]);
        assert!(growing(&[&snaps[0]], "inuse_space", 10).is_empty());
    }
}
