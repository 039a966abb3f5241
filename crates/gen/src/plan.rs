//! The whole dataset decided up front: hosts, their regions and projects, their events, and
//! which rows go in which file. Rows themselves are made later, file by file, in parallel.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, DictionaryArray, Float64Array, Int8Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int8Type, Int32Type, Schema, SchemaRef, TimeUnit};
use chrono::DateTime;

use crate::anomaly::{self, AnomalyType, Event};
use crate::config::{GenConfig, MICROS_PER_DAY};
use crate::metrics::{HostProfile, HostSeries, METRIC_COUNT, stream, tag};
use crate::{Error, Profile, Result};

/// Rows per Parquet file (and row group) the planner aims for.
pub const TARGET_ROWS_PER_FILE: u64 = 1 << 20;

const REGIONS: [(&str, f64); 8] = [
    ("us-east-1", -5.0),
    ("eu-west-1", 0.0),
    ("ap-southeast-1", 8.0),
    ("us-west-2", -8.0),
    ("eu-central-1", 1.0),
    ("ap-northeast-1", 9.0),
    ("sa-east-1", -3.0),
    ("ca-central-1", -5.0),
];

const PROJECTS: [&str; 8] = [
    "checkout",
    "search",
    "payments",
    "catalog",
    "auth",
    "ingest",
    "reporting",
    "mobile-api",
];

/// The schema of generated telemetry of `profile` (the `date` partition column lives in the
/// directory names).
pub fn schema(profile: Profile) -> SchemaRef {
    let dict = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let mut fields = vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("host_id", dict(), false),
        Field::new("region", dict(), false),
        Field::new("project_id", dict(), false),
    ];
    fields.extend(
        profile
            .metrics()
            .iter()
            .map(|m| Field::new(m.column(), DataType::Float64, false)),
    );
    fields.extend([
        Field::new("is_anomaly", DataType::Boolean, false),
        Field::new(
            "anomaly_type",
            DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8)),
            true,
        ),
        Field::new("anomaly_id", DataType::Int64, true),
    ]);
    Arc::new(Schema::new(fields))
}

/// One host of the dataset.
#[derive(Debug, Clone)]
pub struct Host {
    /// `host-0000`-style id, zero-padded so text order is numeric order.
    pub id: String,
    /// Region name.
    pub region: String,
    /// Project name.
    pub project: String,
    /// Behaviour.
    pub profile: HostProfile,
    /// Events in time order.
    pub events: Vec<Event>,
}

/// One Parquet file: one day of a contiguous range of hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct FileTask {
    /// `YYYY-MM-DD` of the `date=` partition.
    pub date: String,
    /// Path below the dataset root.
    pub path: String,
    /// Hosts `hosts.0..hosts.1`.
    pub hosts: (usize, usize),
    /// Point indices of that day, the same for every host.
    pub points: (u64, u64),
    /// Number of rows.
    pub rows: u64,
}

/// The decided dataset.
#[derive(Debug)]
pub struct Plan {
    /// The configuration it was made from.
    pub config: GenConfig,
    /// Every host.
    pub hosts: Vec<Host>,
    /// Every file, in (date, hosts) order.
    pub files: Vec<FileTask>,
}

impl Plan {
    /// Validates `config` and decides the dataset.
    pub fn new(config: &GenConfig) -> Result<Self> {
        config.validate()?;
        let n_hosts = config.hosts as usize;
        let width = (n_hosts.saturating_sub(1)).to_string().len().max(4);
        let mut next_id = 1i64;
        let mut hosts = Vec::with_capacity(n_hosts);
        for h in 0..n_hosts {
            let key = h as u64;
            let placement = crate::metrics::mix(config.seed, key);
            let region_idx = (placement % u64::from(config.regions)) as usize;
            let project_idx = ((placement >> 32) % u64::from(config.projects)) as usize;
            let (region, tz) = match REGIONS.get(region_idx) {
                Some((name, tz)) => ((*name).to_string(), *tz),
                None => (
                    format!("region-{:02}", region_idx + 1),
                    ((region_idx * 5) % 24) as f64 - 11.0,
                ),
            };
            let project = PROJECTS.get(project_idx).map_or_else(
                || format!("project-{:02}", project_idx + 1),
                |p| (*p).to_string(),
            );
            let mut rng = stream(config.seed, tag::EVENTS, key, 0);
            let profile = HostProfile::new(config.profile, config.seed, key, tz);
            let (t0, step) = (config.start_micros(), config.interval.micros());
            let departure = |i: u64, m| profile.break_departure(t0 + i as i64 * step, m);
            let mut events = anomaly::schedule(config, &mut rng, &departure);
            for e in &mut events {
                e.id = next_id;
                next_id += 1;
            }
            hosts.push(Host {
                id: format!("{}-{h:0width$}", config.profile.key_prefix()),
                region,
                project,
                profile,
                events,
            });
        }
        let files = plan_files(config);
        Ok(Self {
            config: config.clone(),
            hosts,
            files,
        })
    }

