//! jemalloc's `heap_v2` dump parser: any bytes parse to a dump or to an error naming the line;
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = heapsight_jemalloc::dump::parse(data);
});
