//! The SQL of `sql/eval/` on a tiny hand-made table, against numbers computed by hand.

use std::sync::Arc;

use datafusion::arrow::array::{
    Float64Array, Int8Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::{Columns, EvalReport, measure};

const MINUTE: i64 = 60_000_000;

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Three keys, one day, rows a minute apart:
/// - `a`: scores 0.9 0.8 0.7 0.1, labels 1 0 1 0, alert on the first row;
/// - `b`: scores 0.5 0.6 0.2 0.9 0.1 0.3, labels 1 1 0 1 0 0, alerts on rows 4 and 6 (the
///   second touching no labelled row);
/// - `c`: scores NULL 0.4, labels 1 0, no alert.
fn rows() -> RecordBatch {
    let keys = ["a"; 4].iter().chain(&["b"; 6]).chain(&["c"; 2]).copied();
    let keys: Vec<&str> = keys.collect();
    let ts: Vec<i64> = [4, 6, 2]
        .iter()
        .flat_map(|&n| (0..n).map(|i| i * MINUTE))
        .collect();
    let scores = [
        Some(0.9),
        Some(0.8),
        Some(0.7),
        Some(0.1),
        Some(0.5),
        Some(0.6),
        Some(0.2),
        Some(0.9),
        Some(0.1),
        Some(0.3),
        None,
        Some(0.4),
    ];
    let labels: [i8; 12] = [1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 0];
    let mut alert: Vec<Option<&str>> = vec![None; 12];
    alert[0] = Some("x1");
    alert[7] = Some("x2");
    alert[9] = Some("x3");
    let schema = Schema::new(vec![
        Field::new("service", DataType::Utf8, false),
        Field::new("time", ts_type(), false),
        Field::new("score", DataType::Float64, true),
        Field::new("label", DataType::Int8, true),
        Field::new("alert_id", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(keys)),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            Arc::new(Float64Array::from(scores.to_vec())),
            Arc::new(Int8Array::from(labels.to_vec())),
            Arc::new(StringArray::from(alert)),
        ],
    )
    .unwrap()
}

fn alerts() -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("alert_id", DataType::Utf8, false),
        Field::new("opened_ts", ts_type(), false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(vec!["x1", "x2", "x3"])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![0, 3 * MINUTE, 5 * MINUTE])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap()
}

async fn report() -> (SessionContext, EvalReport) {
    let ctx = tads_sql::session();
    for (name, batch) in [("rows", rows()), ("alerts", alerts())] {
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table(name, Arc::new(table)).unwrap();
    }
    let schema = ctx.table("rows").await.unwrap().schema().as_arrow().clone();
    let columns = Columns::find(&schema, None, "service", "time").unwrap();
    assert_eq!(columns.label, "label");
    assert!(!columns.anomaly_id && !columns.region && !columns.project_id);
    columns.register(&ctx, "rows").await.unwrap();
    let r = measure(&ctx, &columns, "run".into(), "m".into())
        .await
        .unwrap();
    (ctx, r)
}

fn close(a: Option<f64>, b: f64, what: &str) {
    let a = a.unwrap_or_else(|| panic!("{what} is None"));
    assert!((a - b).abs() < 1e-12, "{what}: {a} != {b}");
}

#[tokio::test]
async fn events_are_runs_of_labelled_rows_of_one_key() {
    let (ctx, r) = report().await;
    // a: {0}, {2}; b: {0, 1}, {3}; c: {0}.
    let sizes = ctx
        .sql("SELECT host_id, COUNT(*) AS n FROM scored WHERE anomaly_id IS NOT NULL GROUP BY host_id, anomaly_id ORDER BY host_id, n")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&sizes)
        .unwrap()
        .to_string();
    let got: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("host_id"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        got,
        [
            "| a | 1 |",
            "| a | 1 |",
            "| b | 1 |",
            "| b | 2 |",
            "| c | 1 |"
        ]
    );
    assert_eq!(r.events_from, "runs");
    assert_eq!((r.event_count, r.events_detected), (5, 2));
    close(r.event_recall, 0.4, "event_recall");
    let e = &r.events["labelled"];
    assert_eq!((e.events, e.detected), (5, 2));
}

#[tokio::test]
async fn point_normal_time_false_alerts_and_fc1() {
    let (_, r) = report().await;
    assert_eq!(
        (r.point.tp, r.point.fp, r.point.r#fn, r.point.tn),
        (2, 1, 4, 5)
    );
    close(r.point.precision, 2.0 / 3.0, "precision");
    assert_eq!((r.normal_rows, r.normal_rows_in_alert), (6, 1));
    close(r.normal_in_alert, 1.0 / 6.0, "normal_in_alert");
    // Fc1 = 2 · (2/3) · 0.4 / (2/3 + 0.4) = 0.5.
    close(r.fc1, 0.5, "fc1");
    assert_eq!((r.alerts, r.false_alerts, r.host_days), (3, 1, 3));
    close(Some(r.false_alerts_per_key_day), 1.0 / 3.0, "per key-day");
    assert!(r.by_region.is_empty() && r.by_project.is_empty());
}

#[tokio::test]
async fn au_prc_is_average_precision_with_ties_and_nulls_last() {
    let (_, r) = report().await;
    // Per key: a = (1/1 + 2/3) / 2; b = 1 (its three labelled rows score highest); c = 1/2
    // (its labelled row has a NULL score, ranked below the 0.4 row).
    close(
        r.au_prc_mean_by_key,
        (5.0 / 6.0 + 1.0 + 0.5) / 3.0,
        "au_prc_mean_by_key",
    );
    assert_eq!(r.au_prc_keys, 3);
    // All rows: 0.9 ×2 (both labelled, one threshold) 2/2, 0.8, 0.7 3/4, 0.6 4/5, 0.5 5/6, 0.4,
    // 0.3, 0.2, 0.1 ×2, NULL 6/12: (2 + 3/4 + 4/5 + 5/6 + 1/2) / 6 = 293/360.
    close(r.au_prc, 293.0 / 360.0, "au_prc");
}

#[tokio::test]
async fn bad_label_columns_are_named() {
    let batch = rows();
    let schema = batch.schema();
    let err = |label: Option<&str>, schema: &Schema| {
        Columns::find(schema, label, "service", "time")
            .unwrap_err()
            .to_string()
    };
    assert!(err(Some("nope"), &schema).contains("--label nope"));
    assert!(err(Some("service"), &schema).contains("boolean or an integer 0/1"));
    let unlabelled = Schema::new(
        schema
            .fields()
            .iter()
            .filter(|f| f.name() != "label")
            .cloned()
            .collect::<Vec<_>>(),
    );
    let e = err(None, &unlabelled);
    assert!(
        e.contains("is_anomaly") && e.contains("service, time"),
        "{e}"
    );
    assert!(Columns::find(&schema, None, "host_id", "time").is_err());
}

#[tokio::test]
async fn an_integer_label_must_hold_only_0_and_1() {
    let batch = rows();
    let mut columns = batch.columns().to_vec();
    let mut labels = vec![0i8; 12];
    labels[3] = 2;
    columns[3] = Arc::new(Int8Array::from(labels));
    let batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
    let ctx = tads_sql::session();
    let table = MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).unwrap();
    ctx.register_table("rows", Arc::new(table)).unwrap();
    let found = Columns::find(&batch.schema(), Some("label"), "service", "time").unwrap();
    let e = found.register(&ctx, "rows").await.unwrap_err().to_string();
    assert!(
        e.contains("--label label") && e.contains("other than 0 and 1"),
        "{e}"
    );
}
