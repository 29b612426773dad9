//! Streaming reader for WARC files (ISO 28500, `WARC/1.0` and `WARC/1.1`): Common Crawl's WARC,
//! WAT and WET files all share this framing.
//!
//! - Input is any [`BufRead`]; plain and gzip input are told apart by the gzip magic bytes, never
//!   by the file name. Gzip input may be one member per record (what Common Crawl writes) or any
//!   other split into members, including one member for the whole file.
//! - Records are read one at a time: memory holds one record's headers and body, never the file.
//!   Bodies longer than [`WarcReader::max_body_bytes`] are cut (the rest is skipped unread and
//!   [`WarcRecord::body_truncated`] is set).
//! - Line ends may be CRLF (the standard) or bare LF. Blank lines between records are skipped.
//!
//! # Offsets
//! Every record carries two offsets:
//! - [`WarcRecord::offset`]: where its `WARC/` version line starts in the *decompressed* stream
//!   (for plain input, the file offset).
//! - [`WarcRecord::member_offset`]: for gzip input, where the gzip member that holds the version
//!   line starts in the *compressed* file. This is the offset Common Crawl's CDX/columnar
//!   indexes store: seek there and decompress one member to get the record back.
//!
//! [`WarcRecord::file_offset`] gives the one to seek to in the file on disk (the member offset for
//! gzip, the plain offset otherwise); candidates store that one as `source_offset`.
//!
//! # Errors
//! A [`WarcError`] names the file, the record's offsets and what went wrong. After an error in
//! the framing (truncated record, bad version line, bad gzip) the position in the stream is
//! unknown, so the iterator ends.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::bufread::GzDecoder;

/// The two bytes every gzip member starts with.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Default cap on the body kept in memory for one record (64 MiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 << 20;

/// Cap on one record's header block; more than this is refused as not WARC.
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// Buffer size for reading files and for decompressed output.
const BUFFER_BYTES: usize = 64 << 10;

/// One WARC record: version, headers in file order, and its (possibly cut) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarcRecord {
    /// The version line, e.g. `WARC/1.0`.
    pub version: String,
    /// Header fields in file order, names as written; continuation lines are folded in.
    pub headers: Vec<(String, String)>,
    /// The record block: the first `min(content_length, max_body_bytes)` bytes.
    pub body: Vec<u8>,
    /// `Content-Length` as declared.
    pub content_length: u64,
    /// True when the body was cut at the reader's `max_body_bytes`.
    pub body_truncated: bool,
    /// Offset of the version line in the decompressed stream (the file offset for plain input).
    pub offset: u64,
    /// For gzip input, offset in the compressed file of the gzip member holding the version line.
    pub member_offset: Option<u64>,
}

impl WarcRecord {
    /// The first header named `name` (ASCII case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `WARC-Type`, e.g. `response`, `request`, `metadata`, `conversion`, `warcinfo`.
    pub fn warc_type(&self) -> Option<&str> {
        self.header("WARC-Type")
    }

    /// `WARC-Target-URI`, with the angle brackets that some WARC/1.1 writers add removed.
    pub fn target_uri(&self) -> Option<&str> {
        self.header("WARC-Target-URI").map(|uri| {
            uri.strip_prefix('<')
                .and_then(|u| u.strip_suffix('>'))
                .unwrap_or(uri)
        })
    }

    /// `WARC-Record-ID`.
    pub fn record_id(&self) -> Option<&str> {
        self.header("WARC-Record-ID")
    }

    /// The record's `Content-Type` (of the block, e.g. `application/http; msgtype=response`).
    pub fn content_type(&self) -> Option<&str> {
        self.header("Content-Type")
    }

    /// The offset to seek to in the file on disk: the gzip member's for gzip input, else
    /// [`offset`](Self::offset).
    pub fn file_offset(&self) -> u64 {
        self.member_offset.unwrap_or(self.offset)
    }
}

