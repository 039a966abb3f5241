//! Scoring whole columns against a model: SPE, T², per-feature contributions and robust z.
//!
//! A model is turned once into the coefficients scoring needs, `y = x·a − b` with
//! `a = 1/scale` and `b = median/scale + pca.mean`, and the loadings `P` (d×k). Then
//! `t = Pᵀy`, `SPE = ‖y‖² − ‖t‖²` and `T² = Σ tᵢ²/λᵢ`, all as loops over columns.

use crate::artifact::ModelArtifact;
use crate::pca::Pca;

/// The largest standardized value scoring works with. A finite metric far out of range (1e160,
/// say) would overflow when squared and give an infinite or, after a subtraction, a zero SPE;
/// clamped here, its row gets the largest scores instead, and is flagged.
pub const Z_LIMIT: f64 = 1e100;

/// A model prepared for scoring.
#[derive(Debug, Clone)]
pub struct Scorer {
    d: usize,
    k: usize,
    median: Vec<f64>,
    /// 1 / scale.
    a: Vec<f64>,
    /// median / scale + PCA mean.
    b: Vec<f64>,
    /// Loadings, feature-major: p[j * k + i].
    p: Vec<f64>,
    /// 1 / λᵢ for the retained components (0 where λᵢ is 0).
    inv_lambda: Vec<f64>,
    /// The k-means section, if the model has one.
    kmeans: Option<crate::KMeansParams>,
    /// The Isolation Forest, if the model has one.
    iforest: Option<crate::IForestParams>,
    /// The one-class SVM, if the model has one.
    ocsvm: Option<crate::OcsvmParams>,
    /// The seasonal baseline, if the model has one.
    season: Option<crate::SeasonParams>,
    /// The forecast residual detector, if the model has one.
    forecast: Option<crate::ForecastParams>,
    /// The PCA fitted in the scoring space (standardized by the same median and scale), if the
    /// model has one.
    residual: Option<Box<Scorer>>,
}

impl Scorer {
    /// Prepares `model` for scoring.
    pub fn new(model: &ModelArtifact) -> Self {
        let scorer = |pca: &Pca| Self::from_pca(model.median.clone(), model.scale.clone(), pca);
        Self {
            kmeans: model.kmeans.clone(),
            iforest: model.iforest.clone(),
            ocsvm: model.ocsvm.clone(),
            season: model.season.clone(),
            forecast: model.forecast.clone(),
            residual: model
                .scoring_space
                .as_ref()
                .and_then(|s| s.residual.as_ref())
                .map(|r| Box::new(scorer(&r.pca.to_pca()))),
            ..scorer(&model.pca.to_pca())
        }
    }

    /// Prepares a standardizer and a PCA for scoring.
    pub fn from_pca(median: Vec<f64>, scale: Vec<f64>, pca: &Pca) -> Self {
        let d = median.len();
        let k = pca.k();
        let a: Vec<f64> = scale.iter().map(|s| 1.0 / s).collect();
        let b = (0..d).map(|j| median[j] * a[j] + pca.mean[j]).collect();
        let mut p = vec![0.0; d * k];
        for (i, c) in pca.components.iter().enumerate() {
            for j in 0..d {
                p[j * k + i] = c[j];
            }
        }
        let inv_lambda = pca.eigenvalues[..k]
            .iter()
            .map(|l| if *l > 0.0 { 1.0 / l } else { 0.0 })
            .collect();
        Self {
            d,
            k,
            median,
            a,
            b,
            p,
            inv_lambda,
            kmeans: None,
            iforest: None,
            ocsvm: None,
            season: None,
            forecast: None,
            residual: None,
        }
    }

    /// Number of features.
    pub fn dims(&self) -> usize {
        self.d
    }

    /// Calls `f(start, block)` for each block of up to [`BLOCK`] rows of `columns` (the first
    /// `n` rows), with the block's standardized values y and component scores t computed.
    #[inline(always)]
    fn for_blocks(&self, columns: &[&[f64]], n: usize, mut f: impl FnMut(usize, &Block)) {
        let mut block = self.block();
        let mut start = 0;
        while start < n {
            self.fill_block(columns, start, BLOCK.min(n - start), &mut block);
            f(start, &block);
            start += block.len;
        }
    }

    /// An empty block for this scorer's d and k.
    fn block(&self) -> Block {
        Block {
            y: vec![0.0; self.d * BLOCK],
            t: vec![0.0; self.k * BLOCK],
            len: 0,
        }
    }

    /// Fills `block` with the standardized values y and component scores t of rows
    /// `start..start + len` of `columns`.
    #[inline(always)]
    fn fill_block(&self, columns: &[&[f64]], start: usize, len: usize, block: &mut Block) {
        let (d, k) = (self.d, self.k);
        block.len = len;
        for (j, col) in columns.iter().enumerate().take(d) {
            let (a, b) = (self.a[j], self.b[j]);
            let yj = &mut block.y[j * BLOCK..j * BLOCK + len];
            for (yv, x) in yj.iter_mut().zip(&col[start..start + len]) {
                *yv = (x * a - b).clamp(-Z_LIMIT, Z_LIMIT);
            }
        }
        block.t.fill(0.0);
        for j in 0..d {
            let yj = &block.y[j * BLOCK..j * BLOCK + len];
            for i in 0..k {
                let pji = self.p[j * k + i];
                let ti = &mut block.t[i * BLOCK..i * BLOCK + len];
                for (tv, yv) in ti.iter_mut().zip(yj) {
                    *tv += pji * yv;
                }
            }
        }
    }

