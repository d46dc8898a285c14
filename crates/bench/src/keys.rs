//! The key space: how a key index becomes key bytes, and which index each
//! operation touches (uniform, zipfian or sequential).
//!
//! Keys are fixed-size: the index in big-endian bytes, right-aligned and
//! zero-padded to `--key-size`. Every key has the same width, so byte order
//! is index order: `[key(i), key(j))` is exactly the indices `i..j`, which
//! is what the range and watch workloads rely on.

use rand::{Rng, RngExt as _};
use serde::{Deserialize, Serialize};

use crate::error::BenchError;

/// Largest zipfian exponent accepted: past it nearly every draw is the
/// hottest key and the figure measures one key's lock, not the store.
pub const ZIPF_EXPONENT_MAX: f64 = 10.0;

/// A fixed-size key space of `size` keys of `key_size` bytes each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpace {
    size: u64,
    key_size: usize,
    /// Bytes that hold the index; enough for `size` itself, so that
    /// `key(size)` is the exclusive end of the whole space.
    index_bytes: usize,
}

impl KeySpace {
    /// A key space of `size` keys (at least 1) of `key_size` bytes.
    ///
    /// # Errors
    ///
    /// [`BenchError::KeySizeTooSmall`] when `key_size` bytes cannot tell
    /// `size` keys (and the end of the space) apart.
    pub fn new(size: u64, key_size: usize) -> Result<KeySpace, BenchError> {
        assert!(size >= 1, "the caller checks that the key space is not empty");
        let index_bytes = bytes_for(size);
        if key_size < index_bytes {
            return Err(BenchError::KeySizeTooSmall {
                key_size,
                key_space: size,
                needed: index_bytes,
            });
        }
        Ok(KeySpace { size, key_size, index_bytes })
    }

    /// Number of keys.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The key of `index` (`index <= size`; `key(size)` ends the space).
    pub fn key(&self, index: u64) -> Vec<u8> {
        assert!(index <= self.size, "index {index} past the key space of {}", self.size);
        let mut key = vec![0u8; self.key_size];
        let be = index.to_be_bytes();
        key[self.key_size - self.index_bytes..].copy_from_slice(&be[8 - self.index_bytes..]);
        key
    }

    /// The index a key of this space stands for, if it is one.
    pub fn index_of(&self, key: &[u8]) -> Option<u64> {
        if key.len() != self.key_size {
            return None;
        }
        let (padding, index) = key.split_at(self.key_size - self.index_bytes);
        if padding.iter().any(|&b| b != 0) {
            return None;
        }
        let index = index.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        (index < self.size).then_some(index)
    }
}

/// Bytes needed to write `n` in big-endian without leading zero bytes
/// (at least one).
fn bytes_for(n: u64) -> usize {
    let bits = u64::BITS - n.leading_zeros();
    usize::try_from(bits.div_ceil(8)).expect("at most 8").max(1)
}

/// How operations pick keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Key `i` drawn with probability proportional to `1 / (i + 1)^s`
    /// (`--zipf-exponent`): a few hot keys, a long cold tail.
    Zipfian,
    /// Operation `n` (counted over all clients) touches key `n mod size`:
    /// every key is written once per pass over the space.
    Sequential,
}

/// Draws key indices for one client.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    /// See [`Distribution::Uniform`].
    Uniform {
        /// Number of keys.
        size: u64,
    },
    /// See [`Distribution::Zipfian`].
    Zipfian(Zipf),
    /// See [`Distribution::Sequential`].
    Sequential {
        /// Number of keys.
        size: u64,
    },
}

impl KeyChooser {
    /// A chooser over `size` keys.
    ///
    /// # Errors
    ///
    /// [`BenchError::BadZipfExponent`] for a zipfian exponent out of range.
    pub fn new(
        distribution: Distribution,
        size: u64,
        zipf_exponent: f64,
    ) -> Result<KeyChooser, BenchError> {
        Ok(match distribution {
            Distribution::Uniform => KeyChooser::Uniform { size },
            Distribution::Zipfian => KeyChooser::Zipfian(Zipf::new(size, zipf_exponent)?),
            Distribution::Sequential => KeyChooser::Sequential { size },
        })
    }

    /// The index operation number `ticket` touches.
    pub fn next(&self, rng: &mut impl Rng, ticket: u64) -> u64 {
        match self {
            KeyChooser::Uniform { size } => rng.random_range(0..*size),
            KeyChooser::Zipfian(zipf) => zipf.sample(rng),
            KeyChooser::Sequential { size } => ticket % size,
        }
    }
}

