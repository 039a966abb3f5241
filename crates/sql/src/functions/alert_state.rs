//! `alert_state(score, enter, exit [, min_points [, cooldown [, ts [, instant [, adaptive_quantile
//! [, adaptive_days [, adaptive_min_rows [, hold_rows [, hold_level]]]]]]]]]) OVER (PARTITION BY
//! host_id ORDER BY ts)`: scores become alerts that neither flap nor storm. The state machine is [`tads_model::alert`], with
//! the adaptive threshold of [`tads_model::adapt`], the same ones `tads score` runs.
//!
//! Walking a partition's rows in order:
//! * **Open.** A run of `min_points` rows (default 1) whose score is at or above `enter` opens
//!   an alert; the alert starts at the run's first row, so every row of the run carries it. A
//!   score at or above `instant` (the seventh argument, when given) opens one at once.
//! * **Stay open.** The alert stays open while the score is at or above `exit` (hysteresis:
//!   `exit` below `enter` keeps a score hovering around `enter` from flapping). The first row
//!   strictly below `exit` closes it and is not part of it. An alert still open at the end of the
//!   partition covers its last row.
//! * **Cooldown.** After an alert closes, no row counts toward a new one for `cooldown`: a number
//!   of rows counted from the closing row (default 0), or an `INTERVAL` from the closing row's
//!   time, which then needs the time column as the sixth argument `ts`.
//! * **NULL or NaN scores** neither open, extend, break nor close anything: inside an open alert
//!   the row carries the alert, elsewhere it is NULL.
//!
//! * **Adaptive threshold** (the eighth argument, a quantile such as 0.995; NULL: off): for the
//!   rows of a UTC day of `ts`, `enter` rises to that quantile of the partition's quiet scores
//!   (outside alerts and runs) over the previous `adaptive_days` days (default 3), when the
//!   previous day has `adaptive_min_rows` of them (default 12); `exit` scales alike.
//! * **Hold** (the eleventh and twelfth arguments; default none, while `tads score`'s
//!   `alerts.hold_rows` and `alerts.hold_level` are 12 and 0.8):
//!   a row below `exit` holds the alert instead of closing it while more than half of the
//!   partition's latest `hold_rows` scores are at or above `hold_level` (not scaled with
//!   `exit`); a new alert that would open before the hold ends continues the held one instead,
//!   and the rows held join it (`tads_model::AlertMachine` has the exact rule).
//!
//! Ties: a score equal to `enter` counts as above it; a score equal to `exit` keeps the alert open.
//! Each row returns the alert's number within its partition (1, 2, …), or NULL outside alerts;
//! with the partition key (the host) it identifies the alert. Thresholds may be columns: each row
//! is compared with its own `enter` and `exit`.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Float64Type, Int64Type, IntervalUnit, TimeUnit,
};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{Documentation, PartitionEvaluator, Signature, WindowUDFImpl};

use tads_model::adapt::{AdaptState, Adaptive, push_adaptive};
use tads_model::alert::{AlertMachine, Cooldown as MachineCooldown, Hold, Numbering, Step};

use super::common::doc;

/// The `alert_state` window function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AlertState {
    signature: Signature,
}

impl Default for AlertState {
    fn default() -> Self {
        Self {
            signature: super::common::any_with_example(vec![
                DataType::Float64,
                DataType::Float64,
                DataType::Float64,
            ]),
        }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    doc(
        "Turns a score into alerts with hysteresis and cooldown, as a window function over each \
         host's rows in time order. An alert opens when the score is at or above `enter` for \
         `min_points` rows in a row (it starts at the first of them), stays open while the score \
         is at or above `exit`, and closes at the first row below `exit`; after that, no alert \
         opens for `cooldown` (rows, or an INTERVAL measured on `ts`). NULL and NaN scores \
         neither open nor close an alert. A score at or above `instant` opens an alert at once. \
         With `adaptive_quantile`, each UTC day's enter (and exit, scaled alike) rises to that \
         quantile of the partition's quiet scores over the previous `adaptive_days` days. \
         With `hold_rows`, a row below `exit` holds the alert while more than half of the latest \
         `hold_rows` scores are at or above `hold_level`, and an alert opening meanwhile \
         continues it (one alert over a dip). \
         Returns the alert's number within the partition (1, 2, …) for rows inside an alert, NULL \
         elsewhere. `tads score` runs the same rules.",
        "alert_state(score, enter, exit [, min_points [, cooldown [, ts [, instant [, adaptive_quantile [, adaptive_days [, adaptive_min_rows [, hold_rows [, hold_level]]]]]]]]]) OVER (PARTITION BY host_id ORDER BY ts)",
        "SELECT host_id, ts, alert_state(score, 1.0, 0.8, 3, INTERVAL '30 minutes', ts) \
         OVER (PARTITION BY host_id ORDER BY ts) AS alert FROM scored",
    )
    .with_argument("score", "The score; any numeric type.")
    .with_argument("enter, exit", "Thresholds to open and to stay open (exit <= enter for hysteresis); literals or columns.")
    .with_argument("min_points", "Rows in a row at or above enter before an alert opens (default 1).")
    .with_argument("cooldown", "Rows (an integer), or a time span (an INTERVAL, which needs ts), during which no alert opens after one closes (default 0).")
    .with_argument("ts", "The time column, needed for an INTERVAL cooldown.")
    .with_argument("instant", "A score at or above this opens an alert at once, whatever min_points (default: none).")
    .with_argument("adaptive_quantile", "Each UTC day, enter rises to this quantile of the partition's quiet scores (outside alerts) over the previous days; needs ts (default: NULL, off; tads score uses 0.995).")
    .with_argument("adaptive_days, adaptive_min_rows", "Days the quantile looks back on (default 3), and quiet rows the previous day needs (default 12).")
    .with_argument("hold_rows, hold_level", "Below exit, an alert is held while more than half of the latest hold_rows scores are at or above hold_level, and an alert opening meanwhile continues it (default: no hold; tads score uses 12 and 0.8).")
    .build()
});

