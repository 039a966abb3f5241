//! The forecast residual detector (`tads train --forecast`, `fusion.detectors = [… "forecast"]`):
//! a seasonal-trend decomposition (MSTL, with the `stlrs` crate) of each metric's training
//! history, a forecast for every hour of the day or week from it, an interval around that
//! forecast from the training residuals, and a score for how far outside the interval a value
//! lies. It is the Prophet-style detector of a seasonal CPU monitor, without Stan.
//!
//! What is decomposed is the series of hourly medians of each metric's distance from the
//! previous day's median: the space the scoring plan's drift baseline hands every detector. The
//! previous day's median plays the trend's part at scoring (a trend fitted on the training days
//! and extrapolated for weeks would be wrong about the level long before it is wrong about the
//! shape); MSTL gives the daily component, and the weekly one where two weeks or more are
//! covered. A component is kept for a metric where its seasonal strength (Hyndman's
//! `1 − Var(R) / Var(S + R)`) is at least [`MIN_STRENGTH`]: white noise measures about 0.2.
//!
//! The forecast of a row is its slot's value in the last cycle of each kept component. The
//! interval is asymmetric: from the median of the training rows' residuals (the row, not its
//! hour, less the forecast) down to their 0.5 % quantile and up to their 99.5 % quantile
//! ([`COVERAGE`]), each side at least the metric's robust scale. A value's z is its distance
//! from the median residual in units of that side's width: ±1 on the interval's edges.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ModelArtifact;
use crate::score::Z_LIMIT;

/// The seasonal strength a component needs to be kept for a metric.
pub const MIN_STRENGTH: f64 = 0.4;

/// The share of the training residuals inside the interval.
pub const COVERAGE: f64 = 0.99;

/// The z a normal row stays under: a value outside its interval by as much again as the
/// interval's width on that side. `fusion.tail` raises it to the training tail, as for the other
/// signals.
pub const LIMIT: f64 = 2.0;

/// The days of hourly medians a daily component needs (MSTL needs two cycles; one week gives
/// each hour of the day seven values).
pub const DAILY_MIN_DAYS: usize = crate::season::DAILY_MIN_DAYS;

/// The days a weekly component needs: each hour of the week seen twice.
pub const WEEKLY_MIN_DAYS: usize = crate::season::WEEKLY_MIN_DAYS;

/// The share of a metric's hours that may be missing (they are filled by linear interpolation)
/// for it to be decomposed.
pub const MAX_MISSING: f64 = 0.2;

/// The forecast section of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastParams {
    /// The time column the slots come from.
    pub time: String,
    /// The periods decomposed, in hours: none, `[24]` or `[24, 168]`.
    pub periods: Vec<u32>,
    /// The rows of `center`: 1 (no period), 24 (hour of the day) or 168 (hour of the week, from
    /// Thursday 00:00 UTC, the Unix epoch's weekday).
    pub period_hours: u32,
    /// Per period, per model feature: the seasonal strength of that component (0 where the
    /// metric could not be decomposed).
    pub strength: Vec<Vec<f64>>,
    /// `period_hours` rows of d values: the forecast, in the units the scoring functions receive
    /// the metrics in.
    pub center: Vec<Vec<f64>>,
    /// Per feature, the interval's width below the forecast (positive).
    pub lower: Vec<f64>,
    /// Per feature, the interval's width above the forecast (positive).
    pub upper: Vec<f64>,
    /// The share of the training residuals the interval holds.
    pub coverage: f64,
    /// The largest |z| of a normal row ([`LIMIT`]).
    pub limit: f64,
    /// The training tail: the largest |z|'s `tail_quantile` over the training rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<f64>,
}

