//! Pair shard: one Parquet row per candidate image–text pair that `pipeline ingest` saw, kept or
//! dropped, so that every input row is accounted for. Columns and units: `schemas/README.md`.

use std::io::Write;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BinaryArray, BinaryBuilder, Float32Array, Float32Builder, StringArray, StringBuilder,
    UInt16Array, UInt16Builder, UInt32Array, UInt32Builder, UInt64Array, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::file::reader::ChunkReader;

use crate::parquet_io::{self, ValidatedReader, WriteOptions, column, opt};
use crate::{Result, SchemaError, SchemaId};

/// Name and version of this format.
pub const ID: SchemaId = SchemaId {
    name: "pair_shard",
    version: 1,
};

/// File name of pair shard `number`: `00042.parquet` (at least five digits).
pub fn file_name(number: u64) -> String {
    format!("{number:05}.parquet")
}

/// The number of a pair shard's file name (`00042.parquet` -> 42); `None` for every other file:
/// region shards (`00042.regions.parquet`), stats and run files.
pub fn file_number(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".parquet")?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// What became of a candidate pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Passed every filter; the row holds the re-encoded image.
    Kept,
    /// Refused by a filter or by consent rules; `drop_reason` names which.
    Dropped,
    /// Failed in a way that may pass later (timeout, HTTP 429/5xx, connection reset);
    /// `pipeline ingest --retry-failed` fetches these again.
    FailedTransient,
    /// Failed for good (HTTP 404, undecodable image, refused address).
    FailedPermanent,
}

impl Status {
    /// Every status, in the order stats list them.
    pub const ALL: [Status; 4] = [
        Status::Kept,
        Status::Dropped,
        Status::FailedTransient,
        Status::FailedPermanent,
    ];

    /// The value stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Kept => "kept",
            Status::Dropped => "dropped",
            Status::FailedTransient => "failed_transient",
            Status::FailedPermanent => "failed_permanent",
        }
    }

    /// Parses a `status` column value.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

/// Where the pair's text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextSource {
    /// The `<img alt>` attribute.
    Alt,
    /// The `<img title>` attribute.
    Title,
    /// Text around the image on its page.
    Context,
    /// A caption given with the URL in an input list.
    Caption,
}

impl TextSource {
    const ALL: [TextSource; 4] = [
        TextSource::Alt,
        TextSource::Title,
        TextSource::Context,
        TextSource::Caption,
    ];

    /// The value stored in the `text_source` column.
    pub fn as_str(self) -> &'static str {
        match self {
            TextSource::Alt => "alt",
            TextSource::Title => "title",
            TextSource::Context => "context",
            TextSource::Caption => "caption",
        }
    }

    /// Parses a `text_source` column value.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

/// One row of a pair shard.
#[derive(Debug, Clone, PartialEq)]
pub struct PairRecord {
    /// Unique, stable key: shard index and row within the input shard.
    pub key: String,
    /// Absolute image URL.
    pub url: String,
    /// The page the image was found on.
    pub page_url: Option<String>,
    /// The caption after cleaning.
    pub text: Option<String>,
    /// Where `text` came from.
    pub text_source: Option<TextSource>,
    /// ISO 639-1 language code of `text`.
    pub language: Option<String>,
    /// Confidence of the language identification, 0..=1.
    pub language_score: Option<f32>,
    /// What became of the pair.
    pub status: Status,
    /// Machine-readable code of the filter or rule that dropped or failed the pair.
    pub drop_reason: Option<String>,
    /// Human-readable detail for a dropped or failed pair.
    pub error_message: Option<String>,
    /// HTTP status of the image response.
    pub http_status: Option<u16>,
    /// Width of the stored (re-encoded) image, pixels.
    pub width: Option<u32>,
    /// Height of the stored (re-encoded) image, pixels.
    pub height: Option<u32>,
    /// Width of the downloaded image, pixels.
    pub original_width: Option<u32>,
    /// Height of the downloaded image, pixels.
    pub original_height: Option<u32>,
    /// Lower-case hex SHA-256 of the downloaded bytes.
    pub sha256: Option<String>,
    /// 64-bit perceptual hash of the image.
    pub perceptual_hash: Option<u64>,
    /// Probability that the image is not safe for work or not a natural photo, 0..=1.
    pub nsfw_score: Option<f32>,
    /// Image–text relevance score, 0..=1.
    pub relevance_score: Option<f32>,
    /// The re-encoded image (JPEG) for kept pairs.
    pub image: Option<Vec<u8>>,
    /// The input file the pair came from (URL list, WARC/WAT file or seed list).
    pub source_file: String,
    /// Byte offset of the record in a WARC/WAT file, or row index in a list.
    pub source_offset: Option<u64>,
}

