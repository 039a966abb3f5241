//! The k-means distance detector: how far a row lies from the nearest of `k` centroids of the
//! training rows, in the model's robustly standardized space (`z = (x − median) / scale`).
//!
//! PCA sees rows that break the metrics' linear relations; k-means sees rows that lie away from
//! every *mode* the service had in training (a host that is either idle or busy, never half), a
//! shape one set of principal components cannot describe. Public benchmarks scored without point
//! adjustment rank the k-means distance near PCA on server telemetry (TSB-AD, NeurIPS 2024).
//!
//! Training is deterministic: the sample is the rows with the smallest hash of their values
//! (the same rows whatever the thread count or file order, see [`sample_key`]), the centroids
//! come from k-means++ seeded with a fixed seed, then Lloyd's iterations.

use serde::{Deserialize, Serialize};

use crate::score::Z_LIMIT;
use crate::train::quantile_in_place;

/// The number of centroids unless the training data has fewer distinct rows.
pub const DEFAULT_K: usize = 8;

/// The training rows k-means is fitted on at most (a deterministic sample).
pub const SAMPLE_ROWS: usize = 20_000;

/// The seed of k-means++.
pub const SEED: u64 = 0x7ad5_6b3e_11c4_9d27;

/// Lloyd's iterations at most.
const MAX_ITERATIONS: usize = 100;

/// The k-means section of a model: centroids and the distance's training limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KMeansParams {
    /// The number of centroids.
    pub k: usize,
    /// `k` rows of d values: the centroids in the standardized space.
    pub centroids: Vec<Vec<f64>>,
    /// The 0.999 quantile of the distance over the sampled training rows inside the robust cut
    /// (the rows the centroids were fitted on): the distance's limit, as `spe_empirical_999`.
    pub limit: f64,
    /// The training tail: the distance's `tail_quantile` over every sampled row (anomalies and
    /// heavy tails included); `fusion.tail` raises the limit to it, as for the other signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<f64>,
    /// The rows the sample held.
    pub sample_rows: u64,
    /// The k-means++ seed.
    pub seed: u64,
}

impl KMeansParams {
    /// Checks the shapes and values against `d` features; the message names what is wrong.
    pub fn check(&self, d: usize) -> std::result::Result<(), String> {
        if self.k == 0 || self.centroids.len() != self.k {
            return Err(format!(
                "kmeans: k is {} but there are {} centroids",
                self.k,
                self.centroids.len()
            ));
        }
        if let Some(c) = self.centroids.iter().find(|c| c.len() != d) {
            return Err(format!(
                "kmeans: a centroid has {} values for {d} features",
                c.len()
            ));
        }
        if self.centroids.iter().flatten().any(|v| !v.is_finite()) {
            return Err("kmeans: a centroid value is not finite".into());
        }
        crate::train::check_positive_limit("kmeans", self.limit)
    }

    /// The distance from a standardized row to its nearest centroid.
    pub fn distance(&self, z: &[f64]) -> f64 {
        self.centroids
            .iter()
            .map(|c| squared(c, z))
            .fold(f64::INFINITY, f64::min)
            .sqrt()
    }
}

fn squared(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// A row's place in the sample: FNV-1a (64 bit) of its values' bits. The sample is the
/// [`SAMPLE_ROWS`] rows with the smallest keys (ties by the values), which any partitioning of
/// the rows finds alike.
pub fn sample_key(z: &[f64]) -> u64 {
    let mut h = crate::hash::Fnv1a64::default();
    for v in z {
        h.write(&v.to_bits().to_le_bytes());
    }
    h.finish()
}

/// The bounded sample: the `cap` rows with the smallest [`sample_key`], merged across
/// partitions in any order to the same result.
#[derive(Debug, Clone)]
pub struct Sample {
    cap: usize,
    rows: std::collections::BTreeMap<(u64, Vec<u64>), u64>,
    len: usize,
}

impl Sample {
    /// An empty sample keeping at most `cap` rows.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            rows: Default::default(),
            len: 0,
        }
    }

    /// Offers one standardized row (non-finite rows are skipped).
    pub fn offer(&mut self, z: &[f64]) {
        if z.iter().any(|v| !v.is_finite()) {
            return;
        }
        let key = (sample_key(z), z.iter().map(|v| v.to_bits()).collect());
        self.insert(key, 1);
    }

    fn insert(&mut self, key: (u64, Vec<u64>), count: u64) {
        if self.len >= self.cap
            && let Some(last) = self.rows.keys().next_back()
            && &key >= last
        {
            return;
        }
        *self.rows.entry(key).or_default() += count;
        self.len += count as usize;
        while self.len > self.cap {
            let Some(mut last) = self.rows.last_entry() else {
                break;
            };
            let excess = (self.len - self.cap) as u64;
            if *last.get() > excess {
                *last.get_mut() -= excess;
                self.len -= excess as usize;
            } else {
                self.len -= *last.get() as usize;
                last.remove();
            }
        }
    }

    /// Adds another partition's sample.
    pub fn merge(&mut self, other: Sample) {
        for (key, count) in other.rows {
            self.insert(key, count);
        }
    }

    /// The rows, smallest key first.
    pub fn rows(&self) -> Vec<Vec<f64>> {
        let mut out = Vec::with_capacity(self.len);
        for ((_, bits), count) in &self.rows {
            let row: Vec<f64> = bits.iter().map(|b| f64::from_bits(*b)).collect();
            for _ in 0..*count {
                out.push(row.clone());
            }
        }
        out
    }
}

