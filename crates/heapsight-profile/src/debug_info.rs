//! An object's debug info, opened for lookups one compilation unit at a time.
//!
//! `addr2line` reads every compilation unit's header and address ranges as soon as it opens
//! an object: for the demo's binary that is 10 MiB of memory before the first lookup, and as much
//! again in lines and functions as lookups parse them. Here an index built once, small because
//! each unit's adjacent ranges are merged, says which unit holds an address, and `addr2line` is
//! given that unit alone (its `.debug_info` cut to the unit; every other section whole, so the
//! unit's references into them hold). A few units' contexts are kept at a time; no other
//! unit's lines or functions are ever parsed.
//!
//! What a unit cannot see when cut out: references into other units (`DW_FORM_ref_addr`, which
//! cross-unit inlining under LTO produces). Such a frame loses its inlined callee's name, and
//! the symbol table still names the function the address is in.

use std::collections::HashMap;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

/// Unit contexts kept at once; beyond this they are all dropped and made again as needed.
const UNITS_KEPT: usize = 16;
/// Units one context may include: the unit that holds the code, and those its entries refer to.
/// A function of generic code can refer to the abstract instances of a dozen small units (one
/// per instantiating crate's codegen unit): 8 was seen to fall short by one, leaving a frame
/// unnamed; 32 leaves room while still bounding one lookup.
const MAX_UNITS_PER_CONTEXT: usize = 32;

/// The frames at `probe` in `ctx`, innermost first; an error if the lookup met one.
fn frames_in(ctx: &addr2line::Context<Reader>, probe: u64) -> Result<Vec<RawFrame>, gimli::Error> {
    let mut out = Vec::new();
    let mut frames = ctx.find_frames(probe).skip_all_loads()?;
    while let Some(frame) = frames.next()? {
        let Some(function) = frame.function.as_ref() else {
            continue;
        };
        let name = function.raw_name()?;
        if name.is_empty() {
            continue;
        }
        let (file, line) = match frame.location {
            Some(loc) => (loc.file.map(String::from), loc.line.unwrap_or(0)),
            None => (None, 0),
        };
        out.push(RawFrame {
            name: name.into_owned(),
            file,
            line,
        });
    }
    Ok(out)
}

/// Bytes of the object file, mapped, or (for a compressed section) decompressed.
#[derive(Clone, Debug)]
pub(crate) struct Bytes {
    backing: Backing,
    start: usize,
    len: usize,
}

#[derive(Clone, Debug)]
enum Backing {
    Map(Arc<memmap2::Mmap>),
    Owned(Arc<[u8]>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let all: &[u8] = match &self.backing {
            Backing::Map(m) => m,
            Backing::Owned(o) => o,
        };
        &all[self.start..self.start + self.len]
    }
}

// SAFETY: the bytes live behind an `Arc` (a mapping or a boxed slice) that every clone shares;
// they never move or change while any clone exists.
unsafe impl gimli::StableDeref for Bytes {}
// SAFETY: as above: a clone derefs to the same bytes.
unsafe impl gimli::CloneStableDeref for Bytes {}

type Reader = gimli::EndianReader<gimli::RunTimeEndian, Bytes>;

/// A unit's `(offset, length)` in `.debug_info`.
type UnitSpan = (usize, usize);

/// One object's debug info.
pub(crate) struct DebugInfo {
    /// Every section whole; a unit's context gets a copy with `debug_info` cut to the unit.
    dwarf: gimli::Dwarf<Reader>,
    /// `(start, end, unit offset)`: which unit holds which code, sorted, each unit's adjacent
    /// ranges merged (see [`unit_ranges`]).
    aranges: Vec<(u64, u64, usize)>,
    /// The whole object's context, for an object whose units could not be indexed.
    whole: Option<addr2line::Context<Reader>>,
    /// Contexts made so far, by the unit that holds the code, with the units each includes.
    units: HashMap<usize, (Vec<usize>, addr2line::Context<Reader>)>,
    /// Every unit's `(offset, length)` in `.debug_info`, sorted.
    unit_spans: Vec<UnitSpan>,
    /// `(address, name start, name length)` of the symbol table's functions, sorted, the names
    /// in `map`.
    symbols: Vec<(u64, u32, u32)>,
    map: Arc<memmap2::Mmap>,
    endian: gimli::RunTimeEndian,
}

/// One frame at an address: the function's linked name, and its file and line.
pub(crate) struct RawFrame {
    pub(crate) name: String,
    pub(crate) file: Option<String>,
    pub(crate) line: u32,
}

