//! Alert delivery from the command line: the receiver flags of `tads score` (and of the later
//! `tads watch`), the run's alerts as [`tads_deliver`] events, one delivery through the durable
//! outbox, and `tads alerts deliver` for what waits there.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use sha2::{Digest, Sha256};
use tads_deliver::{AlertEvent, EventKind, Outbox, PagerDuty, Targets};
use tads_jobs::alerts::Alert;
use tads_store::Location;

use crate::UserError;

/// Where a run's alerts are delivered, and the outbox where they wait until a receiver took
/// them.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Alert delivery")]
pub(crate) struct DeliverArgs {
    /// Deliver the alerts to this Alertmanager (API v2, POST <URL>/api/v2/alerts), e.g. http://127.0.0.1:9093
    #[arg(long, value_name = "URL", env = "TADS_ALERTMANAGER_URL")]
    alertmanager: Option<String>,
    /// Deliver the alerts as Alertmanager's webhook JSON ("version": "4") to this URL
    #[arg(long, value_name = "URL", env = "TADS_WEBHOOK_URL")]
    webhook: Option<String>,
    /// Post a message per opened and resolved alert to this Slack incoming webhook (about one a second)
    #[arg(
        long,
        value_name = "URL",
        env = "TADS_SLACK_URL",
        hide_env_values = true
    )]
    slack: Option<String>,
    /// Trigger and resolve PagerDuty incidents (Events API v2) with this integration's routing key; dedup_key = alert id
    #[arg(
        long,
        value_name = "KEY",
        env = "TADS_PAGERDUTY_KEY",
        hide_env_values = true
    )]
    pagerduty_key: Option<String>,
    /// PagerDuty's Events API v2 endpoint (for tests) [default: https://events.pagerduty.com/v2/enqueue]
    #[arg(long, value_name = "URL", env = "TADS_PAGERDUTY_URL")]
    pagerduty_url: Option<String>,
    /// Where deliveries wait until their receiver took them [default: $XDG_STATE_HOME/tads/alert-outbox/<hash of --out>, else ~/.local/state/…]
    // Its own id: `outbox` is the id of the global --pg-outbox, which this would hide.
    #[arg(
        id = "alert_outbox",
        long = "outbox",
        value_name = "DIR",
        env = "TADS_ALERT_OUTBOX"
    )]
    outbox: Option<PathBuf>,
}

impl DeliverArgs {
    /// The receivers given, checked (a bad URL is the user's error), or `None` without any.
    pub(crate) fn targets(&self) -> anyhow::Result<Option<Targets>> {
        let targets = Targets {
            alertmanager: self.alertmanager.clone(),
            webhook: self.webhook.clone(),
            slack: self.slack.clone(),
            pagerduty: self.pagerduty_key.as_ref().map(|key| {
                let mut pd = PagerDuty::new(key.clone());
                if let Some(url) = &self.pagerduty_url {
                    pd.url = url.clone();
                }
                pd
            }),
        };
        if targets.configured().is_empty() {
            return Ok(None);
        }
        targets.validate().map_err(|e| UserError(e.to_string()))?;
        Ok(Some(targets))
    }

    /// `--outbox`, or the default one for the output `out`.
    pub(crate) fn outbox_dir(&self, out: &Location) -> PathBuf {
        self.outbox
            .clone()
            .unwrap_or_else(|| default_outbox(out.url().as_str()))
    }
}

/// The default outbox of the output at `out_url`: one per output, so that runs on different
/// outputs never share one, outside the output (which `--overwrite` replaces and readers read
/// as a dataset) and outside the input.
pub(crate) fn default_outbox(out_url: &str) -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    let digest = Sha256::digest(out_url.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    state.join("tads/alert-outbox").join(hex)
}

/// A run's alerts as delivery events, in order per alert: an alert still open at the end of
/// the data is opened (firing); a closed one is opened, then resolved at its last row.
pub(crate) fn events(
    alerts: &[Alert],
    model: &str,
    generator_url: Option<&str>,
) -> Vec<AlertEvent> {
    round_events(alerts, &Default::default(), model, generator_url)
}

