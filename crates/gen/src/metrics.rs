//! How a host behaves: its baseline, the shared latent load that drives its metrics, and the
//! metric values that load produces.
//!
//! Every host has a latent load `L(t)`: a baseline, a daily cycle (lowest at 03:00 local time,
//! highest at 15:00), lighter weekends, and slow random wander (random values every 15 minutes,
//! smoothly interpolated). Each metric is `base + gain * g(L) + noise`, with `g(L) = L` for CPU,
//! memory, disk and network and `g(L) = L²` for latency and errors (they climb faster under load).
//! So CPU, network, disk and latency move together, and a PCA of normal data finds one strong
//! component and noise.
//!
//! A network link ([`Profile::Network`]) has the same load, read as its utilisation: bandwidth
//! follows it, latency and jitter grow with its square (queueing), packet loss is mostly 0 with a
//! little more under load (a sparse metric, bounded 0–100 %), and retransmits are whole counts.

use std::f64::consts::TAU;

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::config::MICROS_PER_DAY;
use crate::profile::Profile;

/// A telemetry metric, in column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Metric {
    CpuPct,
    MemPct,
    DiskReadMbps,
    DiskWriteMbps,
    NetRxMbps,
    NetTxMbps,
    LatencyMs,
    ErrorRate,
    BandwidthMbps,
    PacketLossPct,
    JitterMs,
    Retransmits,
}

/// Number of metrics of every profile together.
pub const METRIC_COUNT: usize = 12;

impl Metric {
    /// Every metric of every profile, in declaration order.
    pub const EVERY: [Metric; METRIC_COUNT] = [
        Self::CpuPct,
        Self::MemPct,
        Self::DiskReadMbps,
        Self::DiskWriteMbps,
        Self::NetRxMbps,
        Self::NetTxMbps,
        Self::LatencyMs,
        Self::ErrorRate,
        Self::BandwidthMbps,
        Self::PacketLossPct,
        Self::JitterMs,
        Self::Retransmits,
    ];

    /// The metrics of a link ([`Profile::Network`]), in column order.
    pub const NETWORK: [Metric; 5] = [
        Self::BandwidthMbps,
        Self::LatencyMs,
        Self::PacketLossPct,
        Self::JitterMs,
        Self::Retransmits,
    ];

    /// The metrics of a host ([`Profile::Server`]), in column order.
    pub const SERVER: [Metric; 8] = [
        Self::CpuPct,
        Self::MemPct,
        Self::DiskReadMbps,
        Self::DiskWriteMbps,
        Self::NetRxMbps,
        Self::NetTxMbps,
        Self::LatencyMs,
        Self::ErrorRate,
    ];

    /// The column name.
    pub fn column(self) -> &'static str {
        match self {
            Self::CpuPct => "cpu_pct",
            Self::MemPct => "mem_pct",
            Self::DiskReadMbps => "disk_read_mbps",
            Self::DiskWriteMbps => "disk_write_mbps",
            Self::NetRxMbps => "net_rx_mbps",
            Self::NetTxMbps => "net_tx_mbps",
            Self::LatencyMs => "latency_ms",
            Self::ErrorRate => "error_rate",
            Self::BandwidthMbps => "bandwidth_mbps",
            Self::PacketLossPct => "packet_loss_pct",
            Self::JitterMs => "jitter_ms",
            Self::Retransmits => "retransmits",
        }
    }

    /// The largest value the metric can take (percentages stop at 100).
    fn upper(self) -> f64 {
        match self {
            Self::CpuPct | Self::MemPct | Self::PacketLossPct => 100.0,
            _ => f64::INFINITY,
        }
    }
}

/// A set of metrics, as a bit mask over the metrics' positions in [`Metric`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricSet(u16);

impl MetricSet {
    /// No metric.
    pub const EMPTY: Self = Self(0);

    /// The set of `metrics`.
    pub fn of(metrics: &[Metric]) -> Self {
        let mut set = Self::EMPTY;
        for m in metrics {
            set.insert(*m);
        }
        set
    }