/// SplitMix64: a small seeded generator, so the fit needs no dependency and gives the same
/// centroids everywhere.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    /// The generator from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Fits `k` centroids to `rows` (k-means++ from `seed`, then Lloyd's iterations until no row
/// changes its centroid). Fewer centroids when the rows have fewer distinct values; `None` for
/// no rows.
pub fn fit(rows: &[Vec<f64>], k: usize, seed: u64) -> Option<Vec<Vec<f64>>> {
    let first = rows.first()?;
    let mut rng = SplitMix(seed);
    let mut centroids = vec![first.clone()];
    let mut nearest: Vec<f64> = rows.iter().map(|r| squared(r, first)).collect();
    while centroids.len() < k {
        let total: f64 = nearest.iter().sum();
        if total.is_nan() || total <= 0.0 {
            break; // every row is already a centroid
        }
        let mut target = rng.unit() * total;
        let mut pick = rows.len() - 1;
        for (i, d) in nearest.iter().enumerate() {
            if target < *d {
                pick = i;
                break;
            }
            target -= d;
        }
        let c = rows[pick].clone();
        for (n, r) in nearest.iter_mut().zip(rows) {
            *n = n.min(squared(r, &c));
        }
        centroids.push(c);
    }
    let d = first.len();
    let mut assigned = vec![usize::MAX; rows.len()];
    for _ in 0..MAX_ITERATIONS {
        let mut changed = false;
        for (a, r) in assigned.iter_mut().zip(rows) {
            let best = (0..centroids.len())
                .min_by(|x, y| squared(r, &centroids[*x]).total_cmp(&squared(r, &centroids[*y])))
                .unwrap_or(0);
            changed |= *a != best;
            *a = best;
        }
        if !changed {
            break;
        }
        let mut sums = vec![vec![0.0; d]; centroids.len()];
        let mut counts = vec![0usize; centroids.len()];
        for (a, r) in assigned.iter().zip(rows) {
            counts[*a] += 1;
            for (s, v) in sums[*a].iter_mut().zip(r) {
                *s += v;
            }
        }
        for ((c, s), n) in centroids.iter_mut().zip(sums).zip(counts) {
            if n > 0 {
                *c = s.into_iter().map(|v| v / n as f64).collect();
            }
        }
    }
    Some(centroids)
}

/// The k-means section from a sample of standardized training rows: centroids fitted on the
/// rows inside the robust cut (`|z| ≤ cut` on every feature, as the PCA), the limit from their
/// distances, the tail from every sampled row's. `None` when no row is inside the cut or every
/// distance is 0 (nothing to measure against).
pub fn train(sample: &[Vec<f64>], cut: f64, tail_quantile: Option<f64>) -> Option<KMeansParams> {
    let inside: Vec<Vec<f64>> = sample
        .iter()
        .filter(|r| r.iter().all(|z| z.abs() <= cut))
        .map(|r| r.iter().map(|z| z.clamp(-Z_LIMIT, Z_LIMIT)).collect())
        .collect();
    let centroids = fit(&inside, DEFAULT_K, SEED)?;
    let mut p = KMeansParams {
        k: centroids.len(),
        centroids,
        limit: 0.0,
        tail: None,
        sample_rows: sample.len() as u64,
        seed: SEED,
    };
    let mut near: Vec<f64> = inside.iter().map(|r| p.distance(r)).collect();
    p.limit = quantile_in_place(&mut near, 0.999).filter(|l| *l > 0.0)?;
    p.tail = tail_quantile.and_then(|q| {
        let mut all: Vec<f64> = sample.iter().map(|r| p.distance(r)).collect();
        quantile_in_place(&mut all, q).filter(|t| t.is_finite() && *t > 0.0)
    });
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two modes, (0, 0) and (10, 10), with a small spread.
    fn two_modes(n: usize) -> Vec<Vec<f64>> {
        let mut rng = SplitMix(1);
        (0..n)
            .map(|i| {
                let c = if i % 2 == 0 { 0.0 } else { 10.0 };
                vec![c + rng.unit() - 0.5, c + rng.unit() - 0.5]
            })
            .collect()
    }

    #[test]
    fn a_row_between_two_modes_is_far_from_both() {
        let rows = two_modes(2000);
        let p = train(&rows, 100.0, Some(0.95)).unwrap();
        p.check(2).unwrap();
        assert!(p.distance(&[0.1, -0.2]) < p.limit);
        assert!(p.distance(&[10.2, 9.9]) < p.limit);
        // Half-way: no mode is near, though each metric alone is inside its range.
        assert!(p.distance(&[5.0, 5.0]) > 5.0 * p.limit, "{p:?}");
    }

    #[test]
    fn the_fit_is_the_same_whatever_the_order_and_partitioning() {
        let rows = two_modes(3000);
        let mut one = Sample::new(500);
        rows.iter().for_each(|r| one.offer(r));
        let mut parts: Vec<Sample> = (0..3).map(|_| Sample::new(500)).collect();
        for (i, r) in rows.iter().rev().enumerate() {
            parts[i % 3].offer(r);
        }
        let mut merged = parts.pop().unwrap();
        for p in parts {
            merged.merge(p);
        }
        assert_eq!(one.rows(), merged.rows());
        assert_eq!(one.rows().len(), 500);
        let a = train(&one.rows(), 100.0, None).unwrap();
        let b = train(&merged.rows(), 100.0, None).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn duplicates_count_and_few_distinct_rows_give_fewer_centroids() {
        let rows = vec![vec![1.0, 2.0]; 50];
        let mut s = Sample::new(10);
        rows.iter().for_each(|r| s.offer(r));
        assert_eq!(s.rows().len(), 10);
        let c = fit(&[vec![0.0], vec![0.0], vec![4.0]], 8, SEED).unwrap();
        assert_eq!(c.len(), 2);
        // All rows equal: every distance is 0, no limit to measure against.
        assert_eq!(train(&rows, 100.0, None), None);
    }
}
