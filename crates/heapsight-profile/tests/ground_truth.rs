//! Ground truth for heapsight's sampler: the known heap of `common/known_heap.rs`, estimated at a
//! 64 KiB rate. The profile is read back both by decoding it and through `go tool pprof`.

mod common;
#[path = "common/known_heap.rs"]
mod known_heap;

use common::{assert_no_symbolization_warnings, go_pprof, temp_file};
use heapsight_profile::{HeapView, Profile};

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

#[test]
fn estimates_match_what_each_site_really_holds() {
    heapsight::set_sample_rate(known_heap::RATE);
    let held = known_heap::build();

    let mut bytes = Vec::new();
    heapsight_profile::write_heap_profile(&mut bytes).unwrap();
    let profile = Profile::from_pprof_bytes(&bytes).expect("our own profile decodes");
    known_heap::check(&profile);

    // The same numbers through the real pprof, which must find names and need no symbolization.
    let path = temp_file("ground-truth-heap.pb.gz", &bytes);
    let (top, stderr) = go_pprof(&["-top", "-nodecount=400", path.to_str().unwrap()]);
    assert_no_symbolization_warnings(&stderr);
    assert!(top.contains("Type: inuse_space"), "{top}");
    for (name, _) in known_heap::SITES {
        assert!(top.contains(name), "pprof -top lacks {name}:\n{top}");
    }

    drop(held);
}

#[test]
fn the_allocs_profile_opens_on_alloc_space() {
    let p = heapsight_profile::heap_profile(HeapView::Allocs);
    let path = temp_file("allocs.pb.gz", &p.to_pprof_bytes());
    let (top, stderr) = go_pprof(&["-top", path.to_str().unwrap()]);
    assert_no_symbolization_warnings(&stderr);
    assert!(top.contains("Type: alloc_space"), "{top}");
}
