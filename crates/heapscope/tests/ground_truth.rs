//! Ground truth: known amounts kept live at distinct call sites, estimated at a 64 KiB rate.
//!
//! Every site's in-use estimate must be within 15% of what it really holds and the total within
//! 7%; a site that allocated and freed everything must show about nothing in use but its full
//! allocated volume. The profile is read back both by decoding it and through `go tool pprof`.

mod common;

use common::{assert_close, assert_no_symbolization_warnings, go_pprof, site, temp_file};
use heapscope::{HeapView, Profile};

#[global_allocator]
static GLOBAL: heapscope::Sampler<std::alloc::System> = heapscope::Sampler::new(std::alloc::System);

const RATE: usize = 64 * 1024;
const SMALL: (usize, usize) = (400_000, 128); // 51 MB of 128-byte objects
const MEDIUM: (usize, usize) = (6_000, 8 * 1024); // 49 MB of 8 KiB objects
const MIB: (usize, usize) = (48, 1 << 20); // 48 MiB of 1 MiB objects
const HUGE: (usize, usize) = (3, 40 << 20); // 120 MiB of objects over 32 MiB
const CHURN: (usize, usize) = (25_600, 4096); // 100 MiB allocated and freed

#[inline(never)]
fn site_small(keep: &mut Vec<Box<[u8]>>) {
    for i in 0..SMALL.0 {
        keep.push(vec![i as u8; SMALL.1].into_boxed_slice());
    }
}

#[inline(never)]
fn site_medium(keep: &mut Vec<Box<[u8]>>) {
    for i in 0..MEDIUM.0 {
        keep.push(vec![i as u8; MEDIUM.1].into_boxed_slice());
    }
}

#[inline(never)]
fn site_mib(keep: &mut Vec<Box<[u8]>>) {
    for i in 0..MIB.0 {
        keep.push(vec![i as u8; MIB.1].into_boxed_slice());
    }
}

#[inline(never)]
fn site_huge(keep: &mut Vec<Box<[u8]>>) {
    for i in 0..HUGE.0 {
        keep.push(vec![i as u8; HUGE.1].into_boxed_slice());
    }
}

#[inline(never)]
fn site_churn() {
    for i in 0..CHURN.0 {
        std::hint::black_box(vec![i as u8; CHURN.1]);
    }
}

#[test]
fn estimates_match_what_each_site_really_holds() {
    heapscope::set_sample_rate(RATE);
    // The containers are sized up front, here, so the sites allocate only their objects.
    let mut small = Vec::with_capacity(SMALL.0);
    let mut medium = Vec::with_capacity(MEDIUM.0);
    let mut mib = Vec::with_capacity(MIB.0);
    let mut huge = Vec::with_capacity(HUGE.0);
    site_small(&mut small);
    site_medium(&mut medium);
    site_mib(&mut mib);
    site_huge(&mut huge);
    site_churn();

    let mut bytes = Vec::new();
    heapscope::write_heap_profile(&mut bytes).unwrap();
    let profile = Profile::from_pprof_bytes(&bytes).expect("our own profile decodes");

    let sites = [
        ("site_small", SMALL),
        ("site_medium", MEDIUM),
        ("site_mib", MIB),
        ("site_huge", HUGE),
    ];
    let mut total_estimate = 0;
    let mut total_truth = 0;
    for (name, (count, size)) in sites {
        let truth = (count * size) as i64;
        let v = site(&profile, &format!("ground_truth::{name}"));
        assert_close(&format!("{name} inuse_space"), v[3], truth, 0.15);
        total_estimate += v[3];
        total_truth += truth;
    }
    assert_close("total inuse_space", total_estimate, total_truth, 0.07);

    let churn = site(&profile, "ground_truth::site_churn");
    let churned = (CHURN.0 * CHURN.1) as i64;
    assert_close("site_churn alloc_space", churn[1], churned, 0.15);
    assert!(
        churn[3].abs() < churned / 100,
        "site_churn still holds {} bytes",
        churn[3]
    );

    // The same numbers through the real pprof, which must find names and need no symbolization.
    let path = temp_file("ground-truth-heap.pb.gz", &bytes);
    let (top, stderr) = go_pprof(&["-top", "-nodecount=400", path.to_str().unwrap()]);
    assert_no_symbolization_warnings(&stderr);
    assert!(top.contains("Type: inuse_space"), "{top}");
    for (name, _) in sites {
        assert!(
            top.contains(&format!("ground_truth::{name}")),
            "pprof -top lacks {name}:\n{top}"
        );
    }

    drop((small, medium, mib, huge));
}

#[test]
fn the_allocs_profile_opens_on_alloc_space() {
    let p = Profile::heap(&heapscope::snapshot(), HeapView::Allocs);
    let path = temp_file("allocs.pb.gz", &p.to_pprof_bytes());
    let (top, stderr) = go_pprof(&["-top", path.to_str().unwrap()]);
    assert_no_symbolization_warnings(&stderr);
    assert!(top.contains("Type: alloc_space"), "{top}");
}
