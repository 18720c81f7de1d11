//! In-process symbolization: return addresses to functions, files and lines, and the process's
//! executable mappings for the profile.
//!
//! Runs only when a profile is built, never in the allocator hook. Each object file is opened
//! once with `addr2line` (DWARF, including inlined frames, with the symbol table as fallback)
//! and kept, and each address is looked up once: both survive across profiles. The address cache
//! is bounded ([`CACHE_LIMIT`]); `addr2line` parses compilation units lazily, so memory grows with
//! the code that actually allocates, not with the size of the binary.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Addresses whose frames are kept between profiles; the cache starts over beyond this.
pub const CACHE_LIMIT: usize = 1 << 17;

/// One source-level frame at an address; an address has several when calls were inlined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Demangled name without the hash, e.g. `myapp::cache::Cache::insert`.
    pub function: Arc<str>,
    /// The symbol as linked (mangled), or the same as `function` when only that is known.
    pub system_name: Arc<str>,
    pub file: Option<Arc<str>>,
    /// 0 when unknown.
    pub line: u32,
}

/// An executable mapping of the process, as pprof describes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMapping {
    pub start: u64,
    pub limit: u64,
    pub file_offset: u64,
    pub path: String,
    pub build_id: String,
    /// The object has DWARF line tables (so lookups give files, lines and inlined frames).
    pub has_debug_info: bool,
}

struct Object {
    mapping: ObjectMapping,
    /// Added to a file (stated) address to get the address in memory.
    bias: u64,
    loader: Option<addr2line::Loader>,
}

/// Symbolizes addresses of this process.
pub struct Symbolizer {
    objects: Vec<Object>,
    main_path: String,
    cache: HashMap<u64, Arc<[Frame]>>,
}

static SHARED: Mutex<Option<Symbolizer>> = Mutex::new(None);

/// Runs `f` with the process-wide symbolizer, whose caches persist across calls.
pub fn with_symbolizer<R>(f: impl FnOnce(&mut Symbolizer) -> R) -> R {
    let mut guard = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    let s = guard.get_or_insert_with(Symbolizer::new);
    f(s)
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    /// A symbolizer for the current process's mappings.
    pub fn new() -> Symbolizer {
        let main_path = std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut s = Symbolizer {
            objects: Vec::new(),
            main_path,
            cache: HashMap::new(),
        };
        s.refresh();
        s
    }

    /// Reads the process's mappings again (after a `dlopen`, say), keeping objects already open.
    pub fn refresh(&mut self) {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return;
        };
        let mut objects = Vec::new();
        for line in maps.lines() {
            let Some(m) = parse_maps_line(line) else {
                continue;
            };
            if let Some(i) = self
                .objects
                .iter()
                .position(|o| o.mapping.start == m.start && o.mapping.path == m.path)
            {
                objects.push(self.objects.swap_remove(i));
                continue;
            }
            objects.push(open_object(m));
        }
        // The main binary first: pprof takes the first mapping to be the program.
        let main = &self.main_path;
        objects.sort_by_key(|o| (o.mapping.path != *main, o.mapping.start));
        self.objects = objects;
    }

    /// The executable mappings, main binary first.
    pub fn mappings(&self) -> impl Iterator<Item = &ObjectMapping> {
        self.objects.iter().map(|o| &o.mapping)
    }

    /// The index in [`Self::mappings`] of the mapping holding `addr`.
    pub fn mapping_index(&self, addr: u64) -> Option<usize> {
        self.objects
            .iter()
            .position(|o| o.mapping.start <= addr && addr < o.mapping.limit)
    }

    /// The frames at a code address, innermost (leaf) first. For a return address, pass the
    /// address of the call instruction (the return address minus one). Addresses outside the
    /// mappings known at the last [`Self::refresh`] have no frames.
    pub fn frames(&mut self, addr: u64) -> Arc<[Frame]> {
        if let Some(f) = self.cache.get(&addr) {
            return f.clone();
        }
        let frames: Arc<[Frame]> = match self.mapping_index(addr) {
            Some(i) => lookup(&self.objects[i], addr).into(),
            None => Arc::from([]),
        };
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(addr, frames.clone());
        frames
    }

    /// Addresses currently cached.
    pub fn cached_addresses(&self) -> usize {
        self.cache.len()
    }
}

fn parse_maps_line(line: &str) -> Option<ObjectMapping> {
    // 55d4c7a00000-55d4c7b23000 r-xp 00012000 fd:01 1234   /usr/bin/app
    let mut parts = line.split_whitespace();
    let range = parts.next()?;
    let perms = parts.next()?;
    let offset = parts.next()?;
    let _dev = parts.next()?;
    let _inode = parts.next()?;
    let path = parts.collect::<Vec<_>>().join(" ");
    if !perms.contains('x') || !path.starts_with('/') {
        return None;
    }
    let (start, limit) = range.split_once('-')?;
    Some(ObjectMapping {
        start: u64::from_str_radix(start, 16).ok()?,
        limit: u64::from_str_radix(limit, 16).ok()?,
        file_offset: u64::from_str_radix(offset, 16).ok()?,
        path: path.trim_end_matches(" (deleted)").to_string(),
        build_id: String::new(),
        has_debug_info: false,
    })
}

