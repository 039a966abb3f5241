//! Robust location and scale: the median and the median absolute deviation (MAD).

/// The factor that makes the MAD of normal data estimate its standard deviation.
pub const MAD_SCALE: f64 = 1.4826;

/// The median of `values` (reordered in place), or `None` when empty. NaN must not be present.
pub fn median_in_place(values: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mid = n / 2;
    let (lower, upper_mid, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let upper_mid = *upper_mid;
    if n % 2 == 1 {
        Some(upper_mid)
    } else {
        // The largest of the lower half is the other middle value.
        let lower_mid = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(lower_mid + (upper_mid - lower_mid) / 2.0)
    }
}

/// The quantiles whose range floors a feature's scale: the 0.5 % and 99.5 % of its training
/// values (see [`crate::train::Standardizer`]).
pub const SCALE_TAIL: f64 = 0.995;

/// The continuous q-quantile of `values` (reordered in place): linear interpolation at position
/// q·(n − 1), as SQL's `percentile_cont`, by selection (no sort). `None` when empty; NaN must not
/// be present.
pub fn quantile_select(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let pos = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let i = pos.floor() as usize;
    let (_, at, upper) = values.select_nth_unstable_by(i, f64::total_cmp);
    let at = *at;
    let frac = pos - i as f64;
    if frac == 0.0 || upper.is_empty() {
        return Some(at);
    }
    let next = upper.iter().copied().fold(f64::INFINITY, f64::min);
    Some(at + (next - at) * frac)
}

/// Median and MAD of one feature, exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RobustStats {
    /// Number of finite values used.
    pub count: u64,
    /// The median.
    pub median: f64,
    /// The MAD scaled by [`MAD_SCALE`] (so it estimates σ for normal data).
    pub mad: f64,
    /// The mean absolute deviation from the median, scaled by √(π/2) (so it too estimates σ for
    /// normal data): the spread of a sparse metric, mostly one value, whose MAD is 0.
    pub mean_ad: f64,
    /// The [`SCALE_TAIL`] lower quantile of the values (their 0.5 %), or NaN when unknown.
    pub low: f64,
    /// The [`SCALE_TAIL`] quantile of the values (their 99.5 %), or NaN when unknown.
    pub high: f64,
}

/// √(π/2): the factor that makes the mean absolute deviation of normal data estimate σ.
pub const MEAN_AD_SCALE: f64 = 1.253_314_137_315_500_3;

impl RobustStats {
    /// The exact median, scaled MAD and tail quantiles of the finite values in `values`
    /// (reordered in place). `None` when there is no finite value.
    pub fn exact(values: &mut Vec<f64>) -> Option<Self> {
        values.retain(|v| v.is_finite());
        let median = median_in_place(values)?;
        let low = quantile_select(values, 1.0 - SCALE_TAIL)?;
        let high = quantile_select(values, SCALE_TAIL)?;
        for v in values.iter_mut() {
            *v = (*v - median).abs();
        }
        let mean_ad = values.iter().sum::<f64>() / values.len() as f64 * MEAN_AD_SCALE;
        let mad = median_in_place(values)? * MAD_SCALE;
        Some(Self {
            count: values.len() as u64,
            median,
            mad,
            mean_ad: if mean_ad.is_finite() { mean_ad } else { 0.0 },
            low,
            high,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median_in_place(&mut []), None);
        assert_eq!(median_in_place(&mut [3.0]), Some(3.0));
        assert_eq!(median_in_place(&mut [5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median_in_place(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn mad_ignores_non_finite_values_and_outliers() {
        let mut v = vec![1.0, 2.0, 3.0, 4.0, 1000.0, f64::NAN, f64::INFINITY];
        let s = RobustStats::exact(&mut v).unwrap();
        assert_eq!(s.count, 5);
        assert_eq!(s.median, 3.0);
        // |x - 3| = 2, 1, 0, 1, 997 -> median 1
        assert!((s.mad - MAD_SCALE).abs() < 1e-12);
        assert!(RobustStats::exact(&mut vec![f64::NAN]).is_none());
        let c = RobustStats::exact(&mut vec![7.0; 10]).unwrap();
        assert_eq!((c.median, c.mad, c.mean_ad), (7.0, 0.0, 0.0));
    }

    #[test]
    fn quantiles_by_selection_interpolate_as_percentile_cont() {
        let mut v: Vec<f64> = (0..=200).rev().map(f64::from).collect();
        let near = |q: Option<f64>, want: f64| (q.unwrap() - want).abs() < 1e-12;
        assert!(near(quantile_select(&mut v, 0.005), 1.0));
        assert!(near(quantile_select(&mut v, 0.995), 199.0));
        assert_eq!(quantile_select(&mut [1.0, 2.0], 0.25), Some(1.25));
        assert_eq!(quantile_select(&mut [4.0], 0.995), Some(4.0));
        assert_eq!(quantile_select(&mut [], 0.5), None);
        let s = RobustStats::exact(&mut (0..=200).map(f64::from).collect()).unwrap();
        assert!((s.low - 1.0).abs() < 1e-12 && (s.high - 199.0).abs() < 1e-12);
    }

    #[test]
    fn a_sparse_metric_has_mad_zero_and_a_mean_absolute_deviation() {
        // A counter that is 0 in 9 rows of 10 and 50 in the tenth.
        let mut v: Vec<f64> = (0..100)
            .map(|i| if i % 10 == 0 { 50.0 } else { 0.0 })
            .collect();
        let s = RobustStats::exact(&mut v).unwrap();
        assert_eq!((s.median, s.mad), (0.0, 0.0));
        assert!((s.mean_ad - 5.0 * MEAN_AD_SCALE).abs() < 1e-12);
    }
}
