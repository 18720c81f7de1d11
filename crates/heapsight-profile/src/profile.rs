//! The profile model: samples over symbolized stacks, shaped like pprof's `profile.proto` but
//! with strings in place (the string table is an encoding detail, see [`crate::pprof`]).
//!
//! A heap profile is built from a [`Snapshot`]: each stack's addresses are symbolized, the
//! profiler's own frames and the allocator plumbing are trimmed from the leaf end (as Go trims
//! `runtime.*`), and stacks that become equal are merged.

use crate::plumbing::{plumbing_prefix, PLUMBING_FRAMES};
use crate::symbolize::{self, Frame, Symbolizer};
use heapsight::Snapshot;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

/// A sample type or unit pair, e.g. `inuse_space`/`bytes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueType {
    pub r#type: String,
    pub unit: String,
}

impl ValueType {
    pub fn new(r#type: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: r#type.into(),
            unit: unit.into(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    /// 1..n, in order.
    pub id: u64,
    pub memory_start: u64,
    pub memory_limit: u64,
    pub file_offset: u64,
    pub filename: String,
    pub build_id: String,
    pub has_functions: bool,
    pub has_filenames: bool,
    pub has_line_numbers: bool,
    pub has_inline_frames: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Line {
    pub function_id: u64,
    pub line: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    /// 1..n, in order.
    pub id: u64,
    /// Never 0: every location belongs to a mapping.
    pub mapping_id: u64,
    /// Unique among locations.
    pub address: u64,
    /// Inlined frames, leaf first; the last is the function the address is in.
    pub lines: Vec<Line>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Function {
    /// 1..n, in order.
    pub id: u64,
    pub name: String,
    pub system_name: String,
    pub filename: String,
    pub start_line: i64,
}

/// A numeric label such as `bytes = 4096`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumLabel {
    pub key: String,
    pub value: i64,
    pub unit: String,
}

/// A string label such as `route = /checkout`: what the allocation's [`heapsight::Labels`] were.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Leaf first.
    pub location_ids: Vec<u64>,
    /// One per sample type.
    pub values: Vec<i64>,
    /// Sorted by key, keys unique.
    pub labels: Vec<Label>,
    pub num_labels: Vec<NumLabel>,
}

impl Sample {
    /// The value of this sample's label `key`, if it has one.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.key == key)
            .map(|l| l.value.as_str())
    }
}

/// A profile: what pprof calls a `Profile`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    pub sample_types: Vec<ValueType>,
    /// The type a viewer shows first; `None` means the last one (for heap: `inuse_space`).
    pub default_sample_type: Option<String>,
    pub period_type: Option<ValueType>,
    pub period: i64,
    pub time_nanos: i64,
    /// Set for profiles over an interval (deltas).
    pub duration_nanos: Option<i64>,
    /// Frames whose function fully matches this are dropped with their callees by viewers.
    pub drop_frames: Option<String>,
    pub comments: Vec<String>,
    pub mappings: Vec<Mapping>,
    pub locations: Vec<Location>,
    pub functions: Vec<Function>,
    pub samples: Vec<Sample>,
}

/// Which default view a heap profile opens with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapView {
    /// `/debug/pprof/heap`: memory in use.
    InUse,
    /// `/debug/pprof/allocs`: everything allocated since start.
    Allocs,
}

/// The four sample types of a heap profile, in the order Go writes them.
pub fn heap_sample_types() -> Vec<ValueType> {
    vec![
        ValueType::new("alloc_objects", "count"),
        ValueType::new("alloc_space", "bytes"),
        ValueType::new("inuse_objects", "count"),
        ValueType::new("inuse_space", "bytes"),
    ]
}

