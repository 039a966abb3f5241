//! The fast path of `tads score`: a scored file that keeps the input file's column chunks byte
//! for byte and adds the encoded score columns (and `alert_id`) to each of its row groups.
//!
//! Re-encoding the input's columns costs more than scoring them: decoding every column,
//! encoding and compressing it again. Here only the model's metrics (and, with alerts, the key
//! and time) are decoded, by a one-partition DataFusion plan that returns the rows in file
//! order; the other bytes are copied. The output's row groups are the input's, so its readers
//! keep the input's encodings, compression and column statistics. The output has no page indexes
//! or bloom filters (the input's point into the input file, and a file has page indexes for
//! every column or none). When input and output are both on a local disk, the copied chunks
//! never pass through this process: the output file is written in place under a staging name
//! and the kernel copies each row group's chunks from the input file into it
//! ([`tads_store::StagedFile::copy_from`]); elsewhere the file is built in memory and put whole.
//! A file whose columns differ from the dataset's
//! (a column missing or of another type), and a sharded run, which writes only some rows, take
//! the re-encoding path instead.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_null_array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use futures::{Stream, StreamExt};
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::arrow::{ArrowSchemaConverter, add_encoded_arrow_schema_to_metadata};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use tads_store::StagedFile;

use crate::alerts::Alerts;
use crate::score::{ROWS_PER_FILE, ScoredFile, Shared, Unit, UnitResult, chunk_path};
use crate::{Error, Result, parquet_out};

/// Whether `unit`'s file can keep its column chunks: its columns are the dataset's, by name and
/// type, in the same order (a string column may be read as a view of the same strings).
pub(crate) fn fits(file_schema: &Schema, unit: &Unit) -> bool {
    let Ok(own) = file_arrow_schema(&unit.footer) else {
        return false;
    };
    own.fields().len() == file_schema.fields().len()
        && own
            .fields()
            .iter()
            .zip(file_schema.fields())
            .all(|(a, b)| a.name() == b.name() && base(a.data_type()) == base(b.data_type()))
}

/// A type with string and binary views taken as the plain arrays DataFusion reads them as.
fn base(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        other => other.clone(),
    }
}

/// The Arrow schema a Parquet file describes (its embedded Arrow schema where it has one).
fn file_arrow_schema(footer: &ParquetMetaData) -> parquet::errors::Result<Schema> {
    let meta = footer.file_metadata();
    parquet::arrow::parquet_to_arrow_schema(meta.schema_descr(), meta.key_value_metadata())
}

/// One byte range of the input file, addressed by file offsets.
struct Span {
    start: u64,
    bytes: Bytes,
}