/// Reads an object's build id and load bias, and opens it for lookups.
fn open_object(mut mapping: ObjectMapping) -> Object {
    let path = PathBuf::from(&mapping.path);
    let mut bias = mapping.start.wrapping_sub(mapping.file_offset);
    if let Ok(file) = std::fs::File::open(&path) {
        // SAFETY: the file is mapped read-only and only parsed while `data` lives; a binary being
        // rewritten underneath us could at worst make parsing fail, which is handled.
        if let Ok(data) = unsafe { memmap2::Mmap::map(&file) } {
            use object::{Object as _, ObjectSection as _, ObjectSegment as _};
            if let Ok(obj) = object::File::parse(&*data) {
                if let Ok(Some(id)) = obj.build_id() {
                    mapping.build_id = id.iter().map(|b| format!("{b:02x}")).collect();
                }
                mapping.has_debug_info = obj
                    .section_by_name(".debug_line")
                    .is_some_and(|s| s.size() > 0);
                // The segment this mapping comes from fixes the file-to-memory offset.
                // Only executable segments are considered: with lld's layout the read-only
                // segment before the text can share the text mapping's first page.
                for seg in obj.segments() {
                    let executable = matches!(seg.flags(), object::SegmentFlags::Elf { p_flags, .. } if p_flags.0 & object::elf::PF_X.0 != 0);
                    let (off, size) = seg.file_range();
                    let page_off = off & !0xfff;
                    if executable
                        && page_off <= mapping.file_offset
                        && mapping.file_offset < off + size.max(1)
                    {
                        // Within a segment, file offsets and addresses differ by a constant.
                        let stated = seg
                            .address()
                            .wrapping_add(mapping.file_offset)
                            .wrapping_sub(off);
                        bias = mapping.start.wrapping_sub(stated);
                        break;
                    }
                }
            }
        }
    }
    let loader = addr2line::Loader::new(&path).ok();
    Object {
        mapping,
        bias,
        loader,
    }
}

fn lookup(obj: &Object, addr: u64) -> Vec<Frame> {
    let Some(loader) = &obj.loader else {
        return Vec::new();
    };
    let probe = addr.wrapping_sub(obj.bias);
    let mut out = Vec::new();
    if let Ok(mut frames) = loader.find_frames(probe) {
        while let Ok(Some(frame)) = frames.next() {
            let Some(func) = frame.function.as_ref() else {
                continue;
            };
            let raw = func.raw_name().map(|n| n.into_owned()).unwrap_or_default();
            if raw.is_empty() {
                continue;
            }
            let (file, line) = match frame.location {
                Some(loc) => (loc.file.map(Arc::from), loc.line.unwrap_or(0)),
                None => (None, 0),
            };
            out.push(Frame {
                function: demangle(&raw).into(),
                system_name: raw.into(),
                file,
                line,
            });
        }
    }
    // The symbol table names the function the address is really in with its full path, while
    // DWARF built with line tables only knows short names ("insert" for "cache::Map::insert").
    if let Some(sym) = loader.find_symbol(probe) {
        match out.last_mut() {
            Some(outer)
                if !outer.function.contains("::") || outer.system_name == outer.function =>
            {
                outer.function = demangle(sym).into();
                outer.system_name = sym.into();
            }
            Some(_) => {}
            None => out.push(Frame {
                function: demangle(sym).into(),
                system_name: sym.into(),
                file: None,
                line: 0,
            }),
        }
    }
    out
}

/// A Rust symbol without its hash; anything else as it is.
pub fn demangle(raw: &str) -> String {
    match rustc_demangle::try_demangle(raw) {
        Ok(d) => format!("{d:#}"),
        Err(_) => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_function_with_a_known_name() -> u64 {
        a_function_with_a_known_name as *const () as u64
    }

    #[test]
    fn finds_the_name_of_a_function_in_this_binary() {
        let addr = std::hint::black_box(a_function_with_a_known_name());
        let mut s = Symbolizer::new();
        let frames = s.frames(addr);
        assert!(
            frames
                .iter()
                .any(|f| f.function.ends_with("tests::a_function_with_a_known_name")),
            "{frames:?}"
        );
        let main = s.mappings().next().unwrap();
        assert_eq!(main.path, s.main_path);
        assert!(!main.build_id.is_empty(), "rustc links with a GNU build id");
    }

    #[test]
    fn parses_executable_file_mappings_only() {
        let m = parse_maps_line(
            "55d4c7a00000-55d4c7b23000 r-xp 00012000 fd:01 1234    /usr/bin/my app",
        )
        .unwrap();
        assert_eq!(
            (m.start, m.limit, m.file_offset),
            (0x55d4c7a00000, 0x55d4c7b23000, 0x12000)
        );
        assert_eq!(m.path, "/usr/bin/my app");
        assert!(parse_maps_line("7ffd-7ffe rw-p 00000000 00:00 0  [stack]").is_none());
        assert!(parse_maps_line("7ffd-7ffe r-xp 00000000 00:00 0  [vdso]").is_none());
    }

    #[test]
    fn demangles_rust_symbols_without_hash() {
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"),
            "core::ptr::drop_in_place"
        );
        assert_eq!(demangle("malloc"), "malloc");
    }
}
