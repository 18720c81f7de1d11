//! Ground truth for the jemalloc source: the same known heap heapsight's sampler is checked
//! against (`heapsight-profile/tests/common/known_heap.rs`), sampled by jemalloc at the same 64 KiB rate,
//! dumped, unbiased and served by heapsight-server to the real `go tool pprof`.

#[path = "../../heapsight-profile/tests/common/mod.rs"]
mod common;
#[path = "../../heapsight-profile/tests/common/known_heap.rs"]
mod known_heap;

use common::{go_pprof, stack_through, temp_file};
use heapsight::SnapshotSource;
use heapsight_jemalloc::JemallocSource;
use heapsight_profile::{HeapView, Profile};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Profiling on from the start, every allocation counted (for allocs), 2^16 = 64 KiB apart.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"prof:true,prof_accum:true,lg_prof_sample:16\0";

#[test]
fn estimates_match_what_each_site_really_holds() {
    let status = heapsight_jemalloc::status().expect("profiling is on in this test");
    assert!(status.active && status.accumulating);
    assert_eq!(status.sample_rate, known_heap::RATE as u64);
    let held = known_heap::build();

    let source = JemallocSource::new();
    let snapshot = source.snapshot().expect("jemalloc dumps");
    assert_eq!(snapshot.sample_rate, known_heap::RATE);
    let profile = Profile::heap(&snapshot, HeapView::InUse);
    known_heap::check(&profile);
    assert_eq!(source.dropped_stacks(), 0);
    // The source keeps its own stacks: a process on plain jemalloc never maps the sampler's
    // tables (its stack table and its 7.5 GiB region window).
    assert_eq!(
        heapsight::stats().reserved_bytes,
        0,
        "the sampler's tables were mapped"
    );

    // jemalloc's own frames (named or not) and the allocator plumbing are trimmed: no stack has a
    // function from jemalloc's sources, and none starts in the plumbing.
    let from_jemalloc: Vec<&str> = profile
        .functions
        .iter()
        .filter(|f| f.filename.contains("tikv-jemalloc-sys") || f.name.starts_with("_rjem_"))
        .map(|f| f.name.as_str())
        .collect();
    assert!(
        from_jemalloc.is_empty(),
        "jemalloc's frames left in: {from_jemalloc:?}"
    );
    for s in &profile.samples {
        let names = profile.stack_names(s);
        if let Some(leaf) = names.first() {
            assert!(
                !heapsight_profile::is_plumbing(leaf),
                "an untrimmed stack: {names:?}"
            );
        }
    }
    let small = stack_through(&profile, "known_heap::site_small").expect("a small-object sample");
    assert!(
        small
            .iter()
            .any(|f| f.ends_with("ground_truth::estimates_match_what_each_site_really_holds")),
        "the stack reaches the test function: {small:?}"
    );

    // Served, and read by the real pprof: names, no symbolization, the same view.
    let server = heapsight_server::Options::new()
        .source(JemallocSource::new())
        .without_history()
        .spawn("127.0.0.1:0")
        .unwrap();
    let url = format!("http://{}/debug/pprof/heap", server.local_addr());
    let (top, _) = go_pprof(&["-top", "-nodecount=400", &url]);
    assert!(top.contains("Type: inuse_space"), "{top}");
    for (name, _) in known_heap::SITES {
        assert!(top.contains(name), "pprof -top lacks {name}:\n{top}");
    }
    let path = temp_file(
        "jemalloc-allocs.pb.gz",
        &Profile::heap(&snapshot, HeapView::Allocs).to_pprof_bytes(),
    );
    let (top, _) = go_pprof(&["-top", path.to_str().unwrap()]);
    assert!(
        top.contains("Type: alloc_space") && top.contains("known_heap::site_churn"),
        "{top}"
    );
    drop(held);
}