    /// Number of rows in the dataset.
    pub fn total_rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// Events by kind (every kind of the profile present, zero where none).
    pub fn events_by_type(&self) -> BTreeMap<AnomalyType, u64> {
        let kinds = self.config.profile.kinds();
        let mut counts: BTreeMap<_, _> = kinds.iter().map(|t| (*t, 0)).collect();
        for e in self.hosts.iter().flat_map(|h| &h.events) {
            *counts.entry(e.kind).or_default() += 1;
        }
        counts
    }

    /// Rows labelled anomalous.
    pub fn anomalous_rows(&self) -> u64 {
        self.hosts
            .iter()
            .flat_map(|h| &h.events)
            .map(|e| e.len)
            .sum()
    }

    /// The rows of host `host` at points `points.0..points.1`, sorted by time.
    pub fn host_batch(&self, host: usize, points: (u64, u64)) -> Result<RecordBatch> {
        let h = &self.hosts[host];
        let c = &self.config;
        let (first, end) = points;
        let n = (end - first) as usize;
        let start_us = c.start_micros();
        let interval = c.interval.micros();
        let day = (start_us + first as i64 * interval).div_euclid(MICROS_PER_DAY);
        // A day's rows come from the day's stream; rows that start inside a day (a window of
        // `generate --follow`) from a stream of their own, so windows do not repeat its noise.
        let day_first = ((day * MICROS_PER_DAY - start_us).max(0) + interval - 1) / interval;
        let key = if first as i64 == day_first {
            day as u64
        } else {
            (day as u64) ^ first.rotate_left(32)
        };
        let mut rng = stream(c.seed, tag::NOISE, host as u64, key);
        let mut series = HostSeries::new(&h.profile);
        let mut ts = Vec::with_capacity(n);
        let metrics = c.profile.metrics();
        let kinds = c.profile.kinds();
        let mut cols: [Vec<f64>; METRIC_COUNT] = std::array::from_fn(|_| Vec::new());
        for m in metrics {
            cols[*m as usize].reserve_exact(n);
        }
        let mut is_anomaly = BooleanBuilder::with_capacity(n);
        let mut kind_keys = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        // Events are sorted and disjoint: walk them alongside the points.
        let mut next = h.events.partition_point(|e| e.end() <= first);
        for i in first..end {
            let t = start_us + i as i64 * interval;
            ts.push(t);
            let point = series.point(t, &mut rng);
            while next < h.events.len() && h.events[next].end() <= i {
                next += 1;
            }
            let active = h.events.get(next).filter(|e| e.start <= i);
            match active {
                None => {
                    for &m in metrics {
                        cols[m as usize].push(series.value(&point, m, 0.0, false));
                    }
                    is_anomaly.append_value(false);
                    kind_keys.push(None);
                    ids.push(None);
                }
                Some(e) => {
                    let shift = e.magnitude * e.intensity(i);
                    let decouple = e.kind == AnomalyType::CorrelationBreak;
                    for &m in metrics {
                        let hit = e.metrics.contains(m);
                        let s = if hit && !decouple { shift } else { 0.0 };
                        cols[m as usize].push(series.value(&point, m, s, hit && decouple));
                    }
                    is_anomaly.append_value(true);
                    let key = kinds.iter().position(|k| *k == e.kind).unwrap_or(0);
                    kind_keys.push(Some(key as i8));
                    ids.push(Some(e.id));
                }
            }
        }
        let constant = |value: &str| -> ArrayRef {
            let keys = Int32Array::from(vec![0; n]);
            Arc::new(DictionaryArray::<Int32Type>::new(
                keys,
                Arc::new(StringArray::from(vec![value])),
            ))
        };
        let kinds = DictionaryArray::<Int8Type>::new(
            Int8Array::from(kind_keys),
            Arc::new(StringArray::from_iter_values(
                kinds.iter().map(|t| t.as_str()),
            )),
        );
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            constant(&h.id),
            constant(&h.region),
            constant(&h.project),
        ];
        arrays.extend(metrics.iter().map(|m| {
            let values = std::mem::take(&mut cols[*m as usize]);
            Arc::new(Float64Array::from(values)) as ArrayRef
        }));
        arrays.push(Arc::new(is_anomaly.finish()));
        arrays.push(Arc::new(kinds));
        arrays.push(Arc::new(Int64Array::from(ids)));
        RecordBatch::try_new(schema(c.profile), arrays)
            .map_err(|e| Error::Internal(format!("building a batch: {e}")))
    }
}

