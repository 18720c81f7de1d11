//! In-process symbolization: return addresses to functions, files and lines, and the process's
//! executable mappings for the profile.
//!
//! Runs only when a profile is built, never in the allocator hook. Each address is looked up
//! once with `addr2line` (DWARF, including inlined frames, with the symbol table as fallback),
//! and what it names is kept across profiles in a bounded cache ([`CACHE_LIMIT`]). The debug
//! info itself is opened only for addresses the cache does not know, and let go again when the
//! work that needed it is done ([`with_symbolizer`]): `addr2line` keeps every compilation
//! unit's header and ranges in memory once an object is open (10 MiB of the 22 MiB the demo's
//! symbolizer held when it kept them), so a service whose stacks are known pays for names, not
//! for debug info.

use crate::debug_info::DebugInfo;
use heapsight::own::{self, Part};
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

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
    /// The file to read debug info from: the object, or its separate debug file.
    debug_path: PathBuf,
    /// Where `/proc/self/maps` starts the mapping (`mapping.start` may begin later, at the
    /// text segment): what [`Symbolizer::refresh`] recognises an open object by.
    maps_start: u64,
    /// Added to a file (stated) address to get the address in memory.
    bias: u64,
    /// Open while a lookup needs it; dropped by [`Symbolizer::release_debug_info`].
    loader: Option<DebugInfo>,
    /// Opening failed once: the object has nothing to read.
    unreadable: bool,
}

/// Symbolizes addresses of this process.
pub struct Symbolizer {
    objects: Vec<Object>,
    main_path: String,
    cache: HashMap<u64, Arc<[Frame]>>,
    /// Objects opened so far: opening parses debug info, so each is opened once.
    opened: usize,
}

static SHARED: Mutex<Option<Symbolizer>> = Mutex::new(None);
/// The process whose thread holds [`SHARED`], 0 while nobody does.
static HOLDER: AtomicU32 = AtomicU32::new(0);
/// How long a waiter gives a lock that is held while nobody has said by whom (the instant
/// between taking it and saying so) before it takes the lock for lost in a fork.
const UNCLAIMED_WAIT: Duration = Duration::from_millis(100);