/// What went wrong with a record; see [`WarcError`] for where.
#[derive(Debug, thiserror::Error)]
pub enum WarcErrorKind {
    /// Reading or decompressing failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// A record was expected but the line does not start with `WARC/`.
    #[error("expected a `WARC/` version line, found {0:?}")]
    BadVersionLine(String),
    /// The header block ended (end of input) before its blank line.
    #[error("header block truncated: input ended before the blank line that ends it")]
    TruncatedHeaders,
    /// The header block is longer than the reader accepts.
    #[error("header block longer than {0} bytes")]
    HeadersTooLong(u64),
    /// A header line is neither `Name: value` nor a continuation.
    #[error("malformed header line {0:?}")]
    BadHeader(String),
    /// No `Content-Length` header.
    #[error("no Content-Length header")]
    MissingContentLength,
    /// `Content-Length` is not a number.
    #[error("Content-Length {0:?} is not a number")]
    BadContentLength(String),
    /// The input ended inside the body.
    #[error("body truncated: Content-Length is {expected} bytes but the input ended after {got}")]
    TruncatedBody {
        /// Declared `Content-Length`.
        expected: u64,
        /// Bytes actually present.
        got: u64,
    },
    /// The record was read but its payload could not be understood (e.g. bad WAT JSON).
    #[error("bad payload: {0}")]
    Payload(String),
}

/// An error in one record of one file.
#[derive(Debug)]
pub struct WarcError {
    /// The file (or other input) name given to the reader.
    pub file: String,
    /// [`WarcRecord::offset`] of the record the error is in.
    pub offset: u64,
    /// [`WarcRecord::member_offset`] of the record the error is in.
    pub member_offset: Option<u64>,
    /// What went wrong.
    pub kind: WarcErrorKind,
}

impl WarcError {
    /// An error about `record` (for callers that interpret payloads).
    pub fn payload(file: &str, record: &WarcRecord, message: impl Into<String>) -> Self {
        WarcError {
            file: file.to_owned(),
            offset: record.offset,
            member_offset: record.member_offset,
            kind: WarcErrorKind::Payload(message.into()),
        }
    }
}

impl fmt::Display for WarcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: WARC record at offset {}", self.file, self.offset)?;
        if let Some(member) = self.member_offset {
            write!(f, " (decompressed; gzip member at offset {member})")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl std::error::Error for WarcError {}

/// Wraps a [`BufRead`] and counts the bytes consumed from it.
#[derive(Debug)]
struct Counting<R> {
    inner: R,
    position: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount);
        self.position += amount as u64;
    }
}

enum GzipState<R> {
    /// Between members (or before the first): the compressed reader, positioned at a member.
    Between(Counting<R>),
    /// Decoding the member that starts at `start`.
    Member {
        decoder: GzDecoder<Counting<R>>,
        start: u64,
    },
    /// A decode error left the stream in an unknown state.
    Failed,
}

/// Decompresses gzip members one after another and exposes them as one [`BufRead`] whose buffer
/// never spans two members, so that the member holding the next byte is always known.
struct GzipMembers<R> {
    state: GzipState<R>,
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
    /// Compressed offset of the member the buffered bytes came from.
    buffered_member: u64,
}

impl<R: BufRead> GzipMembers<R> {
    fn new(reader: R) -> Self {
        GzipMembers {
            state: GzipState::Between(Counting {
                inner: reader,
                position: 0,
            }),
            buffer: vec![0; BUFFER_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            buffered_member: 0,
        }
    }
}

impl<R: BufRead> Read for GzipMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for GzipMembers<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.start == self.end {
            match std::mem::replace(&mut self.state, GzipState::Failed) {
                GzipState::Between(mut reader) => {
                    if reader.fill_buf()?.is_empty() {
                        self.state = GzipState::Between(reader);
                        break;
                    }
                    let start = reader.position;
                    self.state = GzipState::Member {
                        decoder: GzDecoder::new(reader),
                        start,
                    };
                }
                GzipState::Member { mut decoder, start } => {
                    // On error the state stays `Failed`: the stream cannot be resynchronised.
                    let n = decoder.read(&mut self.buffer)?;
                    if n == 0 {
                        self.state = GzipState::Between(decoder.into_inner());
                    } else {
                        self.start = 0;
                        self.end = n;
                        self.buffered_member = start;
                        self.state = GzipState::Member { decoder, start };
                    }
                }
                GzipState::Failed => {
                    return Err(io::Error::other("gzip stream already failed"));
                }
            }
        }
        Ok(&self.buffer[self.start..self.end])
    }

    fn consume(&mut self, amount: usize) {
        self.start = (self.start + amount).min(self.end);
    }
}

/// Plain or gzip input, chosen from the first bytes.
enum Input<R> {
    Plain(R),
    Gzip(Box<GzipMembers<R>>),
}

impl<R: BufRead> Input<R> {
    /// Offset of the gzip member holding the next byte; call after a non-empty `fill_buf`.
    fn member_offset(&self) -> Option<u64> {
        match self {
            Input::Plain(_) => None,
            Input::Gzip(g) => Some(g.buffered_member),
        }
    }
}