impl ForecastParams {
    /// Checks the shapes and values against `d` features; the message names what is wrong.
    pub fn check(&self, d: usize) -> std::result::Result<(), String> {
        let expected = match self.periods.as_slice() {
            [] => 1,
            [24] => 24,
            [24, 168] => 168,
            other => {
                return Err(format!(
                    "forecast: periods {other:?} are not [], [24] or [24, 168]"
                ));
            }
        };
        if self.period_hours != expected {
            return Err(format!(
                "forecast: period_hours {} does not match periods {:?}",
                self.period_hours, self.periods
            ));
        }
        let p = self.period_hours as usize;
        if self.center.len() != p || self.center.iter().any(|r| r.len() != d) {
            return Err(format!("forecast: center is not {p} rows of {d} values"));
        }
        if self.center.iter().flatten().any(|v| !v.is_finite()) {
            return Err("forecast: a center value is not finite".into());
        }
        for (what, widths) in [("lower", &self.lower), ("upper", &self.upper)] {
            if widths.len() != d {
                return Err(format!(
                    "forecast: {what} has {} values for {d} features",
                    widths.len()
                ));
            }
            if widths.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
                return Err(format!("forecast: a {what} width is not a positive number"));
            }
        }
        if self.strength.len() != self.periods.len() || self.strength.iter().any(|s| s.len() != d) {
            return Err(format!(
                "forecast: strength is not {} rows of {d} values",
                self.periods.len()
            ));
        }
        if !(self.coverage > 0.0 && self.coverage < 1.0) {
            return Err(format!(
                "forecast: coverage {} is not in (0, 1)",
                self.coverage
            ));
        }
        crate::train::check_positive_limit("forecast", self.limit)
    }

    /// The slot of a time in microseconds since the epoch.
    pub fn slot_of(&self, micros: i64) -> usize {
        crate::season::slot_of(self.period_hours, micros)
    }

    /// The z of feature `j`'s value `x` in `slot`: its distance from the forecast in units of
    /// the interval's width on its side, clamped to ±[`Z_LIMIT`].
    pub fn z(&self, j: usize, slot: usize, x: f64) -> f64 {
        let r = x - self.center[slot][j];
        let width = if r >= 0.0 {
            self.upper[j]
        } else {
            self.lower[j]
        };
        (r / width).clamp(-Z_LIMIT, Z_LIMIT)
    }

    /// Writes each row's largest |z| over the features into `out`; rows without a time get
    /// NaN.
    pub fn zmax(&self, columns: &[&[f64]], micros: &[Option<i64>], out: &mut [f64]) {
        crate::season::zmax_by_slot(columns, micros, out, self.period_hours, |j, s, x| {
            self.z(j, s, x)
        });
    }
}

/// A key's hourly medians decomposed: which periods, their strengths and the forecast profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Decomposition {
    /// The periods fitted (hours).
    pub periods: Vec<u32>,
    /// Per period, per feature, the component's seasonal strength.
    pub strength: Vec<Vec<f64>>,
    /// `period_hours` rows of d values: the sum of the kept components' last cycle, per slot.
    pub profile: Vec<Vec<f64>>,
}

impl Decomposition {
    /// The profile's rows: 1, 24 or 168.
    pub fn period_hours(&self) -> u32 {
        self.periods.last().copied().unwrap_or(1)
    }
}

/// The series of `hourly` (hour since the epoch → value) from its first to its last hour, the
/// missing hours filled by linear interpolation; `None` when more than [`MAX_MISSING`] of them
/// are missing.
pub fn filled(hourly: &[(i64, f64)]) -> Option<Vec<f64>> {
    let (first, last) = (hourly.first()?.0, hourly.last()?.0);
    let span = usize::try_from(last - first + 1).ok()?;
    if (span - hourly.len()) as f64 > MAX_MISSING * span as f64 {
        return None;
    }
    let mut out = Vec::with_capacity(span);
    for pair in hourly.windows(2) {
        let ((h0, v0), (h1, v1)) = (pair[0], pair[1]);
        let steps = (h1 - h0) as f64;
        for k in 0..(h1 - h0) {
            out.push(v0 + (v1 - v0) * k as f64 / steps);
        }
    }
    out.push(hourly.last()?.1);
    Some(out)
}

