//! How much of the process the profiler itself holds: `GET .../ui/api/memory`, and the
//! sentence the index page shows.

use crate::respond::json;
use crate::state::Settings;
use axum::extract::State;
use axum::response::Response;
use heapsight::own::OwnMemory;
use heapsight::SnapshotSource;
use serde::Serialize;
use std::sync::Arc;

/// The process's resident memory and, where the source measures it, the profiler's share.
#[derive(Serialize)]
pub(crate) struct Memory {
    /// The process's resident anonymous memory (heap, stacks, the profiler's tables), bytes.
    rss_anon: Option<u64>,
    /// The process's resident file-backed memory (code, and debug info mapped to name frames).
    rss_file: Option<u64>,
    /// The profiler's own memory; `null` where the source does not measure it.
    profiler: Option<Profiler>,
}

#[derive(Serialize)]
struct Profiler {
    total: u64,
    parts: Vec<Part>,
}

#[derive(Serialize)]
struct Part {
    part: &'static str,
    bytes: u64,
}

impl Memory {
    pub(crate) fn now(source: &dyn SnapshotSource) -> Memory {
        let (rss_anon, rss_file) = process_rss();
        Memory {
            rss_anon,
            rss_file,
            profiler: source.own_memory().map(|m: OwnMemory| Profiler {
                total: m.total(),
                parts: m
                    .parts()
                    .into_iter()
                    .map(|(p, bytes)| Part {
                        part: p.name(),
                        bytes,
                    })
                    .collect(),
            }),
        }
    }

    /// "The profiler holds 6.2 MiB of this process's 48.0 MiB of anonymous memory (tables
    /// 2.1 MiB, symbolizer 3.9 MiB, ...)."
    pub(crate) fn sentence(&self) -> String {
        let Some(p) = &self.profiler else {
            return match self.rss_anon {
                Some(a) => format!(
                    "This process holds {} of anonymous memory; this source does not measure the profiler's share.",
                    mib(a)
                ),
                None => String::new(),
            };
        };
        let parts: Vec<String> = p
            .parts
            .iter()
            .filter(|x| x.bytes > 0)
            .map(|x| format!("{} {}", x.part, mib(x.bytes)))
            .collect();
        let of = match self.rss_anon {
            Some(a) => format!(" of this process's {} of anonymous memory", mib(a)),
            None => String::new(),
        };
        format!(
            "The profiler itself holds {}{of} ({}).",
            mib(p.total),
            parts.join(", ")
        )
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// RssAnon and RssFile from `/proc/self/status`, in bytes.
pub(crate) fn process_rss() -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    (field("RssAnon:"), field("RssFile:"))
}

/// `GET .../ui/api/memory`.
pub(crate) async fn memory(State(s): State<Arc<Settings>>) -> Response {
    let source = s.source.clone();
    let m = crate::worker::run_async(move || Memory::now(&*source))
        .await
        .unwrap_or(Memory {
            rss_anon: None,
            rss_file: None,
            profiler: None,
        });
    json(&m)
}