/// Splits the dataset into files: one `date=` directory per UTC day, and in each as many files
/// as it takes to keep each near [`TARGET_ROWS_PER_FILE`] rows, each holding whole host-days.
fn plan_files(c: &GenConfig) -> Vec<FileTask> {
    let start = c.start_micros();
    let interval = c.interval.micros();
    let total = c.points_per_host();
    let mut files = Vec::new();
    let mut first = 0u64;
    while first < total {
        let t = start + first as i64 * interval;
        let day = t.div_euclid(MICROS_PER_DAY);
        let next_day = (day + 1) * MICROS_PER_DAY;
        // First point at or after midnight.
        let end = (((next_day - start) + interval - 1) / interval) as u64;
        let end = end.min(total);
        let per_host = end - first;
        let hosts_per_file = (TARGET_ROWS_PER_FILE / per_host).max(1) as usize;
        let date = DateTime::from_timestamp_micros(t)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        let n_hosts = c.hosts as usize;
        for (part, lo) in (0..n_hosts).step_by(hosts_per_file).enumerate() {
            let hi = (lo + hosts_per_file).min(n_hosts);
            files.push(FileTask {
                path: format!("date={date}/part-{part:05}.parquet"),
                date: date.clone(),
                hosts: (lo, hi),
                points: (first, end),
                rows: per_host * (hi - lo) as u64,
            });
        }
        first = end;
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Span;
    use crate::metrics::Metric;

    /// The values of the Float64 column `name` of `b`.
    fn values(b: &RecordBatch, name: &str) -> Vec<f64> {
        b.column_by_name(name)
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    fn small() -> GenConfig {
        GenConfig {
            hosts: 5,
            duration: Span::from_secs(3 * 86_400),
            interval: Span::from_secs(60),
            anomaly_rate: 4.0,
            ..GenConfig::default()
        }
    }

    #[test]
    fn files_cover_every_row_once_by_day() {
        let mut c = small();
        c.start = "2026-01-01T18:00:00Z".parse().unwrap();
        let plan = Plan::new(&c).unwrap();
        assert_eq!(plan.total_rows(), c.total_rows());
        let dates: Vec<_> = plan.files.iter().map(|f| f.date.as_str()).collect();
        assert_eq!(
            dates,
            ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
        );
        assert_eq!(plan.files[0].points, (0, 360));
        assert_eq!(plan.files[1].points, (360, 360 + 1440));
        assert_eq!(plan.files[3].points.1, c.points_per_host());
    }

    #[test]
    fn big_days_are_split_into_several_files() {
        let c = GenConfig {
            hosts: 300,
            interval: Span::from_secs(10),
            duration: Span::from_secs(86_400),
            ..GenConfig::default()
        };
        let plan = Plan::new(&c).unwrap();
        assert_eq!(plan.files.len(), 3); // 121 hosts of 8640 rows fit in 2^20
        assert_eq!(plan.files[2].path, "date=2026-01-01/part-00002.parquet");
        assert!(plan.files.iter().all(|f| f.rows <= TARGET_ROWS_PER_FILE));
        assert_eq!(plan.total_rows(), 300 * 8640);
    }

    #[test]
    fn events_are_disjoint_numbered_and_labelled() {
        let plan = Plan::new(&small()).unwrap();
        let events: Vec<_> = plan.hosts.iter().flat_map(|h| &h.events).collect();
        assert!(events.len() > 20, "{}", events.len());
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.id, i as i64 + 1);
        }
        for h in &plan.hosts {
            for w in h.events.windows(2) {
                assert!(w[0].end() < w[1].start);
            }
        }
        let labelled: u64 = (0..plan.hosts.len())
            .map(|h| {
                let b = plan
                    .host_batch(h, (0, plan.config.points_per_host()))
                    .unwrap();
                b.num_rows() as u64 - b.column_by_name("anomaly_id").unwrap().null_count() as u64
            })
            .sum();
        assert_eq!(labelled, plan.anomalous_rows());
        let by_type = plan.events_by_type();
        assert_eq!(by_type.values().sum::<u64>(), events.len() as u64);
        assert!(by_type.values().all(|n| *n > 0), "{by_type:?}");
    }

    #[test]
    fn realised_event_rate_is_close_to_the_requested_rate() {
        let c = GenConfig {
            hosts: 200,
            duration: Span::from_secs(10 * 86_400),
            interval: Span::from_secs(60),
            anomaly_rate: 0.5,
            ..GenConfig::default()
        };
        let plan = Plan::new(&c).unwrap();
        let events: u64 = plan.events_by_type().values().sum();
        let rate = events as f64 / 2_000.0;
        assert!((0.42..0.58).contains(&rate), "{rate}");
    }

    #[test]
    fn values_stay_in_plausible_ranges_and_metrics_move_together() {
        let c = GenConfig {
            anomaly_rate: 0.0,
            ..small()
        };
        let plan = Plan::new(&c).unwrap();
        let b = plan.host_batch(0, (0, c.points_per_host())).unwrap();
        let col = |name: &str| values(&b, name);
        for m in Metric::SERVER {
            let v = col(m.column());
            assert!(v.iter().all(|x| x.is_finite() && *x >= 0.0), "{m:?}");
            if matches!(m, Metric::CpuPct | Metric::MemPct) {
                assert!(v.iter().all(|x| *x <= 100.0));
            }
        }
        let corr = |a: &[f64], b: &[f64]| {
            let n = a.len() as f64;
            let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
            let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
            let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
            let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
            cov / (va * vb).sqrt()
        };
        let cpu = col("cpu_pct");
        assert!(corr(&cpu, &col("net_rx_mbps")) > 0.8);
        assert!(corr(&cpu, &col("latency_ms")) > 0.7);
    }

    #[test]
    fn a_correlation_break_stays_in_range_but_leaves_the_load() {
        // Inject only correlation breaks and check that the broken metric stays inside the
        // host's normal range while its relation to CPU (the load) turns around.
        let mut c = small();
        c.anomalies.types = vec![AnomalyType::CorrelationBreak];
        c.anomalies.break_duration = "6h".parse().unwrap();
        let plan = Plan::new(&c).unwrap();
        let h = plan
            .hosts
            .iter()
            .position(|h| !h.events.is_empty())
            .unwrap();
        let b = plan.host_batch(h, (0, c.points_per_host())).unwrap();
        let e = &plan.hosts[h].events[0];
        let m = e.metrics.iter().next().unwrap();
        let v = b
            .column_by_name(m.column())
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        let normal: Vec<f64> = (0..b.num_rows() as u64)
            .filter(|i| {
                !plan.hosts[h]
                    .events
                    .iter()
                    .any(|e| (e.start..e.end()).contains(i))
            })
            .map(|i| v.value(i as usize))
            .collect();
        let (lo, hi) = normal
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
        let inside = (e.start..e.end())
            .filter(|i| (lo..=hi).contains(&v.value(*i as usize)))
            .count();
        assert!(
            inside as f64 >= 0.99 * e.len as f64,
            "{inside} of {}",
            e.len
        );
    }

    #[test]
    fn a_network_link_has_its_own_columns_and_each_event_moves_its_metrics() {
        let c = GenConfig {
            profile: Profile::Network,
            hosts: 12,
            duration: Span::from_secs(5 * 86_400),
            interval: Span::from_secs(60),
            anomaly_rate: 3.0,
            anomalies: crate::AnomalyConfig {
                types: Profile::Network.default_kinds().to_vec(),
                ..crate::AnomalyConfig::default()
            },
            ..GenConfig::default()
        };
        let plan = Plan::new(&c).unwrap();
        assert_eq!(plan.hosts[3].id, "link-0003");
        let by_type = plan.events_by_type();
        assert_eq!(by_type.len(), Profile::Network.kinds().len());
        for k in Profile::Network.default_kinds() {
            assert!(by_type[k] > 5, "{k}: {by_type:?}");
        }
        // How far each kind moves each metric, on average over its rows, in standard
        // deviations of the link's normal values; and the metrics' ranges.
        let mut moved: BTreeMap<(AnomalyType, Metric), (f64, u64)> = BTreeMap::new();
        let mut normal_loss = Vec::new();
        for (h, host) in plan.hosts.iter().enumerate() {
            let b = plan.host_batch(h, (0, c.points_per_host())).unwrap();
            let names: Vec<_> = b
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            assert_eq!(
                names[4..9],
                [
                    "bandwidth_mbps",
                    "latency_ms",
                    "packet_loss_pct",
                    "jitter_ms",
                    "retransmits"
                ]
            );
            let col = |m: Metric| values(&b, m.column());
            let loss = col(Metric::PacketLossPct);
            assert!(loss.iter().all(|x| (0.0..=100.0).contains(x)));
            assert!(col(Metric::Retransmits).iter().all(|x| x.fract() == 0.0));
            let inside = |i: usize| {
                host.events
                    .iter()
                    .any(|e| (e.start..e.end()).contains(&(i as u64)))
            };
            normal_loss.extend((0..loss.len()).filter(|i| !inside(*i)).map(|i| loss[i]));
            for m in Metric::NETWORK {
                let v = col(m);
                let normal: Vec<f64> = (0..v.len()).filter(|i| !inside(*i)).map(|i| v[i]).collect();
                let mean = normal.iter().sum::<f64>() / normal.len() as f64;
                let sd = host.profile.sigma(m);
                for e in &host.events {
                    let rows = e.start as usize..e.end() as usize;
                    let d: f64 = rows.clone().map(|i| (v[i] - mean) / sd).sum();
                    let entry = moved.entry((e.kind, m)).or_default();
                    entry.0 += d;
                    entry.1 += rows.len() as u64;
                }
            }
        }
        normal_loss.sort_by(f64::total_cmp);
        let median = normal_loss[normal_loss.len() / 2];
        assert!(median < 0.05, "median packet loss {median} %");
        let mean = |k, m| {
            let (sum, n) = moved[&(k, m)];
            sum / n as f64
        };
        use AnomalyType::*;
        assert!(mean(LossBurst, Metric::PacketLossPct) > 2.5);
        assert!(mean(LossBurst, Metric::Retransmits) > 2.5);
        assert!(mean(JitterStorm, Metric::JitterMs) > 2.5);
        assert!(mean(LatencyStep, Metric::LatencyMs) > 2.5);
        assert!(mean(BandwidthCollapse, Metric::BandwidthMbps) < -1.5);
        assert!(mean(LatencyStep, Metric::BandwidthMbps).abs() < 1.0);
    }

    #[test]
    fn server_rows_stay_what_they_were_before_profiles() {
        // A fingerprint of every value and label of a small server dataset, taken when the
        // network profile was added (the code before it wrote the same bytes): drawing a host's
        // profile, noise or events differently changes the data every earlier result was
        // measured on, so it must be a deliberate change of this number.
        let plan = Plan::new(&small()).unwrap();
        let mut h = 0u64;
        for host in 0..plan.hosts.len() {
            let b = plan
                .host_batch(host, (0, plan.config.points_per_host()))
                .unwrap();
            for m in Metric::SERVER {
                for v in values(&b, m.column()) {
                    h = crate::metrics::mix(h, v.to_bits());
                }
            }
            for e in &plan.hosts[host].events {
                h = crate::metrics::mix(h, e.start ^ (e.len << 32) ^ ((e.kind as u64) << 60));
            }
        }
        assert_eq!(h, 0x08be_6bc4_6c01_575f, "{h:#x}");
    }
}