/// Zipf's law over ranks `1..=n`: `P(k) ∝ k^-s`, sampled by rejection
/// inversion (Hörmann and Derflinger, "Rejection-inversion to generate
/// variates from monotone discrete distributions", 1996).
///
/// Constant setup and memory, whatever `n` (unlike the classic method of
/// Gray et al., which sums `n` terms first), and exact: each rank `k` owns
/// a strip of the continuous hat `h(x) = x^-s` over `[k - ½, k + ½]`, whose
/// area is at least `h(k)` because `h` is convex; a uniform point of the
/// total area is inverted to `x`, rounded to `k`, and kept when it falls in
/// the last `h(k)` of its strip. So `P(k) ∝ h(k)` exactly, and at least
/// half of the draws are kept for any `s`.
#[derive(Clone, Debug)]
pub struct Zipf {
    n: u64,
    exponent: f64,
    /// `H(1.5) - h(1)`: the low end of the area drawn from (rank 1's strip
    /// is shortened to exactly `h(1)`, so rank 1 is always kept).
    area_low: f64,
    /// `H(n + 0.5)`: the high end.
    area_high: f64,
}

impl Zipf {
    /// Zipf's law over `n` (at least 1) ranks with exponent `s`.
    ///
    /// # Errors
    ///
    /// [`BenchError::BadZipfExponent`] unless `0 < s <= ZIPF_EXPONENT_MAX`.
    pub fn new(n: u64, exponent: f64) -> Result<Zipf, BenchError> {
        assert!(n >= 1, "the caller checks that the key space is not empty");
        if !(exponent > 0.0 && exponent <= ZIPF_EXPONENT_MAX) {
            return Err(BenchError::BadZipfExponent { exponent, max: ZIPF_EXPONENT_MAX });
        }
        #[allow(clippy::cast_precision_loss, reason = "ranks past 2^53 need no exact position")]
        let top = n as f64 + 0.5;
        let zipf = Zipf { n, exponent, area_low: 0.0, area_high: 0.0 };
        let area_low = zipf.big_h(1.5) - 1.0;
        let area_high = zipf.big_h(top);
        Ok(Zipf { area_low, area_high, ..zipf })
    }

    /// A 0-based index: rank `k` is index `k - 1`, so index 0 is hottest.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        loop {
            let uniform: f64 = rng.random();
            let u = self.area_high + uniform * (self.area_low - self.area_high);
            let x = self.big_h_inverse(u);
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "x is within [0.5, n + 0.5] and clamped to 1..=n"
            )]
            let k = (x.round() as u64).clamp(1, self.n);
            #[allow(clippy::cast_precision_loss, reason = "see `new`")]
            let kf = k as f64;
            if u >= self.big_h(kf + 0.5) - self.h(kf) {
                return k - 1;
            }
        }
    }

    /// The probability of index `i` (rank `i + 1`), computed by summing all
    /// `n` terms: for tests and small `n` only.
    pub fn probability(&self, index: u64) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "test helper over small n")]
        let total: f64 = (1..=self.n).map(|k| self.h(k as f64)).sum();
        #[allow(clippy::cast_precision_loss, reason = "test helper over small n")]
        let p = self.h((index + 1) as f64) / total;
        p
    }

    /// `h(x) = x^-s`.
    fn h(&self, x: f64) -> f64 {
        (-self.exponent * x.ln()).exp()
    }

    /// `H(x) = ∫₁ˣ h = (x^(1-s) - 1) / (1 - s)`, written so that it stays
    /// exact as `s → 1` (where it becomes `ln x`).
    fn big_h(&self, x: f64) -> f64 {
        let log_x = x.ln();
        expm1_over((1.0 - self.exponent) * log_x) * log_x
    }

    /// The inverse of [`Self::big_h`].
    fn big_h_inverse(&self, u: f64) -> f64 {
        let t = u * (1.0 - self.exponent);
        // For s > 1, H is bounded by 1/(s-1); keep rounding from stepping
        // past the pole.
        let t = t.max(-1.0 + f64::EPSILON);
        (ln1p_over(t) * u).exp()
    }
}

/// `(e^t - 1) / t`, continuous at 0.
fn expm1_over(t: f64) -> f64 {
    if t.abs() > 1e-8 { t.exp_m1() / t } else { 1.0 + t / 2.0 * (1.0 + t / 3.0) }
}

