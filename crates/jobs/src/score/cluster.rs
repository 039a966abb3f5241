//! `tads score --cluster`: each input file's scoring plan runs on a Ballista cluster and
//! writes through the plan (`COPY … TO` the output file), so the rows never pass through this
//! process. The writer protocol is the same as a local run's: each file is remembered before
//! an executor puts it whole (for [`Output::abort`]), and the manifest, with each file's rows,
//! bytes and unscored rows read back from its footer, is written last.
//!
//! Each input file gives one output file (no roll-over at [`super::ROWS_PER_FILE`]), its rows
//! in the order the plan's join gives them. A row's `alert_id` comes from a join with the
//! run's alerts (an in-memory table, which travels with the plan): the alert of the row's key
//! whose span holds the row's time.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use tads_store::Location;

use super::input::{Unit, footer};
use super::write::{Shared, UnitResult, chunk_path, unit_table};
use super::{SCORE_COLUMNS, SCORES_STRUCT, ScoredFile};
use crate::{Error, Result, ident};

/// The table of the run's alerts that the plans join.
const ALERTS: &str = "__tads_alert_spans";

/// Scores every unit on the cluster, `concurrency` files at once (0: two).
pub(super) async fn score_units(
    shared: &Arc<Shared>,
    units: Vec<Unit>,
    concurrency: usize,
) -> Result<Vec<UnitResult>> {
    let join = match &shared.alerts {
        Some((alerts, key, time)) => {
            let time_type = shared
                .file_schema
                .field_with_name(time)
                .map_err(|e| Error::Data(e.to_string()))?
                .data_type()
                .clone();
            let table = spans(alerts, &time_type)?;
            shared.ctx.deregister_table(ALERTS)?;
            shared.ctx.register_table(ALERTS, Arc::new(table))?;
            Some(format!(
                " LEFT JOIN {ALERTS} AS __a ON CAST(__t.{} AS VARCHAR) = __a.k \
                 AND __t.{t} >= __a.s AND __t.{t} <= __a.e",
                ident(key),
                t = ident(time)
            ))
        }
        None => None,
    };
    let join = Arc::new(join);
    futures::stream::iter(units.into_iter().map(|unit| {
        let (shared, join) = (Arc::clone(shared), Arc::clone(&join));
        async move { score_unit(&shared, &unit, join.as_deref()).await }
    }))
    .buffer_unordered(concurrency.max(2))
    .try_collect()
    .await
}

/// The run's alerts as a table: key, first and last row's time (the time column's type), id.
fn spans(alerts: &crate::alerts::Alerts, time_type: &DataType) -> Result<MemTable> {
    let list = &alerts.list;
    let times = |f: fn(&crate::alerts::Alert) -> i64| -> Result<ArrayRef> {
        let micros = TimestampMicrosecondArray::from(list.iter().map(f).collect::<Vec<_>>());
        cast(&micros, time_type).map_err(|e| Error::Data(format!("alerts: time column: {e}")))
    };
    let keys = StringArray::from_iter_values(list.iter().map(|a| a.host_id.as_str()));
    let ids = StringArray::from_iter_values(list.iter().map(|a| a.alert_id.as_str()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("s", time_type.clone(), true),
        Field::new("e", time_type.clone(), true),
        Field::new("id", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(keys),
            times(|a| a.start_ts)?,
            times(|a| a.end_ts)?,
            Arc::new(ids),
        ],
    )
    .map_err(|e| Error::Data(format!("alerts: {e}")))?;
    Ok(MemTable::try_new(schema, vec![vec![batch]])?)
}

/// Replaces the table `name` with a view that adds the drift shift's column: the call is then
/// in a plan once, not once per metric and scoring function (every call carries the shifts,
/// which would make a plan larger than the cluster's messages may be).
pub(super) async fn add_shift_column(ctx: &SessionContext, name: &str, call: &str) -> Result<()> {
    let view = ctx
        .sql(&format!(
            "SELECT *, {call} AS {} FROM {name}",
            ident(crate::drift::SHIFT_COLUMN)
        ))
        .await?
        .into_view();
    ctx.deregister_table(name)?;
    ctx.register_table(name, view)?;
    Ok(())
}

/// `COPY (<the file's rows, their scores and alert ids>) TO '<its output file>'`, then what the
/// file holds, read back from its footer.
async fn score_unit(shared: &Shared, unit: &Unit, join: Option<&str>) -> Result<UnitResult> {
    let table = format!(
        "__tads_unit_{}",
        shared.next_table.fetch_add(1, Ordering::Relaxed)
    );
    let listing = unit_table(&shared.data, unit, &shared.file_schema)?;
    shared.ctx.register_table(&table, Arc::new(listing))?;
    if let Some(call) = &shared.shift {
        add_shift_column(&shared.ctx, &table, call).await?;
    }
    let relative = chunk_path(&unit.relative, 0);
    let out = shared.output.location();
    let path = shared.output.expect(&relative);
    let url = out
        .store_url()
        .join(path.as_ref())
        .map_err(|e| Error::Data(format!("{path}: {e}")))?;
    let columns = shared
        .file_schema
        .fields()
        .iter()
        .map(|f| format!("__t.{}", ident(f.name())))
        .chain(
            SCORE_COLUMNS[..5]
                .iter()
                .map(|c| format!("get_field(__t.{SCORES_STRUCT}, '{c}') AS {}", ident(c))),
        )
        .chain(std::iter::once(match join {
            Some(_) => "__a.id AS alert_id".to_string(),
            None => "CAST(NULL AS VARCHAR) AS alert_id".to_string(),
        }))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "COPY (SELECT {columns} FROM ({}) AS __t{}) TO '{}' STORED AS PARQUET",
        shared.select.replace("{table}", &table),
        join.unwrap_or_default(),
        url.as_str().replace('\'', "''")
    );
    let done = async {
        shared.ctx.sql(&sql).await?.collect().await?;
        written(out, &path, unit).await
    }
    .await;
    let _ = shared.ctx.deregister_table(&table);
    let (file, unscored) = done?;
    shared.progress.rows(unit.rows);
    shared.progress.file_done();
    Ok(UnitResult {
        files: vec![file],
        unscored,
    })
}

/// The output file at `path` as the manifest lists it, and its rows without scores (the null
/// count of `pca_spe` in its footer).
async fn written(
    out: &Location,
    path: &object_store::path::Path,
    unit: &Unit,
) -> Result<(ScoredFile, u64)> {
    let meta =
        out.store().head(path).await.map_err(|e| {
            Error::Data(format!("{path}: {}", tads_store::describe_store_error(&e)))
        })?;
    let footer = footer(out, &meta).await?;
    let spe = footer
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == SCORE_COLUMNS[0]);
    let unscored = footer
        .row_groups()
        .iter()
        .map(|g| {
            spe.and_then(|i| g.column(i).statistics())
                .and_then(|s| s.null_count_opt())
                .unwrap_or(0)
        })
        .sum();
    let file = ScoredFile {
        path: out
            .relative(path)
            .ok_or_else(|| Error::Data(format!("{path}: outside {out}")))?,
        source: unit.relative.clone(),
        rows: footer.file_metadata().num_rows() as u64,
        bytes: meta.size,
    };
    Ok((file, unscored))
}
