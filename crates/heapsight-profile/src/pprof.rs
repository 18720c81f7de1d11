//! The pprof wire format: [`Profile`] to and from gzip-compressed `profile.proto`.
//!
//! The message types mirror google/pprof's `proto/profile.proto` field for field and are
//! encoded by `prost`. Encoding builds the string table (entry 0 is always ""); decoding checks
//! what viewers and ingesters rely on (ids in range, a valid string table) and rejects anything
//! else with an error instead of guessing.

use crate::profile::{
    Function, Label, Line, Location, Mapping, NumLabel, Profile, Sample, ValueType,
};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use prost::Message;
use std::collections::HashMap;
use std::io::{self, Read, Write};

/// `profile.proto`'s messages.
pub mod proto {
    #![allow(missing_docs)]

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
        #[prost(int64, tag = "3")]
        pub column: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Strings::default();
        s.id("");
        s
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

impl Profile {
    /// The profile as `profile.proto` messages.
    pub fn to_proto(&self) -> proto::Profile {
        let mut s = Strings::new();
        let vt = |v: &ValueType, s: &mut Strings| proto::ValueType {
            r#type: s.id(&v.r#type),
            unit: s.id(&v.unit),
        };
        let sample_type = self.sample_types.iter().map(|v| vt(v, &mut s)).collect();
        let period_type = self.period_type.as_ref().map(|v| vt(v, &mut s));
        let sample = self
            .samples
            .iter()
            .map(|x| proto::Sample {
                location_id: x.location_ids.clone(),
                value: x.values.clone(),
                label: {
                    let mut label: Vec<proto::Label> = x
                        .labels
                        .iter()
                        .map(|l| proto::Label {
                            key: s.id(&l.key),
                            str: s.id(&l.value),
                            num: 0,
                            num_unit: 0,
                        })
                        .collect();
                    label.extend(x.num_labels.iter().map(|l| proto::Label {
                        key: s.id(&l.key),
                        str: 0,
                        num: l.value,
                        num_unit: s.id(&l.unit),
                    }));
                    label
                },
            })
            .collect();
        let mapping = self
            .mappings
            .iter()
            .map(|m| proto::Mapping {
                id: m.id,
                memory_start: m.memory_start,
                memory_limit: m.memory_limit,
                file_offset: m.file_offset,
                filename: s.id(&m.filename),
                build_id: s.id(&m.build_id),
                has_functions: m.has_functions,
                has_filenames: m.has_filenames,
                has_line_numbers: m.has_line_numbers,
                has_inline_frames: m.has_inline_frames,
            })
            .collect();
        let location = self
            .locations
            .iter()
            .map(|l| proto::Location {
                id: l.id,
                mapping_id: l.mapping_id,
                address: l.address,
                line: l
                    .lines
                    .iter()
                    .map(|x| proto::Line {
                        function_id: x.function_id,
                        line: x.line,
                        column: 0,
                    })
                    .collect(),
                is_folded: false,
            })
            .collect();
        let function = self
            .functions
            .iter()
            .map(|f| proto::Function {
                id: f.id,
                name: s.id(&f.name),
                system_name: s.id(&f.system_name),
                filename: s.id(&f.filename),
                start_line: f.start_line,
            })
            .collect();
        let drop_frames = self.drop_frames.as_deref().map_or(0, |d| s.id(d));
        let comment = self.comments.iter().map(|c| s.id(c)).collect();
        let default_sample_type = self.default_sample_type.as_deref().map_or(0, |d| s.id(d));
        proto::Profile {
            sample_type,
            sample,
            mapping,
            location,
            function,
            string_table: s.table,
            drop_frames,
            keep_frames: 0,
            time_nanos: self.time_nanos,
            duration_nanos: self.duration_nanos.unwrap_or(0),
            period_type,
            period: self.period,
            comment,
            default_sample_type,
        }
    }