/// `ln(1 + t) / t`, continuous at 0.
fn ln1p_over(t: f64) -> f64 {
    if t.abs() > 1e-8 { t.ln_1p() / t } else { 1.0 - t * (0.5 - t / 3.0) }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn keys_are_fixed_size_and_sort_by_index() {
        let space = KeySpace::new(10_000, 8).unwrap();
        let keys: Vec<Vec<u8>> = [0, 1, 255, 256, 9_999, 10_000].map(|i| space.key(i)).to_vec();
        assert!(keys.iter().all(|k| k.len() == 8));
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert_eq!(space.key(256), [0, 0, 0, 0, 0, 0, 1, 0]);
        for i in [0, 1, 255, 256, 9_999] {
            assert_eq!(space.index_of(&space.key(i)), Some(i));
        }
        assert_eq!(space.index_of(&space.key(10_000)), None, "the end is not a key");
        assert_eq!(space.index_of(b"short"), None);
    }

    #[test]
    fn a_key_too_small_for_the_space_is_refused() {
        // 65_536 keys and their end (65_536 itself) need three bytes.
        assert!(matches!(
            KeySpace::new(65_536, 2),
            Err(BenchError::KeySizeTooSmall { needed: 3, .. })
        ));
        assert!(KeySpace::new(65_535, 2).is_ok());
        assert!(KeySpace::new(1, 1).is_ok());
    }

    /// Pearson's chi-square of `counts` against the exact law, pooling the
    /// tail into bins of at least 50 expected draws.
    fn chi_square(zipf: &Zipf, counts: &[u64], draws: u64) -> (f64, usize) {
        let (mut chi, mut bins) = (0.0, 0);
        let (mut observed, mut expected) = (0.0, 0.0);
        for (i, &count) in counts.iter().enumerate() {
            observed += count as f64;
            expected += zipf.probability(i as u64) * draws as f64;
            if expected >= 50.0 || i == counts.len() - 1 {
                chi += (observed - expected).powi(2) / expected;
                bins += 1;
                (observed, expected) = (0.0, 0.0);
            }
        }
        (chi, bins)
    }

    fn histogram(zipf: &Zipf, n: usize, draws: u64, seed: u64) -> Vec<u64> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut counts = vec![0u64; n];
        for _ in 0..draws {
            counts[usize::try_from(zipf.sample(&mut rng)).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn zipf_draws_follow_the_law() {
        // Exponents below, at and above 1 (H's formula changes shape at 1).
        for exponent in [0.5, 0.99, 1.0, 1.5] {
            let n = 1_000;
            let draws = 200_000;
            let zipf = Zipf::new(n, exponent).unwrap();
            let counts = histogram(&zipf, 1_000, draws, 7);
            let (chi, bins) = chi_square(&zipf, &counts, draws);
            // The 99.9th percentile of chi-square with k degrees of freedom
            // is below k + 5·sqrt(k) + 10 for these k: a wrong law (an
            // off-by-one rank, a wrong strip) lands orders of magnitude past.
            let limit = bins as f64 + 5.0 * (bins as f64).sqrt() + 10.0;
            assert!(
                chi < limit,
                "s={exponent}: chi-square {chi:.1} over {bins} bins >= {limit:.1}"
            );
            // The shape itself: the hottest key is the most drawn, and the
            // first two keep Zipf's ratio 2^s.
            let ratio = counts[0] as f64 / counts[1] as f64;
            let want = 2f64.powf(exponent);
            assert!((ratio / want - 1.0).abs() < 0.05, "s={exponent}: ratio {ratio} vs {want}");
            assert!(counts[0] > counts[n as usize / 2] * 10);
        }
    }

    #[test]
    fn zipf_covers_tiny_and_huge_spaces() {
        let one = Zipf::new(1, 0.99).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        assert!((0..100).all(|_| one.sample(&mut rng) == 0));
        // A billion keys: constant setup, every draw in range, hot head.
        let huge = Zipf::new(1_000_000_000, 0.99).unwrap();
        let draws: Vec<u64> = (0..10_000).map(|_| huge.sample(&mut rng)).collect();
        assert!(draws.iter().all(|&i| i < 1_000_000_000));
        let head = draws.iter().filter(|&&i| i < 10).count();
        assert!(head > 1_000, "the ten hottest of 1e9 keys draw {head} of 10000");
    }

    #[test]
    fn zipf_refuses_exponents_out_of_range() {
        for exponent in [0.0, -1.0, f64::NAN, ZIPF_EXPONENT_MAX * 2.0] {
            assert!(matches!(Zipf::new(10, exponent), Err(BenchError::BadZipfExponent { .. })));
        }
    }

    #[test]
    fn sequential_walks_the_space_by_ticket() {
        let chooser = KeyChooser::new(Distribution::Sequential, 3, 0.99).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let got: Vec<u64> = (0..7).map(|t| chooser.next(&mut rng, t)).collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn uniform_stays_in_the_space_and_reaches_all_of_it() {
        let chooser = KeyChooser::new(Distribution::Uniform, 16, 0.99).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let mut seen = [0u32; 16];
        for t in 0..4_000 {
            seen[usize::try_from(chooser.next(&mut rng, t)).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&c| (150..350).contains(&c)), "{seen:?}");
    }
}
