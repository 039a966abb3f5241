//! How TADS jobs encode their Parquet outputs, for any schema.

use datafusion::arrow::datatypes::{DataType, Schema};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

/// zstd(1); floats byte-stream-split without dictionaries (they compress far better so, and
/// scores are nearly all distinct); integers and timestamps delta-encoded; strings keep their
/// dictionaries. The same choices as the generator, found by column type instead of name.
pub fn writer_properties(schema: &Schema) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_max_row_group_row_count(Some(crate::score::ROWS_PER_FILE))
        .set_created_by(format!("tads {}", env!("CARGO_PKG_VERSION")));
    for field in schema.fields() {
        let path = ColumnPath::from(field.name().as_str());
        match field.data_type() {
            DataType::Float64 | DataType::Float32 => {
                b = b
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::BYTE_STREAM_SPLIT);
            }
            DataType::Timestamp(..) | DataType::Int64 | DataType::Date32 => {
                b = b
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
            }
            _ => {}
        }
    }
    b.build()
}
