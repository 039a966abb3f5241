//! The DataFusion side of `benches/compare/compare.py`: runs one query over a Parquet dataset in
//! this process and prints `{"rows": N, "seconds": S}`.
//!
//! ```text
//! compare_engine scan  <data>                    # SELECT * and consume every batch (the floor)
//! compare_engine scan-features <data> <models> <model>  # SELECT the model's features only
//! compare_engine spe   <data> <models> <model>   # SELECT pca_score(…) and consume it
//! compare_engine copy  <data> <out>              # COPY (SELECT *) TO <out> as Parquet
//! compare_engine copy-tads <data> <out>          # the same with the writer settings of tads score
//! compare_engine fit   <data> <models> <model>   # SELECT pca_fit(…) of the model's features
//! ```
//! Not part of TADS: a measuring tool, built with `cargo build --release --example compare_engine`.

use std::time::Instant;

/// The allocator of the `tads` binary, so that the floors run on the same footing as TADS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use datafusion::arrow::array::Array;
use futures::StreamExt;
use tads_store::Location;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the `tads` binary runs.
    tads_cli::no_transparent_huge_pages();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, data) = match args.as_slice() {
        [mode, data, ..] => (mode.as_str(), data.as_str()),
        _ => {
            return Err(
                "usage: compare_engine <scan|scan-features|spe|fit|copy|copy-tads> <data> [models model | out]"
                    .into(),
            );
        }
    };
    let ctx = tads_sql::session();
    let registry = tads_sql::ModelRegistry::new();
    let sql = match (mode, &args[2..]) {
        ("scan", []) => "SELECT * FROM t".to_string(),
        ("spe" | "fit" | "scan-features", [models, model]) => {
            let loaded = registry
                .load_model(&Location::parse(models)?, model)
                .await?;
            let tads_sql::registry::Loaded::Single(m) = loaded else {
                return Err("a single model, please".into());
            };
            let cols: Vec<String> = m
                .artifact
                .features
                .iter()
                .map(|f| format!("\"{f}\""))
                .collect();
            if mode == "fit" {
                format!("SELECT pca_fit({}) FROM t", cols.join(", "))
            } else if mode == "scan-features" {
                format!("SELECT {} FROM t", cols.join(", "))
            } else {
                format!(
                    "SELECT pca_score('{model}', {}) AS spe FROM t",
                    cols.join(", ")
                )
            }
        }
        ("copy", [out]) => format!("COPY (SELECT * FROM t) TO '{out}' STORED AS PARQUET"),
        ("copy-tads", [_]) => String::new(), // built below, from the table's columns
        _ => return Err(format!("unknown mode or arguments: {args:?}").into()),
    };
    tads_sql::register_all(&ctx, &registry)?;
    tads_sql::register_dataset(&ctx, "t", &Location::parse_data(data)?).await?;
    let sql = if mode == "copy-tads" {
        let schema = ctx.table("t").await?.schema().as_arrow().clone();
        format!(
            "COPY (SELECT * FROM t) TO '{}' STORED AS PARQUET OPTIONS ({})",
            args[2],
            tads_writer_options(&schema).join(", ")
        )
    } else {
        sql
    };
    let started = Instant::now();
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    let mut rows = 0u64;
    let mut valid = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        match mode {
            // COPY returns one row holding the count of rows written.
            "copy" | "copy-tads" => {
                rows += datafusion::arrow::util::display::array_value_to_string(batch.column(0), 0)?
                    .parse::<u64>()?
            }
            "spe" => {
                rows += batch.num_rows() as u64;
                valid += (batch.num_rows() - batch.column(0).null_count()) as u64;
            }
            // pca_fit returns one struct whose first field is the count of rows it saw.
            "fit" if batch.num_rows() > 0 => {
                let Some(s) = datafusion::arrow::array::AsArray::as_struct_opt(batch.column(0))
                else {
                    return Err(format!("pca_fit returned {}", batch.column(0).data_type()).into());
                };
                rows += datafusion::arrow::util::display::array_value_to_string(s.column(0), 0)?
                    .parse::<u64>()?;
            }
            _ => rows += batch.num_rows() as u64,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{{\"rows\": {rows}, \"scored\": {valid}, \"seconds\": {seconds}}}");
    Ok(())
}

/// DataFusion's COPY options for what `tads_jobs::parquet_out::writer_properties` sets: Parquet
/// 2.0 pages, zstd level 1, row groups of `ROWS_PER_FILE` rows, and per column no dictionary
/// with byte-stream-split floats and delta-encoded integers and timestamps.
fn tads_writer_options(schema: &datafusion::arrow::datatypes::Schema) -> Vec<String> {
    use datafusion::arrow::datatypes::DataType;
    let mut options = vec![
        "'format.writer_version' '2.0'".to_string(),
        "'format.compression' 'zstd(1)'".to_string(),
        format!(
            "'format.max_row_group_size' '{}'",
            tads_jobs::score::ROWS_PER_FILE
        ),
    ];
    for field in schema.fields() {
        let encoding = match field.data_type() {
            DataType::Float64 | DataType::Float32 => "byte_stream_split",
            DataType::Timestamp(..) | DataType::Int64 | DataType::Date32 => "delta_binary_packed",
            _ => continue,
        };
        let name = field.name();
        options.push(format!("'format.dictionary_enabled::{name}' false"));
        options.push(format!("'format.encoding::{name}' '{encoding}'"));
    }
    options
}