impl<R: BufRead> Read for Input<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::Plain(r) => r.read(buf),
            Input::Gzip(g) => g.read(buf),
        }
    }
}

impl<R: BufRead> BufRead for Input<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self {
            Input::Plain(r) => r.fill_buf(),
            Input::Gzip(g) => g.fill_buf(),
        }
    }

    fn consume(&mut self, amount: usize) {
        match self {
            Input::Plain(r) => r.consume(amount),
            Input::Gzip(g) => g.consume(amount),
        }
    }
}

/// Reads WARC records one by one; an [`Iterator`] of `Result<WarcRecord, WarcError>`.
pub struct WarcReader<R> {
    name: String,
    input: Input<R>,
    /// Bytes consumed from the decompressed stream.
    position: u64,
    max_body_bytes: u64,
    done: bool,
}

impl WarcReader<BufReader<File>> {
    /// Opens a WARC, WAT or WET file, plain or gzip.
    pub fn open(path: &Path) -> Result<Self, WarcError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| WarcError {
            file: name.clone(),
            offset: 0,
            member_offset: None,
            kind: WarcErrorKind::Io(e),
        })?;
        Self::new(name, BufReader::with_capacity(BUFFER_BYTES, file))
    }
}

impl<R: BufRead> WarcReader<R> {
    /// Reads records from `reader`; `name` labels errors. Gzip is detected by its magic bytes.
    pub fn new(name: impl Into<String>, mut reader: R) -> Result<Self, WarcError> {
        let name = name.into();
        let is_gzip = match reader.fill_buf() {
            Ok(head) => head.starts_with(&GZIP_MAGIC),
            Err(e) => {
                return Err(WarcError {
                    file: name,
                    offset: 0,
                    member_offset: None,
                    kind: WarcErrorKind::Io(e),
                });
            }
        };
        let input = if is_gzip {
            Input::Gzip(Box::new(GzipMembers::new(reader)))
        } else {
            Input::Plain(reader)
        };
        Ok(WarcReader {
            name,
            input,
            position: 0,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            done: false,
        })
    }

    /// Sets the cap on the body kept per record (the rest is skipped).
    pub fn with_max_body_bytes(mut self, max_body_bytes: u64) -> Self {
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// The cap on the body kept per record.
    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }

    /// The name errors are labelled with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the input is gzip.
    pub fn is_gzip(&self) -> bool {
        matches!(self.input, Input::Gzip(_))
    }

    /// Reads one line (up to and including `\n`, at most `limit` bytes) into `line`.
    fn read_line(&mut self, line: &mut Vec<u8>, limit: u64) -> io::Result<usize> {
        let n = (&mut self.input).take(limit).read_until(b'\n', line)?;
        self.position += n as u64;
        Ok(n)
    }

    /// Reads the next record; `Ok(None)` at a clean end of input.
    fn read_record(&mut self) -> Result<Option<WarcRecord>, WarcError> {
        let mut at = (self.position, self.input.member_offset());
        let error = |at: (u64, Option<u64>), name: &str, kind: WarcErrorKind| WarcError {
            file: name.to_owned(),
            offset: at.0,
            member_offset: at.1,
            kind,
        };
        let mut line = Vec::new();
        // Find the version line, skipping blank lines left over from the previous record.
        loop {
            match self.input.fill_buf() {
                Ok([]) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(error(at, &self.name, e.into())),
            }
            at = (self.position, self.input.member_offset());
            line.clear();
            self.read_line(&mut line, MAX_HEADER_BYTES)
                .map_err(|e| error(at, &self.name, e.into()))?;
            if !trim_line_end(&line).is_empty() {
                break;
            }
        }
        let version_line = trim_line_end(&line);
        if !version_line.starts_with(b"WARC/") {
            let shown = String::from_utf8_lossy(&version_line[..version_line.len().min(80)]);
            return Err(error(
                at,
                &self.name,
                WarcErrorKind::BadVersionLine(shown.into_owned()),
            ));
        }
        let version = String::from_utf8_lossy(version_line).trim().to_owned();

        let mut headers: Vec<(String, String)> = Vec::new();
        let mut header_bytes = 0u64;
        loop {
            line.clear();
            let n = self
                .read_line(
                    &mut line,
                    MAX_HEADER_BYTES - header_bytes.min(MAX_HEADER_BYTES),
                )
                .map_err(|e| error(at, &self.name, e.into()))?;
            header_bytes += n as u64;
            if n == 0 {
                let kind = if header_bytes >= MAX_HEADER_BYTES {
                    WarcErrorKind::HeadersTooLong(MAX_HEADER_BYTES)
                } else {
                    WarcErrorKind::TruncatedHeaders
                };
                return Err(error(at, &self.name, kind));
            }
            if !line.ends_with(b"\n") {
                let kind = if header_bytes >= MAX_HEADER_BYTES {
                    WarcErrorKind::HeadersTooLong(MAX_HEADER_BYTES)
                } else {
                    WarcErrorKind::TruncatedHeaders
                };
                return Err(error(at, &self.name, kind));
            }
            let text = trim_line_end(&line);
            if text.is_empty() {
                break;
            }
            let text = String::from_utf8_lossy(text);
            if text.starts_with([' ', '\t'])
                && let Some((_, value)) = headers.last_mut()
            {
                value.push(' ');
                value.push_str(text.trim());
                continue;
            }
            match text.split_once(':') {
                Some((name, value)) if !name.trim().is_empty() => {
                    headers.push((name.trim().to_owned(), value.trim().to_owned()));
                }
                _ => {
                    return Err(error(
                        at,
                        &self.name,
                        WarcErrorKind::BadHeader(text.chars().take(80).collect()),
                    ));
                }
            }
        }

        let length_text = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| error(at, &self.name, WarcErrorKind::MissingContentLength))?;
        let content_length: u64 = length_text
            .parse()
            .map_err(|_| error(at, &self.name, WarcErrorKind::BadContentLength(length_text)))?;

