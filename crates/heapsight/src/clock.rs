//! The coarse clock sampled blocks are stamped with when they are allocated.
//!
//! A stamp is the kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`, read from the vDSO
//! without a system call) in ticks of [`TICK`], cut to 32 bits. It is read on the sampled path
//! only: an allocation that is not sampled never looks at the clock. Stamp 0 means "no block"
//! (a slot on the free list), so a real stamp that comes out 0 is taken as 1.
//!
//! Ages are differences of stamps, taken modulo 2^32 ticks, and a difference past 2^31 ticks is
//! a block stamped after the clocks were read (during a snapshot's scan), taken as age 0. So ages
//! are right for blocks younger than 2^31 ticks (248 days), longer than a service keeps a block
//! in practice.

use std::time::{Duration, SystemTime};

/// One tick of the stamp clock. The coarse clock itself advances every few milliseconds.
pub(crate) const TICK: Duration = Duration::from_millis(10);
const TICKS_PER_SECOND: u64 = 1_000_000_000 / TICK.as_nanos() as u64;
const NANOS_PER_TICK: u64 = TICK.as_nanos() as u64;

/// Now, as a stamp (never 0).
#[inline]
pub(crate) fn stamp() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own and nothing else; with a clock id the
    // kernel knows, it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    let ticks = (ts.tv_sec as u64)
        .wrapping_mul(TICKS_PER_SECOND)
        .wrapping_add(ts.tv_nsec as u64 / NANOS_PER_TICK);
    (ticks as u32).max(1)
}

/// Turns stamps into wall-clock times, against one reading of both clocks.
pub(crate) struct Epoch {
    stamp: u32,
    time: SystemTime,
}

impl Epoch {
    pub(crate) fn now() -> Epoch {
        Epoch {
            stamp: stamp(),
            time: SystemTime::now(),
        }
    }

    /// When a block stamped `at` was allocated.
    pub(crate) fn time_of(&self, at: u32) -> SystemTime {
        let ticks = self.stamp.wrapping_sub(at);
        if ticks > u32::MAX / 2 {
            return self.time;
        }
        let age = ticks as u64 * NANOS_PER_TICK;
        self.time
            .checked_sub(Duration::from_nanos(age))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_advance_with_the_clock_and_ages_survive_wrapping() {
        let a = stamp();
        std::thread::sleep(Duration::from_millis(120));
        let b = stamp();
        let ticks = b.wrapping_sub(a) as u64;
        // 120 ms is 12 ticks; the coarse clock may lag a few milliseconds at either end.
        assert!((10..=20).contains(&ticks), "{ticks} ticks in 120 ms");

        let epoch = Epoch {
            stamp: 5,
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        };
        // Stamped 10 ticks before the clock wrapped to 5.
        let at = u32::MAX - 4;
        assert_eq!(
            epoch.time_of(at),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000) - TICK * 10
        );
        // Stamped just after the clocks were read: age 0, not 248 days.
        assert_eq!(epoch.time_of(7), epoch.time);
        assert_eq!((TICK * (u32::MAX / 2)).as_secs() / 86_400, 248);
    }
}
