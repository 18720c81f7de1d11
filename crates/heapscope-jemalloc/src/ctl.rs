//! jemalloc's profiler controls, through `mallctl`: is it there, is it on, at what rate, and a
//! dump of what it recorded.

use heapscope::SourceError;
use std::ffi::{c_char, CString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::FromRawFd;
use tikv_jemalloc_ctl::raw;

/// How users turn the profiler on, for error messages.
const HOW_TO_ENABLE: &str = "start the process with jemalloc's prof:true option, e.g. \
    _RJEM_MALLOC_CONF=prof:true,prof_accum:true (or export a _rjem_malloc_conf static; see \
    heapscope_jemalloc's docs)";

/// What jemalloc's profiler is doing in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Whether allocations are being sampled now (`prof.active`).
    pub active: bool,
    /// The mean bytes between samples (`2^prof.lg_sample`).
    pub sample_rate: u64,
    /// Whether jemalloc counts every sampled allocation, not only those still in use
    /// (`opt.prof_accum`). Without it the allocs profile holds only net growth.
    pub accumulating: bool,
}

/// Reads a `mallctl` value.
fn read<T: Copy>(name: &'static [u8]) -> Result<T, tikv_jemalloc_ctl::Error> {
    // SAFETY: every name passed here is a NUL-terminated mallctl name whose value has type T
    // (bool for the `opt.prof*` and `prof.active` flags, size_t for `prof.lg_sample`).
    unsafe { raw::read(name) }
}

/// Fails unless jemalloc was built with profiling and started with it on.
pub fn ensure_enabled() -> Result<(), SourceError> {
    match read::<bool>(b"opt.prof\0") {
        Ok(true) => Ok(()),
        Ok(false) => Err(SourceError::not_enabled(format!(
            "jemalloc's profiler is off in this process: {HOW_TO_ENABLE}"
        ))),
        Err(e) => Err(SourceError::not_enabled(format!(
            "jemalloc in this process has no profiler ({e}): build it with \
             tikv-jemallocator's \"profiling\" feature, then {HOW_TO_ENABLE}"
        ))),
    }
}

/// The profiler's state.
///
/// ```no_run
/// let status = heapscope_jemalloc::status()?;
/// println!("sampling every {} bytes on average", status.sample_rate);
/// # Ok::<(), heapscope::SourceError>(())
/// ```
pub fn status() -> Result<Status, SourceError> {
    ensure_enabled()?;
    let failed = |e: tikv_jemalloc_ctl::Error| {
        SourceError::failed(format!("reading jemalloc's profiler state failed: {e}"))
    };
    let lg_sample = read::<usize>(b"prof.lg_sample\0").map_err(failed)?;
    Ok(Status {
        active: read::<bool>(b"prof.active\0").map_err(failed)?,
        sample_rate: 1u64.checked_shl(lg_sample as u32).unwrap_or(u64::MAX),
        accumulating: read::<bool>(b"opt.prof_accum\0").map_err(failed)?,
    })
}

/// Starts (`true`) or pauses (`false`) sampling. What was recorded stays.
pub fn set_active(active: bool) -> Result<(), SourceError> {
    ensure_enabled()?;
    // SAFETY: `prof.active` takes a bool.
    unsafe { raw::write(b"prof.active\0", active) }
        .map_err(|e| SourceError::failed(format!("setting prof.active failed: {e}")))
}

/// Sets the mean bytes between samples, rounded to the nearest power of two (jemalloc keeps it
/// as a base-2 logarithm), and returns the rate set.
///
/// jemalloc applies a new rate by resetting its profile (`prof.reset`): every sample recorded so
/// far is forgotten, and objects allocated before the change no longer appear in use. Change
/// the rate at start, not while hunting a leak.
pub fn set_sample_rate(bytes: u64) -> Result<u64, SourceError> {
    ensure_enabled()?;
    let lg = nearest_log2(bytes);
    // SAFETY: `prof.reset` takes a size_t, the new lg_prof_sample.
    unsafe { raw::write(b"prof.reset\0", lg as usize) }
        .map_err(|e| SourceError::failed(format!("resetting jemalloc's profile failed: {e}")))?;
    Ok(1 << lg)
}

/// The power of two nearest `bytes` (at least 1, at most 2^62), as its logarithm.
fn nearest_log2(bytes: u64) -> u32 {
    let bytes = bytes.clamp(1, 1 << 62);
    let below = 63 - bytes.leading_zeros();
    if bytes - (1 << below) > (1u64 << below) / 2 {
        below + 1
    } else {
        below
    }
}

/// jemalloc's dump of its profile, as text. It is written to an anonymous in-memory file
/// (`memfd_create`), so nothing reaches the disk and nothing is left behind, whatever happens.
///
/// Blocks while jemalloc writes: call it off async worker threads.
pub fn dump() -> Result<Vec<u8>, SourceError> {
    ensure_enabled()?;
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        SourceError::failed(format!("dumping jemalloc's profile failed: {what}: {e}"))
    };
    // SAFETY: the name is a NUL-terminated string and the flags are valid; memfd_create has no
    // other preconditions.
    let fd = unsafe { libc::memfd_create(c"heapscope-jemalloc-dump".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(failed("memfd_create", &std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create and nothing else owns it; the File closes
    // it on every path out of this function.
    let mut file = unsafe { File::from_raw_fd(fd) };
    let path = CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in a path we format");
    let name: *const c_char = path.as_ptr();
    // SAFETY: `prof.dump` takes a `const char *` file name; `path` outlives the call.
    unsafe { raw::write(b"prof.dump\0", name) }.map_err(|e| failed("prof.dump", &e))?;
    let mut text = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut text))
        .map_err(|e| failed("reading it back", &e))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_round_to_the_nearest_power_of_two() {
        assert_eq!(nearest_log2(0), 0);
        assert_eq!(nearest_log2(1), 0);
        assert_eq!(nearest_log2(512 * 1024), 19);
        assert_eq!(nearest_log2(500 * 1000), 19);
        assert_eq!(nearest_log2(3 * 1024), 11, "a tie goes down");
        assert_eq!(nearest_log2(3 * 1024 + 1), 12);
        assert_eq!(nearest_log2(u64::MAX), 62);
    }
}
