//! Input files of `pipeline ingest`, by kind, as one stream of rows.
//!
//! The kind comes from the file name (a trailing `.gz` means gzip):
//! - URL lists (img2dataset's inputs): `.parquet`, `.csv`, `.tsv`, `.jsonl` with a URL column and
//!   optionally caption and page columns (names in [`InputConfig`]);
//! - Common Crawl `.warc` (HTML pages in `response` records) and `.wat` (page metadata) files, plain
//!   or multi-member gzip;
//! - seed lists `.seeds` / `.seeds.txt`: page URLs, one per line, fetched and parsed by
//!   [`crate::seeds`].
//!
//! Every row of a list becomes exactly one [`InputRow`]: a [`Candidate`], or an
//! [`InputRow::Invalid`] naming the file and row when the row can't be used, so the output still
//! accounts for it. A file that can't be read at all is an error naming it.

use std::io::{BufRead, BufReader, Cursor, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::sources::html::{HtmlCandidates, HtmlOptions};
use crate::sources::warc::WarcReader;
use crate::sources::wat::WatCandidates;
use crate::sources::{Candidate, clean_text};

/// Where URL lists keep their fields. TOML table `[input]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputConfig {
    /// Column (CSV/TSV/Parquet) or key (JSONL) of the image URL. Default `"url"`.
    pub url_column: String,
    /// Column or key of the caption. Default `"caption"`; a list without it gives no text.
    pub caption_column: String,
    /// Column or key of the page the image was on. Default `"page_url"`; optional.
    pub page_column: String,
    /// Longest text kept around an image on an HTML page, characters. Default 300.
    pub max_context_chars: usize,
    /// Largest HTML page parsed, bytes (the rest is ignored). Default 4 MiB.
    pub max_html_bytes: usize,
}

impl Default for InputConfig {
    fn default() -> Self {
        let html = HtmlOptions::default();
        Self {
            url_column: "url".into(),
            caption_column: "caption".into(),
            page_column: "page_url".into(),
            max_context_chars: html.max_context_chars,
            max_html_bytes: html.max_html_bytes,
        }
    }
}

impl InputConfig {
    /// The HTML extraction options these settings give.
    pub fn html_options(&self) -> HtmlOptions {
        HtmlOptions {
            max_context_chars: self.max_context_chars,
            max_html_bytes: self.max_html_bytes,
            ..HtmlOptions::default()
        }
    }
}

/// The kinds of input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A Parquet URL list.
    Parquet,
    /// A comma-separated URL list with a header row.
    Csv,
    /// A tab-separated URL list with a header row.
    Tsv,
    /// One JSON object per line.
    Jsonl,
    /// A WARC file of crawled pages.
    Warc,
    /// A Common Crawl WAT metadata file.
    Wat,
    /// Page URLs to fetch and parse, one per line.
    Seeds,
}

/// An input's kind and whether it is gzip-compressed, from its name.
pub fn kind_of(name: &str) -> Result<(InputKind, bool)> {
    let lower = name.to_ascii_lowercase();
    let (stem, gzip) = match lower.strip_suffix(".gz") {
        Some(stem) => (stem, true),
        None => (lower.as_str(), false),
    };
    let kind = if stem.ends_with(".parquet") {
        InputKind::Parquet
    } else if stem.ends_with(".csv") {
        InputKind::Csv
    } else if stem.ends_with(".tsv") {
        InputKind::Tsv
    } else if stem.ends_with(".jsonl") || stem.ends_with(".ndjson") {
        InputKind::Jsonl
    } else if stem.ends_with(".wat") {
        InputKind::Wat
    } else if stem.ends_with(".warc") || stem.ends_with(".arc") {
        InputKind::Warc
    } else if stem.ends_with(".seeds") || stem.ends_with(".seeds.txt") {
        InputKind::Seeds
    } else {
        bail!(
            "{name}: unknown input kind (expected .parquet, .csv, .tsv, .jsonl, .warc, .wat or \
             .seeds, optionally .gz)"
        );
    };
    if gzip && kind == InputKind::Parquet {
        bail!("{name}: Parquet is compressed inside; a gzipped Parquet file is not supported");
    }
    Ok((kind, gzip))
}