        let kept = content_length.min(self.max_body_bytes);
        let mut body = Vec::with_capacity(kept.min(BUFFER_BYTES as u64 * 16) as usize);
        let got = (&mut self.input)
            .take(kept)
            .read_to_end(&mut body)
            .map_err(|e| error(at, &self.name, e.into()))? as u64;
        self.position += got;
        let mut total = got;
        if got == kept && kept < content_length {
            let skipped = io::copy(
                &mut (&mut self.input).take(content_length - kept),
                &mut io::sink(),
            )
            .map_err(|e| error(at, &self.name, e.into()))?;
            self.position += skipped;
            total += skipped;
        }
        if total < content_length {
            return Err(error(
                at,
                &self.name,
                WarcErrorKind::TruncatedBody {
                    expected: content_length,
                    got: total,
                },
            ));
        }
        Ok(Some(WarcRecord {
            version,
            headers,
            body,
            content_length,
            body_truncated: kept < content_length,
            offset: at.0,
            member_offset: at.1,
        }))
    }
}

impl<R: BufRead> Iterator for WarcReader<R> {
    type Item = Result<WarcRecord, WarcError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.read_record() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl<R: BufRead> std::iter::FusedIterator for WarcReader<R> {}

/// `line` without its trailing `\n` or `\r\n`.
fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn record(kind: &str, uri: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Target-URI: {uri}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n\r\n");
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn read_all(bytes: &[u8]) -> Vec<Result<WarcRecord, WarcError>> {
        WarcReader::new("test.warc", bytes).unwrap().collect()
    }

    #[test]
    fn reads_plain_records_with_offsets_and_headers() {
        let first = record("request", "http://example.com/", b"GET / HTTP/1.1\r\n\r\n");
        let second = record(
            "response",
            "http://example.com/",
            b"HTTP/1.1 200 OK\r\n\r\nhi",
        );
        let input = [first.clone(), second].concat();
        let records: Vec<_> = read_all(&input).into_iter().map(Result::unwrap).collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].offset, 0);
        assert_eq!(records[0].member_offset, None);
        assert_eq!(records[1].offset, first.len() as u64);
        assert_eq!(records[1].file_offset(), first.len() as u64);
        assert_eq!(records[0].version, "WARC/1.0");
        assert_eq!(records[0].warc_type(), Some("request"));
        assert_eq!(records[1].header("warc-type"), Some("response"));
        assert_eq!(records[1].target_uri(), Some("http://example.com/"));
        assert_eq!(records[1].body, b"HTTP/1.1 200 OK\r\n\r\nhi");
        assert_eq!(records[1].headers[0].0, "WARC-Type");
    }

    #[test]
    fn tolerates_bare_lf_continuations_and_angle_brackets() {
        let input = b"WARC/1.1\nWARC-Type: resource\nWARC-Target-URI: <http://example.com/a>\nX-Long: one\n  two\nContent-Length: 3\n\nabc\n\n\n";
        let records: Vec<_> = read_all(input).into_iter().map(Result::unwrap).collect();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].target_uri(), Some("http://example.com/a"));
        assert_eq!(records[0].header("X-Long"), Some("one two"));
        assert_eq!(records[0].body, b"abc");
    }

    #[test]
    fn gzip_members_give_compressed_offsets() {
        let first = gzip(&record("response", "http://example.com/1", b"one"));
        let second = gzip(&record("response", "http://example.com/2", b"second body"));
        let input = [first.clone(), second].concat();
        let reader = WarcReader::new("test.warc.gz", &input[..]).unwrap();
        assert!(reader.is_gzip());
        let records: Vec<_> = reader.map(Result::unwrap).collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].member_offset, Some(0));
        assert_eq!(records[1].member_offset, Some(first.len() as u64));
        assert_eq!(records[1].file_offset(), first.len() as u64);
        let plain_first = record("response", "http://example.com/1", b"one");
        assert_eq!(records[1].offset, plain_first.len() as u64);
        assert_eq!(records[1].body, b"second body");
    }

    #[test]
    fn single_gzip_member_holding_many_records() {
        let plain = [
            record("request", "http://example.com/", b"a"),
            record("response", "http://example.com/", b"bb"),
        ]
        .concat();
        let records: Vec<_> = read_all(&gzip(&plain))
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.member_offset == Some(0)));
        assert!(records[1].offset > 0);
    }

    #[test]
    fn truncated_body_names_file_and_offset() {
        let good = record("request", "http://example.com/", b"a");
        let mut bad = record("response", "http://example.com/", b"0123456789");
        bad.truncate(bad.len() - 8);
        let input = [good.clone(), bad].concat();
        let results = read_all(&input);
        assert_eq!(results.len(), 2);
        assert!(results[0].is_ok());
        let error = results[1].as_ref().unwrap_err();
        assert_eq!(error.offset, good.len() as u64);
        assert!(matches!(
            error.kind,
            WarcErrorKind::TruncatedBody {
                expected: 10,
                got: 6
            }
        ));
        let message = error.to_string();
        assert!(message.contains("test.warc"), "{message}");
        assert!(
            message.contains(&format!("offset {}", good.len())),
            "{message}"
        );
    }

    #[test]
    fn truncated_gzip_member_is_an_error_at_its_offset() {
        let first = gzip(&record("request", "http://example.com/", b"a"));
        let mut second = gzip(&record("response", "http://example.com/", b"0123456789"));
        second.truncate(second.len() / 2);
        let input = [first.clone(), second].concat();
        let results = read_all(&input);
        assert!(results[0].is_ok());
        let error = results.last().unwrap().as_ref().unwrap_err();
        assert_eq!(error.member_offset, Some(first.len() as u64));
        assert!(error.to_string().contains("test.warc"));
    }

    #[test]
    fn garbage_between_records_is_reported() {
        let input = [
            record("request", "http://example.com/", b"a"),
            b"not a warc line\r\n".to_vec(),
        ]
        .concat();
        let results = read_all(&input);
        assert_eq!(results.len(), 2);
        let error = results[1].as_ref().unwrap_err();
        assert!(matches!(error.kind, WarcErrorKind::BadVersionLine(_)));
    }

    #[test]
    fn missing_content_length_and_truncated_headers() {
        let results = read_all(b"WARC/1.0\r\nWARC-Type: request\r\n\r\n");
        assert!(matches!(
            results[0].as_ref().unwrap_err().kind,
            WarcErrorKind::MissingContentLength
        ));
        let results = read_all(b"WARC/1.0\r\nWARC-Type: request\r\n");
        assert!(matches!(
            results[0].as_ref().unwrap_err().kind,
            WarcErrorKind::TruncatedHeaders
        ));
    }

    #[test]
    fn long_bodies_are_cut_and_skipped() {
        let input = [
            record("resource", "http://example.com/big", &[b'x'; 1000]),
            record("resource", "http://example.com/small", b"y"),
        ]
        .concat();
        let records: Vec<_> = WarcReader::new("t", &input[..])
            .unwrap()
            .with_max_body_bytes(10)
            .map(Result::unwrap)
            .collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].body.len(), 10);
        assert!(records[0].body_truncated);
        assert_eq!(records[0].content_length, 1000);
        assert_eq!(records[1].body, b"y");
        assert!(!records[1].body_truncated);
    }

    #[test]
    fn empty_input_has_no_records() {
        assert!(read_all(b"").is_empty());
        assert!(read_all(b"\r\n\r\n").is_empty());
    }
}
