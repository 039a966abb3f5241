//! Count, means and co-moments of d features, updated batch by batch and merged across
//! partitions with the numerically stable pairwise formulas of Chan, Golub and LeVeque.

/// Running first and second moments of `d` features.
///
/// Each batch is reduced with two passes (its own mean, then deviations from it), and batches
/// and partitions are combined with Chan's merge, so no sum of squares of raw values is ever
/// formed: the result is exact to rounding even for data far from zero.
#[derive(Debug, Clone, PartialEq)]
pub struct CoMoments {
    d: usize,
    n: u64,
    mean: Vec<f64>,
    /// Sums of products of deviations, the full symmetric d×d matrix, row-major.
    m2: Vec<f64>,
}

impl CoMoments {
    /// Empty moments of `d` features.
    pub fn new(d: usize) -> Self {
        Self {
            d,
            n: 0,
            mean: vec![0.0; d],
            m2: vec![0.0; d * d],
        }
    }

    /// Rebuilds moments from their parts (as stored in an aggregate's state); `None` if the
    /// lengths do not fit `d`.
    pub fn from_parts(d: usize, n: u64, mean: Vec<f64>, m2: Vec<f64>) -> Option<Self> {
        (mean.len() == d && m2.len() == d * d).then_some(Self { d, n, mean, m2 })
    }

    /// Number of features.
    pub fn dims(&self) -> usize {
        self.d
    }

    /// Number of rows seen.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Mean of each feature.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Sums of products of deviations (d×d, row-major).
    pub fn m2(&self) -> &[f64] {
        &self.m2
    }

    /// Adds a batch given as `d` columns of equal length (every value finite).
    pub fn update(&mut self, columns: &[&[f64]]) {
        assert_eq!(columns.len(), self.d, "one column per feature");
        let rows = columns.first().map_or(0, |c| c.len());
        if rows == 0 {
            return;
        }
        let nb = rows as f64;
        let d = self.d;
        let mean: Vec<f64> = columns.iter().map(|c| lane_sum(c) / nb).collect();
        // Rows in blocks small enough to stay in the first-level cache: each block's deviations
        // from the batch mean, a column after another, then the dot product of every pair of
        // columns (the upper triangle), in interleaved partial sums the compiler vectorizes.
        const BLOCK: usize = 256;
        let mut m2 = vec![0.0; d * d];
        let mut block = vec![0.0; BLOCK * d];
        for first in (0..rows).step_by(BLOCK) {
            let len = BLOCK.min(rows - first);
            for ((out, c), m) in block.chunks_exact_mut(BLOCK).zip(columns).zip(&mean) {
                for (o, x) in out.iter_mut().zip(&c[first..first + len]) {
                    *o = x - m;
                }
            }
            let column = |j: usize| &block[j * BLOCK..j * BLOCK + len];
            for i in 0..d {
                for j in i..d {
                    m2[i * d + j] += lane_dot(column(i), column(j));
                }
            }
        }
        for i in 0..d {
            for j in 0..i {
                m2[i * d + j] = m2[j * d + i];
            }
        }
        self.merge(&Self {
            d: self.d,
            n: rows as u64,
            mean,
            m2,
        });
    }

    /// Merges the moments of other rows into these.
    pub fn merge(&mut self, other: &Self) {
        assert_eq!(other.d, self.d, "merging moments of different widths");
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = other.clone();
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let delta: Vec<f64> = other
            .mean
            .iter()
            .zip(&self.mean)
            .map(|(b, a)| b - a)
            .collect();
        let w = na * nb / n;
        for i in 0..self.d {
            for j in 0..self.d {
                self.m2[i * self.d + j] += other.m2[i * self.d + j] + delta[i] * delta[j] * w;
            }
        }
        for (m, dlt) in self.mean.iter_mut().zip(&delta) {
            *m += dlt * nb / n;
        }
        self.n += other.n;
    }

    /// The sample covariance matrix (d×d, row-major), or `None` with fewer than two rows.
    pub fn covariance(&self) -> Option<Vec<f64>> {
        (self.n >= 2).then(|| self.m2.iter().map(|v| v / (self.n - 1) as f64).collect())
    }
}

