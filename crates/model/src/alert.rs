//! The alert state machine behind the `alert_state` window function and the alerts of
//! `tads score`: one host's scores, in time order, become alerts that neither flap nor storm.
//!
//! Walking the rows in order:
//! * **Open.** A run of `min_points` rows (at least 1) whose score is at or above `enter` opens
//!   an alert; the alert starts at the run's first row, so every row of the run belongs to it.
//!   A row at or above `instant` (when set) completes the run at once: a short, extreme anomaly
//!   (a one-row spike) opens an alert without waiting for `min_points` rows.
//! * **Stay open.** The alert stays open while the score is at or above `exit` (hysteresis:
//!   `exit` below `enter` keeps a score hovering around `enter` from flapping). The first row
//!   strictly below `exit` closes it and is not part of it. An alert still open at the end
//!   covers the last row.
//! * **Hold** (when the step has a [`Hold`]): bridges the dips of a long anomaly. When a row
//!   below `exit` would close the alert while more than half of the latest `rows` scores (this
//!   row's included, missing ones left out) are at or above the hold's `level` (their median is,
//!   the lower middle one for an even count), the alert is held instead: everything above goes
//!   on as if it had closed (its cooldown starts), but if a new alert would open while every
//!   row since is still held (the rows of the run that opens it excepted), there is no new
//!   alert: the held one goes on, and the rows held join it. The first row outside a run that
//!   is not held ends the hold, and the held rows are not part of the alert. So the hold never
//!   adds rows after an alert's last high one, and a few huge scores cannot keep it (a median,
//!   not a mean).
//! * **Cooldown.** After an alert closes, no row counts toward a new one for a number of rows
//!   counted from the closing row, or for a time span from the closing row's time.
//! * **Missing scores** (NULL or NaN) neither open, extend, break nor close anything: inside an
//!   open alert the row belongs to it, elsewhere to nothing.
//!
//! Ties: a score equal to `enter` counts as above it; a score equal to `exit` keeps the alert
//! open.

use std::collections::VecDeque;

/// How long no new alert may open after one closes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cooldown {
    /// This many rows, counted from the closing row (which is the first of them).
    Rows(u64),
    /// This many microseconds after the closing row's time (rows before that instant cool).
    Micros(i64),
}

/// Keeping an open alert open on the trailing median of the score (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hold {
    /// How many of the latest scores the median takes (0: no hold).
    pub rows: u32,
    /// The open alert stays open, even below `exit`, while more than half of those scores are
    /// at or above this.
    pub level: f64,
}

/// One row as the machine sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The score; `None` (or NaN) for a missing one.
    pub score: Option<f64>,
    /// The threshold to open; `None` never opens.
    pub enter: Option<f64>,
    /// The threshold to stay open; `None` keeps an open alert open.
    pub exit: Option<f64>,
    /// Rows at or above `enter` in a row before an alert opens (values below 1 mean 1).
    pub min_points: u64,
    /// A score at or above this opens an alert at once (if not cooling).
    pub instant: Option<f64>,
    /// The cooldown that starts if this row closes an alert.
    pub cooldown: Option<Cooldown>,
    /// The row's time in microseconds (needed for a [`Cooldown::Micros`]).
    pub ts: Option<i64>,
    /// Keeps an open alert open on the trailing median; `None`: `exit` alone decides.
    pub hold: Option<Hold>,
}

/// What a row turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Not in an alert (it may still be part of a run that opens one later: see
    /// [`Event::Opened`]).
    Outside,
    /// This row opened alert number `seq`, which starts `back` rows earlier (0: at this row).
    /// The rows in between belong to it too.
    Opened {
        /// The alert's number (1, 2, …).
        seq: u64,
        /// How many rows before this one the alert starts.
        back: u64,
    },
    /// In the open alert `seq`; so are the rows [`Event::Held`] since its previous row.
    Inside {
        /// The alert's number.
        seq: u64,
    },
    /// The hold keeps alert `seq` open past its last row: the row belongs to it if a later row
    /// is [`Event::Inside`] before the alert closes, and not if it closes first.
    Held {
        /// The alert's number.
        seq: u64,
    },
    /// This row closed alert `seq` (and is not part of it; nor are the rows held before it).
    Closed {
        /// The alert's number.
        seq: u64,
    },
}