impl Profile {
    /// A heap profile of `snapshot`, symbolized in-process.
    ///
    /// Building it allocates (symbols, the profile itself) and does not pause sampling: callers
    /// run it inside their source's [`heapsight::SnapshotSource::unprofiled`], as
    /// [`crate::heap_profile`] does, so that the profiler's own memory stays out of the heap.
    ///
    /// ```
    /// use heapsight::{SamplerSource, SnapshotSource};
    /// use heapsight_profile::{HeapView, Profile};
    ///
    /// #[global_allocator]
    /// static GLOBAL: heapsight::Sampler<std::alloc::System> =
    ///     heapsight::Sampler::new(std::alloc::System);
    ///
    /// #[inline(never)]
    /// fn fill_cache() -> Vec<String> {
    ///     (0..1000).map(|i| format!("entry {i:>60}")).collect()
    /// }
    ///
    /// heapsight::set_sample_rate(1);
    /// let cache = fill_cache();
    /// let snapshot = heapsight::snapshot();
    /// let mut profile = Profile::default();
    /// SamplerSource.unprofiled(&mut || profile = Profile::heap(&snapshot, HeapView::InUse));
    /// let cached = profile
    ///     .samples
    ///     .iter()
    ///     .filter(|s| profile.stack_names(s).iter().any(|f| f.ends_with("fill_cache")))
    ///     .map(|s| s.values[3])
    ///     .sum::<i64>();
    /// assert!(cached >= 1000 * 64, "{cached} bytes in use under fill_cache");
    /// # drop(cache);
    /// ```
    pub fn heap(snapshot: &Snapshot, view: HeapView) -> Profile {
        symbolize::with_symbolizer(|s| Profile::heap_with(snapshot, view, s))
    }

    /// As [`Profile::heap`], with a given symbolizer.
    pub fn heap_with(snapshot: &Snapshot, view: HeapView, symbolizer: &mut Symbolizer) -> Profile {
        Profile::heap_built(snapshot, view, Builder::new(symbolizer, true))
    }

    /// As [`Profile::heap`], but unnamed: locations carry addresses only, and mappings their
    /// ranges, files and build IDs with `has_functions: false`, so that the reader names the
    /// frames: `go tool pprof URL` through the server's `/debug/pprof/symbol`, or offline
    /// from the binary (`go tool pprof BINARY FILE`). Nothing is trimmed (the profile's
    /// `drop_frames` trims the allocator's frames once they are named).
    ///
    /// ```
    /// use heapsight_profile::{HeapView, Profile};
    /// #[global_allocator]
    /// static GLOBAL: heapsight::Sampler<std::alloc::System> =
    ///     heapsight::Sampler::new(std::alloc::System);
    ///
    /// heapsight::set_sample_rate(1);
    /// let kept = vec![0u8; 1 << 20];
    /// let p = Profile::heap_unnamed(&heapsight::snapshot(), HeapView::InUse);
    /// assert!(p.functions.is_empty() && !p.locations.is_empty());
    /// assert!(p.mappings.iter().all(|m| !m.has_functions));
    /// assert!(p.total("inuse_space") >= 1 << 20);
    /// # drop(kept);
    /// ```
    pub fn heap_unnamed(snapshot: &Snapshot, view: HeapView) -> Profile {
        symbolize::with_symbolizer(|s| Profile::heap_built(snapshot, view, Builder::new(s, false)))
    }

