//! The scalar functions that score rows against a named model: `pca_score`, `pca_t2`,
//! `mad_zmax`, `pca_contrib`, `pca_top_metric` and `pca_top_deviation`. They share one implementation; each differs
//! only in its kernel and return type. Every score they return is rounded to single precision
//! ([`single_precision`]).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Float64Builder, ListBuilder, StringBuilder, StructArray,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, internal_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
};
use tads_model::{AllScores, Fusion, Lead, Sampled, Signals};

use super::common::{
    check_model_call, finite_rows, for_each_model_run, metric_arrays, micros_of, split_time,
};
use crate::registry::ModelRegistry;

/// Rounds every score to single precision (24 significant bits, about 7 decimal digits), kept
/// as `f64` so that the columns' type does not change. The digits beyond are far below what a
/// fitted model can tell apart, and they cost bytes: written byte-stream-split, a score's low
/// bytes are then all zero and compress to nothing, which halves the four score columns of a
/// scored file. Rounding here, where the scores are made, keeps every consumer in agreement:
/// the alerts `tads score` opens are those its written scores give. A value beyond `f32`'s
/// range is kept as it is.
pub(crate) fn single_precision(scores: &mut [f64]) {
    for x in scores {
        let r = *x as f32;
        if r.is_finite() {
            *x = f64::from(r);
        }
    }
}

/// Which score a [`ModelFunction`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelScore {
    /// `pca_score`: squared prediction error in the standardized space.
    Spe,
    /// `pca_t2`: Hotelling's T² in the retained components.
    T2,
    /// `mad_zmax`: the largest robust |z| over the metrics.
    MadZmax,
    /// `pca_contrib`: each metric's share of the SPE.
    Contrib,
    /// `pca_top_metric`: the metric with the largest share of the SPE.
    TopMetric,
    /// `pca_top_deviation`: how far the top metric lies from what the model expected of it.
    TopDeviation,
    /// `kmeans_distance`: the distance to the nearest k-means centroid.
    KMeansDistance,
    /// `iforest_score`: the Isolation Forest score.
    IForestScore,
    /// `ocsvm_score`: the one-class SVM score.
    OcsvmScore,
    /// `seasonal_zmax`: the largest |z| against the row's hour of the day or week.
    SeasonalZmax,
    /// `forecast_zmax`: the largest |z| against the MSTL forecast's interval.
    ForecastZmax,
    /// `anomaly_top_metric`: the metric that explains the fused score.
    FusedTopMetric,
    /// `anomaly_top_deviation`: how far that metric lies from what its detector expected.
    FusedTopDeviation,
    /// `pca_scores`: the SPE, T², largest |z|, top metric and fused score at once, as a struct.
    All,
    /// `anomaly_score`: the SPE over its limit fused with the largest |z| over its cut.
    Fused,
}

/// The fields of `pca_scores`, named as `tads score` names its columns.
pub const ALL_FIELDS: [&str; 5] = ["pca_spe", "pca_t2", "mad_zmax", "top_metric", "score"];

/// One score column: rows whose metrics were not all finite, that no model
/// scored, or whose score is not finite are null; the rest are rounded by
/// [`single_precision`].
fn score_column(mut scores: Vec<f64>, valid: &[bool], scored: &[bool]) -> ArrayRef {
    let ok: Vec<bool> = (0..scores.len())
        .map(|i| valid[i] && scored[i] && scores[i].is_finite())
        .collect();
    single_precision(&mut scores);
    Arc::new(Float64Array::new(scores.into(), Some(NullBuffer::from(ok))))
}

fn all_fields() -> datafusion::arrow::datatypes::Fields {
    ALL_FIELDS
        .iter()
        .map(|n| {
            let t = if *n == "top_metric" {
                DataType::Utf8
            } else {
                DataType::Float64
            };
            Field::new(*n, t, true)
        })
        .collect()
}