impl DebugInfo {
    pub(crate) fn open(path: &Path) -> Option<DebugInfo> {
        use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
        let file = std::fs::File::open(path).ok()?;
        // SAFETY: the file is mapped read-only; a binary rewritten underneath us could at worst
        // make parsing fail, which is handled.
        let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.ok()?);
        let obj = object::File::parse(&**map).ok()?;
        let endian = if obj.is_little_endian() {
            gimli::RunTimeEndian::Little
        } else {
            gimli::RunTimeEndian::Big
        };
        let base = map.as_ptr() as usize;
        let load = |id: gimli::SectionId| -> Result<Reader, gimli::Error> {
            let bytes = match obj.section_by_name(id.name()) {
                None => Bytes {
                    backing: Backing::Owned(Arc::from(&[][..])),
                    start: 0,
                    len: 0,
                },
                Some(s) => match s.uncompressed_data() {
                    Ok(std::borrow::Cow::Borrowed(b)) => Bytes {
                        backing: Backing::Map(map.clone()),
                        start: b.as_ptr() as usize - base,
                        len: b.len(),
                    },
                    Ok(std::borrow::Cow::Owned(v)) => Bytes {
                        len: v.len(),
                        backing: Backing::Owned(v.into()),
                        start: 0,
                    },
                    Err(_) => return Err(gimli::Error::Io),
                },
            };
            Ok(gimli::EndianReader::new(bytes, endian))
        };
        let dwarf = gimli::Dwarf::load(load).ok()?;
        let (aranges, unit_spans) = unit_ranges(&dwarf);
        let mut symbols: Vec<(u64, u32, u32)> = obj
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text && s.address() != 0)
            .filter_map(|s| {
                let name = s.name_bytes().ok()?;
                Some((
                    s.address(),
                    (name.as_ptr() as usize).checked_sub(base)? as u32,
                    name.len() as u32,
                ))
            })
            .collect();
        symbols.sort_unstable_by_key(|s| s.0);
        drop(obj);
        Some(DebugInfo {
            dwarf,
            aranges,
            whole: None,
            units: HashMap::new(),
            unit_spans,
            symbols,
            map,
            endian,
        })
    }

    /// The frames at file address `probe`, innermost (inlined) first.
    pub(crate) fn frames(&mut self, probe: u64) -> Vec<RawFrame> {
        // A unit's entries may refer to entries of other units (an inlined function's abstract
        // instance lives where it was defined): each such unit is added to the context, and the
        // lookup made again, up to a few.
        for _ in 0..MAX_UNITS_PER_CONTEXT {
            let Some(ctx) = self.context_for(probe) else {
                return Vec::new();
            };
            match frames_in(ctx, probe) {
                Ok(frames) => return frames,
                Err(gimli::Error::NoEntryAtGivenOffset(at)) => {
                    if !self.include_unit_of(probe, at as usize) {
                        return Vec::new();
                    }
                }
                Err(_) => return Vec::new(),
            }
        }
        Vec::new()
    }

    /// The symbol table's name of the function at file address `probe`.
    pub(crate) fn symbol(&self, probe: u64) -> Option<&str> {
        let i = self
            .symbols
            .partition_point(|s| s.0 <= probe)
            .checked_sub(1)?;
        let (_, start, len) = self.symbols[i];
        std::str::from_utf8(self.map.get(start as usize..(start + len) as usize)?).ok()
    }

    /// The unit holding `probe`, if any.
    fn unit_of(&self, probe: u64) -> Option<usize> {
        let i = self
            .aranges
            .partition_point(|a| a.0 <= probe)
            .checked_sub(1)?;
        let (_, end, unit) = self.aranges[i];
        (probe < end).then_some(unit)
    }

    fn context_for(&mut self, probe: u64) -> Option<&addr2line::Context<Reader>> {
        if self.aranges.is_empty() {
            if self.whole.is_none() {
                self.whole = addr2line::Context::from_dwarf(self.dwarf_copy(None)?).ok();
            }
            return self.whole.as_ref();
        }
        let unit = self.unit_of(probe)?;
        if !self.units.contains_key(&unit) {
            if self.units.len() >= UNITS_KEPT {
                self.units.clear();
            }
            let ctx = addr2line::Context::from_dwarf(self.dwarf_copy(Some(&[unit]))?).ok()?;
            self.units.insert(unit, (vec![unit], ctx));
        }
        self.units.get(&unit).map(|(_, c)| c)
    }

    /// Adds the unit holding entry offset `at` to the context of `probe`'s unit. False when
    /// there is no such unit, it is included already, or the context holds enough.
    fn include_unit_of(&mut self, probe: u64, at: usize) -> bool {
        let Some(unit) = self.unit_of(probe) else {
            return false;
        };
        let i = self.unit_spans.partition_point(|s| s.0 <= at);
        let Some(&(other, len)) = i.checked_sub(1).and_then(|i| self.unit_spans.get(i)) else {
            return false;
        };
        if at >= other + len {
            return false;
        }
        let Some((included, _)) = self.units.get(&unit) else {
            return false;
        };
        if included.contains(&other) || included.len() >= MAX_UNITS_PER_CONTEXT {
            return false;
        }
        let mut included = included.clone();
        included.push(other);
        included.sort_unstable();
        let Some(ctx) = self
            .dwarf_copy(Some(&included))
            .and_then(|d| addr2line::Context::from_dwarf(d).ok())
        else {
            return false;
        };
        self.units.insert(unit, (included, ctx));
        true
    }

    /// The sections, with `.debug_info` holding only the units at `units` (sorted; all of
    /// them for `None`).
    ///
    /// References between entries are absolute section offsets where units refer to each
    /// other (`DW_FORM_ref_addr`, which rustc emits), so each unit must stay at its offset: the
    /// section handed over is an anonymous mapping as long as the original up to the last
    /// unit's end, holding a copy of each unit at its offset and, in each gap before one, an
    /// empty unit header whose unit spans the gap. Only the copies and the headers' pages
    /// become resident.
    fn dwarf_copy(&self, units: Option<&[usize]>) -> Option<gimli::Dwarf<Reader>> {
        let d = &self.dwarf;
        let debug_info = match units {
            None => d.debug_info.clone(),
            Some(units) => {
                let whole: &[u8] = gimli::Section::reader(&d.debug_info).bytes();
                let span = |u: usize| {
                    let i = self.unit_spans.partition_point(|s| s.0 < u);
                    self.unit_spans.get(i).filter(|s| s.0 == u).copied()
                };
                let end = units
                    .iter()
                    .filter_map(|&u| span(u))
                    .map(|(o, l)| o + l)
                    .max()?;
                let mut anon = memmap2::MmapMut::map_anon(end).ok()?;
                let mut at = 0;
                for &u in units {
                    let (offset, len) = span(u)?;
                    if offset > at {
                        // An empty DWARF 4 compile unit over the gap: length, version,
                        // abbreviations at 0, 8-byte addresses, then zeros (no entries).
                        let filler = u32::try_from(offset - at - 4).ok()?;
                        if filler < 7 {
                            return None;
                        }
                        anon[at..at + 4].copy_from_slice(&filler.to_le_bytes());
                        anon[at + 4..at + 6].copy_from_slice(&4u16.to_le_bytes());
                        anon[at + 10] = 8;
                    }
                    anon[offset..offset + len].copy_from_slice(whole.get(offset..offset + len)?);
                    at = offset + len;
                }
                let map = Arc::new(anon.make_read_only().ok()?);
                let section = Bytes {
                    len: map.len(),
                    backing: Backing::Map(map),
                    start: 0,
                };
                gimli::DebugInfo::from(gimli::EndianReader::new(section, self.endian))
            }
        };
        Some(gimli::Dwarf {
            debug_abbrev: d.debug_abbrev.clone(),
            debug_addr: d.debug_addr.clone(),
            debug_aranges: d.debug_aranges.clone(),
            debug_info,
            debug_line: d.debug_line.clone(),
            debug_line_str: d.debug_line_str.clone(),
            debug_macinfo: d.debug_macinfo.clone(),
            debug_macro: d.debug_macro.clone(),
            debug_names: d.debug_names.clone(),
            debug_str: d.debug_str.clone(),
            debug_str_offsets: d.debug_str_offsets.clone(),
            debug_types: d.debug_types.clone(),
            locations: d.locations.clone(),
            ranges: d.ranges.clone(),
            file_type: d.file_type,
            sup: None,
            abbreviations_cache: gimli::AbbreviationsCache::new(),
        })
    }
}

