//! The kinds of anomaly the generator injects, and the events it schedules per host.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use crate::config::{AnomalyConfig, GenConfig, MICROS_PER_DAY, SpanRange};
use crate::metrics::{Metric, MetricSet};

/// A kind of injected anomaly; the `anomaly_type` label of the rows it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyType {
    /// One to three points far above normal on one or two metrics.
    Spike,
    /// Several related metrics elevated for minutes.
    Burst,
    /// One metric drifting away over hours (a memory leak), ending abruptly.
    Trend,
    /// One or two load-driven metrics follow the opposite of the host's load while each stays
    /// inside its normal range: invisible to per-metric z-scores, visible to PCA.
    CorrelationBreak,
    /// A sustained step up or down on one to three metrics.
    LevelShift,
    /// A link drops packets for minutes: packet loss and retransmits jump (network profile).
    LossBurst,
    /// Jitter, and often latency with it, rises for minutes (network profile).
    JitterStorm,
    /// A link's throughput falls towards 0 for an hour or more (network profile).
    BandwidthCollapse,
    /// Latency steps up and stays up for hours, as after a route change (network profile).
    LatencyStep,
}

impl AnomalyType {
    /// Every kind of every profile.
    pub const ALL: [AnomalyType; 9] = [
        Self::Spike,
        Self::Burst,
        Self::Trend,
        Self::CorrelationBreak,
        Self::LevelShift,
        Self::LossBurst,
        Self::JitterStorm,
        Self::BandwidthCollapse,
        Self::LatencyStep,
    ];

    /// The label written to `anomaly_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spike => "spike",
            Self::Burst => "burst",
            Self::Trend => "trend",
            Self::CorrelationBreak => "correlation_break",
            Self::LevelShift => "level_shift",
            Self::LossBurst => "loss_burst",
            Self::JitterStorm => "jitter_storm",
            Self::BandwidthCollapse => "bandwidth_collapse",
            Self::LatencyStep => "latency_step",
        }
    }
}

impl fmt::Display for AnomalyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AnomalyType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|t| t.as_str()).collect();
                format!("unknown anomaly type `{s}` (one of {})", names.join(", "))
            })
    }
}

/// One injected event on one host: rows `start..start + len` (point indices of that host).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Dataset-wide id, the `anomaly_id` label (1-based, in host then time order).
    pub id: i64,
    /// The kind.
    pub kind: AnomalyType,
    /// Index of the first point.
    pub start: u64,
    /// Number of points.
    pub len: u64,
    /// The metrics it changes.
    pub metrics: MetricSet,
    /// Size of the change in standard deviations of each metric (signed; unused by a
    /// correlation break).
    pub magnitude: f64,
}

impl Event {
    /// Index one past the last point.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }

    /// How far the event has developed at point `i` (0 at its start, 1 at its last point);
    /// trends grow with it, every other kind is at full size throughout.
    pub fn intensity(&self, i: u64) -> f64 {
        if self.kind == AnomalyType::Trend && self.len > 1 {
            (i - self.start + 1) as f64 / self.len as f64
        } else {
            1.0
        }
    }
}

fn pick(rng: &mut Xoshiro256PlusPlus, pool: &[Metric], min: usize, max: usize) -> MetricSet {
    let count = rng.random_range(min..=max.min(pool.len()));
    let mut pool = pool.to_vec();
    let mut set = MetricSet::EMPTY;
    for _ in 0..count {
        let m = pool.swap_remove(rng.random_range(0..pool.len()));
        set.insert(m);
    }
    set
}

fn points(range: SpanRange, interval_us: i64, rng: &mut Xoshiro256PlusPlus) -> u64 {
    let us = rng.random_range(range.min.micros()..=range.max.micros());
    (us / interval_us).max(1) as u64
}

fn mean_points(range: SpanRange, interval_us: i64) -> f64 {
    ((range.min.micros() + range.max.micros()) as f64 / 2.0 / interval_us as f64).max(1.0)
}

