//! The Isolation Forest detector (Liu, Ting and Zhou, ICDM 2008): rows that random axis-parallel
//! splits isolate in few steps are anomalous. Each tree is grown on a subsample of `psi` rows of
//! the model's training sample, in the robustly standardized space; a row's score is the usual
//! `2^(−E[h(x)] / c(psi))`, about 0.5 for ordinary rows and towards 1 for isolated ones.
//!
//! Seeded and deterministic: the sample is the k-means detector's (the rows with the smallest
//! hash of their values, the same on any thread count), and the trees come from one SplitMix64
//! stream from a fixed seed, so the same data gives the same forest and the same scores.
//!
//! As a fused signal the score is put on the scale of the others, 0 at the training median and
//! 1.0 at the limit: `(s − median) / (limit − median)`.

use serde::{Deserialize, Serialize};

use crate::kmeans::SplitMix;
use crate::score::Z_LIMIT;
use crate::train::{check_median_limit, median_limit_tail};

/// Trees in a forest.
pub const TREES: usize = 100;

/// Rows each tree is grown on (the paper's default).
pub const PSI: usize = 256;

/// The seed of the forest.
pub const SEED: u64 = 0x1f0e_5a17_c0de_2008;

/// One tree as parallel arrays, node 0 the root: an inner node splits on `feature` at `split`
/// (rows below go to `left`, the others to `right`); a leaf (`feature` −1) holds `size` rows.
///
/// In `model.json` a tree is one string, its nodes in preorder separated by spaces: an inner
/// node as `feature:split` (the split written to round-trip exactly), a leaf as `=size`; a
/// forest of 100 trees is then 100 lines rather than hundreds of thousands.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    /// The split feature, or −1 at a leaf.
    pub feature: Vec<i32>,
    /// The split value (0 at a leaf).
    pub split: Vec<f64>,
    /// The left child (0 at a leaf).
    pub left: Vec<u32>,
    /// The right child (0 at a leaf).
    pub right: Vec<u32>,
    /// The training rows that reached a leaf (0 at an inner node).
    pub size: Vec<u32>,
    /// `c(size)` of each node, computed once (not stored in `model.json`).
    leaf_c: Vec<f64>,
}

/// The Isolation Forest section of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IForestParams {
    /// The trees.
    pub trees: Vec<Tree>,
    /// The rows each tree was grown on.
    pub psi: usize,
    /// The median score over the sampled training rows: the signal's 0.
    pub median: f64,
    /// The 0.999 quantile of the score over the sampled training rows: the signal's 1.0.
    pub limit: f64,
    /// The score's `tail_quantile` over the sampled rows; `fusion.tail` raises the limit to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<f64>,
    /// The rows the sample held.
    pub sample_rows: u64,
    /// The seed.
    pub seed: u64,
}

/// The average path length of an unsuccessful search in a binary search tree of `n` rows, the
/// paper's `c(n)`.
fn c(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n < 2.5 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
    }
}

impl Serialize for Tree {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::new();
        self.write(0, &mut out);
        s.serialize_str(out.trim_end())
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Tree::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Tree {
    fn empty() -> Self {
        Tree {
            feature: Vec::new(),
            split: Vec::new(),
            left: Vec::new(),
            right: Vec::new(),
            size: Vec::new(),
            leaf_c: Vec::new(),
        }
    }

    /// The tree with `c(size)` of each node computed.
    fn with_leaf_c(mut self) -> Self {
        self.leaf_c = self.size.iter().map(|n| c(f64::from(*n))).collect();
        self
    }

    /// Writes node `at` and its subtree in preorder.
    fn write(&self, at: usize, out: &mut String) {
        use std::fmt::Write;
        match self.feature.get(at) {
            Some(f) if *f >= 0 => {
                let _ = write!(out, "{f}:{:?} ", self.split[at]);
                self.write(self.left[at] as usize, out);
                self.write(self.right[at] as usize, out);
            }
            Some(_) => {
                let _ = write!(out, "={} ", self.size[at]);
            }
            None => {}
        }
    }

    /// Reads the preorder text [`Tree::write`] writes.
    fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = text.split_ascii_whitespace();
        let mut t = Tree::empty();
        t.read(&mut tokens, 0)?;
        if tokens.next().is_some() {
            return Err("iforest: a tree has tokens after its last leaf".into());
        }
        Ok(t.with_leaf_c())
    }