impl PairRecord {
    /// A row with only its required fields set; every optional field is empty. Fill the rest
    /// with struct update syntax: `PairRecord { text: Some(..), ..PairRecord::new(..) }`.
    pub fn new(
        key: impl Into<String>,
        url: impl Into<String>,
        status: Status,
        source_file: impl Into<String>,
    ) -> Self {
        Self {
            key: key.into(),
            url: url.into(),
            page_url: None,
            text: None,
            text_source: None,
            language: None,
            language_score: None,
            status,
            drop_reason: None,
            error_message: None,
            http_status: None,
            width: None,
            height: None,
            original_width: None,
            original_height: None,
            sha256: None,
            perceptual_hash: None,
            nsfw_score: None,
            relevance_score: None,
            image: None,
            source_file: source_file.into(),
            source_offset: None,
        }
    }
}

/// Column names, in schema order.
pub mod columns {
    #![allow(missing_docs)]
    pub const KEY: &str = "key";
    pub const URL: &str = "url";
    pub const PAGE_URL: &str = "page_url";
    pub const TEXT: &str = "text";
    pub const TEXT_SOURCE: &str = "text_source";
    pub const LANGUAGE: &str = "language";
    pub const LANGUAGE_SCORE: &str = "language_score";
    pub const STATUS: &str = "status";
    pub const DROP_REASON: &str = "drop_reason";
    pub const ERROR_MESSAGE: &str = "error_message";
    pub const HTTP_STATUS: &str = "http_status";
    pub const WIDTH: &str = "width";
    pub const HEIGHT: &str = "height";
    pub const ORIGINAL_WIDTH: &str = "original_width";
    pub const ORIGINAL_HEIGHT: &str = "original_height";
    pub const SHA256: &str = "sha256";
    pub const PERCEPTUAL_HASH: &str = "perceptual_hash";
    pub const NSFW_SCORE: &str = "nsfw_score";
    pub const RELEVANCE_SCORE: &str = "relevance_score";
    pub const IMAGE: &str = "image";
    pub const SOURCE_FILE: &str = "source_file";
    pub const SOURCE_OFFSET: &str = "source_offset";
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use columns::*;
    let field =
        |name: &str, data_type: DataType, nullable: bool| Field::new(name, data_type, nullable);
    Arc::new(Schema::new(vec![
        field(KEY, DataType::Utf8, false),
        field(URL, DataType::Utf8, false),
        field(PAGE_URL, DataType::Utf8, true),
        field(TEXT, DataType::Utf8, true),
        field(TEXT_SOURCE, DataType::Utf8, true),
        field(LANGUAGE, DataType::Utf8, true),
        field(LANGUAGE_SCORE, DataType::Float32, true),
        field(STATUS, DataType::Utf8, false),
        field(DROP_REASON, DataType::Utf8, true),
        field(ERROR_MESSAGE, DataType::Utf8, true),
        field(HTTP_STATUS, DataType::UInt16, true),
        field(WIDTH, DataType::UInt32, true),
        field(HEIGHT, DataType::UInt32, true),
        field(ORIGINAL_WIDTH, DataType::UInt32, true),
        field(ORIGINAL_HEIGHT, DataType::UInt32, true),
        field(SHA256, DataType::Utf8, true),
        field(PERCEPTUAL_HASH, DataType::UInt64, true),
        field(NSFW_SCORE, DataType::Float32, true),
        field(RELEVANCE_SCORE, DataType::Float32, true),
        field(IMAGE, DataType::Binary, true),
        field(SOURCE_FILE, DataType::Utf8, false),
        field(SOURCE_OFFSET, DataType::UInt64, true),
    ]))
});