fn is_interval(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Interval(IntervalUnit::MonthDayNano | IntervalUnit::DayTime)
            | DataType::Duration(_)
    )
}

/// The arguments checked at plan time.
fn check(types: &[DataType]) -> Result<()> {
    let n = types.len();
    if !(3..=12).contains(&n) {
        return plan_err!(
            "alert_state: expects (score, enter, exit [, min_points [, cooldown [, ts [, instant [, adaptive_quantile [, adaptive_days [, adaptive_min_rows [, hold_rows [, hold_level]]]]]]]]]), got {n} arguments"
        );
    }
    if let Some(t) = types.get(7) {
        if !(t.is_numeric() || t == &DataType::Null) {
            return plan_err!("alert_state: adaptive_quantile must be numeric, got {t}");
        }
        if !matches!(types.get(5), Some(DataType::Timestamp(..))) {
            return plan_err!(
                "alert_state: adaptive_quantile needs the time column as the sixth argument (…, cooldown, ts, instant, adaptive_quantile)"
            );
        }
    }
    for (i, name) in [
        (8, "adaptive_days"),
        (9, "adaptive_min_rows"),
        (10, "hold_rows"),
    ] {
        if let Some(t) = types.get(i)
            && !(t.is_integer() || t == &DataType::Null)
        {
            return plan_err!("alert_state: {name} must be an integer, got {t}");
        }
    }
    for (i, name) in [(6, "instant"), (11, "hold_level")] {
        if let Some(t) = types.get(i)
            && !(t.is_numeric() || t == &DataType::Null)
        {
            return plan_err!("alert_state: {name} must be numeric, got {t}");
        }
    }
    let names = ["score", "enter", "exit", "min_points"];
    for (i, t) in types.iter().take(4).enumerate() {
        let ok = if i == 3 {
            t.is_integer()
        } else {
            t.is_numeric()
        } || t == &DataType::Null;
        if !ok {
            return plan_err!(
                "alert_state: {} must be {}, got {t}",
                names[i],
                if i == 3 { "an integer" } else { "numeric" }
            );
        }
    }
    if let Some(c) = types.get(4) {
        if is_interval(c) {
            match types.get(5) {
                Some(DataType::Timestamp(..)) => {}
                Some(t) => return plan_err!("alert_state: ts must be a timestamp, got {t}"),
                None => {
                    return plan_err!(
                        "alert_state: an INTERVAL cooldown needs the time column as the sixth argument (…, cooldown, ts)"
                    );
                }
            }
        } else if !c.is_integer() {
            return plan_err!(
                "alert_state: cooldown must be a number of rows (an integer) or an INTERVAL, got {c}"
            );
        } else if types.len() == 6 {
            return plan_err!("alert_state: ts is only used with an INTERVAL cooldown");
        } else if let Some(t) = types.get(5)
            && !matches!(t, DataType::Timestamp(..) | DataType::Null)
        {
            return plan_err!("alert_state: ts must be a timestamp, got {t}");
        }
    }
    Ok(())
}

