//! What kind of telemetry a dataset holds: server hosts (the default) or network links.
//!
//! A profile decides the metric columns, the anomaly kinds that make sense for them, and how the
//! rows' keys are named. Both profiles share everything else: the latent load with its daily and
//! weekly cycle, the event schedule, the files and the labels.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::AnomalyType;
use crate::metrics::Metric;

/// The kind of telemetry generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Hosts: CPU, memory, disk, network throughput, latency and errors.
    #[default]
    Server,
    /// Network links: bandwidth, latency, packet loss, jitter and retransmits.
    Network,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 2] = [Self::Server, Self::Network];

    /// The name on the command line and in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Network => "network",
        }
    }

    /// The metric columns, in column order.
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            Self::Server => &Metric::SERVER,
            Self::Network => &Metric::NETWORK,
        }
    }

    /// The anomaly kinds this profile can inject, in label-dictionary order (a row's
    /// `anomaly_type` dictionary key is the kind's position here).
    pub fn kinds(self) -> &'static [AnomalyType] {
        use AnomalyType::*;
        match self {
            Self::Server => &[Spike, Burst, Trend, CorrelationBreak, LevelShift],
            Self::Network => &[
                LossBurst,
                JitterStorm,
                BandwidthCollapse,
                LatencyStep,
                Spike,
                LevelShift,
            ],
        }
    }

    /// The kinds injected when none are named: every kind of the server profile; the four
    /// network events for links (spikes and level shifts only when asked for).
    pub fn default_kinds(self) -> &'static [AnomalyType] {
        match self {
            Self::Server => self.kinds(),
            Self::Network => &self.kinds()[..4],
        }
    }

    /// The prefix of the keys (`host-0007`, `link-0007`); the key column is `host_id` in both,
    /// so that training, scoring and evaluation run unchanged.
    pub fn key_prefix(self) -> &'static str {
        match self {
            Self::Server => "host",
            Self::Network => "link",
        }
    }

    /// Whether this is the default profile (the manifest leaves the default out, so a server
    /// dataset's id does not change).
    pub fn is_server(&self) -> bool {
        *self == Self::Server
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown profile `{s}` (one of server, network)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_and_list_their_columns_and_kinds() {
        assert_eq!("network".parse::<Profile>().unwrap(), Profile::Network);
        assert!(
            "wifi"
                .parse::<Profile>()
                .unwrap_err()
                .contains("one of server, network")
        );
        let cols: Vec<_> = Profile::Network
            .metrics()
            .iter()
            .map(|m| m.column())
            .collect();
        assert_eq!(
            cols,
            [
                "bandwidth_mbps",
                "latency_ms",
                "packet_loss_pct",
                "jitter_ms",
                "retransmits"
            ]
        );
        assert_eq!(Profile::Server.metrics().len(), 8);
        for p in Profile::ALL {
            assert!(p.default_kinds().iter().all(|k| p.kinds().contains(k)));
        }
        assert!(!Profile::Network.kinds().contains(&AnomalyType::Burst));
    }
}