    /// Writes the SPE of each row of `columns` (d columns) into `out`.
    pub fn spe(&self, columns: &[&[f64]], out: &mut [f64]) {
        self.for_blocks(columns, out.len(), |s, b| {
            b.spe(self.d, self.k, &mut out[s..s + b.len]);
        });
    }

    /// Writes the SPE of each row under the PCA fitted in the scoring space into `out`; false
    /// (and `out` untouched) when the model has none.
    pub fn residual_spe(&self, columns: &[&[f64]], out: &mut [f64]) -> bool {
        self.residual.as_ref().is_some_and(|r| {
            r.spe(columns, out);
            true
        })
    }

    /// The SPE, T² and largest robust |z| of each row, from one projection.
    pub fn spe_t2_zmax(
        &self,
        columns: &[&[f64]],
        spe: &mut [f64],
        t2: &mut [f64],
        zmax: &mut [f64],
    ) {
        self.for_blocks(columns, spe.len(), |s, b| {
            let rows = s..s + b.len;
            b.spe(self.d, self.k, &mut spe[rows.clone()]);
            b.t2(&self.inv_lambda, &mut t2[rows.clone()]);
            self.zmax_rows(columns, s, &mut zmax[rows]);
        });
    }

    /// Writes Hotelling's T² of each row into `out`.
    pub fn t2(&self, columns: &[&[f64]], out: &mut [f64]) {
        self.for_blocks(columns, out.len(), |s, b| {
            b.t2(&self.inv_lambda, &mut out[s..s + b.len]);
        });
    }

    /// Writes, for each row, the index of the feature with the largest share of the SPE, or
    /// `None` where the SPE is 0: the same answer as the largest of [`Scorer::contributions`],
    /// computed a column at a time with no allocation per row.
    pub fn top_feature(&self, columns: &[&[f64]], out: &mut [Option<u32>]) {
        self.for_blocks(columns, out.len(), |s, b| {
            b.top(self.d, self.k, &self.p, &mut out[s..s + b.len]);
        });
    }

    /// Every score of each row in one pass over the data (one standardization and projection):
    /// the SPE, T², the largest robust |z| and the top feature, as [`Scorer::spe`],
    /// [`Scorer::t2`], [`Scorer::zmax`] and [`Scorer::top_feature`] would write them.
    pub fn all(&self, columns: &[&[f64]], out: AllScores<'_>) {
        self.all_blocks(columns, out, None);
    }

    /// [`Scorer::all`], and beside it, for every row, the metric [`Scorer::explain`] names under
    /// [`crate::Lead::Z`] (the first of the largest clamped robust |z|), found in the same pass
    /// over the values as the largest |z|: `None` where a value is not finite.
    pub fn all_with_top_z(
        &self,
        columns: &[&[f64]],
        out: AllScores<'_>,
        top_z: &mut [Option<u32>],
    ) {
        if self.d == 0 || columns.len() < self.d {
            top_z.fill(None);
            return self.all(columns, out);
        }
        self.all_blocks(columns, out, Some(top_z));
    }

