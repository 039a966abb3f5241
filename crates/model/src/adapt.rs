//! The adaptive alert threshold: each key's threshold to open an alert follows its own recent
//! quiet scores, so a key whose scores run high for days (a noisier service, a level that moved)
//! is not in alert all that time, while a key that is quiet keeps the configured threshold.
//!
//! For a row of UTC day `d`, the threshold to open is
//! `max(enter, the q-quantile of the key's quiet scores on days d−days … d−1)`, used when day
//! `d−1` has at least `min_rows` quiet scores (otherwise `enter`: the first day, or after a gap);
//! the thresholds to stay open, to open at once and to hold are scaled alike (`exit · threshold / enter`,
//! `instant · threshold / enter`), which keeps the hysteresis and keeps a key whose ordinary
//! scores run high from opening an alert on every single high row. A *quiet* score is one of a row outside every alert (the rows of a run that could
//! have opened one count once the run breaks): the rows of an anomaly never raise the threshold
//! that is to find the next one (the rule of SPOT, Siffer et al., KDD 2017, which updates its
//! threshold with normal points only).
//! Only past scores enter a day's threshold, never labels.
//!
//! The quantile comes from a small log-bucket sketch per key and day (DDSketch, Masson et al.,
//! VLDB 2019): values below `enter` are only counted (a quantile among them cannot raise the
//! threshold), values above fall into buckets of relative width 2 %, so the threshold is within
//! 1 % of the exact quantile and a key's state stays a few hundred numbers however many rows a
//! day has. The sketch is integer counts: the same rows give the same thresholds in any run,
//! batch or `tads watch`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alert::{AlertMachine, Event, Step};

/// A microsecond day.
const DAY_MICROS: i64 = 86_400_000_000;
/// The sketch's bucket growth: buckets `(γ^(i−1), γ^i]`, relative error `(γ−1)/(γ+1)` ≈ 1 %.
const GAMMA: f64 = 1.02;

/// The adaptive threshold's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptive {
    /// The quantile of the quiet scores (0 < q < 1).
    pub quantile: f64,
    /// How many previous days the quantile is taken over (at least 1).
    pub days: u32,
    /// Quiet scores the previous day needs for its threshold to apply.
    pub min_rows: u64,
}

impl Adaptive {
    /// Checks the settings; the message names the bad one (without a prefix: `tads score` puts
    /// `alerts.` before it, `alert_state` its own name).
    pub fn check(&self) -> Result<(), String> {
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            return Err(format!(
                "adaptive_quantile ({}) must lie between 0 and 1 (0.995: the 99.5 % quantile)",
                self.quantile
            ));
        }
        if !(1..=366).contains(&self.days) {
            return Err(format!(
                "adaptive_days ({}) must be from 1 to 366",
                self.days
            ));
        }
        if self.min_rows == 0 {
            return Err("adaptive_min_rows must be at least 1".into());
        }
        Ok(())
    }
}

/// One key's quiet scores of one UTC day.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct DaySketch {
    day: i64,
    /// Quiet scores counted this day.
    n: u64,
    /// Those below the floor (`enter`).
    low: u64,
    /// Bucket index → count, for the others.
    bins: BTreeMap<i32, u64>,
}

/// One key's adaptive threshold between rows: the sketches of the days it looks back on and the
/// threshold of the current day. It serializes, so `tads watch` carries it between rounds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdaptState {
    /// Oldest first; the last is the current day.
    days: Vec<DaySketch>,
    /// The current day's threshold, when one applies.
    level: Option<f64>,
    /// The scores of a run that may still open an alert: counted if it breaks, not if it opens.
    held: Vec<f64>,
}

fn bucket(x: f64) -> i32 {
    (x.ln() / GAMMA.ln()).ceil() as i32
}

fn representative(i: i32) -> f64 {
    2.0 * GAMMA.powi(i) / (GAMMA + 1.0)
}

impl AdaptState {
    /// The current day's threshold to open (above `enter`), if one applies.
    pub fn level(&self) -> Option<f64> {
        self.level
    }

    /// Moves to the day of `ts` (microseconds): when it is a new day, the previous days'
    /// sketches give its threshold and sketches older than `a.days` are dropped.
    fn roll(&mut self, a: &Adaptive, ts: i64, floor: f64) {
        let day = ts.div_euclid(DAY_MICROS);
        if self.days.last().is_some_and(|d| d.day == day) {
            return;
        }
        let oldest = day - i64::from(a.days.max(1));
        self.days.retain(|d| d.day >= oldest && d.day < day);
        let previous_ok = self
            .days
            .last()
            .is_some_and(|d| d.day == day - 1 && d.n >= a.min_rows.max(1));
        self.level = if previous_ok {
            self.quantile(a.quantile, floor)
        } else {
            None
        };
        self.days.push(DaySketch {
            day,
            ..DaySketch::default()
        });
    }