/// The drop reason of a list row that can't be used.
pub const INVALID_INPUT: &str = "invalid_input";

/// One input row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputRow {
    /// A usable image occurrence.
    Candidate(Candidate),
    /// A row that could not be used (no URL, malformed line); it still becomes an output row.
    Invalid {
        /// The URL as far as it could be read (may be empty).
        url: String,
        /// The input file.
        source_file: String,
        /// The row (lists: 0-based data row; seed lists: 0-based line).
        source_offset: u64,
        /// Machine-readable code: `invalid_input`, `seed_page_failed`, `seed_page_no_images`.
        reason: String,
        /// What was wrong, naming file and row.
        message: String,
    },
}

impl InputRow {
    /// The image URL this row is about (empty if unknown).
    pub fn url(&self) -> &str {
        match self {
            InputRow::Candidate(c) => &c.url,
            InputRow::Invalid { url, .. } => url,
        }
    }

    /// A list row that can't be used ([`INVALID_INPUT`]); `message` names file and row.
    fn invalid(url: &str, source_file: &str, row: u64, message: String) -> Self {
        InputRow::Invalid {
            url: url.to_owned(),
            source_file: source_file.to_owned(),
            source_offset: row,
            reason: INVALID_INPUT.into(),
            message,
        }
    }
}

/// The bytes of one input file: a local file read in place, or an object fetched whole.
pub enum InputData {
    /// A local file.
    Local(std::path::PathBuf),
    /// An object read from object storage.
    Remote(Bytes),
}

/// Reads the input `uri`: local paths in place, `s3://`, `gs://`, `az://`, `file://` objects whole
/// through [`storage::Location`] (a Common Crawl WAT file is a few hundred MB).
pub async fn open_input(uri: &str) -> Result<InputData> {
    if !uri.contains("://") {
        let path = Path::new(uri);
        if !path.is_file() {
            bail!("{uri}: input file not found");
        }
        return Ok(InputData::Local(path.to_owned()));
    }
    let (parent, name) = uri
        .rsplit_once('/')
        .with_context(|| format!("{uri}: no file name"))?;
    let location = storage::Location::parse(parent)?;
    Ok(InputData::Remote(location.get(name).await?))
}

fn raw_reader(uri: &str, data: InputData, gzip: bool) -> Result<Box<dyn BufRead + Send>> {
    let raw: Box<dyn Read + Send> = match data {
        InputData::Local(path) => {
            Box::new(std::fs::File::open(&path).with_context(|| format!("opening input {uri}"))?)
        }
        InputData::Remote(bytes) => Box::new(Cursor::new(bytes)),
    };
    Ok(if gzip {
        Box::new(BufReader::with_capacity(1 << 16, MultiGzDecoder::new(raw)))
    } else {
        Box::new(BufReader::with_capacity(1 << 16, raw))
    })
}

/// The rows of input `uri` in file order. WARC/WAT files give their images' candidates; records
/// that fail to parse are logged with file and offset and skipped (they hold no row).
pub fn read_rows(
    uri: &str,
    data: InputData,
    config: &InputConfig,
) -> Result<Box<dyn Iterator<Item = InputRow> + Send>> {
    let (kind, gzip) = kind_of(uri)?;
    let source = uri.to_owned();
    match kind {
        InputKind::Parquet => {
            let rows = read_parquet_list(uri, data, config)?;
            Ok(Box::new(rows.into_iter()))
        }
        InputKind::Csv | InputKind::Tsv => {
            let delimiter = if kind == InputKind::Csv { b',' } else { b'\t' };
            let rows = read_delimited_list(uri, raw_reader(uri, data, gzip)?, delimiter, config)?;
            Ok(Box::new(rows))
        }
        InputKind::Jsonl => Ok(Box::new(read_jsonl_list(
            uri,
            raw_reader(uri, data, gzip)?,
            config,
        ))),
        InputKind::Warc => {
            let records = WarcReader::new(uri, raw_reader(uri, data, false)?)
                .with_context(|| format!("opening WARC {uri}"))?;
            let candidates = HtmlCandidates::new(records, config.html_options());
            Ok(Box::new(
                candidates.filter_map(move |item| log_record_errors(&source, item)),
            ))
        }
        InputKind::Wat => {
            let records = WarcReader::new(uri, raw_reader(uri, data, false)?)
                .with_context(|| format!("opening WAT {uri}"))?;
            let candidates = WatCandidates::new(records);
            Ok(Box::new(
                candidates.filter_map(move |item| log_record_errors(&source, item)),
            ))
        }
        InputKind::Seeds => {
            bail!("{uri}: seed lists are expanded by `crate::seeds`, not read as rows")
        }
    }
}

