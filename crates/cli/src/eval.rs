//! `tads eval`.

use clap::Args;
use tads_jobs::eval::{Breakdown, Counts, EvalReport, evaluate};
use tads_store::Location;

use crate::{UserError, thousands};

/// Arguments of `tads eval`.
#[derive(Debug, Args)]
#[command(
    about = "Measure the detection quality of a score run against the labels in its rows",
    long_about = "Measure how well a `tads score` run's alerts and scores find the labelled \
anomalies in its rows: a boolean or 0/1 label column (--label; default is_anomaly, else label). \
Events are the anomaly_id of generated data, or else maximal runs of labelled rows of one series \
(the run's alert key) in time order.\n\n\
Reports point-wise precision, recall and F1 (a row is predicted anomalous when it is inside an \
alert), the point-adjusted F1 beside it (every row of an event counts once any of its rows is in \
an alert; it flatters, so it is never shown alone), event recall overall and per anomaly type \
with the median and 90th percentile time to detect (from the event's first row to the moment the \
first alert touching it was raised), the fraction of normal rows inside an alert, false alerts \
(alerts touching no labelled row) per 100 host-days and per key-day, the AU-PRC of the score \
(overall and the mean over series), the composite Fc1 (point precision with event recall), and \
breakdowns by region and project when the rows have them.\n\n\
The numbers come from the SQL in sql/eval/, which runs in `tads sql` too, over the tables scored \
and alerts.",
    after_help = "Examples:\n  tads eval --scored data/scores\n  tads eval --scored out/service0 --label label\n  tads eval --scored s3://bucket/scores --json > eval.json"
)]
pub(crate) struct EvalArgs {
    /// The output of a score run: a directory or s3://bucket/prefix (with scored/, alerts/, _manifest.json)
    #[arg(long, value_name = "DIR|URL")]
    scored: String,
    /// The label column: boolean, or integer 0/1 [default: is_anomaly when present, else label]
    #[arg(long, value_name = "COL")]
    label: Option<String>,
    /// Print one JSON document instead of tables
    #[arg(long)]
    json: bool,
}

/// The report as rows of `eval_results`: one per breakdown and key.
fn eval_rows(r: &EvalReport) -> Vec<tads_pg::EvalRow> {
    fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).unwrap_or_default()
    }
    let row = |breakdown: &str, key: &str, metrics: serde_json::Value| tads_pg::EvalRow {
        run_id: r.run_id.clone(),
        breakdown: breakdown.into(),
        key: key.into(),
        metrics,
    };
    let mut rows = vec![
        row("point", "all", json(&r.point)),
        row("point_adjusted", "all", json(&r.point_adjusted)),
        row(
            "false_alerts",
            "all",
            serde_json::json!({
                "alerts": r.alerts,
                "false_alerts": r.false_alerts,
                "host_days": r.host_days,
                "false_alerts_per_100_host_days": r.false_alerts_per_100_host_days,
                "false_alerts_per_key_day": r.false_alerts_per_key_day,
            }),
        ),
        row(
            "overall",
            "all",
            serde_json::json!({
                "label": r.label,
                "key": r.key,
                "events_from": r.events_from,
                "event_count": r.event_count,
                "events_detected": r.events_detected,
                "event_recall": r.event_recall,
                "normal_rows": r.normal_rows,
                "normal_rows_in_alert": r.normal_rows_in_alert,
                "normal_in_alert": r.normal_in_alert,
                "au_prc": r.au_prc,
                "au_prc_mean_by_key": r.au_prc_mean_by_key,
                "au_prc_keys": r.au_prc_keys,
                "fc1": r.fc1,
            }),
        ),
    ];
    rows.extend(r.events.iter().map(|(k, v)| row("events", k, json(v))));
    rows.extend(
        r.by_region
            .iter()
            .map(|(k, v)| row("by_region", k, json(v))),
    );
    rows.extend(
        r.by_project
            .iter()
            .map(|(k, v)| row("by_project", k, json(v))),
    );
    rows
}

