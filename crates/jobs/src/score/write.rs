//! Writing a score run's output: each input file's rows with their scores (and alert ids),
//! in output files that roll over every [`ROWS_PER_FILE`] rows, and the alerts file.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, AsArray, RecordBatch, new_null_array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::ArrowWriter;
use tads_store::{Location, Output, Progress};

use super::input::Unit;
use super::{ALERTS_FILE, ModelRef, ROWS_PER_FILE, ScoredFile};
use crate::alerts::{AlertSummary, Alerts};
use crate::{Error, Result, parquet_out, passthrough};

/// What every unit needs.
pub(crate) struct Shared {
    pub(super) ctx: SessionContext,
    /// A session running plans in one partition (rows in file order).
    pub(crate) ordered: SessionContext,
    pub(crate) data: Location,
    /// The columns of the dataset's files (the table's, without its partition columns).
    pub(crate) file_schema: SchemaRef,
    pub(super) select: String,
    /// The scores (and with alerts the key and time) alone, in `ordered`.
    pub(crate) select_scores: String,
    pub(crate) output: Arc<Output>,
    pub(crate) progress: Arc<dyn Progress>,
    pub(crate) sharded: bool,
    /// The run's alerts, and the key and time columns that find a row's alert.
    pub(crate) alerts: Option<(Arc<Alerts>, String, String)>,
    pub(super) next_table: AtomicU64,
    /// On a cluster, the drift shift's call, made once per row as the column
    /// [`crate::drift::SHIFT_COLUMN`] of the tables the plans read ([`super::cluster`]).
    pub(super) shift: Option<String>,
}

/// Scores every unit, `concurrency` files at once (0: one per core).
pub(super) async fn score_units(
    shared: &Arc<Shared>,
    units: Vec<Unit>,
    concurrency: usize,
) -> Result<Vec<UnitResult>> {
    let concurrency = if concurrency == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        concurrency
    };
    futures::stream::iter(units.into_iter().map(|unit| {
        let shared = Arc::clone(shared);
        async move {
            tokio::spawn(async move { score_unit(&shared, &unit).await })
                .await
                .map_err(|e| Error::Data(format!("a scoring task failed: {e}")))?
        }
    }))
    .buffer_unordered(concurrency)
    .try_collect()
    .await
}

/// What scoring one input file wrote.
pub(crate) struct UnitResult {
    pub(crate) files: Vec<ScoredFile>,
    pub(crate) unscored: u64,
}

/// `part-00003.parquet` → `part-00003.2.parquet` for the third output chunk.
pub(crate) fn chunk_path(relative: &str, chunk: usize) -> String {
    let stem = relative.strip_suffix(".parquet").unwrap_or(relative);
    if chunk == 0 {
        format!("scored/{stem}.parquet")
    } else {
        format!("scored/{stem}.{chunk}.parquet")
    }
}

/// One input file as a table of the dataset's file columns.
pub(super) fn unit_table(
    data: &Location,
    unit: &Unit,
    file_schema: &SchemaRef,
) -> Result<ListingTable> {
    let url = data
        .store_url()
        .join(unit.meta.location.as_ref())
        .map_err(|e| Error::Data(format!("{}: {e}", unit.meta.location)))?;
    let url = ListingTableUrl::parse(url.as_str())?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(Arc::clone(file_schema));
    Ok(ListingTable::try_new(config)?)
}

async fn score_unit(shared: &Shared, unit: &Unit) -> Result<UnitResult> {
    let listing = unit_table(&shared.data, unit, &shared.file_schema)?;
    let table = format!(
        "__tads_unit_{}",
        shared.next_table.fetch_add(1, Ordering::Relaxed)
    );
    // Every row of a file whose columns are the dataset's: keep its column chunks.
    let keep = !shared.sharded && passthrough::fits(&shared.file_schema, unit);
    let ctx = if keep { &shared.ordered } else { &shared.ctx };
    ctx.register_table(&table, Arc::new(listing))?;
    let result = if keep {
        passthrough::write_unit(shared, unit, &table).await
    } else {
        write_unit(shared, unit, &table).await
    };
    let _ = ctx.deregister_table(&table);
    let result = result?;
    let written: u64 = result.files.iter().map(|f| f.rows).sum();
    if shared.sharded {
        shared.progress.rows(unit.rows.saturating_sub(written));
    }
    shared.progress.file_done();
    Ok(result)
}

