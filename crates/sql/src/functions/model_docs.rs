//! The documentation of the functions [`ModelFunction`](super::model_scalar::ModelFunction)
//! computes, as `information_schema` and `tads_help()` show it.

use datafusion::logical_expr::Documentation;

use super::common::doc;
use super::model_scalar::ModelScore;

impl ModelScore {
    /// The function's documentation: what it computes, its syntax, an example and its arguments.
    pub(super) fn documentation(self) -> Documentation {
        let null_rule = " NULL where the model is NULL or any metric is NULL, NaN or infinite.";
        let (description, syntax, example) = match self {
            Self::Spe => (
                "The squared prediction error (SPE, Q statistic) of a row under a PCA model: the squared \
                 length of the part of its robustly standardized metrics that the model's components do \
                 not explain. Compare with the model's SPE limit (`models.spe_limit_99`).",
                "pca_score(model, x1, ..., xd)",
                "SELECT host_id, ts, pca_score('m', cpu_pct, mem_pct, latency_ms) AS spe FROM telemetry",
            ),
            Self::T2 => (
                "Hotelling's T² of a row in the model's retained components: how unusual the row is \
                 along the directions the model explains.",
                "pca_t2(model, x1, ..., xd)",
                "SELECT pca_t2('m', cpu_pct, mem_pct, latency_ms) FROM telemetry",
            ),
            Self::MadZmax => (
                "The largest robust z-score |x - median| / (1.4826 MAD) over the row's metrics, with \
                 the medians and MADs of the model.",
                "mad_zmax(model, x1, ..., xd)",
                "SELECT mad_zmax('m', cpu_pct, mem_pct, latency_ms) FROM telemetry",
            ),
            Self::Contrib => (
                "Each metric's share of the row's SPE, in the model's feature order (sums to 1; all 0 \
                 when the SPE is 0).",
                "pca_contrib(model, x1, ..., xd)",
                "SELECT pca_contrib('m', cpu_pct, mem_pct, latency_ms) FROM telemetry",
            ),
            Self::TopMetric => (
                "The name of the metric with the largest share of the row's SPE: which metric is \
                 anomalous, not only that one is. NULL also where the SPE is 0.",
                "pca_top_metric(model, x1, ..., xd)",
                "SELECT pca_top_metric('m', cpu_pct, mem_pct, latency_ms) FROM telemetry",
            ),
            Self::TopDeviation => (
                "How far the row's top metric (`pca_top_metric`) lies from what the model expected of \
                 it, in the metric's own units: actual minus expected, where the expected value is the \
                 row's reconstruction from the model's components, what the other metrics say it should \
                 be. `tads watch` and `tads score` deliver it with an alert's peak as expected against \
                 actual. NULL also where the SPE is 0.",
                "pca_top_deviation(model, x1, ..., xd)",
                "SELECT pca_top_metric('m', cpu_pct, mem_pct, latency_ms), pca_top_deviation('m', cpu_pct, mem_pct, latency_ms) FROM telemetry",
            ),
            Self::KMeansDistance => (
                "The distance from the row's robustly standardized metrics to the nearest of the \
                 model's k-means centroids (trained by `tads train --kmeans`): how far the row lies from \
                 every mode the service had in training. Compare with the model's limit, the 0.999 \
                 quantile of the training distances; `fusion.detectors = [\"pca\", \"mad\", \"kmeans\"]` \
                 puts it into anomaly_score. NULL also where the model has no k-means section.",
                "kmeans_distance(model, x1, ..., xd)",
                "SELECT kmeans_distance('m', cpu_pct, mem_pct, latency_ms) FROM telemetry",
            ),
            Self::IForestScore => (
                "The Isolation Forest score of the row's robustly standardized metrics under the model's \
                 forest (trained by `tads train --iforest`): 2^(-E[h]/c(psi)), about 0.5 for ordinary rows \
                 and towards 1 for rows that random splits isolate quickly. `fusion.detectors = \
                 [\"pca\", \"mad\", \"iforest\"]` puts it into anomaly_score, 0 at its training median and \
                 1.0 at its limit. NULL also where the model has no forest.",
                "iforest_score(model, x1, ..., xd)",
                "SELECT iforest_score('m', cpu_pct, mem_pct, latency_ms) FROM telemetry",
            ),
            Self::OcsvmScore => (
                "The one-class SVM score of the row's robustly standardized metrics (trained by `tads train --ocsvm` on up to 1,000 sampled training rows, ν = 0.05, a Gaussian kernel of \
                 width d): rho - sum(alpha_i exp(-|sv_i - z|^2 / d)), 0 on the boundary around the \
                 training rows, above 0 outside it. `fusion.detectors = [\"pca\", \"mad\", \"ocsvm\"]` \
                 puts it into anomaly_score, 0 at its training median and 1.0 at its limit. NULL also \
                 where the model has no one-class SVM.",
                "ocsvm_score(model, x1, ..., xd)",
                "SELECT ocsvm_score('m', cpu_pct, mem_pct, latency_ms) FROM telemetry",
            ),
            Self::SeasonalZmax => (
                "The largest |z| of the row's metrics against the model's seasonal baseline (trained by \
                 `tads train --seasonal`): per metric, the median and MAD of its slot, the hour of the \
                 day or of the week that training found to repeat, for the metrics that repeat; the \
                 plain robust z for the others. The rows' timestamps come last. `fusion.detectors = \
                 [\"pca\", \"mad\", \"seasonal\"]` puts it into anomaly_score over its limit (the MAD \
                 cut, raised to the training tail). NULL also where the time is NULL or the model has \
                 no seasonal section.",
                "seasonal_zmax(model, x1, ..., xd, ts)",
                "SELECT seasonal_zmax('m', cpu_pct, mem_pct, latency_ms, ts) FROM telemetry",
            ),
            Self::ForecastZmax => (
                "The largest |z| of the row's metrics against the model's forecast (trained by \
                 `tads train --forecast`): an MSTL decomposition of each metric's hourly medians \
                 (daily, and weekly with two weeks of training or more) forecasts each hour of the \
                 day or week from its last cycle, and the 99 % interval of the training residuals \
                 surrounds it; z is the distance from the forecast in units of the interval's width \
                 on its side, so ±1 lies on the interval's edges. The rows' timestamps come last. \
                 `fusion.detectors = [\"pca\", \"mad\", \"forecast\"]` puts it into anomaly_score \
                 over its limit (2, raised to the training tail). NULL also where the time is NULL or \
                 the model has no forecast section.",
                "forecast_zmax(model, x1, ..., xd, ts)",
                "SELECT forecast_zmax('m', cpu_pct, mem_pct, latency_ms, ts) FROM telemetry",
            ),
            Self::FusedTopMetric => (
                "The metric that explains the row's fused score (anomaly_score): where the PCA signal \
                 is the largest, its top metric (pca_top_metric); where the seasonal baseline's or the \
                 forecast's is, the metric with the largest |z| of that detector; where another's is (MAD, k-means, the \
                 Isolation Forest), the metric with the largest robust |z|. `tads score` writes it as \
                 `top_metric` and names an alert's top metrics by it.",
                "anomaly_top_metric(model, x1, ..., xd [, ts])",
                "SELECT anomaly_top_metric('m', cpu_pct, mem_pct, latency_ms) FROM telemetry",
            ),
            Self::FusedTopDeviation => (
                "How far the metric anomaly_top_metric names lies from what its detector expected of \
                 it, in its own units (actual minus expected): PCA's reconstruction \
                 (pca_top_deviation), the seasonal slot's centre, the forecast, or the model's median. Alerts \
                 deliver it as expected against actual.",
                "anomaly_top_deviation(model, x1, ..., xd [, ts])",
                "SELECT anomaly_top_deviation('m', cpu_pct, mem_pct, latency_ms) FROM telemetry",
            ),
            Self::All => (
                "Every score of a row at once, from one standardization and projection: a struct {pca_spe, pca_t2, mad_zmax, top_metric, score} equal to pca_score, pca_t2, mad_zmax, anomaly_top_metric and anomaly_score. One projection instead of five; `tads score` writes its fields as columns. Each field is NULL where that function would be.",
                "pca_scores(model, x1, ..., xd [, ts])",
                "SELECT s['pca_spe'], s['top_metric'] FROM (SELECT pca_scores('m', cpu_pct, mem_pct, latency_ms) AS s FROM telemetry)",
            ),
            Self::Fused => (
                "The fused anomaly score of a row, 1.0 at threshold: the largest of the SPE divided by \
                 the model's SPE limit (spe_jm_999), Hotelling's T² divided by its limit (t2_999) and the \
                 largest robust |z| divided by the model's cut, with the detectors of `fusion.detectors` \
                 (the seasonal one only when the rows' timestamps are passed last). `tads score` writes it as `score` (with the \
                 fusion of its configuration) and opens alerts on it.",
                "anomaly_score(model, x1, ..., xd [, ts])",
                "SELECT host_id, ts, anomaly_score('m', cpu_pct, mem_pct, latency_ms) AS score FROM telemetry",
            ),
        };
        // The scores are rounded where they are made (see `single_precision`).
        let precision = match self {
            Self::Contrib
            | Self::TopMetric
            | Self::TopDeviation
            | Self::FusedTopMetric
            | Self::FusedTopDeviation => "",
            _ => " Scores are given to single precision (about 7 significant digits) as DOUBLE.",
        };
        doc(&format!("{description}{null_rule}{precision}"), syntax, example)
            .with_argument(
                "model",
                "The model's name: a string literal, or a column (per-row models).",
            )
            .with_argument(
                "x1, ..., xd",
                "The model's metrics in its feature order; any numeric type.",
            )
            .with_argument(
                "ts",
                "Optional (required by seasonal_zmax and forecast_zmax): the rows' timestamps, last; \
                 anomaly_score and pca_scores need them for the `seasonal` and `forecast` detectors.",
            )
            .build()
    }
}