    /// Adds `m`.
    pub fn insert(&mut self, m: Metric) {
        self.0 |= 1 << m as u16;
    }

    /// Whether `m` is in the set.
    pub fn contains(self, m: Metric) -> bool {
        self.0 & (1 << m as u16) != 0
    }

    /// The metrics in the set, in the order of [`Metric`] (column order within a profile).
    pub fn iter(self) -> impl Iterator<Item = Metric> {
        Metric::EVERY.into_iter().filter(move |m| self.contains(*m))
    }
}

/// One metric's response to the load on one host.
#[derive(Debug, Clone, Copy)]
struct Response {
    base: f64,
    gain: f64,
    quadratic: bool,
    noise: f64,
    upper: f64,
    /// Whole counts (retransmits): the value is rounded.
    whole: bool,
}

impl Response {
    /// The response of a metric the profile does not have.
    const NONE: Self = Self {
        base: 0.0,
        gain: 0.0,
        quadratic: false,
        noise: 0.0,
        upper: 0.0,
        whole: false,
    };

    /// A metric that grows with the load (`quadratic`: with its square) up to `upper`.
    fn new(base: f64, gain: f64, quadratic: bool, noise: f64, upper: f64) -> Self {
        Self {
            base,
            gain,
            quadratic,
            noise,
            upper,
            whole: false,
        }
    }

    /// A latency: `base` when idle, growing with the load's square by `gain` times `base`
    /// (queueing), with noise of `noise` times `base`.
    fn queueing(base: f64, gain: f64, noise: f64) -> Self {
        Self::new(base, base * gain, true, base * noise, f64::INFINITY)
    }

    fn value(&self, load: f64, z: f64) -> f64 {
        let g = if self.quadratic { load * load } else { load };
        self.base + self.gain * g + self.noise * z
    }
}

/// Mixes two words into one (splitmix64's finaliser over their combination).
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(31);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Tags that keep the random streams of different purposes apart (ASCII of their names).
pub(crate) mod tag {
    /// A host's fixed profile.
    pub const PROFILE: u64 = 0x0070_726f_6669_6c65;
    /// A host's event schedule.
    pub const EVENTS: u64 = 0x0000_6576_656e_7473;
    /// A host-day's per-point noise.
    pub const NOISE: u64 = 0x0000_006e_6f69_7365;
    /// A host's slow load wander.
    pub const WANDER: u64 = 0x0000_7761_6e64_6572;
}

/// The random stream for one purpose (`tag`) of one unit (`a`, `b`) under `seed`.
pub(crate) fn stream(seed: u64, tag: u64, a: u64, b: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(mix(mix(mix(seed, tag), a), b))
}