    /// Writes the profile as gzip-compressed `profile.proto`, as `go tool pprof` reads it.
    pub fn write_pprof(&self, w: &mut impl Write) -> io::Result<()> {
        let bytes = self.to_proto().encode_to_vec();
        let mut gz = GzEncoder::new(w, flate2::Compression::default());
        gz.write_all(&bytes)?;
        gz.finish()?;
        Ok(())
    }

    /// The gzip-compressed `profile.proto` bytes.
    pub fn to_pprof_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_pprof(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }

    /// Reads a `profile.proto`, gzip-compressed or not (Go's own profiles included).
    ///
    /// ```
    /// use heapsight_profile::{heap_profile, HeapView, Profile};
    ///
    /// #[global_allocator]
    /// static GLOBAL: heapsight::Sampler<std::alloc::System> =
    ///     heapsight::Sampler::new(std::alloc::System);
    ///
    /// heapsight::set_sample_rate(1);
    /// let kept = vec![0u8; 1 << 20];
    /// let p = heap_profile(HeapView::InUse);
    /// assert!(p.total("inuse_space") >= 1 << 20);
    /// let back = Profile::from_pprof_bytes(&p.to_pprof_bytes()).unwrap();
    /// assert_eq!(back, p);
    /// assert!(Profile::from_pprof_bytes(b"not a profile").is_err());
    /// # drop(kept);
    /// ```
    pub fn from_pprof_bytes(bytes: &[u8]) -> Result<Profile, DecodeError> {
        Profile::from_pprof_bytes_within(bytes, MAX_DECODED_BYTES)
    }

    /// [`Profile::from_pprof_bytes`], refusing a gzip-compressed profile that decompresses to
    /// more than `max_decompressed` bytes: what a server reading untrusted uploads calls, so
    /// that a small file cannot unpack into more memory than it allows.
    ///
    /// ```
    /// # use heapsight_profile::Profile;
    /// # #[global_allocator]
    /// # static GLOBAL: heapsight::Sampler<std::alloc::System> =
    /// #     heapsight::Sampler::new(std::alloc::System);
    /// let bomb = {
    ///     use std::io::Write;
    ///     let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    ///     e.write_all(&vec![0u8; 16 << 20]).unwrap();
    ///     e.finish().unwrap()
    /// };
    /// assert!(bomb.len() < 64 << 10);
    /// let e = Profile::from_pprof_bytes_within(&bomb, 1 << 20).unwrap_err();
    /// assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");
    /// ```
    pub fn from_pprof_bytes_within(
        bytes: &[u8],
        max_decompressed: u64,
    ) -> Result<Profile, DecodeError> {
        let raw;
        let data = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            // A decompression bomb is cut off rather than allowed to exhaust memory.
            GzDecoder::new(bytes)
                .take(max_decompressed + 1)
                .read_to_end(&mut out)
                .map_err(|e| DecodeError(format!("gzip: {e}")))?;
            if out.len() as u64 > max_decompressed {
                return Err(DecodeError(format!(
                    "profile larger than {max_decompressed} bytes uncompressed"
                )));
            }
            raw = out;
            &raw[..]
        } else {
            bytes
        };
        let p = proto::Profile::decode(data).map_err(|e| DecodeError(format!("protobuf: {e}")))?;
        from_proto(&p)
    }
}

/// What [`Profile::from_pprof_bytes`] decompresses at most: 1 GiB.
const MAX_DECODED_BYTES: u64 = 1 << 30;