pub(crate) async fn run(args: EvalArgs, pg: &crate::pg::PgArgs) -> anyhow::Result<()> {
    pg.target()?;
    let started_at = chrono::Utc::now();
    let out = Location::parse(&args.scored).map_err(|e| UserError(format!("--scored {e}")))?;
    let result = evaluate(&out, args.label.as_deref()).await;
    let run = crate::pg::Run {
        id: crate::pg::run_id("eval", started_at),
        kind: "eval",
        model: result.as_ref().ok().map(|r| r.model.clone()),
        dataset: Some(out.to_string()),
        output: None,
        started_at,
    };
    let records = match &result {
        Ok(r) => vec![
            run.finished(
                Ok(()),
                r.point.tp + r.point.fp + r.point.r#fn + r.point.tn,
                0,
            ),
            tads_pg::Record::Eval(eval_rows(r)),
        ],
        Err(e) => vec![run.finished(Err(e.to_string()), 0, 0)],
    };
    crate::pg::mirror(pg, tads_pg::Batch::new(records), args.json).await?;
    let report = result.map_err(|e| UserError(e.to_string()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn rate(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

fn secs(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.0}"))
}

/// A table with a header row; columns after the first are right-aligned.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == 0 {
                s.push_str(&format!("{c:<w$}"));
            } else {
                s.push_str(&format!("  {c:>w$}"));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn counts_row(name: &str, c: &Counts) -> Vec<String> {
    vec![
        name.to_string(),
        rate(c.precision),
        rate(c.recall),
        rate(c.f1),
        thousands(c.tp),
        thousands(c.fp),
        thousands(c.r#fn),
    ]
}

fn breakdown_rows(b: &std::collections::BTreeMap<String, Breakdown>) -> Vec<Vec<String>> {
    b.iter()
        .map(|(k, v)| {
            let mut r = counts_row(k, &v.point);
            r.push(format!("{}/{}", v.detected, v.events));
            r
        })
        .collect()
}

/// The report as text tables.
pub(crate) fn render(r: &EvalReport) -> String {
    let mut out = format!("evaluation of run {} (model `{}`)\n\n", r.run_id, r.model);
    out.push_str(&table(
        &["rows", "precision", "recall", "f1", "tp", "fp", "fn"],
        &[
            counts_row("point-wise", &r.point),
            counts_row("point-adjusted", &r.point_adjusted),
        ],
    ));
    out.push('\n');
    let mut rows: Vec<Vec<String>> = r
        .events
        .iter()
        .map(|(t, e)| {
            vec![
                t.clone(),
                e.events.to_string(),
                e.detected.to_string(),
                format!("{:.3}", e.recall),
                secs(e.ttd_median_s),
                secs(e.ttd_p90_s),
                format!("{:.3}", e.point_recall),
            ]
        })
        .collect();
    let (n, d): (u64, u64) = r
        .events
        .values()
        .fold((0, 0), |(n, d), e| (n + e.events, d + e.detected));
    rows.push(vec![
        "all".into(),
        n.to_string(),
        d.to_string(),
        if n > 0 {
            format!("{:.3}", d as f64 / n as f64)
        } else {
            "-".into()
        },
        String::new(),
        String::new(),
        String::new(),
    ]);
    out.push_str(&table(
        &[
            "anomaly type",
            "events",
            "detected",
            "recall",
            "ttd median s",
            "ttd p90 s",
            "point recall",
        ],
        &rows,
    ));
    out.push_str(&format!(
        "\nalerts: {} ({} false, touching no labelled row) over {} host-days: {:.2} false alerts per 100 host-days, {:.4} per key-day\n",
        thousands(r.alerts),
        thousands(r.false_alerts),
        thousands(r.host_days),
        r.false_alerts_per_100_host_days,
        r.false_alerts_per_key_day,
    ));
    out.push_str(&summary(r));
    let header = |k: &'static str| [k, "precision", "recall", "f1", "tp", "fp", "fn", "events"];
    if !r.by_region.is_empty() {
        out.push('\n');
        out.push_str(&table(&header("region"), &breakdown_rows(&r.by_region)));
    }
    if !r.by_project.is_empty() {
        out.push('\n');
        out.push_str(&table(&header("project"), &breakdown_rows(&r.by_project)));
    }
    out
}

/// The overall numbers: event recall, normal time in alert, AU-PRC and Fc1, with where the
/// labels and events came from.
fn summary(r: &EvalReport) -> String {
    let events = match r.events_from.as_str() {
        "runs" => format!("runs of labelled rows of one `{}`", r.key),
        _ => "anomaly_id".to_string(),
    };
    let rows = [
        ("label column", r.label.clone()),
        ("events", events),
        (
            "event recall",
            format!(
                "{} ({} of {} events)",
                rate(r.event_recall),
                r.events_detected,
                r.event_count
            ),
        ),
        (
            "normal time in alert",
            format!(
                "{} ({} of {} unlabelled rows)",
                r.normal_in_alert
                    .map_or_else(|| "-".into(), |v| format!("{:.3}%", 100.0 * v)),
                thousands(r.normal_rows_in_alert),
                thousands(r.normal_rows)
            ),
        ),
        ("au-prc of score", rate(r.au_prc)),
        (
            "au-prc mean by key",
            format!("{} ({} keys)", rate(r.au_prc_mean_by_key), r.au_prc_keys),
        ),
        ("fc1", rate(r.fc1)),
    ];
    let mut out = String::from("\n");
    for (k, v) in rows {
        out.push_str(&format!("{k:<21}{v}\n"));
    }
    out
}
