//! The CPU profiler on real threads: time spent in a function shows up on stacks that reach it
//! and its callers, only one profile runs at a time, a profile dropped unfinished frees its
//! place, and its table is the profiler's memory only while it runs.

use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

#[inline(never)]
fn spin_in_the_hot_function(d: Duration) -> u64 {
    let t = Instant::now();
    let mut x = 1u64;
    while t.elapsed() < d {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    x
}

#[inline(never)]
fn the_caller(d: Duration) -> u64 {
    std::hint::black_box(spin_in_the_hot_function(d)) + 1
}

/// Whether `addr` lies in the first 4 KiB of `f`'s code (these functions are small).
fn inside(addr: u64, f: usize) -> bool {
    addr > f as u64 && addr - (f as u64) < 4096
}

#[test]
fn cpu_time_lands_on_the_stacks_that_spent_it() {
    let hot = spin_in_the_hot_function as fn(Duration) -> u64 as usize;
    let caller = the_caller as fn(Duration) -> u64 as usize;

    let profiler = heapsight::start_cpu_profile(250).unwrap();
    assert_eq!(
        heapsight::start_cpu_profile(250).unwrap_err(),
        heapsight::CpuProfileError::Busy
    );
    let workers: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(|| the_caller(Duration::from_millis(600))))
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert!(
        heapsight::stats().own.cpu_profile > 0,
        "the samples' table is resident"
    );
    let profile = profiler.stop();
    assert_eq!(heapsight::stats().own.cpu_profile, 0, "the table is gone");

    let total = profile.samples();
    let in_hot: u64 = profile
        .stacks
        .iter()
        .filter(|(frames, _)| inside(frames[0], hot))
        .map(|(_, n)| n)
        .sum();
    let through_caller: u64 = profile
        .stacks
        .iter()
        .filter(|(frames, _)| {
            inside(frames[0], hot) && frames[1..].iter().any(|&a| inside(a, caller))
        })
        .map(|(_, n)| n)
        .sum();
    // 1.2 s of CPU at 250 Hz is about 300 samples (fewer if the machine is busy).
    assert!(total >= 60, "{total} samples");
    assert!(
        in_hot * 10 >= total * 7,
        "{in_hot} of {total} samples in the hot function"
    );
    assert!(
        through_caller * 10 >= in_hot * 9,
        "{through_caller} of {in_hot} hot samples walked up to the caller"
    );
    assert_eq!(profile.lost, 0);
    assert_eq!(profile.period, Duration::from_millis(4));

    // Dropped unfinished, a profile stops and frees its place.
    let unfinished = heapsight::start_cpu_profile(100).unwrap();
    drop(unfinished);
    let again = heapsight::start_cpu_profile(100).unwrap();
    the_caller(Duration::from_millis(50));
    assert!(again.stop().duration >= Duration::from_millis(50));
}
