//! What to generate: the dataset's shape, its seed and the anomalies to inject.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::{AnomalyType, Error, Profile, Result};

/// Microseconds in one second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// Microseconds in one day.
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// A span of time with microsecond resolution, written like `10s`, `5m`, `7d` or `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(i64);

impl Span {
    /// A span of `micros` microseconds.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// A span of `secs` seconds.
    pub const fn from_secs(secs: i64) -> Self {
        Self(secs * MICROS_PER_SECOND)
    }

    /// The length in microseconds.
    pub const fn micros(self) -> i64 {
        self.0
    }
}

const UNITS: [(&str, i64); 7] = [
    ("w", 7 * MICROS_PER_DAY),
    ("d", MICROS_PER_DAY),
    ("h", 3_600 * MICROS_PER_SECOND),
    ("m", 60 * MICROS_PER_SECOND),
    ("s", MICROS_PER_SECOND),
    ("ms", 1_000),
    ("us", 1),
];

impl FromStr for Span {
    type Err = String;

    /// Parses one or more `<integer><unit>` terms, units `w d h m s ms us` (`1h30m`, `250ms`).
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a duration (write e.g. 10s, 5m, 2h, 7d, 1h30m)");
        let s = text.trim();
        if s.is_empty() {
            return Err(bad());
        }
        let mut total: i64 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let (_, scale) = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(bad)?;
            total = n
                .checked_mul(*scale)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("`{text}` is too long a duration"))?;
        }
        Ok(Self(total))
    }
}

impl fmt::Display for Span {
    /// The shortest spelling that parses back to the same span (`1h30m`, `10s`, `0s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        // Days are the largest unit printed: `7d` and `14d` read better than `1w` and `2w`.
        for (unit, scale) in UNITS.into_iter().skip(1) {
            if rest >= scale {
                write!(f, "{}{unit}", rest / scale)?;
                rest %= scale;
            }
        }
        Ok(())
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses the first timestamp of a dataset (`tads generate --start`): RFC 3339
/// (`2026-01-01T00:00:00Z`, any offset, converted to UTC) or a date (`2026-01-01`, midnight UTC).
pub fn parse_start(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    Err(format!(
        "`{text}` is not a timestamp (write e.g. 2026-01-01T00:00:00Z or 2026-01-01)"
    ))
}

/// An inclusive range of spans, written `5m..30m` (or a single span for a fixed length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanRange {
    /// The shortest.
    pub min: Span,
    /// The longest.
    pub max: Span,
}

impl SpanRange {
    /// The range `min..max`.
    pub const fn new(min: Span, max: Span) -> Self {
        Self { min, max }
    }
}

impl FromStr for SpanRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (min, max) = match text.split_once("..") {
            Some((a, b)) => (a.parse::<Span>()?, b.parse::<Span>()?),
            None => {
                let s = text.parse::<Span>()?;
                (s, s)
            }
        };
        if min > max {
            return Err(format!(
                "`{text}`: the shortest duration is longer than the longest"
            ));
        }
        Ok(Self { min, max })
    }
}

impl fmt::Display for SpanRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}..{}", self.min, self.max)
        }
    }
}

impl Serialize for SpanRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpanRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How the injected anomalies look. Magnitudes are in units of the affected metric's normal
/// standard deviation on that host (its spread under the daily load cycle plus noise), so the
/// same setting means the same difficulty for every metric and host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Which kinds of anomaly to inject, each equally likely.
    pub types: Vec<AnomalyType>,
    /// Spike height (each event draws 0.75–1.25 times this).
    pub spike_magnitude: f64,
    /// Spike length in points (1–3 by default).
    pub spike_points: (u32, u32),
    /// Burst elevation.
    pub burst_magnitude: f64,
    /// Burst length.
    pub burst_duration: SpanRange,
    /// How far a trend has drifted by its end.
    pub trend_magnitude: f64,
    /// Trend length.
    pub trend_duration: SpanRange,
    /// Correlation-break length.
    pub break_duration: SpanRange,
    /// Level-shift step.
    pub shift_magnitude: f64,
    /// Level-shift length.
    pub shift_duration: SpanRange,
    /// Quiet time kept between two events on the same host, so events never overlap.
    pub min_gap: Span,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        let m = |mins: i64| Span::from_secs(mins * 60);
        Self {
            types: Profile::Server.kinds().to_vec(),
            spike_magnitude: 8.0,
            spike_points: (1, 3),
            burst_magnitude: 4.0,
            burst_duration: SpanRange::new(m(5), m(30)),
            trend_magnitude: 5.0,
            trend_duration: SpanRange::new(m(60), m(360)),
            break_duration: SpanRange::new(m(60), m(180)),
            shift_magnitude: 4.0,
            shift_duration: SpanRange::new(m(60), m(360)),
            min_gap: m(60),
        }
    }
}