impl Length for Span {
    fn len(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

impl ChunkReader for Span {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let end = self.len();
        Ok(self
            .get_bytes(start, end.saturating_sub(start) as usize)?
            .reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let from = start
            .checked_sub(self.start)
            .map(|f| f as usize)
            .filter(|f| f + length <= self.bytes.len())
            .ok_or_else(|| {
                ParquetError::General(format!(
                    "bytes {start}..{} are outside the row group read ({}..{})",
                    start + length as u64,
                    self.start,
                    self.len()
                ))
            })?;
        Ok(self.bytes.slice(from..from + length))
    }
}

/// The file offsets a row group's column chunks span.
fn row_group_range(rg: &RowGroupMetaData) -> Option<std::ops::Range<u64>> {
    let spans = rg.columns().iter().map(|c| {
        let start = c
            .dictionary_page_offset()
            .unwrap_or_else(|| c.data_page_offset());
        (
            start.max(0) as u64,
            (start + c.compressed_size()).max(0) as u64,
        )
    });
    let (start, end) = spans.fold((u64::MAX, 0), |(s, e), (a, b)| (s.min(a), e.max(b)));
    (start < end).then_some(start..end)
}

/// Where a scored file's bytes go.
enum Sink {
    /// Memory, put whole through the object store when the file is done.
    Memory(Vec<u8>),
    /// A file on the local disk, written in place under its staging name. `skip` counts the
    /// bytes of copied chunks that the kernel has already put in the file and that the Parquet
    /// writer, which counts every byte of its file, still has to pass on: they are dropped.
    Local { file: StagedFile, skip: u64 },
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Memory(v) => v.write(buf),
            Sink::Local { file, skip } => {
                let dropped = (*skip).min(buf.len() as u64) as usize;
                *skip -= dropped as u64;
                if dropped == buf.len() {
                    return Ok(dropped);
                }
                Ok(dropped + file.write(&buf[dropped..])?)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the Parquet writer reads for a chunk the kernel has copied already: as many zeros as it
/// asks for, which [`Sink::Local`] drops.
struct Copied;

impl Length for Copied {
    fn len(&self) -> u64 {
        u64::MAX
    }
}

impl ChunkReader for Copied {
    type T = io::Repeat;

    fn get_read(&self, _start: u64) -> parquet::errors::Result<Self::T> {
        Ok(io::repeat(0))
    }

    fn get_bytes(&self, _start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        Ok(Bytes::from(vec![0; length]))
    }
}

/// The input file's bytes of a column chunk.
fn chunk_range(column: &parquet::file::metadata::ColumnChunkMetaData) -> std::ops::Range<u64> {
    let start = column
        .dictionary_page_offset()
        .unwrap_or_else(|| column.data_page_offset())
        .max(0) as u64;
    start..start + column.compressed_size().max(0) as u64
}

/// The output file being written and what encodes its added columns.
struct Chunk {
    writer: SerializedFileWriter<Sink>,
    rows: usize,
    /// Its path below the output.
    path: String,
}

/// Scores `unit` and writes it, keeping the input's column chunks. `table` is the unit's file,
/// registered in `shared.ordered`.
pub(crate) async fn write_unit(shared: &Shared, unit: &Unit, table: &str) -> Result<UnitResult> {
    let df = shared
        .ordered
        .sql(&shared.select_scores.replace("{table}", table))
        .await?;
    let score_fields = score_fields(df.schema().as_arrow())?;
    let alerts = shared.alerts.as_ref().map(|(a, _, _)| a.as_ref());
    write_scored(
        shared,
        unit,
        &score_fields,
        df.execute_stream().await?,
        alerts,
    )
    .await
}

/// The fields of the scores struct, the first column of a scoring plan's `schema`.
pub(crate) fn score_fields(schema: &Schema) -> Result<Fields> {
    match schema.fields().first().map(|f| f.data_type()) {
        Some(DataType::Struct(fields)) => Ok(fields.clone()),
        other => Err(Error::Data(format!(
            "the scoring plan starts with {other:?}, not the scores struct"
        ))),
    }
}

/// Writes `unit` keeping its column chunks, with the scores of its rows in file order
/// (`scored`: the scores struct, then with `alerts` the key and time that find each row's
/// alert).
pub(crate) async fn write_scored(
    shared: &Shared,
    unit: &Unit,
    score_fields: &Fields,
    mut stream: impl Stream<Item = datafusion::error::Result<RecordBatch>> + Unpin,
    alerts: Option<&Alerts>,
) -> Result<UnitResult> {
    let bad = |e: ParquetError| Error::Data(format!("{}: {e}", unit.meta.location));
    // The added columns: the scores, then alert_id.
    let mut added: Vec<FieldRef> = score_fields.iter().cloned().collect();
    added.push(Arc::new(Field::new("alert_id", DataType::Utf8, true)));
    let added_schema: SchemaRef = Arc::new(Schema::new(added.clone()));
    // The input's columns as the dataset reads them (string views where DataFusion reads
    // strings so), as the re-encoding path writes them: the two kinds of output file agree.
    let mut fields: Vec<FieldRef> = shared.file_schema.fields().iter().cloned().collect();
    let inputs = fields.len();
    fields.extend(added.iter().cloned());
    let schema = Schema::new(fields);
    let spe = schema
        .index_of("pca_spe")
        .map_err(|e| Error::Data(e.to_string()))?
        - inputs;

    let mut props = parquet_out::writer_properties(&schema);
    add_encoded_arrow_schema_to_metadata(&schema, &mut props);
    let props = Arc::new(props);
    // The output's Parquet schema: the input's own column types, then the added columns'.
    let added_parquet = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(&added_schema)
        .map_err(bad)?;
    let input_root = unit.footer.file_metadata().schema_descr().root_schema();
    let mut root_fields = input_root.get_fields().to_vec();
    root_fields.extend(added_parquet.root_schema().get_fields().iter().cloned());
    let root = Arc::new(
        Type::group_type_builder(input_root.name())
            .with_fields(root_fields)
            .build()
            .map_err(bad)?,
    );
    // Column writers for the added columns only, from a schema of those alone (their
    // descriptors equal the output's).
    let added_only = SerializedFileWriter::new(
        std::io::sink(),
        added_parquet.root_schema_ptr(),
        Arc::clone(&props),
    )
    .map_err(bad)?;
    let factory = ArrowRowGroupWriterFactory::new(&added_only, Arc::clone(&added_schema));

    // On a local disk, the output files are written in place and, when the input is local too,
    // the kernel copies the input's chunks.
    let local_out = shared.output.location().scheme() == tads_store::Scheme::Local;
    let input = match shared.data.local_file(&unit.meta.location) {
        Some(path) if local_out => {
            Some(File::open(&path).map_err(|e| Error::Data(format!("{}: {e}", path.display())))?)
        }
        _ => None,
    };
    let row_groups = unit.footer.row_groups();
    let mut files: Vec<ScoredFile> = Vec::new();
    let mut unscored = 0u64;
    let mut chunk: Option<Chunk> = None;
    let mut next = 0usize; // the row group being scored
    let mut left = 0usize; // its rows not yet scored
    let mut writers: Vec<ArrowColumnWriter> = Vec::new();
    let mut scored_rows = 0u64;
    // The added columns of the batches not encoded yet (each batch's, in order), and their rows.
    let mut pending: Vec<Vec<ArrayRef>> = Vec::new();
    let mut pending_rows = 0usize;

    // Appends row group `next` (its input chunks, then the added columns encoded by `writers`)
    // to the current output file, starting one if there is none and finishing it when full.
    macro_rules! finish_row_group {
        () => {{
            let rg = &row_groups[next];
            let span = match row_group_range(rg).filter(|_| input.is_none()) {
                Some(range) => Span {
                    start: range.start,
                    bytes: shared
                        .data
                        .store()
                        .get_range(&unit.meta.location, range)
                        .await
                        .map_err(|e| Error::Data(tads_store::describe_store_error(&e)))?,
                },
                None => Span {
                    start: 0,
                    bytes: Bytes::new(),
                },
            };
            let c = match chunk.as_mut() {
                Some(c) => c,
                None => {
                    let path = chunk_path(&unit.relative, files.len());
                    let sink = if local_out {
                        let target = shared.output.expect(&path);
                        let target = shared
                            .output
                            .location()
                            .local_file(&target)
                            .ok_or_else(|| Error::Data(format!("{path}: not a local file")))?;
                        Sink::Local {
                            file: StagedFile::create(target.clone())
                                .map_err(|e| Error::Data(format!("{}: {e}", target.display())))?,
                            skip: 0,
                        }
                    } else {
                        Sink::Memory(Vec::with_capacity(unit.chunk_capacity()))
                    };
                    chunk.insert(Chunk {
                        writer: SerializedFileWriter::new(
                            sink,
                            Arc::clone(&root),
                            Arc::clone(&props),
                        )
                        .map_err(bad)?,
                        rows: 0,
                        path,
                    })
                }
            };
            if let Some(input) = &input {
                copy_chunks(&mut c.writer, input, rg, unit)?;
            }
            let mut out = c.writer.next_row_group().map_err(bad)?;
            for column in rg.columns() {
                let close = ColumnCloseResult {
                    bytes_written: column.compressed_size().max(0) as u64,
                    rows_written: rg.num_rows().max(0) as u64,
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: None,
                    offset_index: None,
                };
                match input {
                    Some(_) => out.append_column(&Copied, close),
                    None => out.append_column(&span, close),
                }
                .map_err(bad)?;
            }
            for w in std::mem::take(&mut writers) {
                let mut done = w.close().map_err(bad)?;
                // The copied chunks come without page indexes, and a file has them for every
                // column or for none.
                let close = done.close_mut();
                close.column_index = None;
                close.offset_index = None;
                done.append_to_row_group(&mut out).map_err(bad)?;
            }
            out.close().map_err(bad)?;
            c.rows += rg.num_rows().max(0) as usize;
            next += 1;
            if c.rows >= ROWS_PER_FILE
                && let Some(c) = chunk.take()
            {
                files.push(flush(shared, unit, c, files.len()).await?);
            }
        }};
    }
    // Moves to the next row group with rows, writing the empty ones on the way.
    macro_rules! start_row_group {
        () => {{
            while next < row_groups.len() {
                writers = factory.create_column_writers(next).map_err(bad)?;
                left = row_groups[next].num_rows().max(0) as usize;
                if left > 0 {
                    break;
                }
                finish_row_group!();
            }
        }};
    }

    start_row_group!();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let mut offset = 0;
        while offset < batch.num_rows() {
            if next >= row_groups.len() {
                return Err(Error::Data(format!(
                    "{}: the scan returned more rows than the file's {}",
                    unit.meta.location, unit.rows
                )));
            }
            let take = left.min(batch.num_rows() - offset);
            let part = batch.slice(offset, take);
            let scores = part
                .column(0)
                .as_struct_opt()
                .ok_or_else(|| Error::Data("the scores column is not a struct".into()))?;
            let mut columns: Vec<ArrayRef> = scores.columns().to_vec();
            columns.push(match alerts {
                Some(alerts) => alerts.ids_for(part.column(1), part.column(2))?,
                None => new_null_array(&DataType::Utf8, take),
            });
            unscored += columns[spe].null_count() as u64;
            pending_rows += take;
            pending.push(columns);
            offset += take;
            left -= take;
            scored_rows += take as u64;
            if left == 0 || pending_rows >= ENCODE_ROWS {
                encode(&added, &std::mem::take(&mut pending), &mut writers).map_err(bad)?;
                pending_rows = 0;
            }
            if left == 0 {
                finish_row_group!();
                start_row_group!();
            }
        }
        if !shared.sharded {
            shared.progress.rows(batch.num_rows() as u64);
        }
    }
    if next < row_groups.len() || scored_rows != unit.rows {
        return Err(Error::Data(format!(
            "{}: the scan returned {scored_rows} of the file's {} rows",
            unit.meta.location, unit.rows
        )));
    }
    if let Some(c) = chunk.take() {
        files.push(flush(shared, unit, c, files.len()).await?);
    }
    Ok(UnitResult { files, unscored })
}

/// Rows of added columns encoded together (see [`encode`]).
const ENCODE_ROWS: usize = 1 << 16;

/// Encodes the added columns of some batches (`batches`, each batch's columns of the `added`
/// fields) with their `writers`, the first half of the columns on a thread of its own and the
/// rest on this one: encoding and compressing them is most of writing a file, and a core the
/// other tasks leave idle then shares it.
fn encode(
    added: &[FieldRef],
    batches: &[Vec<ArrayRef>],
    writers: &mut [ArrowColumnWriter],
) -> parquet::errors::Result<()> {
    let write = |first: usize, writers: &mut [ArrowColumnWriter]| {
        for (c, w) in writers.iter_mut().enumerate() {
            let (field, c) = (&added[first + c], first + c);
            for columns in batches {
                for leaf in compute_leaves(field, &columns[c])? {
                    w.write(&leaf)?;
                }
            }
        }
        Ok(())
    };
    let half = writers.len() / 2;
    let (first, rest) = writers.split_at_mut(half);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| write(0, first));
        let here = write(half, rest);
        other.join().unwrap_or_else(|_| {
            Err(ParquetError::General(
                "encoding the score columns failed".into(),
            ))
        })?;
        here
    })
}