/// Decomposes `hourly` (per hour since the epoch, each feature's median distance from the
/// previous day's median) with MSTL: a daily component when [`DAILY_MIN_DAYS`] are covered, a
/// weekly one too when [`WEEKLY_MIN_DAYS`] are; none with fewer (the profile is then one slot of
/// zeros: the forecast is the previous day's median). A metric that cannot be decomposed (too
/// many hours missing, no variation) keeps zeros. `None` without any hour.
pub fn decompose(hourly: &BTreeMap<i64, Vec<Option<f64>>>, d: usize) -> Option<Decomposition> {
    let (first, last) = (*hourly.keys().next()?, *hourly.keys().next_back()?);
    let days = usize::try_from(last - first + 1).ok()? / 24;
    let periods: Vec<u32> = if days >= WEEKLY_MIN_DAYS {
        vec![24, 168]
    } else if days >= DAILY_MIN_DAYS {
        vec![24]
    } else {
        Vec::new()
    };
    let p = periods.last().copied().unwrap_or(1) as usize;
    let mut profile = vec![vec![0.0; d]; p];
    let mut strength = vec![vec![0.0; d]; periods.len()];
    if periods.is_empty() {
        return Some(Decomposition {
            periods,
            strength,
            profile,
        });
    }
    let lengths: Vec<usize> = periods.iter().map(|p| *p as usize).collect();
    let mut stl = stlrs::Stl::params();
    stl.robust(true);
    for j in 0..d {
        let known: Vec<(i64, f64)> = hourly
            .iter()
            .filter_map(|(h, v)| Some((*h, v.get(j).copied().flatten().filter(|x| x.is_finite())?)))
            .collect();
        let Some(series) = filled(&known) else {
            continue;
        };
        let Ok(fit) = stlrs::Mstl::params()
            .stl_params(stl.clone())
            .fit(&series, &lengths)
        else {
            continue;
        };
        let start = known[0].0;
        let n = series.len();
        for (c, (component, s)) in fit
            .seasonal()
            .iter()
            .zip(fit.seasonal_strength())
            .enumerate()
        {
            let s = if s.is_finite() { s.max(0.0) } else { 0.0 };
            strength[c][j] = s;
            if s < MIN_STRENGTH {
                continue;
            }
            let period = lengths[c];
            let end = crate::season::slot_of(period as u32, (start + n as i64 - 1) * HOUR);
            for (slot, row) in profile.iter_mut().enumerate() {
                // The last hour of the series in this slot of the component's period (the
                // series covers two periods or more).
                let back = (end + period - slot % period) % period;
                row[j] += component[n - 1 - back];
            }
        }
    }
    Some(Decomposition {
        periods,
        strength,
        profile,
    })
}

/// Microseconds in an hour.
const HOUR: i64 = 3_600_000_000;

/// One feature's training residuals (the row's distance from the previous day's median, less
/// the profile): their median and the quantiles at the interval's edges.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Residuals {
    /// The median.
    pub median: Option<f64>,
    /// The `(1 − COVERAGE) / 2` quantile.
    pub low: Option<f64>,
    /// The `(1 + COVERAGE) / 2` quantile.
    pub high: Option<f64>,
}