    /// [`Scorer::all_blocks_with`], compiled for AVX2 where the CPU has it: its loops then take
    /// four values at a time instead of two. Every value is the same either way, as the loops
    /// only add, multiply, compare and select, in the same order, with no fused multiply-add.
    fn all_blocks(
        &self,
        columns: &[&[f64]],
        out: AllScores<'_>,
        top_z: Option<&mut [Option<u32>]>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            #[allow(unsafe_code)]
            return unsafe { self.all_blocks_avx2(columns, out, top_z) };
        }
        self.all_blocks_with(columns, out, top_z)
    }

    /// [`Scorer::all_blocks_with`] with AVX2 (the loops it calls are inlined into it).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn all_blocks_avx2(
        &self,
        columns: &[&[f64]],
        out: AllScores<'_>,
        top_z: Option<&mut [Option<u32>]>,
    ) {
        self.all_blocks_with(columns, out, top_z)
    }

    /// [`Scorer::all`] block by block, with the robust |z|'s top metric when `top_z` is given.
    #[inline(always)]
    fn all_blocks_with(
        &self,
        columns: &[&[f64]],
        out: AllScores<'_>,
        mut top_z: Option<&mut [Option<u32>]>,
    ) {
        // A loop of its own rather than [`Scorer::for_blocks`]' closure: a closure is compiled
        // once, without the AVX2 of [`Scorer::all_blocks_avx2`], while this body is inlined
        // into it.
        let n = out.spe.len();
        let mut b = self.block();
        let mut s = 0;
        while s < n {
            self.fill_block(columns, s, BLOCK.min(n - s), &mut b);
            let rows = s..s + b.len;
            b.spe(self.d, self.k, &mut out.spe[rows.clone()]);
            b.t2(&self.inv_lambda, &mut out.t2[rows.clone()]);
            let zmax = &mut out.zmax[rows.clone()];
            match top_z.as_deref_mut() {
                None => self.zmax_rows(columns, s, zmax),
                Some(top_z) => self.zmax_top_rows(columns, s, zmax, &mut top_z[rows.clone()]),
            }
            b.top(self.d, self.k, &self.p, &mut out.top[rows]);
            s += b.len;
        }
    }

    /// [`Scorer::zmax_rows`], also writing into `top` the index of the first metric with the
    /// largest clamped |z|, or `None` where a value of the row is not finite.
    /// The running maximum serves as the best so far: it equals the first metric's clamped |z|
    /// after the first, and stays the largest one after, unless a value is NaN, and then the
    /// row names nothing anyway. The metric's index and the finiteness travel in `f64` lanes
    /// beside the maximum, chosen without a branch, so the loop vectorizes: a value that is not
    /// finite turns `x · 0` (and so its row's sum of them) into NaN.
    #[inline(always)]
    fn zmax_top_rows(
        &self,
        columns: &[&[f64]],
        start: usize,
        out: &mut [f64],
        top: &mut [Option<u32>],
    ) {
        let n = out.len();
        let mut at = [0.0f64; BLOCK];
        let mut bad = [0.0f64; BLOCK];
        let (at, bad) = (&mut at[..n], &mut bad[..n]);
        out.fill(0.0);
        for (j, col) in columns.iter().enumerate().take(self.d) {
            let (m, a, jf) = (self.median[j], self.a[j], j as f64);
            let rows = out.iter_mut().zip(at.iter_mut()).zip(bad.iter_mut());
            for (((o, t), b), &x) in rows.zip(&col[start..start + n]) {
                let z = ((x - m) * a).abs();
                let z = if z > Z_LIMIT { Z_LIMIT } else { z };
                *t = if z > *o { jf } else { *t };
                *o = o.max(z);
                *b += x * 0.0;
            }
        }
        for (o, (t, b)) in top.iter_mut().zip(at.iter().zip(&*bad)) {
            *o = (*b == 0.0).then_some(*t as u32);
        }
    }

    /// One row's residual in the standardized space: what the retained components leave of
    /// each feature's standardized value.
    fn residuals(&self, row: &[f64]) -> Vec<f64> {
        let y: Vec<f64> = (0..self.d)
            .map(|j| row[j] * self.a[j] - self.b[j])
            .collect();
        let t: Vec<f64> = (0..self.k)
            .map(|i| (0..self.d).map(|j| self.p[j * self.k + i] * y[j]).sum())
            .collect();
        (0..self.d)
            .map(|j| {
                y[j] - (0..self.k)
                    .map(|i| self.p[j * self.k + i] * t[i])
                    .sum::<f64>()
            })
            .collect()
    }

    /// Each feature's share of the SPE of one row (sums to 1; all 0 when the SPE is 0).
    pub fn contributions(&self, row: &[f64]) -> Vec<f64> {
        let residual = self.residuals(row);
        let spe: f64 = residual.iter().map(|r| r * r).sum();
        if spe <= 0.0 {
            return vec![0.0; self.d];
        }
        residual.iter().map(|r| r * r / spe).collect()
    }

    /// The feature with the largest share of one row's SPE and how far it lies from what the
    /// model expected of it, in the feature's own units: `(j, actual − expected)`, where the
    /// expected value is the row's reconstruction from the retained components (what the other
    /// features say it should be). `None` where the SPE is 0 or a value is not finite.
    pub fn top_deviation(&self, row: &[f64]) -> Option<(usize, f64)> {
        if row.len() < self.d || row.iter().any(|x| !x.is_finite()) {
            return None;
        }
        // The first largest squared residual, as `top_feature` picks it.
        let mut best: Option<(usize, f64)> = None;
        for (j, r) in self.residuals(row).into_iter().enumerate() {
            if r * r > best.map_or(0.0, |(_, b)| b * b) {
                best = Some((j, r));
            }
        }
        let (j, r) = best?;
        let gap = r / self.a[j];
        gap.is_finite().then_some((j, gap))
    }

    /// The metric that explains a row under `lead` (see [`crate::Fusion::lead`]) and how far it
    /// lies from what that detector expected of it, in its own units: `(j, actual − expected)`.
    /// PCA: [`Scorer::top_deviation`]; the seasonal baseline: the largest seasonal |z|, from its
    /// slot's centre (needs the row's time in microseconds); otherwise the largest robust |z|,
    /// from the median. `None` where a value is not finite (or, for PCA, the SPE is 0).
    pub fn explain(
        &self,
        lead: crate::Lead,
        row: &[f64],
        micros: Option<i64>,
    ) -> Option<(usize, f64)> {
        if row.len() < self.d || row[..self.d].iter().any(|x| !x.is_finite()) {
            return None;
        }
        let largest = |z: &dyn Fn(usize) -> f64, center: &dyn Fn(usize) -> f64| {
            let j = first_largest(self.d, z);
            Some((j, row[j] - center(j)))
        };
        match lead {
            crate::Lead::Pca => self.top_deviation(row),
            crate::Lead::Seasonal => {
                let s = self.season.as_ref()?;
                let slot = s.slot_of(micros?);
                largest(&|j| s.z(j, slot, row[j]), &|j| s.center[slot][j])
            }
            crate::Lead::Forecast => {
                let f = self.forecast.as_ref()?;
                let slot = f.slot_of(micros?);
                largest(&|j| f.z(j, slot, row[j]), &|j| f.center[slot][j])
            }
            crate::Lead::Z => largest(&|j| self.clamped_z(j, row[j]), &|j| self.median[j]),
        }
    }

    /// Writes the largest robust |z| over the features of each row into `out`.
    pub fn zmax(&self, columns: &[&[f64]], out: &mut [f64]) {
        self.zmax_rows(columns, 0, out);
    }

    /// The largest robust |z| of rows `start..start + out.len()` of `columns`.
    #[inline(always)]
    fn zmax_rows(&self, columns: &[&[f64]], start: usize, out: &mut [f64]) {
        out.fill(0.0);
        for (j, col) in columns.iter().enumerate().take(self.d) {
            let (m, a) = (self.median[j], self.a[j]);
            for (o, x) in out.iter_mut().zip(&col[start..]) {
                let z = ((x - m) * a).abs();
                *o = o.max(if z > Z_LIMIT { Z_LIMIT } else { z });
            }
        }
    }

    /// Writes each row's distance to the nearest k-means centroid into `out` (in the
    /// standardized space, each z clamped as for the other scores); `false`, with `out`
    /// untouched, when the model has no k-means section.
    pub fn kmeans_distance(&self, columns: &[&[f64]], out: &mut [f64]) -> bool {
        let Some(km) = &self.kmeans else {
            return false;
        };
        // A block of rows at a time, a column at a time: loops the compiler vectorizes.
        let d = self.d;
        let mut z = vec![0.0; d * BLOCK];
        let mut acc = [0.0f64; BLOCK];
        let mut start = 0;
        while start < out.len() {
            let len = BLOCK.min(out.len() - start);
            for (j, col) in columns.iter().enumerate().take(d) {
                let zj = &mut z[j * BLOCK..j * BLOCK + len];
                for (zv, x) in zj.iter_mut().zip(&col[start..start + len]) {
                    *zv = self.clamped_z(j, *x);
                }
            }
            let best = &mut out[start..start + len];
            best.fill(f64::INFINITY);
            for c in &km.centroids {
                acc[..len].fill(0.0);
                for (j, cj) in c.iter().enumerate() {
                    let zj = &z[j * BLOCK..j * BLOCK + len];
                    for (s, zv) in acc[..len].iter_mut().zip(zj) {
                        *s += (zv - cj) * (zv - cj);
                    }
                }
                for (b, s) in best.iter_mut().zip(&acc[..len]) {
                    *b = b.min(*s);
                }
            }
            best.iter_mut().for_each(|b| *b = b.sqrt());
            start += len;
        }
        true
    }

    /// Writes each row's Isolation Forest score into `out` (in the standardized space, each z
    /// clamped as for the other scores); `false`, with `out` untouched, when the model has no
    /// forest.
    pub fn iforest_score(&self, columns: &[&[f64]], out: &mut [f64]) -> bool {
        let Some(forest) = &self.iforest else {
            return false;
        };
        self.in_blocks(columns, out, |z, d, chunk| forest.scores(z, d, chunk));
        true
    }

    /// Writes each row's one-class SVM score `ρ − Σ αᵢ K(svᵢ, z)` into `out` (in the
    /// standardized space, each z clamped as for the other scores); `false`, with `out`
    /// untouched, when the model has no one-class SVM.
    pub fn ocsvm_score(&self, columns: &[&[f64]], out: &mut [f64]) -> bool {
        let Some(svm) = &self.ocsvm else {
            return false;
        };
        self.in_blocks(columns, out, |z, d, chunk| svm.scores(z, d, chunk));
        true
    }

    /// Calls `score` on blocks of rows standardized row after row (`d` values each), so that a
    /// detector's own data (trees, support vectors) is walked for a whole block at a time.
    fn in_blocks(
        &self,
        columns: &[&[f64]],
        out: &mut [f64],
        score: impl Fn(&[f64], usize, &mut [f64]),
    ) {
        const ROWS: usize = 1024;
        let d = self.d;
        let mut z = vec![0.0; d * ROWS];
        for (b, chunk) in out.chunks_mut(ROWS).enumerate() {
            let start = b * ROWS;
            for (j, col) in columns.iter().enumerate().take(d) {
                for (i, x) in col[start..start + chunk.len()].iter().enumerate() {
                    z[i * d + j] = self.clamped_z(j, *x);
                }
            }
            score(&z[..chunk.len() * d], d, chunk);
        }
    }

    /// Writes each row's largest seasonal |z| (see [`crate::season`]) into `out`, the rows'
    /// times in microseconds in `micros` (NaN where a time is missing); `false`, with `out`
    /// untouched, when the model has no seasonal section.
    pub fn season_zmax(&self, columns: &[&[f64]], micros: &[Option<i64>], out: &mut [f64]) -> bool {
        let Some(season) = &self.season else {
            return false;
        };
        season.zmax(&columns[..self.d.min(columns.len())], micros, out);
        true
    }

    /// Writes each row's largest forecast |z| (see [`crate::forecast`]) into `out`, the rows'
    /// times in microseconds in `micros` (NaN where a time is missing); `false`, with `out`
    /// untouched, when the model has no forecast section.
    pub fn forecast_zmax(
        &self,
        columns: &[&[f64]],
        micros: &[Option<i64>],
        out: &mut [f64],
    ) -> bool {
        let Some(forecast) = &self.forecast else {
            return false;
        };
        forecast.zmax(&columns[..self.d.min(columns.len())], micros, out);
        true
    }

    /// The seasonal z of feature `j` at value `x` and time `micros`, if the model has a
    /// seasonal section.
    pub fn season_z(&self, j: usize, micros: i64, x: f64) -> Option<f64> {
        let season = self.season.as_ref()?;
        Some(season.z(j, season.slot_of(micros), x))
    }

    /// The robust z of feature `j` at value `x`.
    pub fn robust_z(&self, j: usize, x: f64) -> f64 {
        (x - self.median[j]) * self.a[j]
    }

    /// [`Scorer::robust_z`] within ±[`Z_LIMIT`], as the detectors fitted on a sample read it.
    fn clamped_z(&self, j: usize, x: f64) -> f64 {
        self.robust_z(j, x).clamp(-Z_LIMIT, Z_LIMIT)
    }
}