    fn heap_built(snapshot: &Snapshot, view: HeapView, mut b: Builder<'_>) -> Profile {
        let mut merged: HashMap<(Vec<u64>, Vec<Label>), usize> = HashMap::new();
        let mut samples: Vec<Sample> = Vec::new();
        let mut sample_bytes: Vec<(i64, i64)> = Vec::new();
        let (mut shallow, mut all) = (0u64, 0u64);
        for (id, t) in &snapshot.stacks {
            let frames = snapshot.frames.frames(*id);
            all += t.alloc_samples;
            if frames.len() <= SHALLOW_FRAMES {
                shallow += t.alloc_samples;
            }
            let locations = b.stack(&frames, true);
            let values = vec![
                t.alloc_objects(),
                t.alloc_space(),
                t.inuse_objects(),
                t.inuse_space(),
            ];
            if values.iter().all(|&v| v == 0) {
                continue;
            }
            let labels = snapshot
                .frames
                .labels(*id)
                .into_iter()
                .map(|(key, value)| Label { key, value })
                .collect();
            let i = add_sample(&mut merged, &mut samples, locations, labels, values);
            if i == sample_bytes.len() {
                sample_bytes.push((0, 0));
            }
            sample_bytes[i].0 += t.alloc_samples as i64;
            sample_bytes[i].1 += t.alloc_sample_bytes as i64;
        }
        for (s, (count, bytes)) in samples.iter_mut().zip(sample_bytes) {
            // The typical object size at this stack, as Go labels heap samples.
            if count > 0 {
                s.num_labels.push(NumLabel {
                    key: "bytes".into(),
                    value: bytes / count,
                    unit: String::new(),
                });
            }
        }
        let (mappings, locations, functions) = b.finish();
        Profile {
            sample_types: heap_sample_types(),
            default_sample_type: (view == HeapView::Allocs).then(|| "alloc_space".to_string()),
            period_type: Some(ValueType::new("space", "bytes")),
            period: snapshot.sample_rate as i64,
            time_nanos: snapshot
                .time
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0),
            duration_nanos: snapshot.duration.map(|d| d.as_nanos() as i64),
            drop_frames: Some(PLUMBING_FRAMES.to_string()),
            comments: short_stacks_comment(shallow, all),
            mappings,
            locations,
            functions,
            samples,
        }
    }

    /// Warnings about how the profile was recorded, from its comments: what `go tool pprof`
    /// prints with `-comments`, and the index page and the UI show.
    pub fn warnings(&self) -> impl Iterator<Item = &str> {
        self.comments.iter().filter_map(|c| c.strip_prefix(WARNING))
    }

    /// A profile of any samples over stacks of code addresses (leaf first), symbolized
    /// in-process. Nothing is trimmed; stacks that are equal are merged. CPU profiles are built
    /// this way.
    ///
    /// ```
    /// use heapsight_profile::{Profile, ValueType};
    /// let here = heapsight::sample_weight as fn(u64, u64) -> f64 as usize as u64;
    /// let p = Profile::from_stacks(
    ///     vec![ValueType::new("samples", "count")],
    ///     ValueType::new("cpu", "nanoseconds"),
    ///     10_000_000,
    ///     std::time::SystemTime::now(),
    ///     None,
    ///     vec![(vec![here + 1], vec![3]), (vec![here + 1], vec![2])],
    /// );
    /// assert_eq!(p.samples.len(), 1);
    /// assert_eq!(p.total("samples"), 5);
    /// ```
    pub fn from_stacks(
        sample_types: Vec<ValueType>,
        period_type: ValueType,
        period: i64,
        time: std::time::SystemTime,
        duration: Option<std::time::Duration>,
        stacks: impl IntoIterator<Item = (Vec<u64>, Vec<i64>)>,
    ) -> Profile {
        symbolize::with_symbolizer(|s| {
            let mut b = Builder::new(s, true);
            let mut merged: HashMap<(Vec<u64>, Vec<Label>), usize> = HashMap::new();
            let mut samples: Vec<Sample> = Vec::new();
            for (addresses, values) in stacks {
                let locations = b.stack(&addresses, false);
                add_sample(&mut merged, &mut samples, locations, Vec::new(), values);
            }
            let (mappings, locations, functions) = b.finish();
            Profile {
                sample_types,
                default_sample_type: None,
                period_type: Some(period_type),
                period,
                time_nanos: time
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as i64)
                    .unwrap_or(0),
                duration_nanos: duration.map(|d| d.as_nanos() as i64),
                drop_frames: None,
                comments: Vec::new(),
                mappings,
                locations,
                functions,
                samples,
            }
        })
    }

    /// The index of a sample type by name, e.g. `"inuse_space"`.
    pub fn sample_type_index(&self, r#type: &str) -> Option<usize> {
        self.sample_types.iter().position(|t| t.r#type == r#type)
    }

    /// The sum of one sample type over all samples.
    pub fn total(&self, r#type: &str) -> i64 {
        let Some(i) = self.sample_type_index(r#type) else {
            return 0;
        };
        self.samples.iter().map(|s| s.values[i]).sum()
    }

    /// The function names of a sample's stack, leaf first, inlined frames included.
    pub fn stack_names(&self, sample: &Sample) -> Vec<&str> {
        let locs: HashMap<u64, &Location> = self.locations.iter().map(|l| (l.id, l)).collect();
        let funcs: HashMap<u64, &Function> = self.functions.iter().map(|f| (f.id, f)).collect();
        sample
            .location_ids
            .iter()
            .filter_map(|id| locs.get(id))
            .flat_map(|l| l.lines.iter())
            .filter_map(|line| funcs.get(&line.function_id).map(|f| f.name.as_str()))
            .collect()
    }
}