/// Runs `f` with the process-wide symbolizer, whose caches persist across calls.
///
/// Fork-safe: a child forked while another thread of its parent held the symbolizer would wait
/// forever for a lock whose holder does not exist in the child. A waiter that finds the lock
/// held by another process's thread (or held and unclaimed for [`UNCLAIMED_WAIT`]) uses a
/// symbolizer of its own instead, with empty caches.
pub fn with_symbolizer<R>(f: impl FnOnce(&mut Symbolizer) -> R) -> R {
    let me = std::process::id();
    let mut unclaimed = None;
    loop {
        let mut guard = match SHARED.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                let holder = HOLDER.load(Ordering::Acquire);
                let lost = match holder {
                    0 => unclaimed.get_or_insert_with(Instant::now).elapsed() > UNCLAIMED_WAIT,
                    h => h != me,
                };
                if lost {
                    return f(&mut Symbolizer::new());
                }
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        HOLDER.store(me, Ordering::Release);
        struct Release;
        impl Drop for Release {
            fn drop(&mut self) {
                HOLDER.store(0, Ordering::Release);
            }
        }
        let _release = Release;
        let symbolizer = guard.get_or_insert_with(Symbolizer::new);
        let out = f(symbolizer);
        if symbolizer.release_debug_info() {
            heapsight::own::return_freed_memory();
        }
        return out;
    }
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    /// A symbolizer for the current process's mappings.
    pub fn new() -> Symbolizer {
        own::run(Part::Symbolizer, Symbolizer::open)
    }

    fn open() -> Symbolizer {
        let main_path = std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut s = Symbolizer {
            objects: Vec::new(),
            main_path,
            cache: HashMap::new(),
            opened: 0,
        };
        s.refresh();
        s
    }

    /// Reads the process's mappings again (after a `dlopen`, say), keeping objects already open.
    pub fn refresh(&mut self) {
        own::run(Part::Symbolizer, || self.refresh_mappings())
    }

    fn refresh_mappings(&mut self) {
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
                .position(|o| o.maps_start == m.start && o.mapping.path == m.path)
            {
                objects.push(self.objects.swap_remove(i));
                continue;
            }
            let system = m.path != self.main_path && is_system_library(&m.path);
            objects.push(open_object(m, system));
            self.opened += 1;
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
        own::run(Part::Symbolizer, || self.look_up(addr))
    }

    fn look_up(&mut self, addr: u64) -> Arc<[Frame]> {
        let frames: Arc<[Frame]> = match self.mapping_index(addr) {
            Some(i) => lookup(&mut self.objects[i], addr).into(),
            None => Arc::from([]),
        };
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(addr, frames.clone());
        frames
    }

    /// Lets go of the debug info opened for lookups (the names found stay cached). Returns
    /// whether any was open.
    pub fn release_debug_info(&mut self) -> bool {
        own::run(Part::Symbolizer, || {
            let mut any = false;
            for o in &mut self.objects {
                any |= o.loader.take().is_some();
            }
            any
        })
    }

    /// Objects whose debug info is open now.
    pub fn open_debug_info(&self) -> usize {
        self.objects.iter().filter(|o| o.loader.is_some()).count()
    }

    /// How many objects were opened (debug info parsed) over this symbolizer's life.
    pub fn opened_objects(&self) -> usize {
        self.opened
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
/// Libraries of the system's own directories: named from their symbols, and their separate
/// debug files (a distribution's -dbg packages) left alone. Their frames are the C runtime's
/// plumbing (thread start, `clone`), and libc's debug file alone costs 45 MiB of memory once
/// parsed (measured on the demo with libc6-dbg installed: 21 MiB -> 66 MiB after one profile).
fn is_system_library(path: &str) -> bool {
    ["/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/"]
        .iter()
        .any(|dir| path.starts_with(dir))
}

fn open_object(mut mapping: ObjectMapping, system: bool) -> Object {
    let maps_start = mapping.start;
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
                        // The kernel maps from the page the segment starts in, so with lld's
                        // layout the mapping's first bytes are the end of the read-only
                        // segment. Readers that find the segment by the mapping's offset (Go
                        // 1.19's pprof) then pick the read-only one and name every address
                        // 0x1000 off. Stated from the segment's own start, the mapping names
                        // the text segment alone; no code lies before it.
                        if off > mapping.file_offset
                            && mapping.start + (off - mapping.file_offset) < mapping.limit
                        {
                            mapping.start += off - mapping.file_offset;
                            mapping.file_offset = off;
                        }
                        break;
                    }
                }
            }
        }
    }
    // A binary shipped without its DWARF may have it in a separate file (`objcopy
    // --only-keep-debug`): read names, lines and inlined frames from there. Addresses in it are
    // the binary's own, so the bias stays. Not for the system's libraries (see
    // `is_system_library`).
    let debug = if mapping.has_debug_info || system {
        None
    } else {
        separate_debug_file(&path)
    };
    let debug_path = match debug {
        Some(d) => {
            mapping.has_debug_info = true;
            d
        }
        None => path,
    };
    Object {
        mapping,
        debug_path,
        maps_start,
        bias,
        loader: None,
        unreadable: false,
    }
}

/// Where separate debug files are looked for, as gdb's `debug-file-directory`:
/// `HEAPSIGHT_DEBUG_FILE_DIRECTORY` (directories separated by `:`), else `/usr/lib/debug`.
pub const DEBUG_FILE_DIRECTORY_VAR: &str = "HEAPSIGHT_DEBUG_FILE_DIRECTORY";

fn debug_roots() -> Vec<PathBuf> {
    match std::env::var_os(DEBUG_FILE_DIRECTORY_VAR) {
        Some(dirs) => std::env::split_paths(&dirs).collect(),
        None => vec![PathBuf::from("/usr/lib/debug")],
    }
}