/// The first of `0..d` whose |z| is the largest (0 when none is larger than the first's), each
/// |z| computed once.
fn first_largest(d: usize, z: &dyn Fn(usize) -> f64) -> usize {
    if d == 0 {
        return 0;
    }
    let (mut best, mut at) = (0, z(0).abs());
    for j in 1..d {
        let v = z(j).abs();
        if v > at {
            (best, at) = (j, v);
        }
    }
    best
}

/// Where [`Scorer::all`] writes, one slot per row each.
pub struct AllScores<'a> {
    /// The SPE.
    pub spe: &'a mut [f64],
    /// Hotelling's T².
    pub t2: &'a mut [f64],
    /// The largest robust |z|.
    pub zmax: &'a mut [f64],
    /// The feature with the largest share of the SPE.
    pub top: &'a mut [Option<u32>],
}

/// Rows scored at a time. A block's standardized values and component scores, (d + k) × BLOCK
/// values (15 KB for d = 8, k = 7), stay in the L1 cache while every score is computed from
/// them; scoring whole batches column by column went to memory for each of the d × k passes.
/// Every row's arithmetic is the same, in the same order, whatever the block size.
const BLOCK: usize = 128;

/// One block of rows: y (d rows of [`BLOCK`] values, feature-major) and t (k rows), of which
/// the first `len` values of each row are in use.
struct Block {
    y: Vec<f64>,
    t: Vec<f64>,
    len: usize,
}

