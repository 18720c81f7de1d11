//! The server serves whatever source it is given (`Options::source`): what a source's snapshot
//! holds is what the profiles show, and a source's failure is a clear HTTP error, not an empty
//! profile.

mod common;

use common::request_to;
use heapsight::{Snapshot, SnapshotSource, SourceError, StackStore, StackTotals, OBJECT_UNIT};
use heapsight_profile::Profile;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

/// A function whose address names the fixed source's one stack.
#[inline(never)]
fn marker_of_the_fixed_source() -> u64 {
    std::hint::black_box(7)
}

/// One stack holding 3 objects, 3000 bytes, of 5 allocated (5000 bytes).
struct FixedSource;

impl SnapshotSource for FixedSource {
    fn name(&self) -> &str {
        "fixed test source"
    }

    fn snapshot(&self) -> Result<Snapshot, SourceError> {
        let here = marker_of_the_fixed_source as fn() -> u64 as usize as u64;
        // The source's own stack store, as any source other than the sampler keeps one.
        static STACKS: OnceLock<Arc<StackStore>> = OnceLock::new();
        let stacks = STACKS.get_or_init(|| Arc::new(StackStore::new()));
        let id = stacks.intern(&[here + 1]).expect("room in the stack store");
        let totals = StackTotals {
            alloc_objects_fx: 5 * OBJECT_UNIT,
            alloc_space: 5000,
            free_objects_fx: 2 * OBJECT_UNIT,
            free_space: 2000,
            alloc_samples: 5,
            alloc_sample_bytes: 5000,
            free_samples: 2,
            free_sample_bytes: 2000,
        };
        Ok(Snapshot {
            time: SystemTime::now(),
            duration: None,
            sample_rate: 1,
            stacks: vec![(id, totals)],
            blocks: Vec::new(),
            frames: stacks.clone(),
        })
    }
}

struct BrokenSource(SourceError);

impl SnapshotSource for BrokenSource {
    fn name(&self) -> &str {
        "broken test source"
    }

    fn snapshot(&self) -> Result<Snapshot, SourceError> {
        Err(self.0.clone())
    }
}

#[test]
fn profiles_hold_what_the_source_gives() {
    let server = heapsight_server::Options::new()
        .source(FixedSource)
        .without_history()
        .spawn("127.0.0.1:0")
        .unwrap();
    let reply = request_to(server.local_addr(), "GET /debug/pprof/heap HTTP/1.1", b"");
    assert_eq!(reply.status, 200);
    let p = Profile::from_pprof_bytes(&reply.body).unwrap();
    assert_eq!(p.samples.len(), 1);
    assert_eq!(p.total("inuse_space"), 3000);
    assert_eq!(p.total("alloc_objects"), 5);
    assert!(p
        .stack_names(&p.samples[0])
        .iter()
        .any(|n| n.ends_with("marker_of_the_fixed_source")));
    let index = request_to(server.local_addr(), "GET /debug/pprof/ HTTP/1.1", b"");
    assert!(
        String::from_utf8_lossy(&index.body).contains("heap profiles from the fixed test source")
    );
}

#[test]
fn a_source_that_is_not_there_is_501_and_one_that_fails_is_500() {
    for (error, status) in [
        (
            SourceError::not_enabled("no profiler in this process: turn it on"),
            501,
        ),
        (SourceError::failed("the dump was cut short"), 500),
    ] {
        let message = error.message.clone();
        let server = heapsight_server::Options::new()
            .source(BrokenSource(error))
            .spawn("127.0.0.1:0")
            .unwrap();
        for path in [
            "/debug/pprof/heap",
            "/debug/pprof/allocs?seconds=1",
            "/debug/pprof/heap?debug=1",
            "/debug/pprof/ui/api/tree",
            "/debug/pprof/ui/api/growing",
        ] {
            let reply = request_to(server.local_addr(), &format!("GET {path} HTTP/1.1"), b"");
            assert_eq!(reply.status, status, "{path}");
            assert_eq!(reply.header("x-go-pprof"), Some("1"), "{path}");
            assert!(
                String::from_utf8_lossy(&reply.body).contains(&message),
                "{path}"
            );
        }
        // The history could not record either, and says why.
        let reply = request_to(
            server.local_addr(),
            "GET /debug/pprof/ui/api/snapshots HTTP/1.1",
            b"",
        );
        let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(json["source"], "broken test source");
        assert_eq!(json["error"], message.as_str());
        assert_eq!(json["snapshots"].as_array().unwrap().len(), 0);
    }
}

/// The fixed source, saying its stacks come out short as the sampler does in a build without
/// frame pointers.
struct ShortStacksSource;

impl SnapshotSource for ShortStacksSource {
    fn name(&self) -> &str {
        "short-stacked test source"
    }

    fn snapshot(&self) -> Result<Snapshot, SourceError> {
        FixedSource.snapshot()
    }

    fn warnings(&self) -> Vec<String> {
        vec![heapsight::SHORT_STACKS.to_string()]
    }
}

#[test]
fn a_sources_warnings_are_on_the_index_page_and_in_the_timeline() {
    for (source, warned) in [
        (Arc::new(ShortStacksSource) as Arc<dyn SnapshotSource>, true),
        (Arc::new(FixedSource), false),
    ] {
        let server = heapsight_server::Options::new()
            .source(source)
            .spawn("127.0.0.1:0")
            .unwrap();
        let index = request_to(server.local_addr(), "GET /debug/pprof/ HTTP/1.1", b"").text();
        assert_eq!(
            index.contains("<strong>Warning:</strong> most recorded stacks are 3 frames or fewer"),
            warned,
            "{index}"
        );
        assert_eq!(index.contains("force-frame-pointers=yes"), warned);
        let timeline = request_to(
            server.local_addr(),
            "GET /debug/pprof/ui/api/snapshots HTTP/1.1",
            b"",
        );
        let json: serde_json::Value = serde_json::from_slice(&timeline.body).unwrap();
        let warnings = json["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), usize::from(warned), "{json}");
        server.shutdown();
    }
}