/// A profile that could not be read, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed profile: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn from_proto(p: &proto::Profile) -> Result<Profile, DecodeError> {
    let st = &p.string_table;
    if st.first().is_some_and(|s| !s.is_empty()) {
        return Err(DecodeError("string_table[0] is not empty".into()));
    }
    let s = |i: i64| -> Result<String, DecodeError> {
        if i == 0 && st.is_empty() {
            return Ok(String::new());
        }
        st.get(usize::try_from(i).map_err(|_| DecodeError(format!("negative string index {i}")))?)
            .cloned()
            .ok_or_else(|| DecodeError(format!("string index {i} out of range")))
    };
    let opt = |i: i64| -> Result<Option<String>, DecodeError> {
        if i == 0 {
            Ok(None)
        } else {
            s(i).map(Some)
        }
    };
    let vt = |v: &proto::ValueType| -> Result<ValueType, DecodeError> {
        Ok(ValueType {
            r#type: s(v.r#type)?,
            unit: s(v.unit)?,
        })
    };
    let n_types = p.sample_type.len();
    let location_ids: std::collections::HashSet<u64> = p.location.iter().map(|l| l.id).collect();
    let function_ids: std::collections::HashSet<u64> = p.function.iter().map(|f| f.id).collect();
    let mapping_ids: std::collections::HashSet<u64> = p.mapping.iter().map(|m| m.id).collect();
    let samples = p
        .sample
        .iter()
        .map(|x| {
            if x.value.len() != n_types {
                return Err(DecodeError(format!(
                    "sample has {} values for {n_types} types",
                    x.value.len()
                )));
            }
            if let Some(bad) = x.location_id.iter().find(|id| !location_ids.contains(id)) {
                return Err(DecodeError(format!(
                    "sample refers to unknown location {bad}"
                )));
            }
            Ok(Sample {
                location_ids: x.location_id.clone(),
                values: x.value.clone(),
                labels: {
                    let mut labels = x
                        .label
                        .iter()
                        .filter(|l| l.str != 0)
                        .map(|l| {
                            Ok(Label {
                                key: s(l.key)?,
                                value: s(l.str)?,
                            })
                        })
                        .collect::<Result<Vec<_>, DecodeError>>()?;
                    labels.sort();
                    labels.dedup_by(|a, b| a.key == b.key);
                    labels
                },
                num_labels: x
                    .label
                    .iter()
                    .filter(|l| l.str == 0)
                    .map(|l| {
                        Ok(NumLabel {
                            key: s(l.key)?,
                            value: l.num,
                            unit: s(l.num_unit)?,
                        })
                    })
                    .collect::<Result<_, DecodeError>>()?,
            })
        })
        .collect::<Result<_, _>>()?;
    let locations = p
        .location
        .iter()
        .map(|l| {
            if l.mapping_id != 0 && !mapping_ids.contains(&l.mapping_id) {
                return Err(DecodeError(format!(
                    "location {} refers to unknown mapping {}",
                    l.id, l.mapping_id
                )));
            }
            if let Some(bad) = l
                .line
                .iter()
                .find(|x| !function_ids.contains(&x.function_id))
            {
                return Err(DecodeError(format!(
                    "location {} refers to unknown function {}",
                    l.id, bad.function_id
                )));
            }
            Ok(Location {
                id: l.id,
                mapping_id: l.mapping_id,
                address: l.address,
                lines: l
                    .line
                    .iter()
                    .map(|x| Line {
                        function_id: x.function_id,
                        line: x.line,
                    })
                    .collect(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Profile {
        sample_types: p.sample_type.iter().map(vt).collect::<Result<_, _>>()?,
        default_sample_type: opt(p.default_sample_type)?,
        period_type: p.period_type.as_ref().map(vt).transpose()?,
        period: p.period,
        time_nanos: p.time_nanos,
        duration_nanos: (p.duration_nanos != 0).then_some(p.duration_nanos),
        drop_frames: opt(p.drop_frames)?,
        comments: p.comment.iter().map(|&c| s(c)).collect::<Result<_, _>>()?,
        mappings: p
            .mapping
            .iter()
            .map(|m| {
                Ok(Mapping {
                    id: m.id,
                    memory_start: m.memory_start,
                    memory_limit: m.memory_limit,
                    file_offset: m.file_offset,
                    filename: s(m.filename)?,
                    build_id: s(m.build_id)?,
                    has_functions: m.has_functions,
                    has_filenames: m.has_filenames,
                    has_line_numbers: m.has_line_numbers,
                    has_inline_frames: m.has_inline_frames,
                })
            })
            .collect::<Result<_, DecodeError>>()?,
        locations,
        functions: p
            .function
            .iter()
            .map(|f| {
                Ok(Function {
                    id: f.id,
                    name: s(f.name)?,
                    system_name: s(f.system_name)?,
                    filename: s(f.filename)?,
                    start_line: f.start_line,
                })
            })
            .collect::<Result<_, DecodeError>>()?,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Profile {
        Profile {
            sample_types: crate::profile::heap_sample_types(),
            default_sample_type: Some("alloc_space".into()),
            period_type: Some(ValueType::new("space", "bytes")),
            period: 524288,
            time_nanos: 1_700_000_000_000_000_000,
            duration_nanos: None,
            drop_frames: Some("x.*".into()),
            comments: vec![],
            mappings: vec![Mapping {
                id: 1,
                memory_start: 0x1000,
                memory_limit: 0x2000,
                filename: "/bin/app".into(),
                has_functions: true,
                ..Default::default()
            }],
            locations: vec![Location {
                id: 1,
                mapping_id: 1,
                address: 0x1234,
                lines: vec![Line {
                    function_id: 1,
                    line: 7,
                }],
            }],
            functions: vec![Function {
                id: 1,
                name: "app::f".into(),
                system_name: "_ZN3app1f".into(),
                filename: "src/f.rs".into(),
                start_line: 0,
            }],
            samples: vec![Sample {
                location_ids: vec![1],
                values: vec![1, 2, 3, 4],
                labels: vec![Label {
                    key: "route".into(),
                    value: "/item".into(),
                }],
                num_labels: vec![NumLabel {
                    key: "bytes".into(),
                    value: 64,
                    unit: String::new(),
                }],
            }],
        }
    }

    #[test]
    fn string_table_starts_empty_and_round_trips() {
        let p = tiny();
        let proto = p.to_proto();
        assert_eq!(proto.string_table[0], "");
        assert_eq!(
            proto.string_table[proto.default_sample_type as usize],
            "alloc_space"
        );
        assert_eq!(Profile::from_pprof_bytes(&p.to_pprof_bytes()).unwrap(), p);
    }

    #[test]
    fn string_labels_are_sample_labels_with_str_set() {
        let proto = tiny().to_proto();
        let label = |key: &str| {
            proto.sample[0]
                .label
                .iter()
                .find(|l| proto.string_table[l.key as usize] == key)
                .cloned()
                .unwrap()
        };
        let route = label("route");
        assert_eq!(proto.string_table[route.str as usize], "/item");
        assert_eq!((route.num, route.num_unit), (0, 0));
        let bytes = label("bytes");
        assert_eq!((bytes.str, bytes.num), (0, 64));
    }

    #[test]
    fn unset_default_sample_type_stays_unset() {
        let mut p = tiny();
        p.default_sample_type = None;
        assert_eq!(p.to_proto().default_sample_type, 0);
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let good = tiny().to_pprof_bytes();
        assert!(Profile::from_pprof_bytes(&good[..good.len() / 2]).is_err());
        let mut proto = tiny().to_proto();
        proto.sample[0].location_id = vec![99];
        assert!(Profile::from_pprof_bytes(&proto.encode_to_vec())
            .unwrap_err()
            .0
            .contains("unknown location"));
        let mut proto = tiny().to_proto();
        proto.function[0].name = 1000;
        assert!(Profile::from_pprof_bytes(&proto.encode_to_vec()).is_err());
        for junk in [&b""[..], b"\x1f\x8b", b"\xff\xff\xff\xff"] {
            let _ = Profile::from_pprof_bytes(junk);
        }
    }
}
