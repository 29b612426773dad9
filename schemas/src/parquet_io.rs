//! Writing and reading Parquet files that carry a schema identity, with validation on read.

use std::collections::HashMap;
use std::io::Write;

use arrow::array::Array;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::ChunkReader;
use parquet::schema::types::ColumnPath;

use crate::identity::{SchemaId, check_columns};
use crate::{Result, SchemaError};

/// Rows per row group: small enough to stream, large enough for good compression.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 1024;

/// How a file is laid out on disk.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Columns stored without compression (already-compressed payloads such as JPEG bytes).
    pub uncompressed_columns: Vec<String>,
    /// Format-specific key-value metadata written beside the schema identity.
    pub metadata: Vec<(String, String)>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            uncompressed_columns: Vec::new(),
            metadata: Vec::new(),
        }
    }
}

/// Writes `batches` (all of `schema`) as one Parquet file into `out`, tagged with `id`, and
/// returns `out`. `file` names the destination in errors.
pub fn write<W: Write + Send>(
    file: &str,
    out: W,
    id: SchemaId,
    schema: &SchemaRef,
    options: &WriteOptions,
    batches: &[RecordBatch],
) -> Result<W> {
    let key_values = id
        .metadata()
        .into_iter()
        .chain(options.metadata.iter().cloned())
        .map(|(k, v)| KeyValue::new(k, v))
        .collect();
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(options.row_group_rows))
        .set_key_value_metadata(Some(key_values));
    for column in &options.uncompressed_columns {
        properties = properties
            .set_column_compression(ColumnPath::from(column.as_str()), Compression::UNCOMPRESSED);
    }
    let mut writer = ArrowWriter::try_new(out, schema.clone(), Some(properties.build()))
        .map_err(|e| SchemaError::parquet(file, e))?;
    for batch in batches {
        writer
            .write(batch)
            .map_err(|e| SchemaError::parquet(file, e))?;
    }
    writer
        .into_inner()
        .map_err(|e| SchemaError::parquet(file, e))
}

/// A Parquet file whose schema identity and columns were checked, streaming record batches.
pub struct ValidatedReader {
    file: String,
    metadata: HashMap<String, String>,
    rows: usize,
    next_row: usize,
    batches: ParquetRecordBatchReader,
}

impl ValidatedReader {
    /// Opens `input`, refusing it unless it is schema `id` with every column of `expected`.
    /// `file` names the input (path or URL) in every error.
    pub fn open<R: ChunkReader + 'static>(
        file: &str,
        input: R,
        id: SchemaId,
        expected: &Schema,
        batch_rows: usize,
    ) -> Result<Self> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(input)
            .map_err(|e| SchemaError::parquet(file, e))?;
        let file_metadata = builder.metadata().file_metadata();
        let metadata: HashMap<String, String> = file_metadata
            .key_value_metadata()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
            .collect();
        id.check_metadata(file, &metadata)?;
        check_columns(file, builder.schema(), expected)?;
        let rows = usize::try_from(file_metadata.num_rows()).unwrap_or(0);
        let batches = builder
            .with_batch_size(batch_rows.max(1))
            .build()
            .map_err(|e| SchemaError::parquet(file, e))?;
        Ok(Self {
            file: file.to_owned(),
            metadata,
            rows,
            next_row: 0,
            batches,
        })
    }

    /// The file's name as given to [`ValidatedReader::open`].
    pub fn file(&self) -> &str {
        &self.file
    }

    /// All key-value metadata of the file.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Number of rows in the file, from its footer.
    pub fn num_rows(&self) -> usize {
        self.rows
    }

    /// The next batch and the file row index of its first row, or `None` at the end.
    pub fn next_batch(&mut self) -> Option<Result<(usize, RecordBatch)>> {
        let batch = self.batches.next()?;
        Some(match batch {
            Ok(batch) => {
                let first_row = self.next_row;
                self.next_row += batch.num_rows();
                Ok((first_row, batch))
            }
            Err(e) => Err(SchemaError::arrow(&self.file, e)),
        })
    }
}

/// A typed view of one column, found by name, that reports a wrong type as a schema error.
pub(crate) fn column<'a, T: Array + 'static>(
    file: &str,
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a T> {
    let array = batch
        .column_by_name(name)
        .ok_or_else(|| SchemaError::MissingColumn {
            file: file.to_owned(),
            column: name.to_owned(),
        })?;
    array
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| SchemaError::WrongColumnType {
            file: file.to_owned(),
            column: name.to_owned(),
            found: array.data_type().to_string(),
            expected: std::any::type_name::<T>().to_owned(),
        })
}

/// `Some(row)` when the value at `row` is not null.
pub(crate) fn opt<A: Array>(array: &A, row: usize) -> Option<usize> {
    array.is_valid(row).then_some(row)
}
