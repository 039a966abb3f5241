//! The seasonal baseline detector (`tads train --seasonal`, `fusion.detectors = [… "seasonal"]`):
//! a robust centre and scale per metric and slot of a period found in the training data, the
//! hour of the day (24 slots) or of the week (168 slots), and a row's z-score against its own
//! slot's.
//!
//! The daily cycle (`seasonal` in `model.json`) already takes each hour's typical level out of a
//! row before PCA and MAD see it. What it does not know is that an hour's *spread* differs (a
//! service is quiet at night and busy by day: the same step is ordinary at noon and alarming at
//! 3:00) and that a week has its own shape (Monday mornings). This detector keeps, per slot, the
//! median and MAD of each metric's distance from the previous day's median, in the same space
//! the scoring plan hands the detectors (the drift baseline and the daily cycle taken out), so its
//! z-score needs no more than the row and its timestamp.
//!
//! The period is found in the data, not assumed: the autocorrelation of each metric's hourly
//! medians (less the previous day's median) at a lag of 24 and of 168 hours. A metric with an
//! autocorrelation of at least [`MIN_STRENGTH`] at the chosen period gets slots; the others keep
//! the model's median and scale in every slot, so their z is the plain robust z.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ModelArtifact;
use crate::score::Z_LIMIT;

/// The periods looked for, in hours: a day and a week.
pub const PERIODS: [u32; 2] = [24, 168];

/// The autocorrelation at the period a metric needs to get slots.
pub const MIN_STRENGTH: f64 = 0.3;

/// The days of distances a daily period needs: a slot's median and MAD from fewer describe
/// those days more than the hour.
pub const DAILY_MIN_DAYS: usize = 7;

/// The days of distances a weekly period needs: each hour of the week seen twice.
pub const WEEKLY_MIN_DAYS: usize = 14;

/// How much more the weekly period's mean autocorrelation must be than the daily's for a week
/// to be chosen (a week repeats every day's cycle too).
const WEEKLY_MARGIN: f64 = 0.05;

/// The rows a slot needs for its own median and MAD; a slot with fewer keeps the model's.
pub const MIN_SLOT_ROWS: u64 = 10;

/// A slot's scale is at least this share of the metric's scale over all hours: a quantized
/// metric whose slot holds one repeated value would otherwise get a scale near 0.
pub const SCALE_FLOOR: f64 = 0.25;

/// Microseconds in an hour.
const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// The seasonal section of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeasonParams {
    /// The time column the slots come from.
    pub time: String,
    /// The period in hours: 24 (hour of the day) or 168 (hour of the week, counted from
    /// Thursday 00:00 UTC, the Unix epoch's weekday).
    pub period_hours: u32,
    /// Per model feature, the autocorrelation of its hourly medians at the period (0 where it
    /// could not be computed).
    pub strength: Vec<f64>,
    /// The features with slots of their own (strength ≥ [`MIN_STRENGTH`]).
    pub features: Vec<String>,
    /// `period_hours` rows of d values: the value a row is measured from, in the units the
    /// scoring functions receive the metrics in.
    pub center: Vec<Vec<f64>>,
    /// `period_hours` rows of d positive values: what the distance is divided by.
    pub scale: Vec<Vec<f64>>,
    /// The largest |z| a normal row has: the model's MAD cut when trained.
    pub limit: f64,
    /// The training tail: the largest |z|'s `tail_quantile` over the training rows;
    /// `fusion.tail` raises the limit to it, as for the other signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<f64>,
}

impl SeasonParams {
    /// Checks the shapes and values against `d` features; the message names what is wrong.
    pub fn check(&self, d: usize) -> std::result::Result<(), String> {
        if !PERIODS.contains(&self.period_hours) {
            return Err(format!(
                "season: period_hours {} is not 24 or 168",
                self.period_hours
            ));
        }
        let p = self.period_hours as usize;
        for (what, rows) in [("center", &self.center), ("scale", &self.scale)] {
            if rows.len() != p || rows.iter().any(|r| r.len() != d) {
                return Err(format!("season: {what} is not {p} rows of {d} values"));
            }
            if rows.iter().flatten().any(|v| !v.is_finite()) {
                return Err(format!("season: a {what} value is not finite"));
            }
        }
        if self.scale.iter().flatten().any(|v| *v <= 0.0) {
            return Err("season: a scale is not positive".into());
        }
        if self.strength.len() != d {
            return Err(format!(
                "season: strength has {} values for {d} features",
                self.strength.len()
            ));
        }
        crate::train::check_positive_limit("season", self.limit)
    }

    /// The slot of a time in microseconds since the epoch.
    pub fn slot_of(&self, micros: i64) -> usize {
        slot_of(self.period_hours, micros)
    }

    /// The z-score of feature `j`'s value `x` in `slot`, clamped to ±[`Z_LIMIT`].
    pub fn z(&self, j: usize, slot: usize, x: f64) -> f64 {
        let z = (x - self.center[slot][j]) / self.scale[slot][j];
        z.clamp(-Z_LIMIT, Z_LIMIT)
    }