/// The separate debug file of the object at `path`, found as gdb finds one and checked as it
/// checks one: by build ID, `ROOT/.build-id/xx/rest.debug` holding the same build ID; then by
/// `.gnu_debuglink`, the named file beside the object, in `.debug/` beside it, or under
/// `ROOT` + the object's directory, with the CRC-32 the link records. Only a file that has
/// DWARF line tables counts.
pub fn separate_debug_file(path: &Path) -> Option<PathBuf> {
    use object::Object as _;
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: mapped read-only and only parsed while `data` lives; a file rewritten underneath
    // us could at worst make parsing fail, which is handled.
    let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let obj = object::File::parse(&*data).ok()?;
    let roots = debug_roots();
    if let Ok(Some(id)) = obj.build_id() {
        if id.len() >= 2 {
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            for root in &roots {
                let candidate = root
                    .join(".build-id")
                    .join(&hex[..2])
                    .join(format!("{}.debug", &hex[2..]));
                if with_object(&candidate, |o| o.build_id().ok().flatten() == Some(id))
                    .unwrap_or(false)
                    && has_line_tables(&candidate)
                {
                    return Some(candidate);
                }
            }
        }
    }
    let (name, crc) = obj.gnu_debuglink().ok().flatten()?;
    let name = std::ffi::OsStr::from_bytes(name);
    let dir = path.parent()?;
    let mut candidates = vec![dir.join(name), dir.join(".debug").join(name)];
    for root in &roots {
        candidates.push(root.join(dir.strip_prefix("/").unwrap_or(dir)).join(name));
    }
    candidates
        .into_iter()
        .filter(|c| c != path)
        .find(|c| crc32_of(c) == Some(crc) && has_line_tables(c))
}

fn with_object<R>(path: &Path, f: impl FnOnce(&object::File) -> R) -> Option<R> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: as in `separate_debug_file`.
    let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let obj = object::File::parse(&*data).ok()?;
    Some(f(&obj))
}

fn has_line_tables(path: &Path) -> bool {
    use object::{Object as _, ObjectSection as _};
    with_object(path, |o| {
        o.section_by_name(".debug_line")
            .is_some_and(|s| s.size() > 0)
    })
    .unwrap_or(false)
}

/// The CRC-32 of a whole file, read in pieces, as `.gnu_debuglink` records it.
fn crc32_of(path: &Path) -> Option<u32> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).ok()?;
    let mut crc = flate2::Crc::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Some(crc.sum()),
            Ok(n) => crc.update(&buf[..n]),
            // A CPU profile's SIGPROF may interrupt the read.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
}

fn lookup(obj: &mut Object, addr: u64) -> Vec<Frame> {
    if obj.loader.is_none() && !obj.unreadable {
        obj.loader = DebugInfo::open(&obj.debug_path);
        obj.unreadable = obj.loader.is_none();
    }
    let Some(loader) = &mut obj.loader else {
        return Vec::new();
    };
    let probe = addr.wrapping_sub(obj.bias);
    let mut out: Vec<Frame> = loader
        .frames(probe)
        .into_iter()
        .map(|f| Frame {
            function: demangle(&f.name).into(),
            system_name: f.name.into(),
            file: f.file.map(Arc::from),
            line: f.line,
        })
        .collect();
    // The symbol table names the function the address is really in with its full path, while
    // DWARF built with line tables only knows short names ("insert" for "cache::Map::insert").
    if let Some(sym) = loader.symbol(probe) {
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
    fn refreshing_keeps_the_objects_already_open() {
        let mut s = Symbolizer::new();
        let opened = s.opened_objects();
        assert!(opened >= 1);
        // Every profile refreshes: parsing every object's debug info again each time took
        // 56 MiB more for one profile of the demo, and as much CPU as the first profile.
        s.refresh();
        s.refresh();
        assert_eq!(
            s.opened_objects(),
            opened,
            "objects opened again on refresh"
        );
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