impl ModelScore {
    fn name(self) -> &'static str {
        match self {
            Self::Spe => "pca_score",
            Self::T2 => "pca_t2",
            Self::MadZmax => "mad_zmax",
            Self::Contrib => "pca_contrib",
            Self::TopMetric => "pca_top_metric",
            Self::TopDeviation => "pca_top_deviation",
            Self::KMeansDistance => "kmeans_distance",
            Self::IForestScore => "iforest_score",
            Self::OcsvmScore => "ocsvm_score",
            Self::SeasonalZmax => "seasonal_zmax",
            Self::ForecastZmax => "forecast_zmax",
            Self::FusedTopMetric => "anomaly_top_metric",
            Self::FusedTopDeviation => "anomaly_top_deviation",
            Self::All => "pca_scores",
            Self::Fused => "anomaly_score",
        }
    }

    /// The type it returns.
    pub fn return_type(self) -> DataType {
        match self {
            Self::Spe
            | Self::T2
            | Self::MadZmax
            | Self::Fused
            | Self::TopDeviation
            | Self::KMeansDistance
            | Self::IForestScore
            | Self::OcsvmScore
            | Self::SeasonalZmax
            | Self::ForecastZmax
            | Self::FusedTopDeviation => DataType::Float64,
            Self::Contrib => {
                DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
            }
            Self::TopMetric | Self::FusedTopMetric => DataType::Utf8,
            Self::All => DataType::Struct(all_fields()),
        }
    }
}

/// A scalar function scoring rows against a model of the registry.
#[derive(Debug)]
pub struct ModelFunction {
    score: ModelScore,
    fusion: Fusion,
    registry: ModelRegistry,
    signature: Signature,
    documentation: Documentation,
}

impl ModelFunction {
    /// The function computing `score` with models from `registry`.
    pub fn new(score: ModelScore, registry: ModelRegistry) -> Self {
        Self {
            score,
            fusion: Fusion::default(),
            registry,
            signature: super::common::any_with_example(vec![
                DataType::Utf8,
                DataType::Float64,
                DataType::Float64,
            ]),
            documentation: score.documentation(),
        }
    }

    /// `anomaly_score` with the given fusion settings.
    pub fn fused(registry: ModelRegistry, fusion: Fusion) -> Self {
        Self::new(ModelScore::Fused, registry).with_fusion(fusion)
    }

    /// The function with other fusion settings (they matter to `anomaly_score` and to the
    /// `score` field of `pca_scores`).
    pub fn with_fusion(self, fusion: Fusion) -> Self {
        Self { fusion, ..self }
    }

    /// The models it scores with.
    pub fn registry(&self) -> &ModelRegistry {
        &self.registry
    }

    /// What it computes.
    pub fn score(&self) -> ModelScore {
        self.score
    }

    /// Its fusion settings.
    pub fn fusion(&self) -> Fusion {
        self.fusion
    }
}

impl ModelFunction {
    /// Scores the rows of one model's run as `pca_scores` does: the SPE, T², largest |z| and
    /// top metric into `out`, the fused score into `fused`; where a row's largest signal is not
    /// PCA's, its top metric is the one that detector's |z| names (see `Fusion::lead`). Returns
    /// each row's lead.
    fn fuse_run(
        &self,
        m: &crate::registry::LoadedModel,
        slices: &[&[f64]],
        times: Option<&[Option<i64>]>,
        out: AllScores<'_>,
        fused: &mut [f64],
    ) -> Vec<Lead> {
        let AllScores { spe, t2, zmax, top } = out;
        // The metrics the robust |z| names, found beside the largest |z|.
        let mut by_z = vec![None; fused.len()];
        m.scorer.all_with_top_z(
            slices,
            AllScores {
                spe: &mut *spe,
                t2: &mut *t2,
                zmax: &mut *zmax,
                top: &mut *top,
            },
            &mut by_z,
        );
        fused.copy_from_slice(spe);
        let more = SampledValues::of(&self.fusion, m, slices, times);
        let f = self.fusion.factors(&m.artifact);
        self.fusion.combine(f, fused, t2, zmax, more.view());
        let leads: Vec<Lead> = (0..fused.len())
            .map(|i| {
                let signals = Signals {
                    spe: spe[i],
                    t2: t2[i],
                    zmax: zmax[i],
                };
                self.fusion.lead(f, signals, more.view(), i)
            })
            .collect();
        let mut row = vec![0.0; slices.len()];
        for (i, &lead) in leads.iter().enumerate() {
            if lead == Lead::Z {
                top[i] = by_z[i];
            } else if lead != Lead::Pca {
                slices
                    .iter()
                    .zip(row.iter_mut())
                    .for_each(|(c, x)| *x = c[i]);
                let at = times.and_then(|t| t[i]);
                top[i] = m.scorer.explain(lead, &row, at).map(|(j, _)| j as u32);
            }
        }
        leads
    }
}

impl PartialEq for ModelFunction {
    fn eq(&self, other: &Self) -> bool {
        self.score == other.score
            && self.fusion == other.fusion
            && self.registry.same(&other.registry)
    }
}
impl Eq for ModelFunction {}
impl Hash for ModelFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.score.hash(state);
        self.fusion.hash(state);
    }
}