/// Adds `values` to the sample with these locations, creating it if it is new (stacks that are
/// equal after trimming become one sample). Returns the sample's index.
/// Adds a sample, or its values to the sample of the same stack and labels.
fn add_sample(
    merged: &mut HashMap<(Vec<u64>, Vec<Label>), usize>,
    samples: &mut Vec<Sample>,
    locations: Vec<u64>,
    labels: Vec<Label>,
    values: Vec<i64>,
) -> usize {
    let key = (locations, labels);
    if let Some(&i) = merged.get(&key) {
        for (acc, v) in samples[i].values.iter_mut().zip(&values) {
            *acc += v;
        }
        return i;
    }
    merged.insert(key.clone(), samples.len());
    let (location_ids, labels) = key;
    samples.push(Sample {
        location_ids,
        values,
        labels,
        num_labels: Vec::new(),
    });
    samples.len() - 1
}

/// Assigns ids to mappings, locations and functions as stacks are added.
struct Builder<'s> {
    symbolizer: &'s mut Symbolizer,
    /// Whether frames are named here (else the profile carries addresses only).
    names: bool,
    /// Symbolizer mapping index -> profile mapping id.
    mapping_ids: HashMap<usize, u64>,
    mapping_order: Vec<usize>,
    /// Per mapping: every location had a function / file / line.
    mapping_quality: HashMap<u64, (bool, bool, bool)>,
    locations: Vec<Location>,
    location_ids: HashMap<u64, u64>,
    functions: Vec<Function>,
    function_ids: HashMap<(String, String, String), u64>,
}

impl<'s> Builder<'s> {
    fn new(symbolizer: &'s mut Symbolizer, names: bool) -> Self {
        // The main binary (the symbolizer's first object) is mapping 1 even when no sample
        // touches it: pprof takes the first mapping to be the program.
        symbolizer.refresh();
        let has_main = symbolizer.mappings().next().is_some();
        Builder {
            symbolizer,
            names,
            mapping_ids: if has_main {
                HashMap::from([(0, 1)])
            } else {
                HashMap::new()
            },
            mapping_order: if has_main { vec![0] } else { Vec::new() },
            mapping_quality: HashMap::new(),
            locations: Vec::new(),
            location_ids: HashMap::new(),
            functions: Vec::new(),
            function_ids: HashMap::new(),
        }
    }