async fn write_unit(shared: &Shared, unit: &Unit, table: &str) -> Result<UnitResult> {
    let df = shared
        .ctx
        .sql(&shared.select.replace("{table}", table))
        .await?;
    let scored: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    // The input's columns, then the fields of the scores struct (the plan's last column), then
    // alert_id.
    let (last, input_fields) = scored
        .fields()
        .split_last()
        .ok_or_else(|| Error::Data("the scoring plan has no columns".into()))?;
    let DataType::Struct(score_fields) = last.data_type() else {
        return Err(Error::Data(format!(
            "the scoring plan ends in {}, not the scores struct",
            last.data_type()
        )));
    };
    let mut fields: Vec<_> = input_fields.to_vec();
    fields.extend(score_fields.iter().cloned());
    fields.push(Arc::new(Field::new("alert_id", DataType::Utf8, true)));
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let columns = match &shared.alerts {
        Some((alerts, key, time)) => Some((
            alerts,
            scored
                .index_of(key)
                .map_err(|e| Error::Data(e.to_string()))?,
            scored
                .index_of(time)
                .map_err(|e| Error::Data(e.to_string()))?,
        )),
        None => None,
    };
    let props = parquet_out::writer_properties(&schema);
    let mut stream = df.execute_stream().await?;
    let mut files = Vec::new();
    let mut unscored = 0u64;
    let mut writer: Option<ArrowWriter<Vec<u8>>> = None;
    let mut rows_in_chunk = 0usize;
    let spe = schema
        .index_of("pca_spe")
        .map_err(|e| Error::Data(e.to_string()))?;
    let flush = |writer: ArrowWriter<Vec<u8>>, rows: usize, chunk: usize| async move {
        let bytes = writer
            .into_inner()
            .map_err(|e| Error::Data(format!("encoding Parquet: {e}")))?;
        unit.store_chunk(&shared.output, bytes, rows, chunk).await
    };
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        let ids = match columns {
            Some((alerts, key, time)) => alerts.ids_for(batch.column(key), batch.column(time))?,
            None => new_null_array(&DataType::Utf8, batch.num_rows()),
        };
        let (scores, input) = batch
            .columns()
            .split_last()
            .ok_or_else(|| Error::Data("a scored batch without columns".into()))?;
        let mut all = input.to_vec();
        let scores = scores
            .as_struct_opt()
            .ok_or_else(|| Error::Data("the scores column is not a struct".into()))?;
        all.extend(scores.columns().iter().cloned());
        all.push(ids);
        let batch = RecordBatch::try_new(Arc::clone(&schema), all)
            .map_err(|e| Error::Data(format!("scored batch: {e}")))?;
        unscored += batch.column(spe).null_count() as u64;
        let w = match writer.as_mut() {
            Some(w) => w,
            None => writer.insert(
                ArrowWriter::try_new(
                    Vec::with_capacity(unit.chunk_capacity()),
                    Arc::clone(&schema),
                    Some(props.clone()),
                )
                .map_err(|e| Error::Data(format!("encoding Parquet: {e}")))?,
            ),
        };
        w.write(&batch)
            .map_err(|e| Error::Data(format!("encoding Parquet: {e}")))?;
        rows_in_chunk += batch.num_rows();
        if !shared.sharded {
            shared.progress.rows(batch.num_rows() as u64);
        }
        if rows_in_chunk >= ROWS_PER_FILE
            && let Some(w) = writer.take()
        {
            files.push(flush(w, rows_in_chunk, files.len()).await?);
            rows_in_chunk = 0;
        }
    }
    if let Some(w) = writer.take() {
        files.push(flush(w, rows_in_chunk, files.len()).await?);
    }
    Ok(UnitResult { files, unscored })
}

/// Writes the alerts file and returns its summary.
pub(super) async fn write_alerts(
    output: &Output,
    alerts: &Alerts,
    model: &ModelRef,
    run_id: &str,
) -> Result<AlertSummary> {
    let batch = alerts.to_batch(&model.name, &model.fingerprint, run_id)?;
    let props = parquet_out::writer_properties(&batch.schema());
    let encode = |e: parquet::errors::ParquetError| Error::Data(format!("encoding alerts: {e}"));
    let mut writer =
        ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).map_err(encode)?;
    writer.write(&batch).map_err(encode)?;
    output
        .put(ALERTS_FILE, writer.into_inner().map_err(encode)?)
        .await?;
    Ok(alerts.summary(ALERTS_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_keep_the_input_path() {
        assert_eq!(
            chunk_path("date=2026-01-01/part-00003.parquet", 0),
            "scored/date=2026-01-01/part-00003.parquet"
        );
        assert_eq!(
            chunk_path("date=2026-01-01/part-00003.parquet", 2),
            "scored/date=2026-01-01/part-00003.2.parquet"
        );
    }
}