/// The Arrow schema of a pair shard.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Builds one record batch from `records`. `file` names the destination in errors.
pub fn to_batch(file: &str, records: &[PairRecord]) -> Result<RecordBatch> {
    fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
        let mut b = StringBuilder::new();
        values.for_each(|v| b.append_option(v));
        Arc::new(b.finish())
    }
    fn u32s(values: impl Iterator<Item = Option<u32>>) -> ArrayRef {
        let mut b = UInt32Builder::new();
        values.for_each(|v| b.append_option(v));
        Arc::new(b.finish())
    }
    fn f32s(values: impl Iterator<Item = Option<f32>>) -> ArrayRef {
        let mut b = Float32Builder::new();
        values.for_each(|v| b.append_option(v));
        Arc::new(b.finish())
    }
    let r = records;
    let mut http = UInt16Builder::new();
    let mut phash = UInt64Builder::new();
    let mut offsets = UInt64Builder::new();
    let mut images = BinaryBuilder::new();
    for rec in r {
        http.append_option(rec.http_status);
        phash.append_option(rec.perceptual_hash);
        offsets.append_option(rec.source_offset);
        images.append_option(rec.image.as_deref());
    }
    let columns: Vec<ArrayRef> = vec![
        strings(r.iter().map(|x| Some(x.key.as_str()))),
        strings(r.iter().map(|x| Some(x.url.as_str()))),
        strings(r.iter().map(|x| x.page_url.as_deref())),
        strings(r.iter().map(|x| x.text.as_deref())),
        strings(r.iter().map(|x| x.text_source.map(TextSource::as_str))),
        strings(r.iter().map(|x| x.language.as_deref())),
        f32s(r.iter().map(|x| x.language_score)),
        strings(r.iter().map(|x| Some(x.status.as_str()))),
        strings(r.iter().map(|x| x.drop_reason.as_deref())),
        strings(r.iter().map(|x| x.error_message.as_deref())),
        Arc::new(http.finish()),
        u32s(r.iter().map(|x| x.width)),
        u32s(r.iter().map(|x| x.height)),
        u32s(r.iter().map(|x| x.original_width)),
        u32s(r.iter().map(|x| x.original_height)),
        strings(r.iter().map(|x| x.sha256.as_deref())),
        Arc::new(phash.finish()),
        f32s(r.iter().map(|x| x.nsfw_score)),
        f32s(r.iter().map(|x| x.relevance_score)),
        Arc::new(images.finish()),
        strings(r.iter().map(|x| Some(x.source_file.as_str()))),
        Arc::new(offsets.finish()),
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| SchemaError::arrow(file, e))
}