/// Independent partial sums, so the compiler can keep them in vector registers (a single running
/// sum is bound by the latency of one addition per value).
const LANES: usize = 8;

/// The sum of `x`, in [`LANES`] interleaved partial sums.
fn lane_sum(x: &[f64]) -> f64 {
    let mut acc = [0.0; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// The dot product of `a` and `b` (equal lengths), in [`LANES`] interleaved partial sums.
fn lane_dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..LANES {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_cov(rows: &[[f64; 3]]) -> Vec<f64> {
        let n = rows.len() as f64;
        let mean: Vec<f64> = (0..3)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let mut c = vec![0.0; 9];
        for r in rows {
            for i in 0..3 {
                for j in 0..3 {
                    c[i * 3 + j] += (r[i] - mean[i]) * (r[j] - mean[j]) / (n - 1.0);
                }
            }
        }
        c
    }

    #[test]
    fn batches_and_merges_agree_with_the_textbook_formula() {
        let rows: Vec<[f64; 3]> = (0..1000)
            .map(|i| {
                let x = f64::from(i);
                [
                    1e6 + (x * 0.37).sin(),
                    2.0 * (x * 0.37).sin() + (x * 1.3).cos(),
                    x / 100.0,
                ]
            })
            .collect();
        let cols = |rs: &[[f64; 3]]| -> Vec<Vec<f64>> {
            (0..3).map(|j| rs.iter().map(|r| r[j]).collect()).collect()
        };
        let mut whole = CoMoments::new(3);
        let c = cols(&rows);
        whole.update(&c.iter().map(Vec::as_slice).collect::<Vec<_>>());
        // The same rows in three uneven parts, merged in another order.
        let mut parts: Vec<CoMoments> = [&rows[..1], &rows[1..400], &rows[400..]]
            .iter()
            .map(|p| {
                let mut m = CoMoments::new(3);
                let c = cols(p);
                m.update(&c.iter().map(Vec::as_slice).collect::<Vec<_>>());
                m
            })
            .collect();
        let mut merged = parts.pop().unwrap();
        merged.merge(&parts[0]);
        merged.merge(&parts[1]);
        merged.merge(&CoMoments::new(3));
        let expected = naive_cov(&rows);
        // Each entry within 1e-8 of the scale sqrt(C_ii C_jj): rounding level for data offset by 1e6.
        for got in [whole.covariance().unwrap(), merged.covariance().unwrap()] {
            for i in 0..3 {
                for j in 0..3 {
                    let scale = (expected[i * 3 + i] * expected[j * 3 + j]).sqrt();
                    let (x, y) = (got[i * 3 + j], expected[i * 3 + j]);
                    assert!((x - y).abs() <= 1e-8 * scale, "[{i},{j}] {x} vs {y}");
                }
            }
        }
        assert_eq!(merged.count(), 1000);
        assert!((merged.mean()[0] - whole.mean()[0]).abs() < 1e-6);
    }

    #[test]
    fn lane_sums_and_dots_equal_the_plain_loop_at_every_length() {
        for n in (0..40).chain([8191, 8192, 8193]) {
            let a: Vec<f64> = (0..n).map(|i| f64::from(i as u32).sin()).collect();
            let b: Vec<f64> = (0..n).map(|i| f64::from(i as u32 * 7 % 13) - 6.0).collect();
            let sum: f64 = a.iter().sum();
            let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let tolerance = 1e-12 * (n as f64 + 1.0);
            assert!((lane_sum(&a) - sum).abs() <= tolerance, "sum of {n}");
            assert!((lane_dot(&a, &b) - dot).abs() <= tolerance, "dot of {n}");
        }
    }

    #[test]
    fn too_few_rows_have_no_covariance() {
        let mut m = CoMoments::new(2);
        assert!(m.covariance().is_none());
        m.update(&[&[1.0], &[2.0]]);
        assert!(m.covariance().is_none());
        assert!(CoMoments::from_parts(2, 1, vec![0.0], vec![]).is_none());
    }
}