/// Has the kernel append the input's chunks of row group `rg` to the output file of `writer`,
/// after all the writer has written, leaving the writer to count them (it drops them as it
/// passes them on: see [`Sink::Local`]).
fn copy_chunks(
    writer: &mut SerializedFileWriter<Sink>,
    input: &File,
    rg: &RowGroupMetaData,
    unit: &Unit,
) -> Result<()> {
    let fail = |e: io::Error| Error::Data(format!("{}: {e}", unit.meta.location));
    writer.flush().map_err(fail)?;
    let Sink::Local { file, skip } = writer.inner_mut() else {
        return Err(Error::Data(
            "copying chunks into a file held in memory".into(),
        ));
    };
    if *skip != 0 {
        return Err(Error::Data(format!(
            "{}: {skip} bytes of copied chunks were not passed on",
            unit.meta.location
        )));
    }
    for column in rg.columns() {
        let range = chunk_range(column);
        file.copy_from(input, range.clone()).map_err(fail)?;
        *skip += range.end - range.start;
    }
    Ok(())
}

/// Finishes an output file and stores it as chunk `index` of the unit's output.
async fn flush(shared: &Shared, unit: &Unit, chunk: Chunk, index: usize) -> Result<ScoredFile> {
    let sink = chunk
        .writer
        .into_inner()
        .map_err(|e| Error::Data(format!("encoding Parquet: {e}")))?;
    match sink {
        Sink::Memory(bytes) => {
            unit.store_chunk(&shared.output, bytes, chunk.rows, index)
                .await
        }
        Sink::Local { file, skip } => {
            if skip != 0 {
                return Err(Error::Data(format!(
                    "{}: {skip} bytes of copied chunks were not passed on",
                    chunk.path
                )));
            }
            let bytes = file
                .commit()
                .map_err(|e| Error::Data(format!("{}: {e}", chunk.path)))?;
            Ok(unit.scored_file(chunk.path, chunk.rows, bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_serves_only_the_bytes_it_holds() {
        let span = Span {
            start: 100,
            bytes: Bytes::from_static(b"0123456789"),
        };
        assert_eq!(span.get_bytes(102, 3).unwrap().as_ref(), b"234");
        assert_eq!(span.len(), 110);
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut span.get_read(107).unwrap(), &mut rest).unwrap();
        assert_eq!(rest, b"789");
        assert!(span.get_bytes(99, 2).is_err());
        assert!(span.get_bytes(108, 3).is_err());
    }
}
