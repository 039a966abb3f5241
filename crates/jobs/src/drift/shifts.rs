//! Each key's shifts from its levels: a day's from the day before, an hour's from the trailing
//! hours on a day without one, and the drift notice; shared by the medians read before scoring
//! and those measured while scoring ([`super::Streamed`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{DriftNotice, DriftSettings, Level};

/// The name of `key`'s model: the model's own, or for a group of models `<name>/<key>`.
pub(super) fn member(model: &str, grouped: bool, key: &str) -> String {
    if grouped {
        format!("{model}/{key}")
    } else {
        model.to_string()
    }
}

/// The model's daily cycle, when the settings take it out of each row.
pub(super) fn profile(
    model: &tads_sql::registry::LoadedModel,
    s: &DriftSettings,
) -> Option<Arc<Vec<Vec<f64>>>> {
    let c = model.artifact.seasonal.as_ref().filter(|_| s.seasonal)?;
    Some(Arc::new(c.profile.clone()))
}

/// A day's shift from its previous day's `level`: each metric's median less the model's
/// median (0 where the day had no value of it).
pub(super) fn day_shift(level: &Level, median: &[f64]) -> Vec<f64> {
    let (_, m) = level;
    m.iter()
        .zip(median)
        .map(|(v, median)| v.map_or(0.0, |v| v - median))
        .collect()
}

/// The previous day's level of `day`, when it is one: the day before, with `min_rows` rows.
pub(super) fn previous_day<'a>(
    by_day: &'a BTreeMap<i64, Level>,
    day: i64,
    s: &DriftSettings,
) -> Option<&'a Level> {
    by_day
        .get(&(day - 1))
        .filter(|(rows, _)| *rows as u64 >= s.min_rows)
}

/// The shift of each day of a key's levels whose previous day is a baseline.
pub(super) fn day_shifts(
    by_day: &BTreeMap<i64, Level>,
    median: &[f64],
    s: &DriftSettings,
) -> BTreeMap<i64, Vec<f64>> {
    by_day
        .keys()
        .filter_map(|&day| Some((day, day_shift(previous_day(by_day, day, s)?, median))))
        .collect()
}

/// A key's drift notice, when its shifts lie `notice_scales` or more of a metric's scale away
/// from training on two days or more: the metric that moved most and the first such day.
pub(super) fn notice(
    key: &str,
    shifts: &BTreeMap<i64, Vec<f64>>,
    scale: &[f64],
    s: &DriftSettings,
    features: &[String],
) -> Option<DriftNotice> {
    let mut worst: Option<(usize, f64)> = None;
    let (mut moved_days, mut since) = (0u64, None);
    for (&day, shift) in shifts {
        let mut moved = false;
        for (j, v) in shift.iter().enumerate() {
            let scales = v / scale[j];
            if scales.abs() >= s.notice_scales {
                moved = true;
            }
            if worst.is_none_or(|(_, w)| scales.abs() > w.abs()) {
                worst = Some((j, scales));
            }
        }
        if moved {
            moved_days += 1;
            since.get_or_insert(day);
        }
    }
    let ((j, scales), since) = (worst?, since?);
    (moved_days >= 2).then(|| DriftNotice {
        key: key.to_string(),
        metric: features[j].clone(),
        scales,
        days: moved_days,
        since: chrono::DateTime::from_timestamp(since * 86_400, 0)
            .map_or_else(String::new, |t| t.format("%Y-%m-%d").to_string()),
    })
}

/// The shift of `hour` (hours since the epoch, which has rows) on a day without a previous
/// day's baseline: per metric, the median of the `trailing_hours` hours' levels before it (each
/// less the model's cycle at its hour; an hour without rows or value counts as the training
/// level), less the training level; `None` when those hours hold fewer than `min_rows` rows.
pub(super) fn trailing_shift(
    by_hour: &BTreeMap<i64, Level>,
    hour: i64,
    model: &tads_sql::registry::LoadedModel,
    s: &DriftSettings,
    d: usize,
) -> Option<Vec<f64>> {
    let window = hour - i64::from(s.trailing_hours)..hour;
    let rows: i64 = by_hour.range(window.clone()).map(|(_, (n, _))| n).sum();
    if (rows as u64) < s.min_rows {
        return None;
    }
    let cycle = model.artifact.seasonal.as_ref().filter(|_| s.seasonal);
    let median = &model.artifact.median;
    // Each hour's level, the daily cycle taken out.
    let level = |hour: i64, j: usize| -> Option<f64> {
        let (_, m) = by_hour.get(&hour)?;
        let c = cycle
            .and_then(|c| c.profile.get(hour.rem_euclid(24) as usize))
            .and_then(|h| h.get(j).copied())
            .unwrap_or(0.0);
        m.get(j).copied().flatten().map(|v| v - c)
    };
    Some(
        (0..d)
            .map(|j| {
                let mut values: Vec<f64> = window
                    .clone()
                    .map(|h| level(h, j).unwrap_or(median[j]))
                    .collect();
                middle(&mut values).map_or(0.0, |v| v - median[j])
            })
            .collect(),
    )
}

/// The median of `values` (the mean of the middle two for an even count, `(a + b) / 2` as
/// DataFusion's `median` computes it, so that SQL recomputes the shift to the bit — not
/// `tads_model::robust::median_in_place`, which rounds `a + (b − a) / 2`), or None if empty.
fn middle(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}
