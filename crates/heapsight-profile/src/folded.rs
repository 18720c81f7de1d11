//! Folded stacks: one line per stack, root first, frames separated by `;`, then the value.
//!
//! ```text
//! main;myapp::serve;myapp::cache::insert 4194304
//! ```
//!
//! The format flame-graph tools read (`inferno`, Brendan Gregg's `flamegraph.pl`, speedscope).
//! Inlined frames are frames of their own; a `;` inside a name becomes `:`.

use crate::profile::Profile;
use std::collections::HashMap;
use std::io::{self, Write};

impl Profile {
    /// Writes the samples of `sample_type` as folded stacks; samples with value 0 are left out.
    /// Unknown sample types write nothing.
    ///
    /// ```
    /// use heapsight_profile::{heap_profile, HeapView};
    ///
    /// #[global_allocator]
    /// static GLOBAL: heapsight::Sampler<std::alloc::System> =
    ///     heapsight::Sampler::new(std::alloc::System);
    ///
    /// #[inline(never)]
    /// fn read_config() -> String {
    ///     "x".repeat(1 << 20)
    /// }
    ///
    /// heapsight::set_sample_rate(1);
    /// let config = read_config();
    /// let mut out = Vec::new();
    /// heap_profile(HeapView::InUse).write_folded("inuse_space", &mut out).unwrap();
    /// let text = String::from_utf8(out).unwrap();
    /// // main;...;read_config;... 1048576: root first, then the bytes.
    /// let line = text.lines().find(|l| l.contains("read_config")).expect("its stack");
    /// let (stack, bytes) = line.rsplit_once(' ').unwrap();
    /// assert!(stack.contains("main;") && bytes.parse::<i64>().unwrap() >= 1 << 20, "{line}");
    /// # drop(config);
    /// ```
    pub fn write_folded(&self, sample_type: &str, w: &mut impl Write) -> io::Result<()> {
        let Some(vi) = self.sample_type_index(sample_type) else {
            return Ok(());
        };
        let locs: HashMap<u64, &crate::profile::Location> =
            self.locations.iter().map(|l| (l.id, l)).collect();
        let funcs: HashMap<u64, &str> = self
            .functions
            .iter()
            .map(|f| (f.id, f.name.as_str()))
            .collect();
        let mut out = io::BufWriter::new(w);
        for s in &self.samples {
            let v = s.values[vi];
            if v == 0 {
                continue;
            }
            let names: Vec<String> = s
                .location_ids
                .iter()
                .rev()
                .filter_map(|id| locs.get(id))
                .flat_map(|l| l.lines.iter().rev())
                .map(|line| {
                    funcs
                        .get(&line.function_id)
                        .copied()
                        .unwrap_or("?")
                        .replace(';', ":")
                })
                .collect();
            if names.is_empty() {
                writeln!(out, "[unknown] {v}")?;
            } else {
                writeln!(out, "{} {v}", names.join(";"))?;
            }
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use crate::profile::{heap_sample_types, Function, Line, Location, Profile, Sample};

    #[test]
    fn stacks_are_root_first_with_inlined_frames_and_values() {
        let p = Profile {
            sample_types: heap_sample_types(),
            functions: vec![
                Function {
                    id: 1,
                    name: "main".into(),
                    ..Default::default()
                },
                Function {
                    id: 2,
                    name: "app::outer".into(),
                    ..Default::default()
                },
                Function {
                    id: 3,
                    name: "app::inlined;odd".into(),
                    ..Default::default()
                },
            ],
            locations: vec![
                Location {
                    id: 1,
                    mapping_id: 1,
                    address: 0x10,
                    lines: vec![Line {
                        function_id: 1,
                        line: 3,
                    }],
                },
                // Leaf first within a location: `inlined` was inlined into `outer`.
                Location {
                    id: 2,
                    mapping_id: 1,
                    address: 0x20,
                    lines: vec![
                        Line {
                            function_id: 3,
                            line: 9,
                        },
                        Line {
                            function_id: 2,
                            line: 4,
                        },
                    ],
                },
            ],
            samples: vec![
                Sample {
                    location_ids: vec![2, 1],
                    values: vec![1, 2, 3, 4096],
                    labels: vec![],
                    num_labels: vec![],
                },
                Sample {
                    location_ids: vec![1],
                    values: vec![1, 2, 3, 0],
                    labels: vec![],
                    num_labels: vec![],
                },
            ],
            ..Default::default()
        };
        let mut out = Vec::new();
        p.write_folded("inuse_space", &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "main;app::outer;app::inlined:odd 4096\n"
        );
        let mut out = Vec::new();
        p.write_folded("alloc_objects", &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 2);
    }
}
