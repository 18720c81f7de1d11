//! The pprof decoder behind the UI's uploads: any bytes, raw or gzip-compressed, decode to a
//! profile or to an error within the upload's unpacked limit; never a panic, and never more
//! memory than the limit allows for.
#![no_main]

use heapsight_profile::Profile;
use libfuzzer_sys::fuzz_target;

/// The server's default limit on an upload's unpacked size.
const UNPACKED: u64 = 2 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Profile::from_pprof_bytes_within(data, UNPACKED) {
        // What the tree endpoint reads of every accepted profile.
        for s in &p.samples {
            let _ = p.stack_names(s);
        }
    }
});