    /// Writes each row's largest |z| over the features into `out`; rows without a time get
    /// NaN.
    pub fn zmax(&self, columns: &[&[f64]], micros: &[Option<i64>], out: &mut [f64]) {
        zmax_by_slot(columns, micros, out, self.period_hours, |j, s, x| {
            self.z(j, s, x)
        });
    }
}

/// Writes each row's largest |z(j, slot, x)| over the features into `out`, the slot from the
/// row's time (microseconds) and a period of `period_hours`; rows without a time get NaN.
pub(crate) fn zmax_by_slot(
    columns: &[&[f64]],
    micros: &[Option<i64>],
    out: &mut [f64],
    period_hours: u32,
    z: impl Fn(usize, usize, f64) -> f64,
) {
    for (i, o) in out.iter_mut().enumerate() {
        let Some(t) = micros.get(i).copied().flatten() else {
            *o = f64::NAN;
            continue;
        };
        let s = slot_of(period_hours, t);
        *o = columns
            .iter()
            .enumerate()
            .map(|(j, c)| z(j, s, c[i]).abs())
            .fold(0.0, f64::max);
    }
}

/// The slot of a time in microseconds since the epoch, for a period in hours.
pub fn slot_of(period_hours: u32, micros: i64) -> usize {
    micros
        .div_euclid(MICROS_PER_HOUR)
        .rem_euclid(i64::from(period_hours)) as usize
}

/// The Pearson correlation of `series[t]` with `series[t + lag]` over the pairs where both are
/// known; `None` with fewer than `lag` pairs or no variation.
pub fn autocorrelation(series: &[Option<f64>], lag: usize) -> Option<f64> {
    let pairs: Vec<(f64, f64)> = series
        .iter()
        .zip(series.iter().skip(lag))
        .filter_map(|(a, b)| Some(((*a)?, (*b)?)))
        .collect();
    if lag == 0 || pairs.len() < lag {
        return None;
    }
    let n = pairs.len() as f64;
    let (sa, sb) = pairs
        .iter()
        .fold((0.0, 0.0), |(x, y), (a, b)| (x + a, y + b));
    let (ma, mb) = (sa / n, sb / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (a, b) in &pairs {
        sab += (a - ma) * (b - mb);
        saa += (a - ma) * (a - ma);
        sbb += (b - mb) * (b - mb);
    }
    (saa > 0.0 && sbb > 0.0).then(|| sab / (saa * sbb).sqrt())
}

/// The period found in a key's training data and which features follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    /// 24 or 168.
    pub period_hours: u32,
    /// Per feature, its autocorrelation at the period (0 where unknown or negative).
    pub strength: Vec<f64>,
}

impl Detected {
    /// Whether feature `j` gets slots of its own.
    pub fn seasonal(&self, j: usize) -> bool {
        self.strength[j] >= MIN_STRENGTH
    }
}

/// Finds the period of `hourly` (per hour since the epoch, each feature's median distance from
/// the previous day's median): a week when [`WEEKLY_MIN_DAYS`] are covered and the metrics' mean
/// autocorrelation at 168 hours beats the one at 24 hours, else a day when [`DAILY_MIN_DAYS`]
/// are. `None`
/// when no feature reaches [`MIN_STRENGTH`] at the period chosen.
pub fn detect(hourly: &BTreeMap<i64, Vec<Option<f64>>>, d: usize) -> Option<Detected> {
    let (first, last) = (*hourly.keys().next()?, *hourly.keys().next_back()?);
    let span = usize::try_from(last - first + 1).ok()?;
    let column = |j: usize| -> Vec<Option<f64>> {
        let mut s = vec![None; span];
        for (h, v) in hourly {
            s[(h - first) as usize] = v.get(j).copied().flatten().filter(|x| x.is_finite());
        }
        s
    };
    let columns: Vec<Vec<Option<f64>>> = (0..d).map(column).collect();
    let strengths = |lag: usize| -> Vec<f64> {
        columns
            .iter()
            .map(|c| autocorrelation(c, lag).unwrap_or(0.0).max(0.0))
            .collect()
    };
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    let days = span / 24;
    let daily = (days >= DAILY_MIN_DAYS).then(|| strengths(24));
    let weekly = (days >= WEEKLY_MIN_DAYS).then(|| strengths(168));
    let (period_hours, strength) = match (daily, weekly) {
        (Some(day), Some(week)) if mean(&week) > mean(&day) + WEEKLY_MARGIN => (168, week),
        (Some(day), _) => (24, day),
        _ => return None,
    };
    let found = Detected {
        period_hours,
        strength,
    };
    (0..d).any(|j| found.seasonal(j)).then_some(found)
}

/// What the scoring plan takes out of feature `j` of a row in `slot` (an hour of the day or
/// week) for the model's daily cycle: the cycle's value at the slot's hour of the day, 0
/// without a cycle.
pub fn cycle_at(model: &ModelArtifact, slot: usize, j: usize) -> f64 {
    model
        .seasonal
        .as_ref()
        .and_then(|c| c.profile.get(slot % 24))
        .and_then(|h| h.get(j).copied())
        .unwrap_or(0.0)
}