/// The state of one partition (one host) between rows. Feed rows with [`AlertMachine::push`].
/// It serializes, so a follower (`tads watch`) carries it from one file to the next.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlertMachine {
    row: u64,
    seq: u64,
    open: bool,
    /// The index of the run's first row and how many rows at or above `enter` it has.
    pending: Option<(u64, u64)>,
    /// Rows before this index cool.
    cool_row: u64,
    /// Times before this one cool.
    cool_ts: Option<i64>,
    /// The latest scores, oldest first, at most the hold's `rows` (kept only with a hold).
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    recent: VecDeque<f64>,
    /// Whether the alert closed by the rule without a hold is held open: its rows since are
    /// undecided until a new run reopens it (they join it) or the hold ends (they do not).
    #[serde(default)]
    holding: bool,
    /// Whether, while holding, a row of the current run toward reopening was not held (if the
    /// run breaks, the hold ends there).
    #[serde(default)]
    broken: bool,
}

/// Whether more than half of `xs` are at or above `level`: their median is, taking the lower
/// of the middle two for an even count (so that a few huge scores cannot hold an alert).
fn median_at_or_above(xs: &VecDeque<f64>, level: f64) -> bool {
    2 * xs.iter().filter(|x| **x >= level).count() > xs.len()
}

impl AlertMachine {
    /// A machine before its first row.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an alert is open after the rows pushed so far (held open included).
    pub fn is_open(&self) -> bool {
        self.open || self.holding
    }

    /// How many of the rows pushed so far belong to a run that may still open an alert (from
    /// the run's first row to the last row pushed; 0 when there is no such run).
    pub fn pending_rows(&self) -> u64 {
        self.pending.map_or(0, |(first, _)| self.row - first)
    }

    /// Whether `hold` keeps the latest scores: more than half at or above its level (judged
    /// only where a row would close, end or reopen a held alert, not on every row).
    fn holds(&self, hold: Option<Hold>) -> bool {
        hold.is_some_and(|h| median_at_or_above(&self.recent, h.level))
    }

    /// Feeds the next row.
    pub fn push(&mut self, step: Step) -> Event {
        let i = self.row;
        self.row += 1;
        let Some(s) = step.score.filter(|s| !s.is_nan()) else {
            return if self.open {
                Event::Inside { seq: self.seq }
            } else if self.holding {
                Event::Held { seq: self.seq }
            } else {
                Event::Outside
            };
        };
        let hold = step.hold.filter(|h| h.rows > 0);
        if let Some(h) = hold {
            self.recent.push_back(s);
            while self.recent.len() > h.rows as usize {
                self.recent.pop_front();
            }
        }
        if self.open {
            // An open alert is not held (a state saved by an earlier build could say both).
            self.holding = false;
            match step.exit {
                Some(x) if s < x => {
                    self.open = false;
                    match step.cooldown {
                        Some(Cooldown::Rows(r)) => self.cool_row = i.saturating_add(r),
                        Some(Cooldown::Micros(m)) => {
                            if let Some(t) = step.ts {
                                self.cool_ts = Some(t.saturating_add(m.max(0)));
                            }
                        }
                        None => {}
                    }
                    if self.holds(hold) {
                        self.holding = true;
                        self.broken = false;
                        return Event::Held { seq: self.seq };
                    }
                    return Event::Closed { seq: self.seq };
                }
                _ => return Event::Inside { seq: self.seq },
            }
        }
        let cooling =
            i < self.cool_row || matches!((step.ts, self.cool_ts), (Some(t), Some(c)) if t < c);
        let above = !cooling && step.enter.is_some_and(|e| s >= e);
        if !above {
            self.pending = None;
            if !self.holding {
                return Event::Outside;
            }
            if !self.broken && self.holds(hold) {
                return Event::Held { seq: self.seq };
            }
            self.holding = false;
            return Event::Closed { seq: self.seq };
        }
        let (first, count) = self.pending.map_or((i, 1), |(f, c)| (f, c + 1));
        if count >= step.min_points.max(1) || step.instant.is_some_and(|x| s >= x) {
            self.open = true;
            self.pending = None;
            if std::mem::take(&mut self.holding) {
                // The run reopens the alert held since it dipped: one alert bridges the dip.
                return Event::Inside { seq: self.seq };
            }
            self.seq += 1;
            Event::Opened {
                seq: self.seq,
                back: i - first,
            }
        } else {
            self.pending = Some((first, count));
            if self.holding {
                // Inside a run that may still reopen the alert, the hold is judged when the
                // run breaks (a run that completes bridges whatever its rows' median was).
                self.broken = self.broken || !self.holds(hold);
                return Event::Held { seq: self.seq };
            }
            Event::Outside
        }
    }
}