fn log_record_errors(
    source: &str,
    item: Result<Candidate, crate::sources::warc::WarcError>,
) -> Option<InputRow> {
    match item {
        Ok(candidate) => Some(InputRow::Candidate(candidate)),
        Err(error) => {
            tracing::warn!(input = source, %error, "skipping unreadable record");
            None
        }
    }
}

/// Turns one list row's fields into an [`InputRow`].
fn list_row(
    source_file: &str,
    row: u64,
    url: Option<&str>,
    caption: Option<&str>,
    page: Option<&str>,
) -> InputRow {
    let url = url.map(str::trim).unwrap_or_default();
    let parsed = url::Url::parse(url);
    match parsed {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
            InputRow::Candidate(Candidate {
                url: url.to_owned(),
                page_url: page.map(str::trim).unwrap_or_default().to_owned(),
                caption: caption.and_then(clean_text),
                alt: None,
                title: None,
                context: None,
                source_file: source_file.to_owned(),
                source_offset: Some(row),
            })
        }
        _ => InputRow::invalid(
            url,
            source_file,
            row,
            format!("{source_file} row {row}: not an http(s) image URL: {url:?}"),
        ),
    }
}

fn read_delimited_list(
    uri: &str,
    reader: Box<dyn BufRead + Send>,
    delimiter: u8,
    config: &InputConfig,
) -> Result<impl Iterator<Item = InputRow> + Send + use<>> {
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(reader);
    let headers = csv
        .headers()
        .with_context(|| format!("reading the header row of {uri}"))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let url_index = column(&config.url_column).with_context(|| {
        format!(
            "{uri}: no `{}` column in the header row (set input.url_column)",
            config.url_column
        )
    })?;
    let caption_index = column(&config.caption_column);
    let page_index = column(&config.page_column);
    let source = uri.to_owned();
    Ok(csv.into_records().enumerate().map(move |(row, record)| {
        let row = row as u64;
        match record {
            Ok(record) => list_row(
                &source,
                row,
                record.get(url_index),
                caption_index.and_then(|i| record.get(i)),
                page_index.and_then(|i| record.get(i)),
            ),
            Err(error) => {
                InputRow::invalid("", &source, row, format!("{source} row {row}: {error}"))
            }
        }
    }))
}

fn read_jsonl_list(
    uri: &str,
    reader: Box<dyn BufRead + Send>,
    config: &InputConfig,
) -> impl Iterator<Item = InputRow> + Send + use<> {
    let source = uri.to_owned();
    let config = config.clone();
    reader
        .lines()
        .enumerate()
        .filter(|(_, line)| line.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(move |(row, line)| {
            let row = row as u64;
            let invalid = |message: String| {
                let message = format!("{source} line {}: {message}", row + 1);
                InputRow::invalid("", &source, row, message)
            };
            let line = match line {
                Ok(line) => line,
                Err(error) => return invalid(error.to_string()),
            };
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(serde_json::Value::Object(object)) => {
                    let field = |name: &str| object.get(name).and_then(|v| v.as_str());
                    list_row(
                        &source,
                        row,
                        field(&config.url_column),
                        field(&config.caption_column),
                        field(&config.page_column),
                    )
                }
                Ok(_) => invalid("not a JSON object".into()),
                Err(error) => invalid(format!("invalid JSON: {error}")),
            }
        })
}