    /// Location ids for a stack of return addresses (leaf first), with the plumbing trimmed
    /// from the leaf end if `trim` (see [`plumbing_prefix`]).
    fn stack(&mut self, return_addresses: &[u64], trim: bool) -> Vec<u64> {
        let mut symbolized = Vec::with_capacity(return_addresses.len());
        for &ret in return_addresses {
            // The call instruction is just before the return address.
            let pc = ret.wrapping_sub(1);
            let frames = if self.names {
                self.symbolizer.frames(pc)
            } else {
                Arc::from([])
            };
            if let Some(mapping) = self.symbolizer.mapping_index(pc) {
                symbolized.push((pc, mapping, frames));
            }
        }
        let (cut, lines) = if trim {
            plumbing_prefix(symbolized.iter().map(|(_, _, f)| &f[..]))
        } else {
            (0, 0)
        };
        let mut out = Vec::with_capacity(symbolized.len() - cut);
        for (i, (pc, mapping, frames)) in symbolized.iter().enumerate().skip(cut) {
            let skip = if i == cut { lines } else { 0 };
            out.push(self.location(*pc, *mapping, &frames[skip..]));
        }
        out
    }

    fn location(&mut self, pc: u64, mapping: usize, frames: &[Frame]) -> u64 {
        if let Some(&id) = self.location_ids.get(&pc) {
            return id;
        }
        let next_mapping = self.mapping_ids.len() as u64 + 1;
        let mapping_id = *self.mapping_ids.entry(mapping).or_insert_with(|| {
            self.mapping_order.push(mapping);
            next_mapping
        });
        let q = self
            .mapping_quality
            .entry(mapping_id)
            .or_insert((true, true, true));
        q.0 &= !frames.is_empty();
        q.1 &= !frames.is_empty() && frames.iter().all(|f| f.file.is_some());
        q.2 &= !frames.is_empty() && frames.iter().all(|f| f.line > 0);
        let lines = frames
            .iter()
            .map(|f| Line {
                function_id: self.function(f),
                line: f.line as i64,
            })
            .collect();
        let id = self.locations.len() as u64 + 1;
        self.locations.push(Location {
            id,
            mapping_id,
            address: pc,
            lines,
        });
        self.location_ids.insert(pc, id);
        id
    }

    fn function(&mut self, f: &Frame) -> u64 {
        let key = (
            f.function.to_string(),
            f.system_name.to_string(),
            f.file.as_deref().unwrap_or("").to_string(),
        );
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        self.functions.push(Function {
            id,
            name: key.0.clone(),
            system_name: key.1.clone(),
            filename: key.2.clone(),
            start_line: 0,
        });
        self.function_ids.insert(key, id);
        id
    }

    fn finish(self) -> (Vec<Mapping>, Vec<Location>, Vec<Function>) {
        let all: Vec<symbolize::ObjectMapping> = self.symbolizer.mappings().cloned().collect();
        let mappings: Vec<Mapping> = self
            .mapping_order
            .iter()
            .map(|&i| {
                let m = &all[i];
                let id = self.mapping_ids[&i];
                let (funcs, files, lines) = self
                    .mapping_quality
                    .get(&id)
                    .copied()
                    .unwrap_or((true, true, true));
                Mapping {
                    id,
                    memory_start: m.start,
                    memory_limit: m.limit,
                    file_offset: m.file_offset,
                    filename: m.path.clone(),
                    build_id: m.build_id.clone(),
                    has_functions: funcs,
                    has_filenames: files && m.has_debug_info,
                    has_line_numbers: lines && m.has_debug_info,
                    has_inline_frames: m.has_debug_info,
                }
            })
            .collect();
        (mappings, self.locations, self.functions)
    }
}

/// Stacks of this many return addresses or fewer are short: see [`heapsight::SHORT_STACKS`].
const SHALLOW_FRAMES: usize = 3;

/// How the profile's comments mark a warning.
const WARNING: &str = "heapsight warning: ";

/// The comment a profile carries when most of its samples have short stacks (at least 16
/// samples, more than half of them with three frames or fewer), as
/// [`heapsight::Stats::short_stacks`] judges the sampler's.
fn short_stacks_comment(shallow: u64, samples: u64) -> Vec<String> {
    if samples >= 16 && shallow * 2 > samples {
        vec![format!("{WARNING}{}", heapsight::SHORT_STACKS)]
    } else {
        Vec::new()
    }
}