impl ScalarUDFImpl for ModelFunction {
    fn name(&self) -> &str {
        self.score.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        internal_err!("{}: return_field_from_args is used instead", self.name())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let literal = args.scalar_arguments.first().copied().flatten();
        check_model_call(self.name(), &self.registry, args.arg_fields, literal)?;
        let after_model = args.arg_fields.get(1..).unwrap_or_default();
        if matches!(
            self.score,
            ModelScore::SeasonalZmax | ModelScore::ForecastZmax
        ) && !split_time(after_model, |f| f.data_type().clone()).1
        {
            return plan_err!(
                "{}: expects (model, x1, ..., xd, ts): the rows' timestamps come last",
                self.name()
            );
        }
        Ok(Arc::new(Field::new(
            self.name(),
            self.score.return_type(),
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let Some((model, metrics)) = args.args.split_first() else {
            return internal_err!("{}: no arguments at plan time's check", self.name());
        };
        let (metrics, timed) = split_time(metrics, ColumnarValue::data_type);
        let micros = match args.args.last().filter(|_| timed) {
            Some(t) => Some(micros_of(t, n)?),
            None => None,
        };
        let times = |rows: &std::ops::Range<usize>| micros.as_ref().map(|t| &t[rows.clone()]);
        let columns = metric_arrays(metrics, n)?;
        let valid = finite_rows(&columns, n);
        let mut scored = vec![false; n];
        let d = columns.len();
        let values: Vec<&[f64]> = columns.iter().map(|c| c.values().as_ref()).collect();
        let result: ArrayRef = match self.score {
            ModelScore::Spe
            | ModelScore::T2
            | ModelScore::MadZmax
            | ModelScore::Fused
            | ModelScore::KMeansDistance
            | ModelScore::IForestScore
            | ModelScore::OcsvmScore
            | ModelScore::SeasonalZmax
            | ModelScore::ForecastZmax => {
                let mut out = vec![0.0; n];
                let fused = self.score == ModelScore::Fused;
                let mut zmax = if fused { vec![0.0; n] } else { Vec::new() };
                let mut t2 = if fused { vec![0.0; n] } else { Vec::new() };
                for_each_model_run(self.name(), &self.registry, model, Some(d), n, |m, rows| {
                    let slices: Vec<&[f64]> = values.iter().map(|v| &v[rows.clone()]).collect();
                    let target = &mut out[rows.clone()];
                    match self.score {
                        ModelScore::Spe => m.scorer.spe(&slices, target),
                        ModelScore::T2 => m.scorer.t2(&slices, target),
                        ModelScore::KMeansDistance => {
                            if !m.scorer.kmeans_distance(&slices, target) {
                                return Ok(());
                            }
                        }
                        ModelScore::IForestScore => {
                            if !m.scorer.iforest_score(&slices, target) {
                                return Ok(());
                            }
                        }
                        ModelScore::OcsvmScore => {
                            if !m.scorer.ocsvm_score(&slices, target) {
                                return Ok(());
                            }
                        }
                        ModelScore::SeasonalZmax => {
                            let Some(t) = times(&rows) else {
                                return Ok(());
                            };
                            if !m.scorer.season_zmax(&slices, t, target) {
                                return Ok(());
                            }
                        }
                        ModelScore::ForecastZmax => {
                            let Some(t) = times(&rows) else {
                                return Ok(());
                            };
                            if !m.scorer.forecast_zmax(&slices, t, target) {
                                return Ok(());
                            }
                        }
                        ModelScore::Fused => {
                            let z = &mut zmax[rows.clone()];
                            let t = &mut t2[rows.clone()];
                            m.scorer.spe_t2_zmax(&slices, target, t, z);
                            let more = SampledValues::of(&self.fusion, m, &slices, times(&rows));
                            let f = self.fusion.factors(&m.artifact);
                            self.fusion.combine(f, target, t, z, more.view());
                        }
                        _ => m.scorer.zmax(&slices, target),
                    }
                    scored[rows].fill(true);
                    Ok(())
                })?;
                score_column(out, &valid, &scored)
            }
            ModelScore::All => {
                let (mut spe, mut t2, mut zmax) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
                let mut fused = vec![0.0; n];
                let mut top: Vec<Option<u32>> = vec![None; n];
                let mut runs: Vec<(std::ops::Range<usize>, Vec<String>)> = Vec::new();
                for_each_model_run(self.name(), &self.registry, model, Some(d), n, |m, rows| {
                    let slices: Vec<&[f64]> = values.iter().map(|v| &v[rows.clone()]).collect();
                    let out = AllScores {
                        spe: &mut spe[rows.clone()],
                        t2: &mut t2[rows.clone()],
                        zmax: &mut zmax[rows.clone()],
                        top: &mut top[rows.clone()],
                    };
                    self.fuse_run(m, &slices, times(&rows), out, &mut fused[rows.clone()]);
                    scored[rows.clone()].fill(true);
                    runs.push((rows, m.artifact.features.clone()));
                    Ok(())
                })?;
                let float = |v: Vec<f64>| score_column(v, &valid, &scored);
                let names = top_names(&top, &valid, runs, n);
                Arc::new(StructArray::new(
                    all_fields(),
                    vec![float(spe), float(t2), float(zmax), names, float(fused)],
                    None,
                ))
            }
            ModelScore::FusedTopMetric | ModelScore::FusedTopDeviation => {
                let mut top: Vec<Option<u32>> = vec![None; n];
                let mut gap = vec![0.0; n];
                let mut runs: Vec<(std::ops::Range<usize>, Vec<String>)> = Vec::new();
                for_each_model_run(self.name(), &self.registry, model, Some(d), n, |m, rows| {
                    let slices: Vec<&[f64]> = values.iter().map(|v| &v[rows.clone()]).collect();
                    let len = rows.len();
                    let (mut spe, mut t2, mut zmax) =
                        (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
                    let mut fused = vec![0.0; len];
                    let out = AllScores {
                        spe: &mut spe,
                        t2: &mut t2,
                        zmax: &mut zmax,
                        top: &mut top[rows.clone()],
                    };
                    let leads = self.fuse_run(m, &slices, times(&rows), out, &mut fused);
                    if self.score == ModelScore::FusedTopDeviation {
                        let t = times(&rows);
                        let mut row = vec![0.0; d];
                        for (r, lead) in leads.into_iter().enumerate() {
                            slices
                                .iter()
                                .zip(row.iter_mut())
                                .for_each(|(c, x)| *x = c[r]);
                            let at = t.and_then(|t| t[r]);
                            match m.scorer.explain(lead, &row, at) {
                                Some((_, g)) => gap[rows.start + r] = g,
                                None => top[rows.start + r] = None,
                            }
                        }
                    }
                    runs.push((rows, m.artifact.features.clone()));
                    Ok(())
                })?;
                if self.score == ModelScore::FusedTopMetric {
                    top_names(&top, &valid, runs, n)
                } else {
                    let ok: Vec<bool> = (0..n)
                        .map(|i| valid[i] && top[i].is_some() && gap[i].is_finite())
                        .collect();
                    Arc::new(Float64Array::new(gap.into(), Some(NullBuffer::from(ok))))
                }
            }
            ModelScore::TopMetric => {
                // Columnar: the argmax of the squared residuals, no allocation per row.
                let mut top: Vec<Option<u32>> = vec![None; n];
                let mut runs: Vec<(std::ops::Range<usize>, Vec<String>)> = Vec::new();
                for_each_model_run(self.name(), &self.registry, model, Some(d), n, |m, rows| {
                    let slices: Vec<&[f64]> = values.iter().map(|v| &v[rows.clone()]).collect();
                    m.scorer.top_feature(&slices, &mut top[rows.clone()]);
                    runs.push((rows, m.artifact.features.clone()));
                    Ok(())
                })?;
                top_names(&top, &valid, runs, n)
            }
            ModelScore::TopDeviation => {
                let mut out = vec![0.0; n];
                let mut ok = vec![false; n];
                for_each_model_run(self.name(), &self.registry, model, Some(d), n, |m, rows| {
                    for i in rows.filter(|i| valid[*i]) {
                        let row: Vec<f64> = values.iter().map(|v| v[i]).collect();
                        if let Some((_, gap)) = m.scorer.top_deviation(&row) {
                            (out[i], ok[i]) = (gap, true);
                        }
                    }
                    Ok(())
                })?;
                Arc::new(Float64Array::new(out.into(), Some(NullBuffer::from(ok))))
            }
            ModelScore::Contrib => {
                // Per scorable row: each metric's share of the SPE.
                let mut per_row: Vec<Option<Vec<f64>>> = vec![None; n];
                for_each_model_run(self.name(), &self.registry, model, Some(d), n, |m, rows| {
                    for i in rows.filter(|i| valid[*i]) {
                        let row: Vec<f64> = values.iter().map(|v| v[i]).collect();
                        per_row[i] = Some(m.scorer.contributions(&row));
                    }
                    Ok(())
                })?;
                let mut builder =
                    ListBuilder::with_capacity(Float64Builder::with_capacity(n * d), n);
                for r in per_row {
                    match r {
                        Some(shares) => builder.append_value(shares.into_iter().map(Some)),
                        None => builder.append_null(),
                    }
                }
                Arc::new(builder.finish())
            }
        };
        Ok(ColumnarValue::Array(result))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&self.documentation)
    }
}

/// The k-means distances, the Isolation Forest and one-class SVM scores and the seasonal and
/// forecast |z| of some rows, each where the fusion uses it for the rows' model (else empty;
/// the seasonal and forecast ones also without times).
#[derive(Default)]
struct SampledValues {
    kmeans: Vec<f64>,
    iforest: Vec<f64>,
    seasonal: Vec<f64>,
    ocsvm: Vec<f64>,
    forecast: Vec<f64>,
    residual: Vec<f64>,
}

impl SampledValues {
    fn of(
        fusion: &Fusion,
        m: &crate::registry::LoadedModel,
        slices: &[&[f64]],
        micros: Option<&[Option<i64>]>,
    ) -> Self {
        let n = slices.first().map_or(0, |s| s.len());
        let mut v = Self::default();
        if let Some(t) = micros.filter(|_| fusion.needs_seasonal(&m.artifact)) {
            v.seasonal = vec![0.0; n];
            m.scorer.season_zmax(slices, t, &mut v.seasonal);
        }
        if let Some(t) = micros.filter(|_| fusion.needs_forecast(&m.artifact)) {
            v.forecast = vec![0.0; n];
            m.scorer.forecast_zmax(slices, t, &mut v.forecast);
        }
        if fusion.needs_residual(&m.artifact) {
            v.residual = vec![0.0; n];
            m.scorer.residual_spe(slices, &mut v.residual);
        }
        if fusion.needs_kmeans(&m.artifact) {
            v.kmeans = vec![0.0; n];
            m.scorer.kmeans_distance(slices, &mut v.kmeans);
        }
        if fusion.needs_iforest(&m.artifact) {
            v.iforest = vec![0.0; n];
            m.scorer.iforest_score(slices, &mut v.iforest);
        }
        if fusion.needs_ocsvm(&m.artifact) {
            v.ocsvm = vec![0.0; n];
            m.scorer.ocsvm_score(slices, &mut v.ocsvm);
        }
        v
    }

    fn view(&self) -> Sampled<'_> {
        Sampled {
            kmeans: &self.kmeans,
            iforest: &self.iforest,
            seasonal: &self.seasonal,
            ocsvm: &self.ocsvm,
            forecast: &self.forecast,
            residual: &self.residual,
        }
    }
}

/// The names of each row's top feature: NULL outside the model runs, where a metric is not
/// finite, and where the SPE is 0.
fn top_names(
    top: &[Option<u32>],
    valid: &[bool],
    runs: Vec<(std::ops::Range<usize>, Vec<String>)>,
    n: usize,
) -> ArrayRef {
    let mut builder = StringBuilder::with_capacity(n, n * 8);
    let mut next = 0;
    for (rows, features) in runs {
        (next..rows.start).for_each(|_| builder.append_null());
        for i in rows.clone() {
            builder.append_option(
                top[i]
                    .filter(|_| valid[i])
                    .map(|j| features[j as usize].as_str()),
            );
        }
        next = rows.end;
    }
    (next..n).for_each(|_| builder.append_null());
    Arc::new(builder.finish())
}

#[cfg(test)]
mod tests {
    use super::single_precision;

    #[test]
    fn scores_are_rounded_to_single_precision_where_it_can_hold_them() {
        let mut v = [0.1, 12_345.678_901_234, 1e300, -1e300, f64::INFINITY, 0.0];
        single_precision(&mut v);
        assert_eq!(v[0], f64::from(0.1f32));
        assert_ne!(v[0], 0.1);
        assert_eq!(v[1], f64::from(12_345.678_901_234f64 as f32));
        assert_eq!(&v[2..], &[1e300, -1e300, f64::INFINITY, 0.0]);
        let mut nan = [f64::NAN];
        single_precision(&mut nan);
        assert!(nan[0].is_nan());
    }
}
