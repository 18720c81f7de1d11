//! The sampling decision: a Poisson process over allocated bytes, and the weight that undoes it.
//!
//! Every thread walks along the bytes it allocates. Sample points fall on that line at exponential
//! distances with mean `R` (the sample rate), so an allocation of `Z` bytes is sampled with
//! probability `1 - exp(-Z/R)` whatever its position, its size class or the thread's history.
//! Each sampled allocation is weighted by the inverse of that probability *on its own*, before
//! anything is summed, which makes every per-stack estimate unbiased: summing sampled bytes per
//! stack first and scaling the sum afterwards is not, when one stack allocates several sizes.
//!
//! Nothing here allocates, locks or panics: it runs inside the allocator hook.

/// Fractional bits of the fixed-point object weights kept in the tables.
///
/// Weights are stored as integers so that a free subtracts exactly what its allocation added,
/// with no floating-point drift over billions of operations.
pub(crate) const WEIGHT_ONE: u64 = 1 << 16;

/// A small, fast generator (xorshift64*) for sample distances. Statistical quality is ample for
/// drawing exponentials; it needs no allocation and no system call once seeded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from a seed; a zero seed is replaced, since xorshift never leaves zero.
    pub(crate) fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniform draw from (0, 1]: never zero, so its logarithm is finite.
    fn next_open_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// The distance in bytes to the next sample point: exponential with mean `rate`.
    pub(crate) fn next_sample_distance(&mut self, rate: u64) -> u64 {
        let d = -self.next_open_unit().ln() * rate as f64;
        // An exponential tail beyond 2^62 bytes is as good as never; clamp to keep it integral.
        d.min((1u64 << 62) as f64) as u64
    }
}

/// The weight of one sampled allocation of `size` bytes at sample rate `rate`:
/// `1 / (1 - exp(-size/rate))`, the inverse of its chance of being sampled.
///
/// At rate 1 every allocation is recorded and weighs exactly 1.
///
/// ```
/// // 1 MiB at the default 512 KiB rate is sampled with chance 1 - e^-2.
/// let w = heapsight::sample_weight(1 << 20, 512 << 10);
/// assert!((w - 1.0 / (1.0 - (-2.0f64).exp())).abs() < 1e-12);
/// ```
pub fn sample_weight(size: u64, rate: u64) -> f64 {
    if rate <= 1 {
        return 1.0;
    }
    let x = size as f64 / rate as f64;
    // -expm1(-x) is 1 - e^-x without cancellation for small x.
    1.0 / -(-x).exp_m1()
}

/// [`sample_weight`] in the tables' fixed point.
pub(crate) fn weight_fixed(size: u64, rate: u64) -> u64 {
    let w = sample_weight(size, rate) * WEIGHT_ONE as f64;
    if w >= u64::MAX as f64 {
        u64::MAX
    } else {
        w.round() as u64
    }
}

/// The estimated bytes one sample stands for: its size times its weight, rounded.
///
/// Allocation and free both call this with the same stored inputs, so they cancel exactly.
pub(crate) fn weighted_bytes(size: u64, weight_fx: u64) -> u64 {
    let b = (size as u128 * weight_fx as u128 + (WEIGHT_ONE as u128 / 2)) >> 16;
    b.min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_of_one_mebibyte_at_default_rate_matches_the_closed_form() {
        let w = sample_weight(1 << 20, 512 << 10);
        assert!((w - 1.156_517_642_749_665).abs() < 1e-9, "{w}");
    }

    #[test]
    fn weight_is_about_rate_over_size_for_small_objects_and_one_for_huge_ones() {
        let w = sample_weight(16, 512 << 10);
        assert!((w / (32768.0 + 0.5) - 1.0).abs() < 1e-3, "{w}");
        assert!((sample_weight(64 << 20, 512 << 10) - 1.0).abs() < 1e-12);
        assert_eq!(sample_weight(3, 1), 1.0);
    }

    #[test]
    fn weighted_bytes_round_trip_through_fixed_point() {
        let fx = weight_fixed(1 << 20, 512 << 10);
        let bytes = weighted_bytes(1 << 20, fx);
        let exact = (1u64 << 20) as f64 * sample_weight(1 << 20, 512 << 10);
        assert!(
            (bytes as f64 - exact).abs() / exact < 1e-4,
            "{bytes} vs {exact}"
        );
    }

    #[test]
    fn exponential_draws_have_the_requested_mean() {
        let mut rng = Rng::new(0x1234_5678);
        let rate = 512 * 1024;
        let n = 1_000_000;
        let sum: f64 = (0..n).map(|_| rng.next_sample_distance(rate) as f64).sum();
        let mean = sum / n as f64;
        assert!((mean / rate as f64 - 1.0).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn exponential_draws_are_memoryless() {
        // P(D > 2R) should be e^-2 for an exponential; a fixed interval would give 0 or 1.
        let mut rng = Rng::new(42);
        let rate = 1000;
        let n = 200_000;
        let over = (0..n)
            .filter(|_| rng.next_sample_distance(rate) > 2 * rate)
            .count();
        let p = over as f64 / n as f64;
        assert!((p - (-2.0f64).exp()).abs() < 0.005, "{p}");
    }
}