fn read_parquet_list(uri: &str, data: InputData, config: &InputConfig) -> Result<Vec<InputRow>> {
    let reader = match data {
        InputData::Local(path) => {
            let file =
                std::fs::File::open(&path).with_context(|| format!("opening input {uri}"))?;
            ParquetRecordBatchReaderBuilder::try_new(file)
                .with_context(|| format!("{uri}: not a Parquet file"))?
                .build()
        }
        InputData::Remote(bytes) => ParquetRecordBatchReaderBuilder::try_new(bytes)
            .with_context(|| format!("{uri}: not a Parquet file"))?
            .build(),
    }
    .with_context(|| format!("reading {uri}"))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.with_context(|| format!("reading {uri}"))?;
        let text_column = |name: &str, required: bool| -> Result<Option<Vec<Option<String>>>> {
            let Some(column) = batch.column_by_name(name) else {
                if required {
                    bail!("{uri}: no `{name}` column (set input.url_column)");
                }
                return Ok(None);
            };
            let values = match column.data_type() {
                DataType::Utf8 => column
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.map(str::to_owned))
                    .collect(),
                DataType::LargeUtf8 => column
                    .as_string::<i64>()
                    .iter()
                    .map(|v| v.map(str::to_owned))
                    .collect(),
                DataType::Utf8View => column
                    .as_string_view()
                    .iter()
                    .map(|v| v.map(str::to_owned))
                    .collect(),
                other => bail!("{uri}: column `{name}` is {other}, expected a string column"),
            };
            Ok(Some(values))
        };
        let urls = text_column(&config.url_column, true)?.unwrap_or_default();
        let captions = text_column(&config.caption_column, false)?;
        let pages = text_column(&config.page_column, false)?;
        for (i, url) in urls.iter().enumerate() {
            let row = rows.len() as u64;
            let caption = captions.as_ref().and_then(|c| c[i].as_deref());
            let page = pages.as_ref().and_then(|p| p[i].as_deref());
            rows.push(list_row(uri, row, url.as_deref(), caption, page));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_names() {
        assert_eq!(kind_of("a/b.parquet").unwrap(), (InputKind::Parquet, false));
        assert_eq!(kind_of("s3://x/y.TSV.gz").unwrap(), (InputKind::Tsv, true));
        assert_eq!(kind_of("CC-1.warc.wat.gz").unwrap(), (InputKind::Wat, true));
        assert_eq!(kind_of("CC-1.warc.gz").unwrap(), (InputKind::Warc, true));
        assert_eq!(
            kind_of("pages.seeds.txt").unwrap(),
            (InputKind::Seeds, false)
        );
        assert!(kind_of("x.parquet.gz").is_err());
        let error = kind_of("notes.md").unwrap_err();
        assert!(error.to_string().contains("notes.md"), "{error}");
    }

    #[test]
    fn bad_rows_are_kept_and_named() {
        let csv = "url,caption\nhttp://a.example/x.jpg,  a  dog \nftp://b/y.jpg,cat\n,empty\n";
        let rows: Vec<InputRow> = read_delimited_list(
            "list.csv",
            Box::new(Cursor::new(csv.as_bytes().to_vec())),
            b',',
            &InputConfig::default(),
        )
        .unwrap()
        .collect();
        assert_eq!(rows.len(), 3);
        let InputRow::Candidate(first) = &rows[0] else {
            panic!("{:?}", rows[0])
        };
        assert_eq!(first.caption.as_deref(), Some("a dog"));
        assert_eq!(first.source_offset, Some(0));
        let InputRow::Invalid {
            message,
            source_offset,
            ..
        } = &rows[1]
        else {
            panic!("{:?}", rows[1])
        };
        assert_eq!(*source_offset, 1);
        assert!(message.contains("list.csv row 1"), "{message}");
    }
}
