//! TADS on DataFusion: the session, and datasets as tables.
//!
//! [`session`] builds a [`SessionContext`] configured for TADS; [`register_dataset`] makes any
//! Parquet dataset, TADS's own or a user's, a table: a local directory or an `s3://` prefix,
//! flat or hive-partitioned (`key=value/` directories become partition columns, so a filter on
//! them prunes files before any is opened).
#![deny(missing_docs)]

pub mod depth;
pub mod functions;
pub mod registry;

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use tads_store::{IN_PROGRESS, Location};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The dataset cannot be read as it is.
    #[error("{location}: {message}")]
    Dataset {
        /// The dataset.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// Listing or reading the store failed.
    #[error(transparent)]
    Store(#[from] tads_store::Error),
    /// A model cannot be loaded.
    #[error("{0}")]
    Model(String),
    /// DataFusion failed.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use functions::register_all;
pub use registry::ModelRegistry;

/// A DataFusion session for TADS: one partition per core, and Parquet filters pushed into the
/// scan so row groups and pages are skipped by their statistics.
pub fn session() -> SessionContext {
    let mut config = SessionConfig::new().with_information_schema(true);
    let options = config.options_mut();
    options.execution.parquet.pushdown_filters = true;
    options.execution.parquet.reorder_filters = true;
    SessionContext::new_with_config(config)
}

/// [`session`] with a memory pool of `bytes` shared fairly by the operators that can spill (sorts
/// spill to the system's temporary directory beyond it), so a job's memory does not grow with
/// its data.
pub fn session_with_memory_limit(bytes: usize) -> Result<SessionContext> {
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(
            datafusion::execution::memory_pool::FairSpillPool::new(bytes),
        ))
        .build_arc()?;
    Ok(SessionContext::new_with_config_rt(
        session().copied_config(),
        runtime,
    ))
}

/// The hive partition columns of a relative file path: every `key=value` directory, in order.
pub fn partition_columns(relative_path: &str) -> Vec<String> {
    let mut parts: Vec<&str> = relative_path.split('/').collect();
    parts.pop(); // the file name
    parts
        .iter()
        .filter_map(|p| p.split_once('=').map(|(k, _)| k.to_string()))
        .filter(|k| !k.is_empty())
        .collect()
}

/// Registers the Parquet files below `location` as table `name`, with the hive partition
/// columns found in its directory names (as strings), and returns those columns. Refuses a
/// dataset that a TADS writer has not finished, and a location without any `.parquet` file.
pub async fn register_dataset(
    ctx: &SessionContext,
    name: &str,
    location: &Location,
) -> Result<Vec<String>> {
    let bad = |message: String| Error::Dataset {
        location: location.to_string(),
        message,
    };
    let objects = location.list_all().await?;
    let relative: Vec<String> = objects
        .iter()
        .filter_map(|o| location.relative(&o.location))
        .collect();
    // No writer at work here or above, and every file the manifest lists below here present.
    let extra = tads_store::check_finished(location, &relative).await?;
    if let Some(first) = extra.first() {
        eprintln!(
            "note: {location}: {} Parquet file(s) below it are not in its manifest and are read as well ({first}{})",
            extra.len(),
            if extra.len() > 1 { ", …" } else { "" }
        );
    }
    let first = match location.file() {
        // A single file: read as it is, no partitions.
        Some(name) => name.to_string(),
        None => {
            if relative.iter().any(|r| r == IN_PROGRESS) {
                return Err(bad(format!(
                    "is not a finished dataset ({IN_PROGRESS} is present: a writer is at work or was killed)"
                )));
            }
            let Some(first) = relative.iter().filter(|r| r.ends_with(".parquet")).min() else {
                return Err(bad("holds no .parquet files".into()));
            };
            first.clone()
        }
    };
    let partition_names = if location.file().is_some() {
        vec![]
    } else {
        partition_columns(&first)
    };
    let url = ListingTableUrl::parse(location.data_url().as_str())?;
    register_listing(ctx, name, location, vec![url], &partition_names).await?;
    Ok(partition_names)
}

/// Registers table `name` over the Parquet files below `urls` (of `location`'s store), with the
/// hive partition columns `partitions` (as strings) and the columns of the first file, every one
/// nullable.
async fn register_listing(
    ctx: &SessionContext,
    name: &str,
    location: &Location,
    urls: Vec<ListingTableUrl>,
    partitions: &[String],
) -> Result<()> {
    let partitions: Vec<(String, DataType)> = partitions
        .iter()
        .map(|k| (k.clone(), DataType::Utf8))
        .collect();
    ctx.register_object_store(&location.store_url(), Arc::clone(location.store()));
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(partitions);
    let config = nullable_schema(
        ctx,
        ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .infer_schema(&ctx.state())
            .await
            .map_err(|e| Error::Dataset {
                location: location.shown(),
                message: format!("cannot read the schema of its Parquet files ({e})"),
            })?,
    );
    ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}

/// Marks a session whose plans run on a Ballista cluster (its config's extension): there,
/// dictionary-encoded columns are read as their values, since Ballista 55's shuffle between
/// executors hands a dictionary column on as a plain one and the next stage then fails
/// ("RowConverter column schema mismatch").
#[derive(Debug, Default)]
pub struct PlainDictionaries;

/// Every column nullable: a file that lacks a column the others have reads it as NULL (a
/// non-nullable column would fail on those NULLs). On a cluster session (see
/// [`PlainDictionaries`]) dictionary columns become their value type.
fn nullable_schema(ctx: &SessionContext, config: ListingTableConfig) -> ListingTableConfig {
    let plain = ctx
        .state()
        .config()
        .get_extension::<PlainDictionaries>()
        .is_some();
    match config.file_schema.clone() {
        Some(schema) => {
            let fields: Vec<_> = schema
                .fields()
                .iter()
                .map(|f| {
                    let f = f.as_ref().clone().with_nullable(true);
                    match f.data_type() {
                        DataType::Dictionary(_, value) if plain => {
                            let value = value.as_ref().clone();
                            f.with_data_type(value)
                        }
                        _ => f,
                    }
                })
                .collect();
            config.with_schema(Arc::new(
                datafusion::arrow::datatypes::Schema::new_with_metadata(
                    fields,
                    schema.metadata().clone(),
                ),
            ))
        }
        None => config,
    }
}

/// Registers some Parquet files below `location` (paths relative to it, at least one) as one
/// table `name` of their columns, without partition columns: one scan over a list of files,
/// for a table that may list many (the drift baseline's rows in `tads watch`).
pub async fn register_file_list(
    ctx: &SessionContext,
    name: &str,
    location: &Location,
    files: &[String],
) -> Result<()> {
    let Some(first) = files.first() else {
        return Err(Error::Dataset {
            location: location.to_string(),
            message: "no files to read".into(),
        });
    };
    ctx.register_object_store(&location.store_url(), Arc::clone(location.store()));
    let urls = files
        .iter()
        .map(|f| file_url(location, f))
        .collect::<Result<Vec<_>>>()?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let schema = file_schema(ctx, location, first).await?;
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}

/// The columns of the Parquet file `file` below `location`, every one nullable.
async fn file_schema(
    ctx: &SessionContext,
    location: &Location,
    file: &str,
) -> Result<datafusion::arrow::datatypes::SchemaRef> {
    let bad = |message: String| Error::Dataset {
        location: format!("{location}{file}"),
        message,
    };
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    nullable_schema(
        ctx,
        ListingTableConfig::new(file_url(location, file)?)
            .with_listing_options(options)
            .infer_schema(&ctx.state())
            .await
            .map_err(|e| bad(format!("cannot read its schema ({e})")))?,
    )
    .file_schema
    .ok_or_else(|| bad("no schema".into()))
}

/// The URL of `file` below `location`, as a table path.
fn file_url(location: &Location, file: &str) -> Result<ListingTableUrl> {
    let url = location
        .store_url()
        .join(location.child(file).as_ref())
        .map_err(|e| Error::Dataset {
            location: format!("{location}{file}"),
            message: e.to_string(),
        })?;
    Ok(ListingTableUrl::parse(url.as_str())?)
}

/// Registers some Parquet files below `location` (paths relative to it, at least one) as table
/// `name`, with the hive partition columns of their directory names (as strings), and returns
/// those columns. Unlike [`register_dataset`] it neither lists the location nor asks whether a
/// writer is at work there: `tads watch` picks files of a dataset that is still being written.
/// Each file is read with the first file's columns (what another file lacks reads as NULL).
pub async fn register_files(
    ctx: &SessionContext,
    name: &str,
    location: &Location,
    files: &[String],
) -> Result<Vec<String>> {
    let Some(first) = files.first() else {
        return Err(Error::Dataset {
            location: location.to_string(),
            message: "no files to read".into(),
        });
    };
    let partitions = partition_columns(first);
    ctx.register_object_store(&location.store_url(), Arc::clone(location.store()));
    let options =
        || ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let url = |file: &str| file_url(location, file);
    let schema = file_schema(ctx, location, first).await?;
    let mut selects = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        let values: Vec<(String, String)> = file
            .split('/')
            .rev()
            .skip(1)
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut select = "SELECT *".to_string();
        for p in &partitions {
            let Some((_, v)) = values.iter().find(|(k, _)| k == p) else {
                return Err(Error::Dataset {
                    location: format!("{location}{file}"),
                    message: format!(
                        "has no partition `{p}` in its path, as {first} has; its partitions differ from the other files'"
                    ),
                });
            };
            select.push_str(&format!(
                ", CAST('{}' AS VARCHAR) AS \"{}\"",
                v.replace('\'', "''"),
                p.replace('"', "\"\"")
            ));
        }
        let table = format!("{name}__file_{i}");
        let config = ListingTableConfig::new(url(file)?)
            .with_listing_options(options())
            .with_schema(Arc::clone(&schema));
        ctx.register_table(&table, Arc::new(ListingTable::try_new(config)?))?;
        selects.push(format!("{select} FROM \"{table}\""));
    }
    let view = ctx.sql(&selects.join(" UNION ALL ")).await?.into_view();
    ctx.register_table(name, view)?;
    Ok(partitions)
}