    fn read<'a>(
        &mut self,
        tokens: &mut impl Iterator<Item = &'a str>,
        depth: usize,
    ) -> Result<u32, String> {
        // A forest's trees are at most log2(psi) deep; this bounds the recursion on bad input.
        if depth > 64 {
            return Err("iforest: a tree is deeper than 64".into());
        }
        let token = tokens.next().ok_or("iforest: a tree ends inside a node")?;
        let at = self.feature.len();
        self.feature.push(-1);
        self.split.push(0.0);
        self.left.push(0);
        self.right.push(0);
        self.size.push(0);
        if let Some(size) = token.strip_prefix('=') {
            self.size[at] = size
                .parse()
                .map_err(|_| format!("iforest: bad leaf `{token}`"))?;
            return Ok(at as u32);
        }
        let (f, split) = token
            .split_once(':')
            .ok_or_else(|| format!("iforest: bad node `{token}`"))?;
        self.feature[at] = f
            .parse()
            .map_err(|_| format!("iforest: bad feature in `{token}`"))?;
        self.split[at] = split
            .parse()
            .map_err(|_| format!("iforest: bad split in `{token}`"))?;
        self.left[at] = self.read(tokens, depth + 1)?;
        self.right[at] = self.read(tokens, depth + 1)?;
        Ok(at as u32)
    }

    fn grow(rows: &mut [&[f64]], rng: &mut SplitMix, max_depth: usize) -> Self {
        let mut t = Tree::empty();
        t.node(rows, rng, 0, max_depth);
        t.with_leaf_c()
    }

    /// Adds the node for `rows` at `depth` and returns its index.
    fn node(&mut self, rows: &mut [&[f64]], rng: &mut SplitMix, depth: usize, max: usize) -> u32 {
        let at = self.feature.len();
        self.feature.push(-1);
        self.split.push(0.0);
        self.left.push(0);
        self.right.push(0);
        self.size.push(rows.len() as u32);
        if depth >= max || rows.len() <= 1 {
            return at as u32;
        }
        // The features that still vary among these rows; none: a leaf.
        let d = rows[0].len();
        let spread: Vec<(usize, f64, f64)> = (0..d)
            .filter_map(|j| {
                let (lo, hi) = rows
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
                        (lo.min(r[j]), hi.max(r[j]))
                    });
                (hi > lo).then_some((j, lo, hi))
            })
            .collect();
        if spread.is_empty() {
            return at as u32;
        }
        let (j, lo, hi) = spread[(rng.next() % spread.len() as u64) as usize];
        let split = lo + rng.unit() * (hi - lo);
        // Rows below the split first.
        let mut below = 0;
        for i in 0..rows.len() {
            if rows[i][j] < split {
                rows.swap(i, below);
                below += 1;
            }
        }
        let (l, r) = rows.split_at_mut(below);
        let left = self.node(l, rng, depth + 1, max);
        let right = self.node(r, rng, depth + 1, max);
        self.feature[at] = j as i32;
        self.split[at] = split;
        self.left[at] = left;
        self.right[at] = right;
        self.size[at] = 0;
        at as u32
    }

    /// The path length of `z`: the depth of its leaf plus `c(size)` for the rows left there.
    fn path(&self, z: &[f64]) -> f64 {
        let (mut at, mut depth) = (0usize, 0.0);
        while self.feature[at] >= 0 {
            let j = self.feature[at] as usize;
            at = if z[j] < self.split[at] {
                self.left[at]
            } else {
                self.right[at]
            } as usize;
            depth += 1.0;
        }
        depth + self.leaf_c[at]
    }

    fn check(&self, d: usize) -> Result<(), String> {
        let n = self.feature.len();
        if n == 0
            || [
                self.split.len(),
                self.left.len(),
                self.right.len(),
                self.size.len(),
            ]
            .iter()
            .any(|l| *l != n)
        {
            return Err("iforest: a tree's arrays differ in length".into());
        }
        for i in 0..n {
            let f = self.feature[i];
            if f >= d as i32 || f < -1 {
                return Err(format!("iforest: split feature {f} of {d}"));
            }
            // Children come after their parent, so a walk always ends.
            if f >= 0
                && !(self.left[i] as usize > i
                    && self.right[i] as usize > i
                    && (self.left[i] as usize) < n
                    && (self.right[i] as usize) < n
                    && self.split[i].is_finite())
            {
                return Err(format!("iforest: node {i} has a bad split or child"));
            }
        }
        Ok(())
    }
}

impl IForestParams {
    /// Checks the shapes and values against `d` features; the message names what is wrong.
    pub fn check(&self, d: usize) -> Result<(), String> {
        if self.trees.is_empty() || self.psi == 0 {
            return Err("iforest: no trees".into());
        }
        for t in &self.trees {
            t.check(d)?;
        }
        check_median_limit("iforest", self.median, self.limit)
    }

    /// The anomaly score `2^(−E[h] / c(psi))` of a standardized row, in (0, 1].
    pub fn score(&self, z: &[f64]) -> f64 {
        let mut out = [0.0];
        self.scores(z, z.len(), &mut out);
        out[0]
    }