/// [`events`] for a round of `tads watch`: an alert in `continued` was open before the round,
/// so it is updated (still open) or resolved, not opened again.
pub(crate) fn round_events(
    alerts: &[Alert],
    continued: &std::collections::BTreeSet<String>,
    model: &str,
    generator_url: Option<&str>,
) -> Vec<AlertEvent> {
    let time = |us: i64| chrono::DateTime::from_timestamp_micros(us).unwrap_or_default();
    let mut out = Vec::with_capacity(alerts.len() * 2);
    for a in alerts {
        let opened = AlertEvent {
            alert_id: a.alert_id.clone(),
            kind: EventKind::Opened,
            host: a.host_id.clone(),
            model: model.to_string(),
            severity: a.severity.to_string(),
            region: a.region.clone(),
            project: a.project_id.clone(),
            starts_at: time(a.start_ts),
            ends_at: None,
            peak_score: a.peak_score,
            points: a.points,
            top_metrics: a.top_metrics.clone(),
            expected: a
                .at_peak
                .iter()
                .map(|p| tads_deliver::Expected {
                    metric: p.metric.clone(),
                    expected: p.expected,
                    actual: p.actual,
                })
                .collect(),
            generator_url: generator_url.map(str::to_string),
        };
        let resolved = (!a.open).then(|| AlertEvent {
            kind: EventKind::Resolved,
            ends_at: Some(time(a.end_ts)),
            ..opened.clone()
        });
        match (continued.contains(&a.alert_id), resolved) {
            (false, resolved) => out.extend([Some(opened), resolved].into_iter().flatten()),
            (true, Some(resolved)) => out.push(resolved),
            (true, None) => out.push(AlertEvent {
                kind: EventKind::Updated,
                ..opened
            }),
        }
    }
    out
}

/// Queues `events` in the outbox at `dir` for `targets` (all in one enqueue), then delivers
/// once what is due there, this run's and what waited from before. A receiver that is down
/// is no error: its deliveries wait in the outbox, as stderr says. Prints one summary line
/// unless `quiet`.
pub(crate) async fn deliver(
    dir: &Path,
    targets: Targets,
    events: &[AlertEvent],
    quiet: bool,
) -> anyhow::Result<()> {
    let names: Vec<&str> = targets.configured().iter().map(|t| t.name()).collect();
    let names = names.join(", ");
    let user = |e: tads_deliver::Error| UserError(e.to_string());
    let mut outbox = Outbox::open(dir, targets).map_err(user)?;
    outbox.enqueue(events).map_err(user)?;
    let report = outbox.deliver(chrono::Utc::now()).await.map_err(user)?;
    if !quiet {
        println!(
            "delivered {} alert events to {names} ({} waiting in {})",
            report.sent,
            report.waiting,
            dir.display()
        );
    }
    for line in &report.errors {
        eprintln!("warning: {line}");
    }
    if report.waiting > 0 {
        eprintln!(
            "warning: {} alert deliveries wait in the outbox {}: they are retried by the next run \
             with this outbox, or by `tads alerts deliver --outbox {}` with the same receivers",
            report.waiting,
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// `tads alerts`.
#[derive(Debug, Subcommand)]
#[command(
    about = "Alerts: deliver what waits in an alert outbox",
    long_about = "Alerts: deliver what waits in an alert outbox.\n\n\
`tads score` with --alertmanager, --webhook, --slack or --pagerduty-key queues its alerts in a \
local outbox and delivers them once; what a receiver that was down did not take waits there. \
`tads alerts deliver` tries again, with the same receiver flags."
)]
pub(crate) enum AlertsCommand {
    /// Deliver what waits in an alert outbox to the receivers given
    Deliver(AlertsDeliverArgs),
}

/// Arguments of `tads alerts deliver`.
#[derive(Debug, Args)]
pub(crate) struct AlertsDeliverArgs {
    /// The score run's output whose default outbox to deliver (or give --outbox)
    #[arg(long, value_name = "DIR|URL", required_unless_present = "alert_outbox")]
    out: Option<String>,
    /// Print nothing but errors
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    deliver: DeliverArgs,
}

pub(crate) async fn run(cmd: AlertsCommand) -> anyhow::Result<()> {
    let AlertsCommand::Deliver(args) = cmd;
    let dir = match (&args.deliver.outbox, &args.out) {
        (Some(dir), _) => dir.clone(),
        (None, Some(out)) => {
            let out = Location::parse(out).map_err(|e| UserError(format!("--out {e}")))?;
            args.deliver.outbox_dir(&out)
        }
        (None, None) => unreachable!("clap requires --out or --outbox"),
    };
    let Some(targets) = args.deliver.targets()? else {
        return Err(UserError(
            "no receiver: give --alertmanager, --webhook, --slack or --pagerduty-key".into(),
        )
        .into());
    };
    deliver(&dir, targets, &[], args.quiet).await?;
    Ok(())
}