/// Registers the Parquet files below several folders of `location` (relative paths, each with
/// the same hive partitioning, at least one holding a file) as one table `name`, with the partition columns
/// found below the first such file, and returns those columns: one listing scan over every folder, each
/// listed afresh by every query. The rounds of a `tads watch` output are read so, each round's
/// `scored/` a folder.
pub async fn register_dirs(
    ctx: &SessionContext,
    name: &str,
    location: &Location,
    dirs: &[String],
) -> Result<Vec<String>> {
    let bad = |message: String| Error::Dataset {
        location: location.to_string(),
        message,
    };
    // The first file of the first folder that has one gives the partitions and the columns.
    let mut first = None;
    for dir in dirs {
        let sub = location.sub(dir);
        first = sub
            .list_all()
            .await?
            .iter()
            .filter_map(|o| sub.relative(&o.location))
            .filter(|r| r.ends_with(".parquet"))
            .min();
        if first.is_some() {
            break;
        }
    }
    let first = first.ok_or_else(|| bad("holds no .parquet files in its folders".into()))?;
    let partition_names = partition_columns(&first);
    let urls = dirs
        .iter()
        .map(|d| Ok(ListingTableUrl::parse(location.sub(d).data_url().as_str())?))
        .collect::<Result<Vec<_>>>()?;
    register_listing(ctx, name, location, urls, &partition_names).await?;
    Ok(partition_names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_columns_come_from_key_value_directories() {
        assert_eq!(
            partition_columns("date=2026-01-01/part-0.parquet"),
            ["date"]
        );
        assert_eq!(
            partition_columns("region=eu/date=x/f.parquet"),
            ["region", "date"]
        );
        assert!(partition_columns("f.parquet").is_empty());
        assert!(partition_columns("plain/f.parquet").is_empty());
    }

    #[tokio::test]
    async fn empty_and_unfinished_locations_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let ctx = session();
        let err = register_dataset(&ctx, "t", &loc)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no .parquet files"), "{err}");
        loc.put(IN_PROGRESS, b"{}".to_vec()).await.unwrap();
        let err = register_dataset(&ctx, "t", &loc)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a finished dataset"), "{err}");
    }
}