impl Block {
    #[inline(always)]
    fn y(&self, j: usize) -> &[f64] {
        &self.y[j * BLOCK..j * BLOCK + self.len]
    }

    #[inline(always)]
    fn t(&self, i: usize) -> &[f64] {
        &self.t[i * BLOCK..i * BLOCK + self.len]
    }

    /// SPE = ‖y‖² − ‖t‖², clamped at 0 (rounding can leave a tiny negative where the row lies
    /// in the component space).
    #[inline(always)]
    fn spe(&self, d: usize, k: usize, out: &mut [f64]) {
        out.fill(0.0);
        for j in 0..d {
            for (o, v) in out.iter_mut().zip(self.y(j)) {
                *o += v * v;
            }
        }
        for i in 0..k {
            for (o, v) in out.iter_mut().zip(self.t(i)) {
                *o -= v * v;
            }
        }
        out.iter_mut().for_each(|o| *o = o.max(0.0));
    }

    /// T² = Σ tᵢ²/λᵢ.
    #[inline(always)]
    fn t2(&self, inv_lambda: &[f64], out: &mut [f64]) {
        out.fill(0.0);
        for (i, inv) in inv_lambda.iter().enumerate() {
            for (o, v) in out.iter_mut().zip(self.t(i)) {
                *o += v * v * inv;
            }
        }
    }