    /// The `q`-quantile of the kept days' scores (the current one is still empty), when it lies
    /// at or above `floor`.
    fn quantile(&self, q: f64, floor: f64) -> Option<f64> {
        let n: u64 = self.days.iter().map(|d| d.n).sum();
        if n == 0 {
            return None;
        }
        // The rank (from 0, ascending) of the value at or just above the q-quantile.
        let rank = (q.clamp(0.0, 1.0) * (n - 1) as f64).ceil() as u64;
        let low: u64 = self.days.iter().map(|d| d.low).sum();
        if rank < low {
            return None;
        }
        let mut merged: BTreeMap<i32, u64> = BTreeMap::new();
        for d in &self.days {
            for (i, c) in &d.bins {
                *merged.entry(*i).or_default() += c;
            }
        }
        let mut seen = low;
        for (i, c) in merged {
            seen += c;
            if seen > rank {
                return Some(representative(i).max(floor));
            }
        }
        None
    }

    /// Counts a quiet score of the current day.
    fn record(&mut self, score: f64, floor: f64) {
        let Some(d) = self.days.last_mut() else {
            return;
        };
        d.n += 1;
        if score < floor || score <= 0.0 {
            d.low += 1;
        } else {
            *d.bins.entry(bucket(score)).or_default() += 1;
        }
    }
}