/// A standard normal value that depends only on `key` (Box–Muller over two hashed uniforms).
fn hashed_normal(key: u64) -> f64 {
    let a = mix(key, 1);
    let b = mix(key, 2);
    let u1 = ((a >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = (b >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

/// Spacing of the random knots of the slow load wander.
const KNOT_MICROS: i64 = 15 * 60 * 1_000_000;

/// Everything fixed about one host (or link).
#[derive(Debug, Clone)]
pub struct HostProfile {
    /// The metrics it has, in column order.
    metrics: &'static [Metric],
    /// Hours the host's local time is ahead of UTC (from its region).
    tz_offset_hours: f64,
    /// Load at the night trough on a weekday.
    load_base: f64,
    /// Height of the daily cycle on a weekday.
    load_amp: f64,
    /// Weekend load as a share of weekday load.
    weekend: f64,
    /// Standard deviation of the slow wander.
    wander: f64,
    wander_key: u64,
    responses: [Response; METRIC_COUNT],
    /// Each metric's normal standard deviation on this host: the unit of anomaly magnitudes.
    sigma: [f64; METRIC_COUNT],
}

/// Draws a uniform value in `lo..hi`.
type Uniform<'a> = dyn FnMut(f64, f64) -> f64 + 'a;

/// A host's responses: CPU, memory, disk and network throughput grow with the load, latency and
/// errors with its square.
fn server_responses(u: &mut Uniform<'_>, r: &mut [Response; METRIC_COUNT]) {
    let lin = |base: f64, gain: f64, noise: f64, m: Metric| {
        Response::new(base, gain, false, noise, m.upper())
    };
    r[Metric::CpuPct as usize] = lin(u(3.0, 10.0), u(45.0, 75.0), u(1.0, 2.0), Metric::CpuPct);
    r[Metric::MemPct as usize] = lin(u(25.0, 55.0), u(5.0, 15.0), u(0.5, 1.0), Metric::MemPct);
    r[Metric::DiskReadMbps as usize] = lin(
        u(2.0, 10.0),
        u(20.0, 80.0),
        u(1.5, 3.0),
        Metric::DiskReadMbps,
    );
    r[Metric::DiskWriteMbps as usize] = lin(
        u(1.0, 6.0),
        u(10.0, 40.0),
        u(1.0, 2.0),
        Metric::DiskWriteMbps,
    );
    let rx_gain = u(80.0, 300.0);
    r[Metric::NetRxMbps as usize] = lin(
        u(1.0, 5.0),
        rx_gain,
        rx_gain * u(0.02, 0.04),
        Metric::NetRxMbps,
    );
    let tx_gain = rx_gain * u(0.3, 0.8);
    r[Metric::NetTxMbps as usize] = lin(
        u(1.0, 5.0),
        tx_gain,
        tx_gain * u(0.02, 0.04),
        Metric::NetTxMbps,
    );
    let lat_base = u(15.0, 50.0);
    r[Metric::LatencyMs as usize] = Response::queueing(lat_base, u(0.8, 1.6), u(0.03, 0.05));
    r[Metric::ErrorRate as usize] =
        Response::new(u(0.1, 0.3), u(0.5, 2.0), true, u(0.03, 0.06), f64::INFINITY);
}

/// A link's responses to its utilisation (the load): throughput up to the link's capacity (100
/// Mbit/s, 1 or 10 Gbit/s); latency and jitter grow with its square (queueing); packet loss is
/// 0 or a few hundredths of a percent, a little more under load; retransmits are whole counts.
fn network_responses(u: &mut Uniform<'_>, r: &mut [Response; METRIC_COUNT]) {
    let capacity = [100.0, 1_000.0, 10_000.0][(u(0.0, 3.0) as usize).min(2)];
    r[Metric::BandwidthMbps as usize] = Response::new(
        capacity * u(0.01, 0.03),
        capacity * u(0.4, 0.7),
        false,
        capacity * u(0.01, 0.02),
        capacity,
    );
    let propagation = u(2.0, 60.0);
    r[Metric::LatencyMs as usize] = Response::queueing(propagation, u(0.3, 0.8), u(0.02, 0.05));
    r[Metric::PacketLossPct as usize] = Response::new(
        0.0,
        u(0.02, 0.1),
        true,
        u(0.005, 0.02),
        Metric::PacketLossPct.upper(),
    );
    r[Metric::JitterMs as usize] =
        Response::new(u(0.2, 1.5), u(1.0, 4.0), true, u(0.1, 0.3), f64::INFINITY);
    r[Metric::Retransmits as usize] = Response {
        whole: true,
        ..Response::new(u(0.0, 2.0), u(5.0, 40.0), true, u(1.0, 3.0), f64::INFINITY)
    };
}

impl HostProfile {
    /// Draws the profile of host (or link) `host` of a `profile` dataset under `seed`;
    /// `tz_offset_hours` comes from its region.
    pub fn new(profile: Profile, seed: u64, host: u64, tz_offset_hours: f64) -> Self {
        let mut rng = stream(seed, tag::PROFILE, host, 0);
        let mut u = |lo: f64, hi: f64| rng.random_range(lo..hi);
        let load_base = u(0.15, 0.35);
        let load_amp = u(0.25, 0.45);
        let weekend = u(0.55, 0.85);
        let wander = u(0.02, 0.04);
        let mut responses = [Response::NONE; METRIC_COUNT];
        match profile {
            Profile::Server => server_responses(&mut u, &mut responses),
            Profile::Network => network_responses(&mut u, &mut responses),
        }
        // The daily shape 0.5 - 0.5 cos has standard deviation 1/sqrt(8) of its height.
        let sigma_load = (load_amp * load_amp / 8.0 + wander * wander).sqrt();
        let mean_load = load_base + load_amp / 2.0;
        let sigma = responses.map(|r| {
            let slope = if r.quadratic { 2.0 * mean_load } else { 1.0 };
            ((r.gain * slope * sigma_load).powi(2) + r.noise * r.noise).sqrt()
        });
        Self {
            metrics: profile.metrics(),
            tz_offset_hours,
            load_base,
            load_amp,
            weekend,
            wander,
            wander_key: mix(mix(seed, tag::WANDER), host),
            responses,
            sigma,
        }
    }

    /// The normal standard deviation of `m` on this host.
    pub fn sigma(&self, m: Metric) -> f64 {
        self.sigma[m as usize]
    }

    fn wander_at(&self, knot: i64) -> f64 {
        self.wander * hashed_normal(mix(self.wander_key, knot as u64))
    }

    /// How far a correlation break on metric `m` at `t` moves it from its normal value, in
    /// units of the metric's normal standard deviation (the unit of every anomaly magnitude): a
    /// decoupled metric follows the load's mirror image, which differs from the load by
    /// `2·load − low − high` (the wander cancels out). Near the middle of the day's load range
    /// (around 09:00 and 21:00 local) that is 0: a break there leaves no trace in the data.
    pub fn break_departure(&self, t_us: i64, m: Metric) -> f64 {
        let (load, low, high) = self.seasonal(t_us);
        let r = &self.responses[m as usize];
        let slope = if r.quadratic { low + high } else { 1.0 };
        (r.gain * slope * (2.0 * load - low - high)).abs()
            / self.sigma[m as usize].max(f64::MIN_POSITIVE)
    }

    /// The seasonal part of the load at `t` (µs since the epoch) and the range it moves in on
    /// that day: `(load, low, high)`.
    fn seasonal(&self, t_us: i64) -> (f64, f64, f64) {
        let local_us = t_us + (self.tz_offset_hours * 3.6e9) as i64;
        let day = local_us.div_euclid(MICROS_PER_DAY);
        let hour = local_us.rem_euclid(MICROS_PER_DAY) as f64 / 3.6e9;
        // 1970-01-01 was a Thursday: day 2 and 3 of each week (mod 7) are Saturday and Sunday.
        let w = if matches!(day.rem_euclid(7), 2 | 3) {
            self.weekend
        } else {
            1.0
        };
        let daily = 0.5 - 0.5 * (TAU * (hour - 3.0) / 24.0).cos();
        let low = self.load_base * (0.8 + 0.2 * w);
        let high = low + self.load_amp * w;
        (low + self.load_amp * w * daily, low, high)
    }
}

/// Builds the metric rows of one host, point after point, with the slow wander's knots cached.
pub struct HostSeries<'a> {
    profile: &'a HostProfile,
    knot: i64,
    knot_values: (f64, f64),
}

/// One point's metric values before anomalies: the load, its mirror image (for correlation
/// breaks) and each metric's noise draw.
pub struct Point {
    load: f64,
    mirrored: f64,
    noise: [f64; METRIC_COUNT],
}

impl<'a> HostSeries<'a> {
    /// Starts a series for `profile`.
    pub fn new(profile: &'a HostProfile) -> Self {
        Self {
            profile,
            knot: i64::MIN,
            knot_values: (0.0, 0.0),
        }
    }

    /// The load at `t_us` and the noise of every metric, drawn from `rng` in column order.
    pub fn point(&mut self, t_us: i64, rng: &mut Xoshiro256PlusPlus) -> Point {
        let p = self.profile;
        let knot = t_us.div_euclid(KNOT_MICROS);
        if knot != self.knot {
            self.knot_values = if knot == self.knot + 1 {
                (self.knot_values.1, p.wander_at(knot + 1))
            } else {
                (p.wander_at(knot), p.wander_at(knot + 1))
            };
            self.knot = knot;
        }
        let frac = t_us.rem_euclid(KNOT_MICROS) as f64 / KNOT_MICROS as f64;
        let smooth = frac * frac * (3.0 - 2.0 * frac);
        let wander = self.knot_values.0 + (self.knot_values.1 - self.knot_values.0) * smooth;
        let (seasonal, low, high) = p.seasonal(t_us);
        let load = (seasonal + wander).max(0.01);
        // The mirror image of the load within the day's normal range: high when the host is
        // quiet, low when it is busy.
        let mirrored = (low + high - seasonal + wander).clamp(low, high).max(0.01);
        let mut noise = [0.0; METRIC_COUNT];
        for m in p.metrics {
            noise[*m as usize] = rng.sample::<f64, _>(rand_distr::StandardNormal);
        }
        Point {
            load,
            mirrored,
            noise,
        }
    }

    /// The value of `m` at `point`, shifted by `shift` standard deviations, and driven by the
    /// mirrored load when `decoupled`; clamped to the metric's range.
    pub fn value(&self, point: &Point, m: Metric, shift: f64, decoupled: bool) -> f64 {
        let i = m as usize;
        let r = &self.profile.responses[i];
        let load = if decoupled {
            point.mirrored
        } else {
            point.load
        };
        let v = (r.value(load, point.noise[i]) + shift * self.profile.sigma[i]).clamp(0.0, r.upper);
        if r.whole { v.round() } else { v }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_reproducible_and_differ_between_hosts() {
        let a = HostProfile::new(Profile::Server, 7, 1, 0.0);
        let b = HostProfile::new(Profile::Server, 7, 1, 0.0);
        let c = HostProfile::new(Profile::Server, 7, 2, 0.0);
        assert_eq!(a.load_base, b.load_base);
        assert_ne!(a.load_base, c.load_base);
        for m in Metric::SERVER {
            assert!(a.sigma(m) > 0.0, "{m:?}");
        }
        let link = HostProfile::new(Profile::Network, 7, 1, 0.0);
        assert_eq!(
            link.load_base, a.load_base,
            "the same load, read as utilisation"
        );
        for m in Metric::NETWORK {
            assert!(link.sigma(m) > 0.0, "{m:?}");
        }
    }

    #[test]
    fn load_follows_the_day_and_the_week() {
        let p = HostProfile::new(Profile::Server, 1, 0, 0.0);
        let monday = 1_767_571_200_000_000_i64; // 2026-01-05T00:00:00Z, a Monday
        let hour = 3_600_000_000_i64;
        let (night, _, _) = p.seasonal(monday + 3 * hour);
        let (afternoon, low, high) = p.seasonal(monday + 15 * hour);
        assert!(afternoon > night + 0.2, "{afternoon} vs {night}");
        assert!((night - low).abs() < 1e-9 && (afternoon - high).abs() < 1e-9);
        let (saturday, _, _) = p.seasonal(monday - 2 * 24 * hour + 15 * hour);
        assert!(saturday < afternoon);
    }

    #[test]
    fn wander_is_continuous_across_knots() {
        let p = HostProfile::new(Profile::Server, 3, 5, 0.0);
        let mut s = HostSeries::new(&p);
        let mut rng = stream(0, 0, 0, 0);
        let t = 10 * KNOT_MICROS;
        let before = s.point(t - 1, &mut rng);
        let after = s.point(t, &mut rng);
        assert!((before.load - after.load).abs() < 1e-3);
    }

    #[test]
    fn metric_sets() {
        let mut s = MetricSet::EMPTY;
        s.insert(Metric::LatencyMs);
        s.insert(Metric::CpuPct);
        assert!(s.contains(Metric::CpuPct) && !s.contains(Metric::MemPct));
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![Metric::CpuPct, Metric::LatencyMs]
        );
    }
}
