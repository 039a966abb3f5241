//! The input of a score run: its Parquet files (a finished dataset's), their footers, the
//! columns the model needs, and the input's state before and after the run.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStoreExt};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use tads_store::{IN_PROGRESS, Location, Output};

use super::{ModelRef, ROWS_PER_FILE, SCORE_COLUMNS, ScoreJob, ScoredFile, write::chunk_path};
use crate::{Error, Result};

/// One input file.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    pub(crate) meta: ObjectMeta,
    pub(crate) relative: String,
    pub(crate) rows: u64,
    /// Its footer.
    pub(crate) footer: Arc<ParquetMetaData>,
}

impl Unit {
    /// What an output chunk of this file will likely take (the input's bytes per row plus about
    /// 32 for the scores), to size its buffer so it is not grown by copying as it is encoded.
    pub(crate) fn chunk_capacity(&self) -> usize {
        let rows = (self.rows as usize).clamp(1, ROWS_PER_FILE);
        (self.meta.size as usize / (self.rows as usize).max(1) + 32)
            .saturating_mul(rows)
            .min(1 << 30)
    }

    /// Stores the encoded output chunk `index` of this file, which holds `rows` rows.
    pub(crate) async fn store_chunk(
        &self,
        output: &Output,
        bytes: Vec<u8>,
        rows: usize,
        index: usize,
    ) -> Result<ScoredFile> {
        let path = chunk_path(&self.relative, index);
        let len = bytes.len() as u64;
        output.put(&path, bytes).await?;
        Ok(self.scored_file(path, rows, len))
    }

    /// The record of an output file of this file, stored at `path` with `rows` rows in `bytes`
    /// bytes.
    pub(crate) fn scored_file(&self, path: String, rows: usize, bytes: u64) -> ScoredFile {
        ScoredFile {
            path,
            source: self.relative.clone(),
            rows: rows as u64,
            bytes,
        }
    }
}

/// The Parquet files of the input, in path order, with their row counts.
async fn input_files(data: &Location) -> Result<Vec<(ObjectMeta, String)>> {
    let objects = data.list_all().await?;
    let present: Vec<String> = objects
        .iter()
        .filter_map(|o| data.relative(&o.location))
        .collect();
    tads_store::check_finished(data, &present)
        .await
        .map_err(|e| Error::Input(e.to_string()))?;
    let hidden = |rel: &str| {
        rel.split('/')
            .any(|p| p.starts_with('_') || p.starts_with('.'))
    };
    let mut files: Vec<(ObjectMeta, String)> = match data.file() {
        Some(name) => objects
            .into_iter()
            .filter_map(|o| {
                let rel = data.relative(&o.location)?;
                (rel == name).then_some((o, rel))
            })
            .collect(),
        None => {
            if objects
                .iter()
                .any(|o| data.relative(&o.location).as_deref() == Some(IN_PROGRESS))
            {
                return Err(Error::Input(format!(
                    "{data}: is not a finished dataset ({IN_PROGRESS} is present: a writer is at work or was killed)"
                )));
            }
            objects
                .into_iter()
                .filter_map(|o| {
                    let rel = data.relative(&o.location)?;
                    (rel.ends_with(".parquet") && !hidden(&rel)).then_some((o, rel))
                })
                .collect()
        }
    };
    files.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(files)
}

/// The input's files with their footers, in path order.
pub(crate) async fn units(data: &Location) -> Result<Vec<Unit>> {
    let files = input_files(data).await?;
    futures::stream::iter(files)
        .map(|(meta, relative)| async move {
            let footer = footer(data, &meta).await?;
            Ok::<_, Error>(Unit {
                meta,
                relative,
                rows: footer.file_metadata().num_rows().max(0) as u64,
                footer: Arc::new(footer),
            })
        })
        .buffered(16)
        .try_collect()
        .await
}

/// Some files of the input (relative paths), with their footers, in the order given.
pub(crate) async fn units_of(data: &Location, files: &[String]) -> Result<Vec<Unit>> {
    futures::stream::iter(files)
        .map(|relative| async move {
            let path = data.child(relative);
            let meta = data.store().head(&path).await.map_err(|e| {
                Error::Data(format!(
                    "{data}{relative}: {}",
                    tads_store::describe_store_error(&e)
                ))
            })?;
            let footer = footer(data, &meta).await?;
            Ok::<_, Error>(Unit {
                meta,
                relative: relative.clone(),
                rows: footer.file_metadata().num_rows().max(0) as u64,
                footer: Arc::new(footer),
            })
        })
        .buffered(16)
        .try_collect()
        .await
}