/// Feeds one row to `machine` with the thresholds `adaptive` gives it (its `enter` and `exit`
/// are the configured ones; a row without a time, or without `adaptive`, keeps them), then
/// counts the row's score when it turns out to lie outside alerts (a row of a run that may still
/// open one waits until the run breaks; a held row counts as it would without the hold).
/// Returns what [`AlertMachine::push`] returns.
pub fn push_adaptive(
    machine: &mut AlertMachine,
    state: &mut AdaptState,
    adaptive: Option<&Adaptive>,
    mut step: Step,
) -> Event {
    let (Some(a), Some(ts), Some(enter)) = (adaptive, step.ts, step.enter) else {
        return machine.push(step);
    };
    let floor = enter.max(f64::MIN_POSITIVE);
    state.roll(a, ts, floor);
    if let Some(level) = state.level.filter(|l| *l > enter) {
        step.exit = step.exit.map(|x| x * level / enter);
        step.instant = step.instant.map(|x| x * level / enter);
        step.enter = Some(level);
    }
    let event = machine.push(step);
    let score = step.score.filter(|s| !s.is_nan());
    match event {
        Event::Opened { .. } | Event::Inside { .. } => state.held.clear(),
        // A held row counts as it would without the hold, so the hold joins alerts but never
        // moves the threshold: it waits inside a run that may open an alert, else it is quiet.
        Event::Outside | Event::Held { .. } if machine.pending_rows() > 0 => {
            state.held.extend(score)
        }
        Event::Outside | Event::Held { .. } | Event::Closed { .. } => {
            for s in std::mem::take(&mut state.held).into_iter().chain(score) {
                state.record(s, floor);
            }
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Cooldown, Hold};

    const A: Adaptive = Adaptive {
        quantile: 0.9,
        days: 2,
        min_rows: 3,
    };

    fn step(score: f64, ts: i64) -> Step {
        Step {
            score: Some(score),
            enter: Some(1.0),
            exit: Some(0.5),
            min_points: 1,
            instant: None,
            cooldown: None,
            ts: Some(ts),
            hold: None,
        }
    }

    /// Feeds `(day, score)` rows; returns each row's event.
    fn run(rows: &[(i64, f64)], a: Option<&Adaptive>) -> (Vec<Event>, AdaptState) {
        let (mut m, mut s) = (AlertMachine::new(), AdaptState::default());
        let events = rows
            .iter()
            .enumerate()
            .map(|(i, (day, x))| {
                push_adaptive(&mut m, &mut s, a, step(*x, day * DAY_MICROS + i as i64))
            })
            .collect();
        (events, s)
    }

    /// A state whose day 0 held quiet scores that put day 1's level at 1.5 (enter 1.0).
    fn after_a_high_quiet_day() -> AdaptState {
        let mut s = AdaptState::default();
        s.roll(&A, 0, 1.0);
        for x in [1.5, 1.5, 1.5, 1.5, 0.2] {
            s.record(x, 1.0);
        }
        s
    }

    #[test]
    fn the_hold_joins_alerts_but_never_moves_the_threshold() {
        // Six days of bursty scores (a fixed pseudo-random walk), two rows needed to open, a
        // cooldown of two rows: with a hold, each row's adaptive state is the one it has without,
        // every alert opened without it opens with it or continues a held one, and some do.
        let mut uniform = crate::test_uniform(7);
        let rows: Vec<(i64, f64)> = (0..600)
            .map(|i| {
                let u = uniform();
                let burst = (i / 7) % 5 == 0;
                (i / 100, if burst { 0.6 + 2.0 * u } else { 1.4 * u })
            })
            .collect();
        let walk = |hold: Option<Hold>| {
            let (mut m, mut s) = (AlertMachine::new(), AdaptState::default());
            rows.iter()
                .enumerate()
                .map(|(i, (day, x))| {
                    let st = Step {
                        min_points: 2,
                        cooldown: Some(Cooldown::Rows(2)),
                        hold,
                        ..step(*x, day * DAY_MICROS + i as i64)
                    };
                    let e = push_adaptive(&mut m, &mut s, Some(&A), st);
                    (e, s.clone())
                })
                .collect::<Vec<_>>()
        };
        let plain = walk(None);
        let held = walk(Some(Hold {
            rows: 6,
            level: 0.5,
        }));
        assert!(
            plain.iter().any(|(_, s)| s.level().is_some()),
            "the threshold never rose"
        );
        let mut joined = 0;
        for (i, ((p, pl), (h, hl))) in plain.iter().zip(&held).enumerate() {
            // The whole adaptive state: its threshold and every quiet score it counted.
            assert_eq!(pl, hl, "row {i}: adaptive state");
            if matches!(p, Event::Opened { .. }) {
                assert!(
                    matches!(h, Event::Opened { .. } | Event::Inside { .. }),
                    "row {i}: {h:?}"
                );
                joined += usize::from(matches!(h, Event::Inside { .. }));
            }
        }
        assert!(joined > 0, "no alert was joined");
    }

    #[test]
    fn a_high_quiet_day_raises_the_next_days_threshold() {
        let mut s = after_a_high_quiet_day();
        s.roll(&A, DAY_MICROS, 1.0);
        let level = s.level().expect("a level from day 0");
        assert!((level - 1.5).abs() / 1.5 < 0.011, "{level}");
        // On day 1, 1.2 no longer opens an alert (it would against enter 1.0); 1.6 does.
        let mut m = AlertMachine::new();
        let e = push_adaptive(&mut m, &mut s, Some(&A), step(1.2, DAY_MICROS + 1));
        assert_eq!(e, Event::Outside);
        let e = push_adaptive(&mut m, &mut s, Some(&A), step(1.6, DAY_MICROS + 2));
        assert!(matches!(e, Event::Opened { .. }), "{e:?}");
        // Day 2 has no rows: on day 3 no threshold applies (a gap starts afresh).
        s.roll(&A, 3 * DAY_MICROS, 1.0);
        assert_eq!(s.level(), None);
    }

    #[test]
    fn the_instant_threshold_rises_with_the_level() {
        // Day 0's quiet scores put day 1's level at 1.5 (enter 1.0): the instant threshold 2.0
        // rises alike to 3.0, so a single row at 2.5 no longer opens an alert at once and needs
        // the run of min_points rows; 3.2 still does.
        let mut s = after_a_high_quiet_day();
        let at = |x: f64, i: i64| Step {
            min_points: 3,
            instant: Some(2.0),
            ..step(x, DAY_MICROS + i)
        };
        let mut m = AlertMachine::new();
        let e = push_adaptive(&mut m, &mut s, Some(&A), at(2.5, 1));
        assert_eq!(
            e,
            Event::Outside,
            "2.5 is under the raised instant threshold"
        );
        let e = push_adaptive(&mut m, &mut s, Some(&A), at(3.2, 2));
        assert!(matches!(e, Event::Opened { .. }), "{e:?}");
        // Without a raised level (day 0, no threshold yet) 2.5 opens at once.
        let (mut m, mut s) = (AlertMachine::new(), AdaptState::default());
        let e = push_adaptive(
            &mut m,
            &mut s,
            Some(&A),
            Step {
                min_points: 3,
                instant: Some(2.0),
                ..step(2.5, 1)
            },
        );
        assert!(matches!(e, Event::Opened { .. }), "{e:?}");
    }

    #[test]
    fn the_hold_level_stays_when_the_level_rises() {
        // Day 1's level is 1.5 (enter 1.0), so exit 0.5 becomes 0.75, but the hold level stays
        // 0.8: a new alert must clear the raised threshold to bridge a dip anyway. A row at 0.7
        // is below exit: after 2.0, 1.0 two of the three latest scores are at or above 0.8,
        // which holds it (scaled to 1.2 it would not); after 2.0, 0.78 only one is.
        let at = |x: f64, i: i64| Step {
            hold: Some(Hold {
                rows: 3,
                level: 0.8,
            }),
            ..step(x, DAY_MICROS + i)
        };
        for (scores, held) in [([2.0, 1.0, 0.7, 0.0], true), ([2.0, 0.78, 0.7, 0.0], false)] {
            let (mut m, mut s) = (AlertMachine::new(), after_a_high_quiet_day());
            let mut events = Vec::new();
            let mut waiting = Vec::new();
            for (i, x) in scores.iter().enumerate() {
                events.push(push_adaptive(&mut m, &mut s, Some(&A), at(*x, i as i64)));
                waiting.push(s.held.len());
            }
            assert!(matches!(events[0], Event::Opened { .. }), "{events:?}");
            assert!(matches!(events[1], Event::Inside { .. }), "{events:?}");
            assert_eq!(
                matches!(events[2], Event::Held { .. }),
                held,
                "{scores:?}: {events:?}"
            );
            // A held row outside a run counts at once, as it would without the hold.
            assert_eq!(waiting[2], 0, "{scores:?}");
            assert!(
                matches!(events[3], Event::Closed { .. }) || !held,
                "{events:?}"
            );
            assert_eq!(waiting[3], 0);
            // Rows 2 and 3 are quiet either way; the alert's rows 0 and 1 are not.
            assert_eq!(s.days.last().expect("day 1").n, 2);
        }
    }

    #[test]
    fn rows_of_an_alert_are_not_quiet_and_a_gap_resets() {
        // Day 0: an alert of five rows at 3.0 (not quiet), then three quiet rows at 0.1 (the
        // first closes the alert).
        let mut rows: Vec<(i64, f64)> = (0..5).map(|_| (0, 3.0)).collect();
        rows.extend((0..3).map(|_| (0, 0.1)));
        // Day 1: 1.1 opens (the alert's rows did not raise the threshold).
        rows.push((1, 1.1));
        let (events, s) = run(&rows, Some(&A));
        assert!(matches!(events[8], Event::Opened { .. }), "{events:?}");
        assert_eq!(s.days[0].n, 3, "the alert's rows are not counted");
        assert_eq!(s.level(), None, "day 0's quantile lies below enter");
    }

    #[test]
    fn a_run_that_breaks_counts_one_that_opens_does_not() {
        let (mut m, mut s) = (AlertMachine::new(), AdaptState::default());
        let two = |x: f64, i: i64| Step {
            min_points: 2,
            ..step(x, i)
        };
        // A run of one row above enter that breaks: both rows are counted.
        for (i, x) in [1.5, 0.2].into_iter().enumerate() {
            push_adaptive(&mut m, &mut s, Some(&A), two(x, i as i64));
        }
        assert_eq!((s.days[0].n, s.days[0].low), (2, 1));
        // A run that opens: none of its rows.
        for (i, x) in [1.5, 1.5, 1.5].into_iter().enumerate() {
            push_adaptive(&mut m, &mut s, Some(&A), two(x, 10 + i as i64));
        }
        assert_eq!(s.days[0].n, 2);
        assert!(s.held.is_empty());
    }

    #[test]
    fn without_settings_the_configured_thresholds_hold() {
        let rows: Vec<(i64, f64)> = vec![(0, 1.0), (0, 0.4), (1, 1.0)];
        let (with, _) = run(&rows, Some(&A));
        let (without, _) = run(&rows, None);
        assert_eq!(with, without);
    }

    #[test]
    fn the_sketch_is_within_one_percent() {
        let mut s = AdaptState::default();
        s.roll(&A, 0, 0.5);
        let xs: Vec<f64> = (0..1000).map(|i| 0.5 + f64::from(i) * 0.01).collect();
        for x in &xs {
            s.record(*x, 0.5);
        }
        for q in [0.5, 0.9, 0.99, 0.999] {
            let exact = xs[(q * 999.0_f64).ceil() as usize];
            let got = s.quantile(q, 0.5).unwrap();
            assert!(
                (got - exact).abs() / exact <= 0.0100,
                "q {q}: {got} vs {exact}"
            );
        }
        // A quantile among the values below the floor gives none.
        let mut t = AdaptState::default();
        t.roll(&A, 0, 20.0);
        for x in &xs {
            t.record(*x, 20.0);
        }
        assert_eq!(t.quantile(0.99, 20.0), None);
    }
}