    /// The feature with the largest squared residual yⱼ − Σᵢ pⱼᵢ tᵢ (None where all are 0).
    #[inline(always)]
    fn top(&self, d: usize, k: usize, p: &[f64], out: &mut [Option<u32>]) {
        let len = self.len;
        let mut best = [0.0f64; BLOCK];
        // The feature's index as an f64 beside its share (−1: none), chosen without a branch
        // so the loop vectorizes.
        let mut index = [-1.0f64; BLOCK];
        let mut r = [0.0f64; BLOCK];
        for j in 0..d {
            r[..len].copy_from_slice(self.y(j));
            for i in 0..k {
                let pji = p[j * k + i];
                for (rv, tv) in r[..len].iter_mut().zip(self.t(i)) {
                    *rv -= pji * tv;
                }
            }
            let jf = j as f64;
            for ((b, x), rv) in best[..len].iter_mut().zip(&mut index[..len]).zip(&r[..len]) {
                let share = rv * rv;
                let larger = share > *b;
                *x = if larger { jf } else { *x };
                *b = if larger { share } else { *b };
            }
        }
        for (o, x) in out.iter_mut().zip(&index[..len]) {
            *o = (*x >= 0.0).then_some(*x as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scorer of the model trained on `columns` with the default options.
    fn fitted_scorer(columns: &[Vec<f64>]) -> Scorer {
        let options = crate::TrainOptions::default();
        let fitted = crate::train::fit_in_memory(columns, &options).unwrap();
        let names: Vec<String> = (0..columns.len()).map(|j| format!("f{j}")).collect();
        let rows = columns.first().map_or(0, Vec::len) as u64;
        let model = crate::train::artifact("m", &names, &fitted, &options, rows, "", None).unwrap();
        Scorer::new(&model)
    }

    #[test]
    fn top_feature_agrees_with_the_largest_contribution() {
        let (d, n) = (5, 500);
        let columns: Vec<Vec<f64>> = (0..d)
            .map(|j| {
                (0..n)
                    .map(|i| {
                        (i as f64 * 0.01).sin() * (j + 1) as f64
                            + ((i * (j + 3)) as f64 * 0.37).sin()
                    })
                    .collect()
            })
            .collect();
        let scorer = fitted_scorer(&columns);
        let refs: Vec<&[f64]> = columns.iter().map(|c| c.as_slice()).collect();
        let mut top = vec![None; n];
        scorer.top_feature(&refs, &mut top);
        for i in 0..n {
            let row: Vec<f64> = columns.iter().map(|c| c[i]).collect();
            let shares = scorer.contributions(&row);
            let expected = (0..d)
                .filter(|j| shares[*j] > 0.0)
                .max_by(|a, b| shares[*a].total_cmp(&shares[*b]))
                .map(|j| j as u32);
            assert_eq!(top[i], expected, "row {i}: {shares:?}");
        }
        // all() writes exactly what the single scores write.
        let (mut spe, mut t2, mut zmax, mut top2) =
            (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![None; n]);
        scorer.all(
            &refs,
            AllScores {
                spe: &mut spe,
                t2: &mut t2,
                zmax: &mut zmax,
                top: &mut top2,
            },
        );
        let mut one = vec![0.0; n];
        scorer.spe(&refs, &mut one);
        assert_eq!(spe, one);
        scorer.t2(&refs, &mut one);
        assert_eq!(t2, one);
        scorer.zmax(&refs, &mut one);
        assert_eq!(zmax, one);
        assert_eq!(top2, top);
        // Blocks change nothing: a row scored alone gets the very same bits as in a batch of
        // several blocks (500 rows: three full blocks and a partial one).
        for i in [0, 1, BLOCK - 1, BLOCK, 2 * BLOCK + 5, n - 1] {
            let row: Vec<&[f64]> = refs.iter().map(|c| &c[i..=i]).collect();
            let (mut s1, mut t1, mut z1, mut top1) = ([0.0], [0.0], [0.0], [None]);
            scorer.all(
                &row,
                AllScores {
                    spe: &mut s1,
                    t2: &mut t1,
                    zmax: &mut z1,
                    top: &mut top1,
                },
            );
            assert_eq!(
                (s1[0].to_bits(), t1[0].to_bits(), z1[0].to_bits(), top1[0]),
                (spe[i].to_bits(), t2[i].to_bits(), zmax[i].to_bits(), top[i]),
                "row {i}"
            );
        }
    }
    #[test]
    fn the_avx2_loops_give_the_portable_loops_bits() {
        // On a CPU with AVX2 (every machine this project runs CI on), `all_blocks` takes the
        // loops compiled for it; they must give every score and top metric to the bit, also
        // for NaN, infinities, values out of range, ties and a partial block.
        let (d, n) = (6, 3 * BLOCK + 29);
        let mut columns: Vec<Vec<f64>> = (0..d)
            .map(|j| {
                (0..n)
                    .map(|i| ((i * (j + 2)) as f64 * 0.13).sin() * (j + 1) as f64 + 0.3 * j as f64)
                    .collect()
            })
            .collect();
        let scorer = fitted_scorer(&columns);
        for (i, v) in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e200,
            -1e160,
            0.0,
        ]
        .into_iter()
        .enumerate()
        {
            columns[i % d][17 * i + 3] = v;
        }
        columns[1][BLOCK + 2] = columns[0][BLOCK + 2];
        let refs: Vec<&[f64]> = columns.iter().map(|c| c.as_slice()).collect();
        let run = |dispatch: bool| {
            let (mut spe, mut t2, mut zmax, mut top) =
                (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![None; n]);
            let mut named = vec![None; n];
            let out = AllScores {
                spe: &mut spe,
                t2: &mut t2,
                zmax: &mut zmax,
                top: &mut top,
            };
            match dispatch {
                true => scorer.all_blocks(&refs, out, Some(&mut named)),
                false => scorer.all_blocks_with(&refs, out, Some(&mut named)),
            }
            let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
            (bits(spe), bits(t2), bits(zmax), top, named)
        };
        let (fast, portable) = (run(true), run(false));
        assert!(fast.3.contains(&None) && fast.4.contains(&None));
        assert_eq!(fast, portable);
    }

    use crate::moments::CoMoments;
    use crate::pca::{KRule, fit};

    /// Medians 10 and 20, scales 2 and 4, one component along (0.8, 0.6).
    fn two_metric_scorer() -> Scorer {
        let pca = Pca {
            mean: vec![0.0, 0.0],
            components: vec![vec![0.8, 0.6]],
            eigenvalues: vec![1.9, 0.1],
            explained_variance_ratio: vec![0.95, 0.05],
        };
        Scorer::from_pca(vec![10.0, 20.0], vec![2.0, 4.0], &pca)
    }

    /// Two columns of `n` rows, periodic.
    fn two_columns(n: usize) -> (Vec<f64>, Vec<f64>) {
        let a = (0..n).map(|i| (i % 13) as f64).collect();
        let b = (0..n).map(|i| 30.0 - (i % 7) as f64).collect();
        (a, b)
    }

    #[test]
    fn kmeans_distances_in_blocks_equal_the_distance_of_each_row() {
        let mut s = two_metric_scorer();
        let mut out = vec![0.0; 3];
        assert!(!s.kmeans_distance(&[&[1.0; 3], &[1.0; 3]], &mut out));
        let km = crate::KMeansParams {
            k: 2,
            centroids: vec![vec![0.0, 0.0], vec![3.0, -1.0]],
            limit: 1.0,
            tail: None,
            sample_rows: 2,
            seed: 0,
        };
        s.kmeans = Some(km.clone());
        let n = 2 * BLOCK + 7;
        let (a, b) = two_columns(n);
        let mut out = vec![0.0; n];
        assert!(s.kmeans_distance(&[&a, &b], &mut out));
        for i in 0..n {
            let z = [(a[i] - 10.0) / 2.0, (b[i] - 20.0) / 4.0];
            assert!((out[i] - km.distance(&z)).abs() < 1e-12, "row {i}");
        }
    }

    #[test]
    fn iforest_scores_in_blocks_equal_the_score_of_each_row() {
        let mut s = two_metric_scorer();
        let n = 2 * 1024 + 5;
        let (a, b) = two_columns(n);
        let z: Vec<Vec<f64>> = (0..n)
            .map(|i| vec![(a[i] - 10.0) / 2.0, (b[i] - 20.0) / 4.0])
            .collect();
        let forest = crate::iforest::train_with(&z, None, 10, 64).unwrap();
        s.iforest = Some(forest.clone());
        let mut out = vec![0.0; n];
        assert!(s.iforest_score(&[&a, &b], &mut out));
        for i in 0..n {
            assert!((out[i] - forest.score(&z[i])).abs() < 1e-12, "row {i}");
        }
    }

    #[test]
    fn top_z_names_what_explain_names_under_the_robust_z() {
        let s = two_metric_scorer();
        // Medians 10 and 20, scales 2 and 4: a tie (both 1 scale out) goes to the first; a
        // value past the clamp ties with a clamped one; NaN names nothing.
        let rows = [
            [12.0, 24.0],
            [10.0, 28.0],
            [14.0, 20.0],
            [1e12, -1e12],
            [f64::NAN, 20.0],
            [10.0, f64::INFINITY],
            [10.0, 20.0],
        ];
        // Every row at once, a column at a time, names what explain names for each row alone.
        let columns: Vec<Vec<f64>> = (0..2)
            .map(|j| rows.iter().map(|r| r[j]).collect())
            .collect();
        let columns: Vec<&[f64]> = columns.iter().map(|c| c.as_slice()).collect();
        let ([spe, t2, zmax], top, at_once) = scored(&s, &columns, true);
        // The other scores are those of `all`.
        let ([spe2, t22, zmax2], top2, _) = scored(&s, &columns, false);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&spe), bits(&spe2));
        assert_eq!(bits(&t2), bits(&t22));
        assert_eq!(bits(&zmax), bits(&zmax2));
        assert_eq!(top, top2);
        for (row, named) in rows.iter().zip(&at_once) {
            assert_eq!(
                *named,
                s.explain(crate::Lead::Z, row, None).map(|(j, _)| j as u32),
                "{row:?}"
            );
        }
        assert_eq!(at_once[..4], [Some(0), Some(1), Some(0), Some(0)]);
        assert_eq!(at_once[4..6], [None, None]);
        let (_, _, one) = scored(&s, &[&[10.0], &[28.0]], true);
        assert_eq!(one, [Some(1)]);
    }