/// A Parquet file's footer (two small reads).
pub(crate) async fn footer(data: &Location, meta: &ObjectMeta) -> Result<ParquetMetaData> {
    let bad = |m: String| {
        Error::Data(format!(
            "{}: not a readable Parquet file ({m})",
            meta.location
        ))
    };
    let store = data.store();
    let size = meta.size;
    if size < 12 {
        return Err(bad(format!("{size} bytes")));
    }
    let read = |range: std::ops::Range<u64>| async move {
        store
            .get_range(&meta.location, range)
            .await
            .map_err(|e| bad(tads_store::describe_store_error(&e)))
    };
    let tail = read(size - 8..size).await?;
    if &tail[4..] != b"PAR1" {
        return Err(bad("no PAR1 footer".into()));
    }
    let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if len + 12 > size {
        return Err(bad(format!("footer of {len} bytes in a file of {size}")));
    }
    let footer = read(size - 8 - len..size - 8).await?;
    ParquetMetaDataReader::decode_metadata(&footer).map_err(|e| bad(e.to_string()))
}

/// The model's columns, checked against the input schema.
pub(super) fn check_columns(schema: &Schema, model: &ModelRef, job: &ScoreJob) -> Result<()> {
    let needed = model.features.iter().chain(model.group_by.iter());
    for name in needed {
        let field = schema.field_with_name(name).map_err(|_| {
            Error::Input(format!(
                "{}: has no column `{name}`, which model `{}` needs (its features: {}{})",
                job.data,
                model.name,
                model.features.join(", "),
                model
                    .group_by
                    .as_ref()
                    .map_or(String::new(), |g| format!("; grouped by {g}"))
            ))
        })?;
        if model.group_by.as_ref() == Some(name) {
            continue;
        }
        if !field.data_type().is_numeric() {
            return Err(Error::Input(format!(
                "{}: column `{name}` is {}, not numeric",
                job.data,
                field.data_type()
            )));
        }
    }
    for name in SCORE_COLUMNS {
        if schema.field_with_name(name).is_ok() {
            return Err(Error::Input(format!(
                "{}: already has a column `{name}` (is it the output of a score run?)",
                job.data
            )));
        }
    }
    if job.shard.is_some() && schema.field_with_name(&job.shard_by).is_err() {
        return Err(Error::Input(format!(
            "--shard-by: {} has no column `{}`",
            job.data, job.shard_by
        )));
    }
    Ok(())
}

/// A dataset folder's manifest and whether a writer's marker is there (nothing for a single
/// file): equal before and after a read when nobody wrote in between.
pub(super) async fn input_state(data: &Location) -> Result<Option<(Option<bytes::Bytes>, bool)>> {
    if data.file().is_some() {
        return Ok(None);
    }
    let manifest = data.get_opt(tads_store::MANIFEST).await?;
    let marker = data.get_opt(tads_store::IN_PROGRESS).await?.is_some();
    Ok(Some((manifest, marker)))
}

/// Says on stderr which detectors of `fusion.detectors` the model (no member of a group) was
/// trained without: their signal is left out of every score, silently otherwise. (`tads score`
/// only: `tads watch` would repeat it every round.)
pub(crate) fn note_missing_detectors(
    job: &ScoreJob,
    registry: &tads_sql::ModelRegistry,
    loaded: &tads_sql::registry::Loaded,
) {
    let artifacts: Vec<Arc<tads_sql::registry::LoadedModel>> = match loaded {
        tads_sql::registry::Loaded::Single(m) => vec![Arc::clone(m)],
        tads_sql::registry::Loaded::Group(g) => {
            let prefix = format!("{}/", g.name);
            registry
                .names()
                .iter()
                .filter(|n| n.starts_with(&prefix))
                .filter_map(|n| registry.get(n))
                .collect()
        }
    };
    let d = job.config.fusion.detectors;
    let trained = |has: &dyn Fn(&tads_model::ModelArtifact) -> bool| {
        artifacts.iter().any(|m| has(&m.artifact))
    };
    let optional: [(bool, &str, &str, bool); 5] = [
        (
            d.kmeans,
            "kmeans",
            "--kmeans",
            trained(&|m| m.kmeans.is_some()),
        ),
        (
            d.iforest,
            "iforest",
            "--iforest",
            trained(&|m| m.iforest.is_some()),
        ),
        (d.ocsvm, "ocsvm", "--ocsvm", trained(&|m| m.ocsvm.is_some())),
        (
            d.seasonal,
            "seasonal",
            "--seasonal-baseline",
            trained(&|m| m.season.is_some()),
        ),
        (
            d.forecast,
            "forecast",
            "--forecast",
            trained(&|m| m.forecast.is_some()),
        ),
    ];
    for (wanted, name, flag, has) in optional {
        if wanted && !has {
            eprintln!(
                "note: fusion.detectors names `{name}`, but model `{}` was trained without it \
                 (`tads train {flag}`): its signal is left out of the scores",
                job.model
            );
        }
    }
}