/// Reads the records of `batch`, whose first row is row `first_row` of `file`.
pub fn from_batch(file: &str, first_row: usize, batch: &RecordBatch) -> Result<Vec<PairRecord>> {
    use columns::*;
    let s = |name| column::<StringArray>(file, batch, name);
    let (key, url, page_url, text) = (s(KEY)?, s(URL)?, s(PAGE_URL)?, s(TEXT)?);
    let (text_source, language, status) = (s(TEXT_SOURCE)?, s(LANGUAGE)?, s(STATUS)?);
    let (drop_reason, error_message, sha256) = (s(DROP_REASON)?, s(ERROR_MESSAGE)?, s(SHA256)?);
    let source_file = s(SOURCE_FILE)?;
    let f = |name| column::<Float32Array>(file, batch, name);
    let (language_score, nsfw, relevance) =
        (f(LANGUAGE_SCORE)?, f(NSFW_SCORE)?, f(RELEVANCE_SCORE)?);
    let u = |name| column::<UInt32Array>(file, batch, name);
    let (width, height) = (u(WIDTH)?, u(HEIGHT)?);
    let (original_width, original_height) = (u(ORIGINAL_WIDTH)?, u(ORIGINAL_HEIGHT)?);
    let http = column::<UInt16Array>(file, batch, HTTP_STATUS)?;
    let phash = column::<UInt64Array>(file, batch, PERCEPTUAL_HASH)?;
    let offset = column::<UInt64Array>(file, batch, SOURCE_OFFSET)?;
    let image = column::<BinaryArray>(file, batch, IMAGE)?;

    let string = |a: &StringArray, i| opt(a, i).map(|i| a.value(i).to_owned());
    (0..batch.num_rows())
        .map(|i| {
            let row = first_row + i;
            let status = Status::parse(status.value(i)).ok_or_else(|| {
                SchemaError::row(
                    file,
                    row,
                    STATUS,
                    format!("unknown status `{}`", status.value(i)),
                )
            })?;
            let text_source = match opt(text_source, i) {
                None => None,
                Some(i) => Some(TextSource::parse(text_source.value(i)).ok_or_else(|| {
                    SchemaError::row(
                        file,
                        row,
                        TEXT_SOURCE,
                        format!("unknown text source `{}`", text_source.value(i)),
                    )
                })?),
            };
            Ok(PairRecord {
                key: key.value(i).to_owned(),
                url: url.value(i).to_owned(),
                page_url: string(page_url, i),
                text: string(text, i),
                text_source,
                language: string(language, i),
                language_score: opt(language_score, i).map(|i| language_score.value(i)),
                status,
                drop_reason: string(drop_reason, i),
                error_message: string(error_message, i),
                http_status: opt(http, i).map(|i| http.value(i)),
                width: opt(width, i).map(|i| width.value(i)),
                height: opt(height, i).map(|i| height.value(i)),
                original_width: opt(original_width, i).map(|i| original_width.value(i)),
                original_height: opt(original_height, i).map(|i| original_height.value(i)),
                sha256: string(sha256, i),
                perceptual_hash: opt(phash, i).map(|i| phash.value(i)),
                nsfw_score: opt(nsfw, i).map(|i| nsfw.value(i)),
                relevance_score: opt(relevance, i).map(|i| relevance.value(i)),
                image: opt(image, i).map(|i| image.value(i).to_vec()),
                source_file: source_file.value(i).to_owned(),
                source_offset: opt(offset, i).map(|i| offset.value(i)),
            })
        })
        .collect()
}

/// Writes `records` as a pair shard into `out` and returns `out`.
pub fn write<W: Write + Send>(file: &str, out: W, records: &[PairRecord]) -> Result<W> {
    let options = WriteOptions {
        uncompressed_columns: vec![columns::IMAGE.to_owned()],
        ..WriteOptions::default()
    };
    let batches: Vec<RecordBatch> = records
        .chunks(options.row_group_rows)
        .map(|chunk| to_batch(file, chunk))
        .collect::<Result<_>>()?;
    parquet_io::write(file, out, ID, &schema(), &options, &batches)
}

/// Opens a pair shard for streaming, refusing a file of another schema or version.
pub fn open<R: ChunkReader + 'static>(file: &str, input: R) -> Result<ValidatedReader> {
    ValidatedReader::open(
        file,
        input,
        ID,
        &schema(),
        parquet_io::DEFAULT_ROW_GROUP_ROWS,
    )
}

/// Reads every record of a pair shard.
pub fn read<R: ChunkReader + 'static>(file: &str, input: R) -> Result<Vec<PairRecord>> {
    let mut reader = open(file, input)?;
    let mut records = Vec::with_capacity(reader.num_rows());
    while let Some(batch) = reader.next_batch() {
        let (first_row, batch) = batch?;
        records.extend(from_batch(file, first_row, &batch)?);
    }
    Ok(records)
}
