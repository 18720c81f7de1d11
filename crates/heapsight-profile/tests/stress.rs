//! Eight threads allocate, grow, shrink and free blocks (small ones in the sampled-block region
//! and large ones in the inner allocator), handing half of them to a neighbour to free, while
//! another thread writes heap profiles in a loop. Nothing may crash or hang, and once every
//! block is freed the estimated in-use bytes of those stacks must be back to zero.

use heapsight_profile::{HeapView, Profile};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

const THREADS: usize = 8;
const STEPS: usize = 20_000;

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[inline(never)]
fn stress_worker(
    id: usize,
    to_neighbour: mpsc::Sender<Vec<u8>>,
    from_neighbour: mpsc::Receiver<Vec<u8>>,
) {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (id as u64 + 1);
    let mut mine: Vec<Vec<u8>> = Vec::new();
    for step in 0..STEPS {
        let r = next(&mut rng);
        let size = match r % 100 {
            0..=79 => 16 + (r >> 8) as usize % 240,
            80..=98 => 1024 + (r >> 8) as usize % (63 * 1024),
            _ => (256 << 10) + (r >> 8) as usize % (768 << 10),
        };
        let mut block = vec![step as u8; size];
        match (r >> 40) % 4 {
            // Grow (region -> region, region -> large, large -> large).
            0 => block.resize(size * 2 + 1, 1),
            // Shrink, possibly from a large block into the region.
            1 => {
                block.truncate(size / 3 + 1);
                block.shrink_to_fit();
            }
            _ => {}
        }
        if step % 2 == 0 {
            // Freed by another thread.
            let _ = to_neighbour.send(block);
        } else {
            mine.push(block);
        }
        if mine.len() > 64 {
            mine.drain(..32);
        }
        while let Ok(theirs) = from_neighbour.try_recv() {
            drop(theirs);
        }
    }
    drop(to_neighbour);
    for theirs in from_neighbour {
        drop(theirs);
    }
}

#[test]
fn concurrent_alloc_realloc_free_and_profiling_end_with_nothing_in_use() {
    heapsight::set_sample_rate(512);
    let stop = Arc::new(AtomicBool::new(false));
    let profiler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut out = Vec::new();
                heapsight_profile::write_heap_profile(&mut out).unwrap();
                Profile::from_pprof_bytes(&out).expect("a profile written under load decodes");
                written += 1;
            }
            written
        })
    };
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel()).unzip();
    let mut receivers: Vec<Option<mpsc::Receiver<Vec<u8>>>> =
        receivers.into_iter().map(Some).collect();
    let workers: Vec<_> = (0..THREADS)
        .map(|i| {
            let to = senders[(i + 1) % THREADS].clone();
            let from = receivers[i].take().unwrap();
            std::thread::spawn(move || stress_worker(i, to, from))
        })
        .collect();
    drop(senders);
    for w in workers {
        w.join().expect("worker finished");
    }
    stop.store(true, Ordering::Relaxed);
    let written = profiler.join().unwrap();
    assert!(written > 0, "the profiler thread wrote no profile");

    let profile = heapsight_profile::heap_profile(HeapView::InUse);
    let (mut allocated, mut inuse) = (0i64, 0i64);
    for s in &profile.samples {
        if profile
            .stack_names(s)
            .iter()
            .any(|n| n.ends_with("stress_worker"))
        {
            allocated += s.values[1];
            inuse += s.values[3];
        }
    }
    eprintln!(
        "profiles written: {written}; allocated {allocated} B, in use after freeing {inuse} B"
    );
    assert!(
        allocated > 100 << 20,
        "the workers were sampled ({allocated} B)"
    );
    assert!(
        inuse.abs() <= allocated / 10_000,
        "{inuse} B still in use after everything was freed"
    );
    let stats = heapsight::stats();
    assert_eq!(stats.dropped_samples(), 0, "{stats:?}");
}