/// The section of `model` from its decomposition and residuals (one per feature), in the units
/// the scoring functions receive the metrics in (the model's daily cycle taken out of the
/// centres as the scoring plan takes it out of the rows). Each interval side is at least the
/// metric's robust scale; a metric without residuals gets the Gaussian 99 % interval of its
/// scale.
pub fn build(
    model: &ModelArtifact,
    dec: &Decomposition,
    residuals: &[Residuals],
    time: &str,
) -> ForecastParams {
    let d = model.dims();
    let p = dec.period_hours() as usize;
    let cycle = |slot: usize, j: usize| crate::season::cycle_at(model, slot, j);
    const GAUSSIAN_99: f64 = 2.576;
    let mut mid = vec![0.0; d];
    let (mut lower, mut upper) = (vec![0.0; d], vec![0.0; d]);
    for j in 0..d {
        let scale = model.scale[j];
        let r = residuals.get(j).copied().unwrap_or_default();
        match (r.median, r.low, r.high) {
            (Some(m), Some(lo), Some(hi)) if m.is_finite() && lo.is_finite() && hi.is_finite() => {
                mid[j] = m;
                lower[j] = (m - lo).max(scale);
                upper[j] = (hi - m).max(scale);
            }
            _ => {
                lower[j] = GAUSSIAN_99 * scale;
                upper[j] = GAUSSIAN_99 * scale;
            }
        }
    }
    let center = (0..p)
        .map(|s| {
            (0..d)
                .map(|j| model.median[j] + dec.profile[s][j] + mid[j] - cycle(s, j))
                .collect()
        })
        .collect();
    ForecastParams {
        time: time.to_string(),
        periods: dec.periods.clone(),
        period_hours: dec.period_hours(),
        strength: dec.strength.clone(),
        center,
        lower,
        upper,
        coverage: COVERAGE,
        limit: LIMIT,
        tail: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hourly(days: i64, f: impl Fn(i64, f64) -> f64) -> BTreeMap<i64, Vec<Option<f64>>> {
        let mut uniform = crate::test_uniform(7);
        let mut noise = move || uniform() - 0.5;
        (0..days * 24)
            .map(|h| {
                let (a, b) = (noise(), noise());
                (h, vec![Some(f(h, a)), Some(b)])
            })
            .collect()
    }

    #[test]
    fn a_daily_cycle_becomes_the_forecast_and_noise_does_not() {
        let day = |h: i64, e: f64| 3.0 * ((h % 24) as f64 / 24.0 * std::f64::consts::TAU).sin() + e;
        let dec = decompose(&hourly(10, day), 2).unwrap();
        assert_eq!(dec.periods, vec![24]);
        assert!(dec.strength[0][0] > 0.9, "{:?}", dec.strength);
        assert!(dec.strength[0][1] < MIN_STRENGTH, "{:?}", dec.strength);
        for (s, row) in dec.profile.iter().enumerate() {
            let want = 3.0 * (s as f64 / 24.0 * std::f64::consts::TAU).sin();
            assert!(
                (row[0] - want).abs() < 0.3,
                "slot {s}: {} against {want}",
                row[0]
            );
            assert_eq!(row[1], 0.0);
        }
    }

    #[test]
    fn two_weeks_add_a_weekly_component_and_a_short_history_none() {
        // Busy on five days of seven from 9:00 to 17:00: days 0 to 4 from the epoch (a
        // Thursday), quiet on days 5 and 6.
        let week = |h: i64, e: f64| {
            let (day, hour) = ((h / 24) % 7, h % 24);
            e + if day < 5 && (9..17).contains(&hour) {
                4.0
            } else {
                0.0
            }
        };
        let dec = decompose(&hourly(21, week), 2).unwrap();
        assert_eq!(dec.periods, vec![24, 168]);
        assert_eq!(dec.profile.len(), 168);
        // Noon of a busy day above noon of a quiet one, by most of the step.
        let (busy, quiet) = (dec.profile[4 * 24 + 12][0], dec.profile[5 * 24 + 12][0]);
        assert!(busy - quiet > 3.0, "{busy} against {quiet}");
        let dec = decompose(&hourly(3, week), 2).unwrap();
        assert!(dec.periods.is_empty());
        assert_eq!(dec.profile, vec![vec![0.0, 0.0]]);
    }

    #[test]
    fn gaps_are_interpolated_and_too_many_leave_the_metric_out() {
        assert_eq!(filled(&[(0, 0.0), (3, 3.0), (4, 5.0)]), None);
        let ten: Vec<(i64, f64)> = (0..10).filter(|h| *h != 4).map(|h| (h, h as f64)).collect();
        assert_eq!(
            filled(&ten).unwrap(),
            (0..10).map(|h| h as f64).collect::<Vec<_>>()
        );
    }

    #[test]
    fn z_is_one_on_either_edge_of_an_asymmetric_interval() {
        let p = ForecastParams {
            time: "ts".into(),
            periods: vec![],
            period_hours: 1,
            strength: vec![],
            center: vec![vec![10.0]],
            lower: vec![1.0],
            upper: vec![4.0],
            coverage: COVERAGE,
            limit: LIMIT,
            tail: None,
        };
        p.check(1).unwrap();
        assert_eq!(p.z(0, 0, 14.0), 1.0);
        assert_eq!(p.z(0, 0, 9.0), -1.0);
        assert_eq!(p.z(0, 0, 18.0), 2.0);
        let mut out = [0.0; 2];
        p.zmax(&[&[7.0, 7.0]], &[Some(0), None], &mut out);
        assert_eq!(out[0], 3.0);
        assert!(out[1].is_nan());
        let bad = ForecastParams {
            lower: vec![0.0],
            ..p.clone()
        };
        assert_eq!(
            bad.check(1).unwrap_err(),
            "forecast: a lower width is not a positive number"
        );
        let bad = ForecastParams {
            periods: vec![24],
            ..p
        };
        assert!(bad.check(1).unwrap_err().contains("period_hours 1"));
    }
}