/// The range of lengths an event of `kind` draws from (`None`: a spike, drawn in points). The
/// network kinds take the knobs of the server kinds they resemble: loss bursts and jitter
/// storms the burst's, a bandwidth collapse the correlation break's, a latency step the level
/// shift's.
fn duration(kind: AnomalyType, a: &AnomalyConfig) -> Option<SpanRange> {
    use AnomalyType::*;
    match kind {
        Spike => None,
        Burst | LossBurst | JitterStorm => Some(a.burst_duration),
        Trend => Some(a.trend_duration),
        CorrelationBreak | BandwidthCollapse => Some(a.break_duration),
        LevelShift | LatencyStep => Some(a.shift_duration),
    }
}

/// Average number of points one event of the configured mix occupies, gap included.
fn mean_occupancy(a: &AnomalyConfig, interval_us: i64) -> f64 {
    let each: f64 = a
        .types
        .iter()
        .map(|t| match duration(*t, a) {
            None => f64::from(a.spike_points.0 + a.spike_points.1) / 2.0,
            Some(range) => mean_points(range, interval_us),
        })
        .sum();
    each / a.types.len().max(1) as f64 + a.min_gap.micros() as f64 / interval_us as f64
}

/// How far, in standard deviations and on average over the event, a correlation break must move
/// its metrics (the larger of the two when there are two) for the generator to place it. A
/// break can move a metric by about 2.8 standard deviations at most (at the day's busiest and
/// quietest hours, on weekdays).
pub const MIN_BREAK_DEPARTURE: f64 = 2.0;

/// Where a correlation break of `len` points on `metrics`, drawn to start at `start`, really
/// starts: the first start, in steps of 15 minutes and at most a day later, at which its average
/// departure (`departure` of a point index and a metric, sampled at 8 points) reaches
/// [`MIN_BREAK_DEPARTURE`], so that the labelled rows show the break; failing that, the start
/// within the day where it is largest.
fn visible_start(
    start: u64,
    len: u64,
    metrics: MetricSet,
    interval_us: i64,
    departure: &dyn Fn(u64, Metric) -> f64,
) -> u64 {
    let step = ((15 * 60 * 1_000_000) / interval_us).max(1) as u64;
    let day = (MICROS_PER_DAY / interval_us).max(1) as u64;
    let mean = |s: u64| {
        let samples = 8u64;
        metrics
            .iter()
            .map(|m| {
                (0..samples)
                    .map(|k| departure(s + k * len.saturating_sub(1) / (samples - 1), m))
                    .sum::<f64>()
                    / samples as f64
            })
            .fold(0.0, f64::max)
    };
    let mut best = (start, f64::NEG_INFINITY);
    for s in (0..=day / step).map(|k| start + k * step) {
        let d = mean(s);
        if d >= MIN_BREAK_DEPARTURE {
            return s;
        }
        if d > best.1 {
            best = (s, d);
        }
    }
    best.0
}