/// Each row's alert number from the machine's events, as `alert_state` returns them: the rows
/// of the run that opened an alert, and the held rows an alert bridged, get its number when the
/// event that decides it comes.
#[derive(Debug, Default)]
pub struct Numbering {
    /// Rows held since the open alert's last row.
    held: Vec<usize>,
}

impl Numbering {
    /// Records row `i`'s event in `out` (a slot per row, `None` outside alerts).
    pub fn mark(&mut self, out: &mut [Option<u64>], i: usize, event: Event) {
        match event {
            Event::Opened { seq, back } => out[i - back as usize..=i].fill(Some(seq)),
            Event::Inside { seq } => {
                for j in self.held.drain(..) {
                    out[j] = Some(seq);
                }
                out[i] = Some(seq);
            }
            Event::Held { .. } => self.held.push(i),
            Event::Outside | Event::Closed { .. } => self.held.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        scores: &[Option<f64>],
        min_points: u64,
        cooldown: Option<Cooldown>,
    ) -> Vec<Option<u64>> {
        run_with(scores, min_points, cooldown, None)
    }

    fn run_with(
        scores: &[Option<f64>],
        min_points: u64,
        cooldown: Option<Cooldown>,
        instant: Option<f64>,
    ) -> Vec<Option<u64>> {
        run_held(scores, min_points, cooldown, instant, None)
    }

    fn run_held(
        scores: &[Option<f64>],
        min_points: u64,
        cooldown: Option<Cooldown>,
        instant: Option<f64>,
        hold: Option<Hold>,
    ) -> Vec<Option<u64>> {
        let mut m = AlertMachine::new();
        let mut out = vec![None; scores.len()];
        let mut numbering = Numbering::default();
        for (i, s) in scores.iter().enumerate() {
            let event = m.push(Step {
                score: *s,
                enter: Some(1.0),
                exit: Some(0.5),
                min_points,
                instant,
                cooldown,
                ts: Some(i as i64 * 10),
                hold,
            });
            numbering.mark(&mut out, i, event);
        }
        out
    }

    #[test]
    fn hysteresis_min_points_and_cooldown() {
        let s = |v: &[f64]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
        // Ties: 1.0 opens, 0.5 stays open, 0.49 closes.
        assert_eq!(
            run(&s(&[0.0, 1.0, 0.5, 0.49, 1.0]), 1, None),
            vec![None, Some(1), Some(1), None, Some(2)]
        );
        // Two rows needed: the single one does not open; the pair opens from its first.
        assert_eq!(
            run(&s(&[1.0, 0.0, 1.2, 1.1, 0.0]), 2, None),
            vec![None, None, Some(1), Some(1), None]
        );
        // Two rows of cooldown from the closing row: index 1 closes, 1 and 2 cool, 3 opens.
        assert_eq!(
            run(&s(&[1.0, 0.2, 1.0, 1.0, 1.0]), 1, Some(Cooldown::Rows(2))),
            vec![Some(1), None, None, Some(2), Some(2)]
        );
        // A time cooldown of 15 µs from the closing row at t=10: t=20 cools, t=30 opens.
        assert_eq!(
            run(&s(&[1.0, 0.2, 1.0, 1.0]), 1, Some(Cooldown::Micros(15))),
            vec![Some(1), None, None, Some(2)]
        );
    }

    #[test]
    fn an_instant_score_opens_at_once() {
        let s = |v: &[f64]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
        // Three rows needed, but 5.0 (>= instant 3.0) opens at once and the run before it joins.
        assert_eq!(
            run_with(&s(&[0.0, 1.5, 5.0, 0.0, 3.0, 0.0]), 3, None, Some(3.0)),
            vec![None, Some(1), Some(1), None, Some(2), None]
        );
        // Without instant, none of those runs is long enough.
        assert_eq!(
            run(&s(&[0.0, 1.5, 5.0, 0.0, 3.0, 0.0]), 3, None),
            vec![None; 6]
        );
    }

    #[test]
    fn missing_scores_neither_open_nor_close() {
        assert_eq!(
            run(&[Some(2.0), None, Some(f64::NAN), Some(0.0), None], 1, None),
            vec![Some(1), Some(1), Some(1), None, None]
        );
        // A gap inside a pending run does not break it.
        assert_eq!(
            run(&[Some(2.0), None, Some(2.0)], 2, None),
            vec![Some(1), Some(1), Some(1)]
        );
    }

    #[test]
    fn a_hold_keeps_an_alert_open_while_the_trailing_median_is_high() {
        let s = |v: &[f64]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
        let hold = Some(Hold {
            rows: 3,
            level: 0.8,
        });
        // A dip below exit (0.5) inside a long anomaly: two of the last three rows are at or
        // above 0.8, so it holds, and 1.2 bridges it; two quiet rows in three close it.
        let scores = s(&[2.0, 1.0, 0.1, 1.2, 0.0, 0.0]);
        assert_eq!(
            run_held(&scores, 1, None, None, hold),
            vec![Some(1), Some(1), Some(1), Some(1), None, None]
        );
        assert_eq!(
            run(&scores, 1, None),
            vec![Some(1), Some(1), None, Some(2), None, None]
        );
        // A huge score does not hold a median: one 50.0 then a quiet row (one of two) closes.
        let spike = s(&[50.0, 0.0, 0.0]);
        assert_eq!(
            run_held(&spike, 1, None, None, hold),
            vec![Some(1), None, None]
        );
        // A held row that no high row follows before the alert closes is not part of it.
        assert_eq!(
            run_held(&s(&[2.0, 1.0, 0.1, 0.0, 0.0]), 1, None, None, hold),
            vec![Some(1), Some(1), None, None, None]
        );
        // Missing scores are left out of the window (taken as a low score, the missing one would
        // close the alert at 0.0, and 1.0 would open a second one).
        assert_eq!(
            run_held(
                &[Some(2.0), Some(1.0), None, Some(0.0), Some(1.0), Some(0.0)],
                1,
                None,
                None,
                hold
            ),
            vec![Some(1), Some(1), Some(1), Some(1), Some(1), None]
        );
        // A row between exit and enter does not bridge (without a hold it would open nothing):
        // it is held, and the hold ends with no new alert.
        let hold6 = Some(Hold {
            rows: 3,
            level: 0.6,
        });
        assert_eq!(
            run_held(
                &s(&[2.0, 1.0, 0.1, 0.7, 0.7, 0.0, 0.0]),
                1,
                None,
                None,
                hold6
            ),
            vec![Some(1), Some(1), None, None, None, None, None]
        );
        // A run of two rows reopens: its rows and the dip join the alert.
        assert_eq!(
            run_held(
                &s(&[2.0, 2.0, 0.1, 1.5, 1.5, 0.0, 0.0]),
                2,
                None,
                None,
                hold
            ),
            vec![Some(1), Some(1), Some(1), Some(1), Some(1), None, None]
        );
        // The run waits for the cooldown that the dip started (rows 2 and 3 cool).
        let hold4 = Some(Hold {
            rows: 4,
            level: 0.8,
        });
        assert_eq!(
            run_held(
                &s(&[2.0, 2.0, 0.1, 1.5, 1.5]),
                1,
                Some(Cooldown::Rows(2)),
                None,
                hold4
            ),
            vec![Some(1); 5]
        );
        assert_eq!(
            run(&s(&[2.0, 2.0, 0.1, 1.5, 1.5]), 1, Some(Cooldown::Rows(2))),
            vec![Some(1), Some(1), None, None, Some(2)]
        );
        // A run's rows need not be held when it completes; when it breaks after one was not,
        // the hold ends there (a level above enter: 1.1 opens runs but is not held).
        let high = Some(Hold {
            rows: 3,
            level: 1.2,
        });
        assert_eq!(
            run_held(&s(&[2.0, 2.0, 0.1, 1.1, 1.1]), 2, None, None, high),
            vec![Some(1); 5]
        );
        assert_eq!(
            run_held(
                &s(&[2.0, 2.0, 0.1, 1.1, 0.0, 2.0, 2.0]),
                2,
                None,
                None,
                high
            ),
            vec![Some(1), Some(1), None, None, None, Some(2), Some(2)]
        );
        // rows = 0 is no hold.
        let off = Some(Hold {
            rows: 0,
            level: 0.0,
        });
        assert_eq!(run_held(&scores, 1, None, None, off), run(&scores, 1, None));
    }

    #[test]
    fn the_hold_window_is_carried_in_the_serialized_state() {
        let hold = Some(Hold {
            rows: 4,
            level: 0.8,
        });
        let step = |x: f64| Step {
            score: Some(x),
            enter: Some(1.0),
            exit: Some(0.5),
            min_points: 1,
            instant: None,
            cooldown: None,
            ts: None,
            hold,
        };
        let scores = [0.9, 2.0, 1.5, 0.2, 1.1, 0.1, 0.0];
        let mut whole = AlertMachine::new();
        let all: Vec<Event> = scores.iter().map(|x| whole.push(step(*x))).collect();
        let mut first = AlertMachine::new();
        let mut split: Vec<Event> = scores[..3].iter().map(|x| first.push(step(*x))).collect();
        let json = serde_json::to_string(&first).unwrap();
        let mut second: AlertMachine = serde_json::from_str(&json).unwrap();
        split.extend(scores[3..].iter().map(|x| second.push(step(*x))));
        assert_eq!(all, split);
        // 0.2 is held by the window carried over (0.9, 2.0, 1.5), 1.1 bridges it, 0.1 closes.
        assert!(matches!(all[3], Event::Held { .. }), "{all:?}");
        assert!(matches!(all[4], Event::Inside { .. }), "{all:?}");
        assert!(matches!(all[5], Event::Closed { .. }), "{all:?}");
        // A state saved before the hold existed still reads.
        let old: AlertMachine = serde_json::from_str(
            r#"{"row":3,"seq":1,"open":true,"pending":null,"cool_row":0,"cool_ts":null}"#,
        )
        .unwrap();
        assert!(old.is_open());
        // One saved open and held by an earlier build goes on as an open alert.
        let mut both: AlertMachine = serde_json::from_str(
            r#"{"row":3,"seq":1,"open":true,"pending":null,"cool_row":0,"cool_ts":null,"holding":true}"#,
        )
        .unwrap();
        let events: Vec<Event> = [1.0, 0.0, 0.0]
            .iter()
            .map(|x| {
                both.push(Step {
                    hold: None,
                    ..step(*x)
                })
            })
            .collect();
        assert_eq!(
            events,
            [
                Event::Inside { seq: 1 },
                Event::Closed { seq: 1 },
                Event::Outside
            ]
        );
    }
}