    /// The scores of `out.len()` standardized rows stored row after row in `z` (`d` values
    /// each): a tree at a time over all the rows, so each tree stays in cache.
    pub fn scores(&self, z: &[f64], d: usize, out: &mut [f64]) {
        out.fill(0.0);
        for t in &self.trees {
            for (o, row) in out.iter_mut().zip(z.chunks_exact(d.max(1))) {
                *o += t.path(row);
            }
        }
        let norm = 1.0 / (self.trees.len() as f64 * c(self.psi as f64));
        for o in out.iter_mut() {
            *o = 2f64.powf(-*o * norm);
        }
    }
}

/// The forest grown on a sample of standardized training rows (every sampled row: the forest is
/// meant for data with anomalies in it), with the median, limit and tail of the sample's scores.
/// `None` for fewer than two rows or when every row is alike.
pub fn train(sample: &[Vec<f64>], tail_quantile: Option<f64>) -> Option<IForestParams> {
    train_with(sample, tail_quantile, TREES, PSI)
}

/// [`train`] with `trees` trees of at most `psi` rows (smaller forests for fixtures).
pub fn train_with(
    sample: &[Vec<f64>],
    tail_quantile: Option<f64>,
    trees: usize,
    psi: usize,
) -> Option<IForestParams> {
    let rows: Vec<Vec<f64>> = sample
        .iter()
        .map(|r| r.iter().map(|z| z.clamp(-Z_LIMIT, Z_LIMIT)).collect())
        .collect();
    if rows.len() < 2 {
        return None;
    }
    let psi = psi.min(rows.len());
    let max_depth = (psi as f64).log2().ceil() as usize;
    let mut rng = SplitMix::new(SEED);
    let trees: Vec<Tree> = (0..trees)
        .map(|_| {
            // psi distinct rows, by a partial Fisher–Yates shuffle of the indices.
            let mut idx: Vec<usize> = (0..rows.len()).collect();
            for i in 0..psi {
                let k = i + (rng.next() % (rows.len() - i) as u64) as usize;
                idx.swap(i, k);
            }
            let mut picked: Vec<&[f64]> = idx[..psi].iter().map(|i| rows[*i].as_slice()).collect();
            Tree::grow(&mut picked, &mut rng, max_depth)
        })
        .collect();
    let mut p = IForestParams {
        trees,
        psi,
        median: 0.0,
        limit: 0.0,
        tail: None,
        sample_rows: rows.len() as u64,
        seed: SEED,
    };
    let mut scores: Vec<f64> = rows.iter().map(|r| p.score(r)).collect();
    (p.median, p.limit, p.tail) = median_limit_tail(&mut scores, tail_quantile)?;
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud(n: usize) -> Vec<Vec<f64>> {
        let mut rng = SplitMix::new(3);
        (0..n)
            .map(|_| vec![rng.unit() - 0.5, rng.unit() - 0.5, rng.unit() - 0.5])
            .collect()
    }

    #[test]
    fn an_isolated_row_scores_above_the_limit_and_ordinary_ones_near_the_median() {
        let p = train(&cloud(2000), Some(0.95)).unwrap();
        p.check(3).unwrap();
        assert_eq!((p.trees.len(), p.psi), (TREES, PSI));
        assert!(p.median > 0.3 && p.median < 0.6, "{}", p.median);
        assert!(p.score(&[0.0, 0.0, 0.0]) < p.limit);
        assert!(
            p.score(&[8.0, -8.0, 8.0]) > p.limit,
            "{}",
            p.score(&[8.0, -8.0, 8.0])
        );
        // The same rows give the same forest.
        assert_eq!(train(&cloud(2000), Some(0.95)).unwrap(), p);
        // A forest from a file is checked, and reads back as written.
        let mut bad = p.clone();
        bad.trees[0].left[0] = 0;
        assert!(bad.check(3).is_err());
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<IForestParams>(&json).unwrap(), p);
        assert!(json.len() < 1_000_000, "{} bytes", json.len());
        let first = serde_json::to_value(&p.trees[0]).unwrap();
        assert!(
            first
                .as_str()
                .unwrap()
                .starts_with(|c: char| c.is_ascii_digit())
        );
        for bad in ["0:1.5 =3", "0:x =1 =2", "=1 =2", "7"] {
            let e = serde_json::from_value::<Tree>(serde_json::json!(bad)).unwrap_err();
            assert!(e.to_string().contains("iforest"), "{bad}: {e}");
        }
    }

    #[test]
    fn rows_all_alike_give_no_forest() {
        assert_eq!(train(&vec![vec![1.0, 2.0]; 100], None), None);
        assert_eq!(train(&[vec![1.0]], None), None);
    }
}