/// Which unit holds which code: `(start, end, unit offset)`, sorted by start. Each unit's ranges
/// (one per function, with function sections) are merged where they touch, then neighbouring
/// ranges of the same unit are merged across the gap between them, which holds no other unit's
/// code: for the demo, 310,000 ranges become a few thousand.
fn unit_ranges(dwarf: &gimli::Dwarf<Reader>) -> (Vec<(u64, u64, usize)>, Vec<UnitSpan>) {
    let mut all: Vec<(u64, u64, usize)> = Vec::new();
    let mut spans: Vec<UnitSpan> = Vec::new();
    let mut headers = dwarf.units();
    let mut local: Vec<(u64, u64)> = Vec::new();
    while let Ok(Some(header)) = headers.next() {
        let Some(offset) = header.debug_info_offset() else {
            continue;
        };
        spans.push((offset.0, header.length_including_self()));
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        local.clear();
        if let Ok(mut ranges) = dwarf.unit_ranges(&unit) {
            while let Ok(Some(r)) = ranges.next() {
                if r.end > r.begin {
                    local.push((r.begin, r.end));
                }
            }
        }
        local.sort_unstable();
        let mut merged: Option<(u64, u64)> = None;
        for &(b, e) in &local {
            merged = match merged {
                Some((mb, me)) if b <= me => Some((mb, me.max(e))),
                Some(m) => {
                    all.push((m.0, m.1, offset.0));
                    Some((b, e))
                }
                None => Some((b, e)),
            };
        }
        if let Some(m) = merged {
            all.push((m.0, m.1, offset.0));
        }
    }
    all.sort_unstable();
    let mut out: Vec<(u64, u64, usize)> = Vec::with_capacity(all.len());
    for r in all {
        match out.last_mut() {
            Some(last) if last.2 == r.2 => last.1 = last.1.max(r.1),
            _ => out.push(r),
        }
    }
    out.shrink_to_fit();
    spans.sort_unstable();
    (out, spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_function_with_a_known_name(x: u64) -> u64 {
        std::hint::black_box(x.wrapping_mul(3))
    }

    /// What the whole file's `addr2line` context says is at `probe`.
    fn whole_file_frames(ctx: &addr2line::Context<Reader>, probe: u64) -> Vec<(String, u32)> {
        frames_in(ctx, probe)
            .unwrap_or_default()
            .into_iter()
            .map(|f| (f.name, f.line))
            .collect()
    }

    #[test]
    fn one_unit_at_a_time_names_what_the_whole_file_names() {
        let exe = std::env::current_exe().unwrap();
        let mut d = DebugInfo::open(&exe).expect("the test binary has debug info");
        // The index is small next to addr2line's (32 bytes for every function's range).
        assert!(
            d.aranges.len() * 10 < d.symbols.len(),
            "{} ranges",
            d.aranges.len()
        );
        let whole = addr2line::Context::from_dwarf(d.dwarf_copy(None).unwrap()).unwrap();
        // Probes a little way into functions all over the binary: std's, gimli's, this crate's.
        let probes: Vec<u64> = d.symbols.iter().step_by(16).map(|s| s.0 + 6).collect();
        let mut same = 0;
        let mut named = 0;
        for &p in &probes {
            let expected = whole_file_frames(&whole, p);
            let got: Vec<(String, u32)> =
                d.frames(p).into_iter().map(|f| (f.name, f.line)).collect();
            named += !got.is_empty() as usize;
            if got == expected {
                same += 1;
            } else {
                eprintln!("{p:#x}: {got:?}\n   whole file: {expected:?}");
            }
        }
        assert!(
            probes.len() > 200 && same == probes.len(),
            "{same} of {} the same",
            probes.len()
        );
        assert!(
            named * 10 > probes.len() * 9,
            "{named} of {} named",
            probes.len()
        );
        assert!(d.units.len() <= UNITS_KEPT);

        let here = a_function_with_a_known_name as fn(u64) -> u64 as usize as u64;
        let start = d
            .symbols
            .iter()
            .find(|s| {
                d.map[s.1 as usize..(s.1 + s.2) as usize]
                    .windows(28)
                    .any(|w| w == b"a_function_with_a_known_name")
            })
            .expect("the function is in the symbol table")
            .0;
        let frames = d.frames(start + 1);
        assert!(
            frames
                .iter()
                .any(|f| f.name.contains("a_function_with_a_known_name") && f.line > 0),
            "{:?}",
            frames.iter().map(|f| (&f.name, f.line)).collect::<Vec<_>>()
        );
        std::hint::black_box(a_function_with_a_known_name(here));
    }
}