/// Everything that decides the generated rows. Two runs with equal configs write equal rows,
/// whatever the number of threads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenConfig {
    /// Number of hosts.
    pub hosts: u32,
    /// Timestamp of the first row of every host.
    pub start: DateTime<Utc>,
    /// Length of the time range; rows are at `start + i * interval` for `i * interval < duration`.
    pub duration: Span,
    /// Time between two rows of a host.
    pub interval: Span,
    /// The seed of every random choice.
    pub seed: u64,
    /// Expected anomaly events per host-day.
    pub anomaly_rate: f64,
    /// Number of regions the hosts are spread over.
    pub regions: u32,
    /// Number of projects the hosts are spread over.
    pub projects: u32,
    /// Server hosts or network links (left out of the manifest when it is the default).
    #[serde(default, skip_serializing_if = "Profile::is_server")]
    pub profile: Profile,
    /// Shapes of the injected anomalies.
    pub anomalies: AnomalyConfig,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            hosts: 20,
            start: DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default(), // 2026-01-01T00:00:00Z
            duration: Span::from_secs(7 * 86_400),
            interval: Span::from_secs(10),
            seed: 42,
            anomaly_rate: 0.5,
            regions: 3,
            projects: 4,
            profile: Profile::Server,
            anomalies: AnomalyConfig::default(),
        }
    }
}

/// The most rows one run may generate (2^40, about 1.1 trillion).
pub const MAX_ROWS: u64 = 1 << 40;

impl GenConfig {
    /// Number of rows per host.
    pub fn points_per_host(&self) -> u64 {
        if self.interval.micros() <= 0 || self.duration.micros() <= 0 {
            return 0;
        }
        // Rows at start + i*interval for every i with i*interval < duration.
        ((self.duration.micros() - 1) / self.interval.micros() + 1) as u64
    }

    /// Number of rows in the whole dataset.
    pub fn total_rows(&self) -> u64 {
        self.points_per_host().saturating_mul(u64::from(self.hosts))
    }

    /// Microseconds since the epoch of the first row.
    pub fn start_micros(&self) -> i64 {
        self.start.timestamp_micros()
    }

