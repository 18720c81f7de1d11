//! The hook keeps working where allocator hooks usually break: threads that exit, allocations
//! made by thread-local destructors while thread-local storage is being torn down, and `fork`.
//! Every allocation is sampled (rate 1) so each case really goes through the slow path.
//! Runs without the test harness so that `fork` happens in a process we control.

use heapsight_profile::HeapView;
use std::cell::RefCell;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

struct AllocatesOnDrop(Vec<u8>);

impl Drop for AllocatesOnDrop {
    fn drop(&mut self) {
        // Runs during thread exit, after other thread-locals may already be gone.
        let again = vec![9u8; 4096];
        self.0.extend_from_slice(&again);
        LEAKED_FROM_DESTRUCTOR.with(|_| ());
        std::hint::black_box(&self.0);
    }
}

thread_local! {
    static ON_EXIT: RefCell<Option<AllocatesOnDrop>> = const { RefCell::new(None) };
    static LEAKED_FROM_DESTRUCTOR: Vec<u8> = Vec::with_capacity(64);
}

#[inline(never)]
fn threads_that_exit() {
    for round in 0..8 {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                std::thread::spawn(move || {
                    let v: Vec<Vec<u8>> = (0..100)
                        .map(|j| vec![(i + j + round) as u8; 64 + j * 8])
                        .collect();
                    v.len()
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 100);
        }
    }
}

#[inline(never)]
fn allocation_in_a_thread_local_destructor() {
    let handles: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                ON_EXIT.with(|cell| *cell.borrow_mut() = Some(AllocatesOnDrop(vec![1u8; 100])));
            })
        })
        .collect();
    for h in handles {
        h.join()
            .expect("a thread whose TLS destructor allocates exits cleanly");
    }
}

#[inline(never)]
fn allocation_after_fork() {
    // SAFETY: the child only allocates, builds a profile and calls _exit; the hook's tables are
    // lock-free and no other thread of ours holds the symbolizer at this point.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let kept: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 512]).collect();
        let profile = heapsight_profile::heap_profile(HeapView::InUse);
        let ok = !profile.samples.is_empty()
            && kept.len() == 1000
            && !profile.to_pprof_bytes().is_empty();
        // SAFETY: _exit ends the child without running the parent's atexit handlers twice.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child we just forked.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
}

fn main() {
    heapsight::set_sample_rate(1);
    let cases: [(&str, fn()); 3] = [
        ("threads_that_exit", threads_that_exit),
        (
            "allocation_in_a_thread_local_destructor",
            allocation_in_a_thread_local_destructor,
        ),
        ("allocation_after_fork", allocation_after_fork),
    ];
    for (name, case) in cases {
        case();
        println!("test {name} ... ok");
    }
    heapsight::set_sample_rate(heapsight::DEFAULT_SAMPLE_RATE);
    let stats = heapsight::stats();
    assert_eq!(stats.dropped_samples(), 0, "{stats:?}");
    // The destructors' allocations were sampled and attributed to the destructor.
    let profile = heapsight_profile::heap_profile(HeapView::Allocs);
    let in_destructor = profile.samples.iter().any(|s| {
        profile
            .stack_names(s)
            .iter()
            .any(|n| n.contains("AllocatesOnDrop"))
    });
    assert!(in_destructor, "no sample from the thread-local destructor");
    println!("edge_cases: {} passed, 0 failed", cases.len() + 1);
}