/// The length in points, the metrics and the signed magnitude of one event of `kind`, drawn
/// from `rng`; its length from [`duration`], its step from the burst's, trend's or level
/// shift's magnitude (a bandwidth collapse's downwards).
fn shape(
    kind: AnomalyType,
    config: &GenConfig,
    rng: &mut Xoshiro256PlusPlus,
) -> (u64, MetricSet, f64) {
    use Metric::*;
    let a = &config.anomalies;
    let interval = config.interval.micros();
    let all = config.profile.metrics();
    // A spike draws its length in points and reads no range.
    let range = duration(kind, a).unwrap_or(a.burst_duration);
    match kind {
        AnomalyType::Spike => (
            u64::from(rng.random_range(a.spike_points.0..=a.spike_points.1)),
            pick(rng, all, 1, 2),
            a.spike_magnitude * rng.random_range(0.75..1.25),
        ),
        AnomalyType::Burst => (
            points(range, interval, rng),
            pick(
                rng,
                &[
                    CpuPct,
                    LatencyMs,
                    ErrorRate,
                    NetRxMbps,
                    NetTxMbps,
                    DiskReadMbps,
                ],
                2,
                4,
            ),
            a.burst_magnitude * rng.random_range(0.8..1.2),
        ),
        AnomalyType::Trend => (
            points(range, interval, rng),
            pick(
                rng,
                &[MemPct, MemPct, MemPct, LatencyMs, DiskWriteMbps, ErrorRate],
                1,
                1,
            ),
            a.trend_magnitude * rng.random_range(0.8..1.2),
        ),
        AnomalyType::CorrelationBreak => (
            points(range, interval, rng),
            pick(
                rng,
                &[CpuPct, DiskReadMbps, DiskWriteMbps, NetRxMbps, NetTxMbps],
                1,
                2,
            ),
            0.0,
        ),
        AnomalyType::LevelShift => {
            let sign = if rng.random_bool(0.75) { 1.0 } else { -1.0 };
            (
                points(range, interval, rng),
                pick(rng, all, 1, 3),
                sign * a.shift_magnitude * rng.random_range(0.8..1.2),
            )
        }
        AnomalyType::LossBurst => (
            points(range, interval, rng),
            MetricSet::of(&[PacketLossPct, Retransmits]),
            a.burst_magnitude * rng.random_range(0.8..1.2),
        ),
        AnomalyType::JitterStorm => {
            let mut set = MetricSet::of(&[JitterMs]);
            if rng.random_bool(0.5) {
                set.insert(LatencyMs);
            }
            (
                points(range, interval, rng),
                set,
                a.burst_magnitude * rng.random_range(0.8..1.2),
            )
        }
        AnomalyType::BandwidthCollapse => (
            points(range, interval, rng),
            MetricSet::of(&[BandwidthMbps]),
            -a.shift_magnitude * rng.random_range(0.8..1.2),
        ),
        AnomalyType::LatencyStep => (
            points(range, interval, rng),
            MetricSet::of(&[LatencyMs]),
            a.shift_magnitude * rng.random_range(0.8..1.2),
        ),
    }
}

/// Schedules one host's events (ids left at 0; the caller numbers them dataset-wide).
/// `departure` says how far a correlation break would move a metric at a point index; breaks
/// are moved to where they show (see [`visible_start`]).
///
/// Events arrive as a Poisson process whose waiting times are shortened by the average event
/// length, so the realised rate matches `anomaly_rate` events per host-day as long as events
/// fit; they never overlap, and consecutive events are at least `min_gap` apart.
pub fn schedule(
    config: &GenConfig,
    rng: &mut Xoshiro256PlusPlus,
    departure: &dyn Fn(u64, Metric) -> f64,
) -> Vec<Event> {
    let a = &config.anomalies;
    let n = config.points_per_host();
    if config.anomaly_rate <= 0.0 || a.types.is_empty() || n == 0 {
        return vec![];
    }
    let interval = config.interval.micros();
    let points_per_day = MICROS_PER_DAY as f64 / interval as f64;
    let wanted_gap = points_per_day / config.anomaly_rate;
    let mean_wait = (wanted_gap - mean_occupancy(a, interval)).max(wanted_gap * 0.05);
    let gap = (a.min_gap.micros() / interval) as u64;
    let mut events = Vec::new();
    let mut cursor = 0u64;
    loop {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        let wait = (-u.ln() * mean_wait) as u64;
        let start = cursor.saturating_add(wait);
        if start >= n {
            break;
        }
        let kind = a.types[rng.random_range(0..a.types.len())];
        let (len, metrics, magnitude) = shape(kind, config, rng);
        let start = if kind == AnomalyType::CorrelationBreak {
            visible_start(start, len, metrics, interval, departure)
        } else {
            start
        };
        if start >= n {
            break;
        }
        let len = len.min(n - start);
        events.push(Event {
            id: 0,
            kind,
            start,
            len,
            metrics,
            magnitude,
        });
        cursor = start + len + gap;
    }
    events
}