    /// Checks every field; the error names the field (as its command-line flag) and the problem.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, message: String| Err(Error::Config { field, message });
        if self.hosts == 0 {
            return bad("hosts", "must be at least 1".into());
        }
        if self.regions == 0 {
            return bad("regions", "must be at least 1".into());
        }
        if self.projects == 0 {
            return bad("projects", "must be at least 1".into());
        }
        if self.interval.micros() <= 0 {
            return bad("interval", "must be longer than zero".into());
        }
        if self.duration.micros() <= 0 {
            return bad("duration", "must be longer than zero".into());
        }
        if self.duration < self.interval {
            return bad(
                "duration",
                format!(
                    "{} is shorter than the interval {}",
                    self.duration, self.interval
                ),
            );
        }
        if self
            .start_micros()
            .checked_add(self.duration.micros())
            .is_none()
            || self.start.timestamp() < 0
        {
            return bad("start", "must lie between 1970 and 292,000 AD".into());
        }
        if !(self.anomaly_rate.is_finite() && (0.0..=1_000.0).contains(&self.anomaly_rate)) {
            return bad(
                "anomaly-rate",
                format!(
                    "{} is not between 0 and 1000 events per host-day",
                    self.anomaly_rate
                ),
            );
        }
        if self.total_rows() > MAX_ROWS {
            return bad(
                "hosts",
                format!(
                    "{} rows is more than one run may write ({MAX_ROWS})",
                    self.total_rows()
                ),
            );
        }
        let a = &self.anomalies;
        if a.types.is_empty() && self.anomaly_rate > 0.0 {
            return bad(
                "anomaly-types",
                "name at least one type, or set --anomaly-rate 0".into(),
            );
        }
        if let Some(t) = a.types.iter().find(|t| !self.profile.kinds().contains(t)) {
            let names: Vec<_> = self.profile.kinds().iter().map(|k| k.as_str()).collect();
            return bad(
                "anomaly-types",
                format!(
                    "`{t}` is not an anomaly of the {} profile (its kinds: {})",
                    self.profile,
                    names.join(", ")
                ),
            );
        }
        for (field, m) in [
            ("spike-magnitude", a.spike_magnitude),
            ("burst-magnitude", a.burst_magnitude),
            ("trend-magnitude", a.trend_magnitude),
            ("shift-magnitude", a.shift_magnitude),
        ] {
            if !(m.is_finite() && m > 0.0 && m <= 1_000.0) {
                return bad(
                    field,
                    format!("{m} is not a magnitude between 0 and 1000 standard deviations"),
                );
            }
        }
        if a.spike_points.0 == 0 || a.spike_points.0 > a.spike_points.1 {
            return bad("spike-points", "needs 1 <= min <= max".into());
        }
        for (field, r) in [
            ("burst-duration", a.burst_duration),
            ("trend-duration", a.trend_duration),
            ("break-duration", a.break_duration),
            ("shift-duration", a.shift_duration),
        ] {
            if r.min.micros() <= 0 {
                return bad(field, "must be longer than zero".into());
            }
        }
        if a.min_gap.micros() < 0 {
            return bad("min-gap", "must not be negative".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_print_back() {
        for (text, micros) in [
            ("10s", 10_000_000),
            ("7d", 7 * MICROS_PER_DAY),
            ("1h30m", 5_400_000_000),
            ("250ms", 250_000),
        ] {
            let s: Span = text.parse().unwrap();
            assert_eq!(s.micros(), micros, "{text}");
            assert_eq!(s.to_string(), text);
        }
        assert_eq!("2w".parse::<Span>().unwrap().to_string(), "14d");
        assert_eq!(Span::from_micros(0).to_string(), "0s");
        for bad in ["", "10", "s", "10x", "1.5h", "-3s", "10s5"] {
            assert!(bad.parse::<Span>().is_err(), "{bad:?} parsed");
        }
        assert!(
            "9999999999999999w"
                .parse::<Span>()
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn start_accepts_rfc3339_and_dates() {
        assert_eq!(
            parse_start("2026-01-01").unwrap(),
            parse_start("2026-01-01T00:00:00Z").unwrap()
        );
        assert_eq!(
            parse_start("2026-01-01T02:00:00+02:00").unwrap(),
            parse_start("2026-01-01T00:00:00Z").unwrap()
        );
        assert!(
            parse_start("yesterday")
                .unwrap_err()
                .contains("not a timestamp")
        );
    }

    #[test]
    fn span_ranges() {
        let r: SpanRange = "5m..30m".parse().unwrap();
        assert_eq!(
            (r.min, r.max),
            (Span::from_secs(300), Span::from_secs(1800))
        );
        assert_eq!(r.to_string(), "5m..30m");
        assert_eq!("1h".parse::<SpanRange>().unwrap().to_string(), "1h");
        assert!("30m..5m".parse::<SpanRange>().is_err());
    }

    #[test]
    fn rows_count_every_point_before_the_end() {
        let mut c = GenConfig {
            hosts: 3,
            duration: Span::from_secs(86_400),
            interval: Span::from_secs(10),
            ..GenConfig::default()
        };
        assert_eq!(c.points_per_host(), 8_640);
        c.duration = Span::from_secs(86_405);
        assert_eq!(c.points_per_host(), 8_641);
        assert_eq!(c.total_rows(), 3 * 8_641);
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = GenConfig::default();
        c.validate().unwrap();
        c.hosts = 0;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "--hosts: must be at least 1"
        );
        let c = GenConfig {
            interval: Span::from_secs(3_600),
            duration: Span::from_secs(60),
            ..GenConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("--duration:")
        );
        let c = GenConfig {
            anomaly_rate: f64::NAN,
            ..GenConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("--anomaly-rate:")
        );
        let c = GenConfig {
            hosts: u32::MAX,
            interval: Span::from_micros(1),
            ..GenConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("more than one run may write")
        );
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = GenConfig::default();
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"interval\":\"10s\""), "{json}");
        assert!(
            !json.contains("profile"),
            "the default profile is left out: {json}"
        );
        let back: GenConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let links = GenConfig {
            profile: Profile::Network,
            anomalies: AnomalyConfig {
                types: Profile::Network.default_kinds().to_vec(),
                ..AnomalyConfig::default()
            },
            ..GenConfig::default()
        };
        let json = serde_json::to_string(&links).unwrap();
        assert!(json.contains("\"profile\":\"network\""), "{json}");
        assert_eq!(serde_json::from_str::<GenConfig>(&json).unwrap(), links);
    }

    #[test]
    fn a_kind_of_another_profile_is_refused() {
        let c = GenConfig {
            profile: Profile::Network,
            ..GenConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "--anomaly-types: `burst` is not an anomaly of the network profile (its kinds: \
             loss_burst, jitter_storm, bandwidth_collapse, latency_step, spike, level_shift)"
        );
        let c = GenConfig {
            anomalies: AnomalyConfig {
                types: vec![AnomalyType::LossBurst],
                ..AnomalyConfig::default()
            },
            ..GenConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("server profile")
        );
    }
}
