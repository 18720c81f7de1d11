//! A child forked while another thread of its parent holds the symbolizer, or the label table,
//! still writes a heap profile, at once, rather than waiting forever for a lock whose holder it
//! does not have.

use std::io::Write as _;
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

#[inline(never)]
fn kept_by_the_parent() -> Vec<Vec<u8>> {
    (0..64).map(|i| vec![i as u8; 64 << 10]).collect()
}

#[test]
fn a_child_forked_while_the_symbolizer_is_held_writes_its_profile() {
    heapsight::set_sample_rate(16 << 10);
    let kept = kept_by_the_parent();
    let (held, holding) = mpsc::channel();
    let holder = std::thread::spawn(move || {
        heapsight_profile::symbolize::with_symbolizer(|_| {
            held.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(3));
        })
    });
    holding.recv().unwrap();
    let started = Instant::now();
    // SAFETY: the child only writes a profile into memory and leaves with _exit, as a service's
    // forked worker would; it never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let mut out = Vec::new();
        let written = heapsight_profile::write_heap_profile(&mut out);
        let ok = match heapsight_profile::Profile::from_pprof_bytes(&out) {
            Ok(p) if written.is_ok() => {
                let named = p.samples.iter().any(|s| {
                    p.stack_names(s)
                        .iter()
                        .any(|f| f.contains("::kept_by_the_parent"))
                });
                if !named {
                    for s in &p.samples {
                        let _ = writeln!(std::io::stderr(), "child sample: {:?}", p.stack_names(s));
                    }
                }
                named
            }
            other => {
                let _ = writeln!(std::io::stderr(), "child: {written:?}, {:?}", other.err());
                false
            }
        };
        // SAFETY: leaves the child at once, running no destructors or atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    let waited = loop {
        // SAFETY: waits for our own child, without blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(20) {
            // SAFETY: our own child, stuck: end it so the test fails rather than hangs.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the child is stuck: it waited on the parent's symbolizer lock");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(libc::WIFEXITED(status), "child status {status}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "the child's profile names the parent's allocation"
    );
    assert!(
        waited < Duration::from_secs(3),
        "the child did not wait for the parent's holder: {waited:?}"
    );
    holder.join().unwrap();
    drop(kept);
}

#[inline(never)]
fn kept_under_a_label() -> Vec<Vec<u8>> {
    // Not the same body as `kept_by_the_parent`, which the compiler would fold into one.
    (0..48).map(|i| vec![i as u8 + 1; 32 << 10]).collect()
}

#[test]
fn children_forked_while_labels_are_interned_read_the_labels() {
    heapsight::set_sample_rate(16 << 10);
    let tenant = heapsight::Labels::new([("tenant", "acme")]);
    let kept = tenant.run(kept_under_a_label);
    // A thread that interns label sets without pause, so that forks land while it holds the
    // table (it takes the table's lock for every set, new or known).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let interning = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = heapsight::Labels::new([("request", (i % 1000).to_string())]);
                i += 1;
            }
        })
    };
    for fork in 0..200 {
        // SAFETY: the child reads the sampler's heap and its labels, then leaves with _exit; it
        // never returns into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let heap = heapsight::snapshot();
            let acme = heap.inuse_space_under(tenant);
            // SAFETY: leaves the child at once, running no destructors or atexit handlers.
            unsafe { libc::_exit(if acme > 0 { 0 } else { 1 }) };
        }
        let started = Instant::now();
        let mut status = 0;
        loop {
            // SAFETY: waits for our own child, without blocking.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                // SAFETY: our own child, stuck: end it so the test fails rather than hangs.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                panic!("child {fork} is stuck: it waited on the parent's label table");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child {fork} did not find the labelled heap: status {status:#x}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    interning.join().unwrap();
    drop(kept);
}