    /// `[spe, t2, zmax]`, the top features and the robust |z|'s top metrics of some rows.
    type Scored = ([Vec<f64>; 3], Vec<Option<u32>>, Vec<Option<u32>>);

    /// `[spe, t2, zmax]`, the top feature and the robust |z|'s top metric of every row of
    /// `columns`, by [`Scorer::all_with_top_z`] (by [`Scorer::all`] without `with_top_z`, the
    /// last left at `Some(9)`).
    fn scored(s: &Scorer, columns: &[&[f64]], with_top_z: bool) -> Scored {
        let n = columns[0].len();
        let (mut spe, mut t2, mut zmax, mut top) =
            (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![None; n]);
        let mut named = vec![Some(9); n];
        let out = AllScores {
            spe: &mut spe,
            t2: &mut t2,
            zmax: &mut zmax,
            top: &mut top,
        };
        if with_top_z {
            s.all_with_top_z(columns, out, &mut named);
        } else {
            s.all(columns, out);
        }
        ([spe, t2, zmax], top, named)
    }

    #[test]
    fn top_z_holds_across_blocks() {
        // More rows than a block, the row that leads changing from row to row, a tie and a
        // non-finite value here and there: each row names what explain names for it alone.
        let s = two_metric_scorer();
        let n = 3 * BLOCK + 17;
        let a: Vec<f64> = (0..n).map(|i| 10.0 + ((i * 7) % 11) as f64 - 5.0).collect();
        let mut b: Vec<f64> = (0..n)
            .map(|i| 20.0 + ((i * 5) % 13) as f64 * 2.0 - 12.0)
            .collect();
        b[BLOCK - 1] = f64::NAN;
        b[2 * BLOCK] = f64::NEG_INFINITY;
        let ([_, _, zmax], _, named) = scored(&s, &[&a, &b], true);
        let mut leads = [0, 0, 0];
        for i in 0..n {
            let want = s
                .explain(crate::Lead::Z, &[a[i], b[i]], None)
                .map(|(j, _)| j as u32);
            assert_eq!(named[i], want, "row {i}");
            leads[want.map_or(2, |j| j as usize)] += 1;
        }
        assert!(leads.iter().all(|&c| c > 0), "{leads:?}");
        let mut z = vec![0.0; n];
        s.zmax(&[&a, &b], &mut z);
        assert_eq!(zmax, z);
    }