impl WindowUDFImpl for AlertState {
    fn name(&self) -> &str {
        "alert_state"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        let types: Vec<DataType> = args
            .input_fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        check(&types)?;
        Ok(Box::new(AlertEvaluator))
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = field_args
            .input_fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        check(&types)?;
        Ok(Arc::new(Field::new(
            field_args.name(),
            DataType::Int64,
            true,
        )))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

#[derive(Debug)]
struct AlertEvaluator;

/// Cooldown per row: rows, or microseconds on the time column.
enum Cooldown {
    Rows(Int64Array),
    Span(Int64Array),
}

/// The first non-NULL value of argument `i` as f64, if the argument is there.
fn first_f64(values: &[ArrayRef], i: usize) -> Result<Option<f64>> {
    let Some(a) = values.get(i) else {
        return Ok(None);
    };
    let a = f64s(a)?;
    Ok(a.iter().flatten().next())
}

/// The adaptive threshold's settings from arguments 8 to 10 (their first non-NULL values).
fn adaptive(values: &[ArrayRef]) -> Result<Option<Adaptive>> {
    let Some(quantile) = first_f64(values, 7)? else {
        return Ok(None);
    };
    // Integers by the plan-time check; a negative one saturates to 0, which `check` refuses.
    let adaptive = Adaptive {
        quantile,
        days: first_f64(values, 8)?.unwrap_or(3.0) as u32,
        min_rows: first_f64(values, 9)?.unwrap_or(12.0) as u64,
    };
    match adaptive.check() {
        Ok(()) => Ok(Some(adaptive)),
        Err(e) => exec_err!("alert_state: {e}"),
    }
}

/// The hold from arguments 11 and 12 (their first non-NULL values); none without both.
fn hold(values: &[ArrayRef]) -> Result<Option<Hold>> {
    let (Some(rows), Some(level)) = (first_f64(values, 10)?, first_f64(values, 11)?) else {
        return Ok(None);
    };
    if !(rows >= 0.0 && level.is_finite()) {
        return exec_err!("alert_state: hold_rows must be 0 or more and hold_level a number");
    }
    Ok(Some(Hold {
        rows: rows.min(f64::from(u32::MAX)) as u32,
        level,
    }))
}

fn f64s(a: &ArrayRef) -> Result<datafusion::arrow::array::Float64Array> {
    Ok(cast(a, &DataType::Float64)?
        .as_primitive::<Float64Type>()
        .clone())
}

fn i64s(a: &ArrayRef) -> Result<Int64Array> {
    Ok(cast(a, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

/// An interval or duration array as microseconds; months are refused (they have no fixed length).
fn interval_micros(a: &ArrayRef) -> Result<Int64Array> {
    use datafusion::arrow::datatypes::{IntervalDayTimeType, IntervalMonthDayNanoType};
    match a.data_type() {
        DataType::Interval(IntervalUnit::MonthDayNano) => a
            .as_primitive::<IntervalMonthDayNanoType>()
            .iter()
            .map(|v| match v {
                None => Ok(None),
                Some(v) if v.months != 0 => {
                    exec_err!("alert_state: a cooldown in months has no fixed length; use days")
                }
                Some(v) => Ok(Some(
                    i64::from(v.days) * 86_400_000_000 + v.nanoseconds / 1000,
                )),
            })
            .collect(),
        DataType::Interval(IntervalUnit::DayTime) => Ok(a
            .as_primitive::<IntervalDayTimeType>()
            .iter()
            .map(|v| {
                v.map(|v| i64::from(v.days) * 86_400_000_000 + i64::from(v.milliseconds) * 1000)
            })
            .collect()),
        DataType::Duration(_) => i64s(&cast(a, &DataType::Duration(TimeUnit::Microsecond))?),
        t => exec_err!("alert_state: cooldown of type {t}"),
    }
}

impl PartitionEvaluator for AlertEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let score = f64s(&values[0])?;
        let enter = f64s(&values[1])?;
        let exit = f64s(&values[2])?;
        let min_points = values.get(3).map(i64s).transpose()?;
        let instant = values.get(6).map(f64s).transpose()?;
        let cooldown = match values.get(4) {
            None => None,
            Some(c) if is_interval(c.data_type()) => Some(Cooldown::Span(interval_micros(c)?)),
            Some(c) => Some(Cooldown::Rows(i64s(c)?)),
        };
        let get = |a: &datafusion::arrow::array::Float64Array, i: usize| {
            a.is_valid(i).then(|| a.value(i))
        };
        let times = match values.get(5) {
            Some(t) if matches!(t.data_type(), DataType::Timestamp(..)) => Some(i64s(&cast(
                t,
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )?)?),
            _ => None,
        };
        let adaptive = adaptive(values)?;
        let hold = hold(values)?;
        let mut out: Vec<Option<u64>> = vec![None; num_rows];
        let mut machine = AlertMachine::new();
        let mut numbering = Numbering::default();
        let mut adapt = AdaptState::default();
        for i in 0..num_rows {
            let cooldown = match &cooldown {
                None => None,
                Some(Cooldown::Rows(r)) => r
                    .is_valid(i)
                    .then(|| MachineCooldown::Rows(r.value(i).max(0) as u64)),
                Some(Cooldown::Span(micros)) => micros
                    .is_valid(i)
                    .then(|| MachineCooldown::Micros(micros.value(i))),
            };
            let ts = times
                .as_ref()
                .and_then(|t| t.is_valid(i).then(|| t.value(i)));
            let step = Step {
                score: get(&score, i),
                enter: get(&enter, i),
                exit: get(&exit, i),
                min_points: min_points
                    .as_ref()
                    .and_then(|m| m.is_valid(i).then(|| m.value(i).max(1) as u64))
                    .unwrap_or(1),
                instant: instant.as_ref().and_then(|a| get(a, i)),
                cooldown,
                ts,
                hold,
            };
            let event = push_adaptive(&mut machine, &mut adapt, adaptive.as_ref(), step);
            numbering.mark(&mut out, i, event);
        }
        Ok(Arc::new(
            out.into_iter()
                .map(|seq| seq.map(|s| s as i64))
                .collect::<Int64Array>(),
        ))
    }
}
