//! What an evaluation reads: the label column (chosen or found), the alert key and time, and
//! whether the rows carry generated events (`anomaly_id`, `anomaly_type`) and a region or
//! project; and the view `scored` over the scored rows that the SQL in `sql/eval/` reads.

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::prelude::{Expr, SessionContext, cast, ident, lit, when};

use super::RUNS;
use crate::{Error, Result};

/// The label columns looked for, in order, when `--label` is not given.
pub const DEFAULT_LABELS: [&str; 2] = ["is_anomaly", "label"];

/// The columns of the scored rows that an evaluation reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// The label: a boolean or an integer 0/1 column.
    pub label: String,
    /// The series key (the score run's `alerts.key`).
    pub key: String,
    /// The time column (the score run's `alerts.time`).
    pub time: String,
    /// The rows carry `anomaly_id` and `anomaly_type` (generated data): events are those;
    /// otherwise an event is a run of labelled rows of one key.
    pub anomaly_id: bool,
    /// The rows have a `region` column.
    pub region: bool,
    /// The rows have a `project_id` column.
    pub project_id: bool,
}

impl Columns {
    /// Finds the columns in `schema`: the label `label`, or the first of [`DEFAULT_LABELS`]
    /// present; the key and time columns must be there too.
    pub fn find(schema: &Schema, label: Option<&str>, key: &str, time: &str) -> Result<Self> {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let has = |c: &str| names.contains(&c);
        let label = match label {
            Some(l) if has(l) => l.to_string(),
            Some(l) => {
                return Err(Error::Input(format!(
                    "--label {l}: the scored rows have no column `{l}` (columns: {})",
                    names.join(", ")
                )));
            }
            None => DEFAULT_LABELS
                .iter()
                .find(|c| has(c))
                .map(|c| c.to_string())
                .ok_or_else(|| {
                    Error::Input(format!(
                        "the scored rows have no label column `is_anomaly` or `label`; name it with --label (columns: {})",
                        names.join(", ")
                    ))
                })?,
        };
        let ty = schema
            .field_with_name(&label)
            .map(|f| f.data_type().clone())?;
        if !(ty == DataType::Boolean || ty.is_integer()) {
            return Err(Error::Input(format!(
                "--label {label}: column `{label}` is {ty}; the label must be a boolean or an integer 0/1 column"
            )));
        }
        for (what, c) in [("alerts.key", key), ("alerts.time", time), ("", "score")] {
            if !has(c) {
                let of = if what.is_empty() {
                    String::new()
                } else {
                    format!(" (the score run's {what})")
                };
                return Err(Error::Input(format!(
                    "the scored rows have no column `{c}`{of} (columns: {})",
                    names.join(", ")
                )));
            }
        }
        Ok(Self {
            label,
            key: key.to_string(),
            time: time.to_string(),
            anomaly_id: has("anomaly_id") && has("anomaly_type"),
            region: has("region"),
            project_id: has("project_id"),
        })
    }

    /// Registers the view `scored` over the table `rows`: every column of `rows`, with
    /// `is_anomaly` the label as a boolean (NULL as false), `host_id` the key and `ts` the time;
    /// without generated events, `anomaly_id` and `anomaly_type` from `sql/eval/runs.sql`.
    pub async fn register(&self, ctx: &SessionContext, rows: &str) -> Result<()> {
        let df = ctx.table(rows).await?;
        let label_type = df
            .schema()
            .field_with_unqualified_name(&self.label)?
            .data_type();
        if label_type.is_integer() {
            let outside = df
                .clone()
                .filter(
                    ident(&self.label)
                        .not_eq(lit(0))
                        .and(ident(&self.label).not_eq(lit(1))),
                )?
                .count()
                .await;
            if !matches!(outside, Ok(0)) {
                return Err(Error::Input(format!(
                    "--label {}: the column holds values other than 0 and 1",
                    self.label
                )));
            }
        }
        let mut replaced = vec!["is_anomaly", "host_id", "ts"];
        if !self.anomaly_id {
            replaced.extend(["anomaly_id", "anomaly_type"]);
        }
        let mut exprs: Vec<Expr> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name())
            .filter(|n| !replaced.contains(&n.as_str()))
            .map(ident)
            .collect();
        // A CASE rather than `IS TRUE`: DataFusion 55 plans `IS TRUE` as non-nullable and
        // executes it as nullable, and refuses the plan.
        exprs.push(
            when(ident(&self.label).is_null(), lit(false))
                .otherwise(cast(ident(&self.label), DataType::Boolean))?
                .alias("is_anomaly"),
        );
        exprs.push(ident(&self.key).alias("host_id"));
        exprs.push(ident(&self.time).alias("ts"));
        let view = df.select(exprs)?;
        ctx.register_table("scored", view.into_view())?;
        if !self.anomaly_id {
            let runs = ctx
                .sql(RUNS)
                .await
                .map_err(|e| Error::Data(format!("sql/eval/runs.sql: {}", e.strip_backtrace())))?;
            ctx.deregister_table("scored")?;
            ctx.register_table("scored", runs.into_view())?;
        }
        Ok(())
    }
}