/// One slot's statistics of one feature's distance from the previous day's median.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SlotStat {
    /// Rows with a value.
    pub rows: u64,
    /// The median distance.
    pub median: Option<f64>,
    /// The median absolute deviation from that median (unscaled).
    pub mad: Option<f64>,
}

/// Feature `j`'s own median and MAD in a slot with statistics `stat`: `None` where the feature
/// has no cycle at the period `found` or the slot too few rows (it keeps the model's median and
/// scale there).
pub fn own_stat(found: &Detected, j: usize, stat: Option<&SlotStat>) -> Option<(f64, f64)> {
    let stat = stat.filter(|s| found.seasonal(j) && s.rows >= MIN_SLOT_ROWS)?;
    Some((stat.median?, stat.mad?))
}

/// The scale of a slot with MAD `mad` (unscaled), for a feature whose scale is `scale`.
pub fn slot_scale(mad: f64, scale: f64) -> f64 {
    (mad * crate::MAD_SCALE).max(SCALE_FLOOR * scale)
}

/// The section of `model` for the period `found`, from each slot's statistics (`slots[s][j]`,
/// one row per slot), the model's daily cycle taken out of the centres as the scoring plan takes
/// it out of the rows; its limit is the model's MAD cut, the largest |z| of a normal row.
pub fn build(
    model: &ModelArtifact,
    found: &Detected,
    slots: &[Vec<SlotStat>],
    time: &str,
) -> SeasonParams {
    let d = model.dims();
    let p = found.period_hours as usize;
    let cycle = |slot: usize, j: usize| cycle_at(model, slot, j);
    let mut center = vec![model.median.clone(); p];
    let mut scale = vec![model.scale.clone(); p];
    for s in 0..p {
        for j in 0..d {
            if let Some((m, mad)) = own_stat(found, j, slots.get(s).and_then(|r| r.get(j))) {
                center[s][j] = model.median[j] + m - cycle(s, j);
                scale[s][j] = slot_scale(mad, model.scale[j]);
            }
        }
    }
    SeasonParams {
        time: time.to_string(),
        period_hours: found.period_hours,
        strength: found.strength.clone(),
        features: (0..d)
            .filter(|j| found.seasonal(*j))
            .map(|j| model.features[j].clone())
            .collect(),
        center,
        scale,
        limit: model.thresholds.mad_z,
        tail: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hourly medians of `days` days for two features: the first with `shape(hour)`, the second
    /// noise without a cycle.
    fn hourly(days: i64, shape: impl Fn(i64) -> f64) -> BTreeMap<i64, Vec<Option<f64>>> {
        let mut uniform = crate::test_uniform(12345);
        let mut noise = move || uniform() - 0.5;
        (0..days * 24)
            .map(|h| (h, vec![Some(shape(h) + 0.2 * noise()), Some(noise())]))
            .collect()
    }

    #[test]
    fn a_daily_cycle_is_found_at_24_hours_and_only_in_the_feature_that_has_it() {
        let day = |h: i64| ((h % 24) as f64 / 24.0 * std::f64::consts::TAU).sin();
        let found = detect(&hourly(20, day), 2).unwrap();
        assert_eq!(found.period_hours, 24);
        assert!(found.seasonal(0), "{found:?}");
        assert!(!found.seasonal(1), "{found:?}");
    }

    #[test]
    fn a_weekly_shape_is_found_at_168_hours_with_two_weeks_and_not_before() {
        // Busy 9:00–17:00 on five days of seven, quiet otherwise.
        let week = |h: i64| {
            let (day, hour) = ((h / 24) % 7, h % 24);
            if day < 5 && (9..17).contains(&hour) {
                1.0
            } else {
                0.0
            }
        };
        let found = detect(&hourly(21, week), 2).unwrap();
        assert_eq!(found.period_hours, 168, "{found:?}");
        // Under two weeks only a day can be chosen.
        let found = detect(&hourly(10, week), 2).unwrap();
        assert_eq!(found.period_hours, 24, "{found:?}");
    }

    #[test]
    fn noise_alone_and_too_short_a_history_find_nothing() {
        assert_eq!(detect(&hourly(20, |_| 0.0), 2), None);
        let day = |h: i64| ((h % 24) as f64).sin();
        assert_eq!(detect(&hourly(2, day), 2), None);
    }

    #[test]
    fn slots_are_hours_of_the_day_or_week_also_before_the_epoch() {
        let hour = MICROS_PER_HOUR;
        assert_eq!(slot_of(24, 0), 0);
        assert_eq!(slot_of(24, 25 * hour + 5), 1);
        assert_eq!(slot_of(168, 170 * hour), 2);
        assert_eq!(slot_of(24, -1), 23);
    }

    #[test]
    fn autocorrelation_of_a_repeating_series_is_one_and_needs_enough_pairs() {
        let s: Vec<Option<f64>> = (0..96).map(|i| Some((i % 24) as f64)).collect();
        assert!((autocorrelation(&s, 24).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(autocorrelation(&s[..30], 24), None);
        let flat = vec![Some(1.0); 96];
        assert_eq!(autocorrelation(&flat, 24), None);
    }
}