    #[test]
    fn top_deviation_is_the_gap_to_what_the_other_metrics_say() {
        // One component along (0.8, 0.6), medians 10 and 20, scales 2 and 4. At the medians
        // there is no gap. Moving b alone by +8 (y = (0, 2)): t = 1.2, the reconstruction is
        // (0.96, 0.72), the residual (-0.96, 1.28); b is top, 1.28 scales = 5.12 units above
        // what a says it should be.
        let s = two_metric_scorer();
        assert_eq!(s.top_deviation(&[10.0, 20.0]), None);
        let (j, gap) = s.top_deviation(&[10.0, 28.0]).unwrap();
        assert_eq!(j, 1);
        assert!((gap - 5.12).abs() < 1e-12, "{gap}");
        assert_eq!(s.top_deviation(&[f64::NAN, 28.0]), None);
        // The same metric as top_feature picks.
        let mut top = [None];
        s.top_feature(&[&[10.0], &[28.0]], &mut top);
        assert_eq!(top[0], Some(1));
    }

    #[test]
    fn a_value_far_out_of_range_gets_the_largest_scores_not_zero() {
        let median = vec![0.0, 0.0];
        let scale = vec![1.0, 1.0];
        let pca = Pca {
            mean: vec![0.0, 0.0],
            components: vec![vec![std::f64::consts::FRAC_1_SQRT_2; 2]],
            eigenvalues: vec![1.9, 0.1],
            explained_variance_ratio: vec![0.95, 0.05],
        };
        let s = Scorer::from_pca(median, scale, &pca);
        let (a, b) = (vec![1e160, 1.0, f64::MAX], vec![0.0, 1.0, -f64::MAX]);
        let (mut spe, mut t2, mut z) = (vec![0.0; 3], vec![0.0; 3], vec![0.0; 3]);
        s.spe_t2_zmax(&[&a, &b], &mut spe, &mut t2, &mut z);
        for i in [0, 2] {
            assert!(
                spe[i].is_finite() && spe[i] > 1e150,
                "row {i}: spe {}",
                spe[i]
            );
            assert!(t2[i].is_finite(), "row {i}: t2 {}", t2[i]);
            assert_eq!(z[i], Z_LIMIT);
        }
        assert!(spe[1] < 1.0 && z[1] == 1.0);
    }

    #[test]
    fn column_scores_equal_the_matrix_formulas() {
        let rows: Vec<[f64; 3]> = (0..300)
            .map(|i| {
                let t = f64::from(i) * 0.05;
                [
                    10.0 + 3.0 * t.sin(),
                    5.0 + 2.0 * t.sin() + 0.3 * (t * 5.0).cos(),
                    (t * 2.0).cos(),
                ]
            })
            .collect();
        let cols: Vec<Vec<f64>> = (0..3)
            .map(|j| rows.iter().map(|r| r[j]).collect())
            .collect();
        let median = vec![10.0, 5.0, 0.0];
        let scale = vec![2.0, 1.5, 0.7];
        let z: Vec<Vec<f64>> = (0..3)
            .map(|j| cols[j].iter().map(|x| (x - median[j]) / scale[j]).collect())
            .collect();
        let mut m = CoMoments::new(3);
        m.update(&z.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let pca = fit(&m, KRule::Fixed(1)).unwrap();
        let s = Scorer::from_pca(median.clone(), scale.clone(), &pca);
        let refs: Vec<&[f64]> = cols.iter().map(Vec::as_slice).collect();
        let (mut spe, mut t2) = (vec![0.0; 300], vec![0.0; 300]);
        s.spe(&refs, &mut spe);
        s.t2(&refs, &mut t2);
        for i in [0, 17, 299] {
            let y: Vec<f64> = (0..3).map(|j| z[j][i] - pca.mean[j]).collect();
            let t: f64 = (0..3).map(|j| pca.components[0][j] * y[j]).sum();
            let r: Vec<f64> = (0..3).map(|j| y[j] - pca.components[0][j] * t).collect();
            let expected_spe: f64 = r.iter().map(|v| v * v).sum();
            assert!(
                (spe[i] - expected_spe).abs() < 1e-10,
                "{} vs {expected_spe}",
                spe[i]
            );
            assert!((t2[i] - t * t / pca.eigenvalues[0]).abs() < 1e-10);
            let c = s.contributions(&[cols[0][i], cols[1][i], cols[2][i]]);
            assert!((c.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            for j in 0..3 {
                assert!((c[j] - r[j] * r[j] / expected_spe).abs() < 1e-9);
            }
        }
        assert!((s.robust_z(1, 8.0) - 2.0).abs() < 1e-12);
        let mut zmax = vec![0.0; 1];
        s.zmax(&[&[10.0], &[2.0], &[-1.4]], &mut zmax);
        assert!((zmax[0] - 2.0).abs() < 1e-12, "{zmax:?}");
    }
}
