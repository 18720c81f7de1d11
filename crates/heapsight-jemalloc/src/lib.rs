//! heapsight-jemalloc: jemalloc's own heap profiler as a source of heapsight snapshots, so a
//! service that already runs on jemalloc gets heapsight's `/debug/pprof` endpoints and web UI
//! without changing its allocator.
//!
//! # Turning jemalloc's profiler on
//!
//! jemalloc samples only if it was built with profiling and started with it on; neither can be
//! changed later.
//!
//! 1. Build: depend on `tikv-jemallocator` with its `profiling` feature (this crate turns that
//!    feature on for the whole build).
//! 2. Start: give jemalloc the option `prof:true`. `prof_accum:true` also counts allocations
//!    that were freed, which the allocs profile needs. Either in the environment, read at start
//!    (tikv-jemallocator prefixes jemalloc's names with `_rjem_`, so the variable is
//!    `_RJEM_MALLOC_CONF`):
//!
//!    ```sh
//!    _RJEM_MALLOC_CONF=prof:true,prof_accum:true,lg_prof_sample:19 ./my-service
//!    ```
//!
//!    or compiled into the program, by exporting jemalloc's `malloc_conf` symbol:
//!
//!    ```
//!    #[global_allocator]
//!    static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
//!
//!    #[allow(non_upper_case_globals)]
//!    #[export_name = "_rjem_malloc_conf"]
//!    pub static malloc_conf: &[u8] = b"prof:true,prof_accum:true,lg_prof_sample:19\0";
//!    # fn main() {}
//!    ```
//!
//! `lg_prof_sample:19` samples every 2^19 = 512 KiB on average, as heapsight and Go do by
//! default. Without `prof:true`, snapshots fail with [`heapsight::SourceErrorKind::NotEnabled`]
//! and a message that says what to set; the server answers `501`.
//!
//! # Serving it
//!
//! ```no_run
//! let app: axum::Router = heapsight_server::Options::new()
//!     .source(heapsight_jemalloc::JemallocSource::new())
//!     .router();
//! ```
//!
//! Every snapshot is a fresh `prof.dump`, written to an in-memory file ([`ctl::dump`]) and
//! parsed ([`dump::parse`]). jemalloc unwinds with libgcc's unwinder, whose cost per sample is
//! several microseconds; `docs/performance.md` compares the two sources.

pub mod ctl;
pub mod dump;
mod source;

pub use ctl::{set_active, set_sample_rate, status, Status};
pub use source::JemallocSource;
