//! The HTTP message inside a WARC `response` record: status, headers, and the payload decoded
//! as far as crawl archives need.
//!
//! Common Crawl stores payloads already de-chunked and decompressed, yet often keeps the original
//! `Content-Encoding: gzip` / `Transfer-Encoding: chunked` headers (newer crawls rename them to
//! `X-Crawler-*`). Other crawlers store the raw bytes. So a payload is only gunzipped when the
//! header says gzip *and* the bytes start with the gzip magic, and only de-chunked when the header
//! says chunked *and* the bytes parse as chunks; otherwise the bytes are used as they are.

use std::borrow::Cow;
use std::io::Read;

use flate2::read::MultiGzDecoder;

use super::warc::GZIP_MAGIC;

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse<'a> {
    /// Status code from the status line, if it parses.
    pub status: Option<u16>,
    /// Header fields in order, names as written.
    pub headers: Vec<(String, String)>,
    /// The payload, de-chunked and gunzipped where that applies (see the module doc).
    pub body: Cow<'a, [u8]>,
}

/// A `Content-Type` value split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// `type/subtype`, lower-cased.
    pub mime: String,
    /// The `charset` parameter, unquoted, if any.
    pub charset: Option<String>,
}

impl MediaType {
    /// Parses a `Content-Type` header value.
    pub fn parse(value: &str) -> Self {
        let mut parts = value.split(';');
        let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let charset = parts.find_map(|param| {
            let (name, value) = param.split_once('=')?;
            name.trim().eq_ignore_ascii_case("charset").then(|| {
                value
                    .trim()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_owned()
            })
        });
        MediaType {
            mime,
            charset: charset.filter(|c| !c.is_empty()),
        }
    }

    /// True for `text/html` and `application/xhtml+xml`.
    pub fn is_html(&self) -> bool {
        self.mime == "text/html" || self.mime == "application/xhtml+xml"
    }
}

impl<'a> HttpResponse<'a> {
    /// Splits an HTTP response into status line, headers and body. `None` when `block` does not
    /// start with an `HTTP/` status line or has no blank line ending its head.
    /// `max_body_bytes` caps a gunzipped body.
    pub fn parse(block: &'a [u8], max_body_bytes: usize) -> Option<Self> {
        if !block.starts_with(b"HTTP/") {
            return None;
        }
        let (head, body) = split_head(block)?;
        let head = String::from_utf8_lossy(head);
        let mut lines = head.lines();
        let status = lines
            .next()?
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok());
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = headers.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
        let mut response = HttpResponse {
            status,
            headers,
            body: Cow::Borrowed(body),
        };
        if response.header_has("Transfer-Encoding", "chunked")
            && let Some(dechunked) = dechunk(&response.body)
        {
            response.body = Cow::Owned(dechunked);
        }
        let gzipped = response.header_has("Content-Encoding", "gzip")
            || response.header_has("Content-Encoding", "x-gzip");
        if gzipped
            && response.body.starts_with(&GZIP_MAGIC)
            && let Some(unzipped) = gunzip(&response.body, max_body_bytes)
        {
            response.body = Cow::Owned(unzipped);
        }
        Some(response)
    }

    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The parsed `Content-Type`, if there is one.
    pub fn media_type(&self) -> Option<MediaType> {
        self.header("Content-Type").map(MediaType::parse)
    }

    fn header_has(&self, name: &str, token: &str) -> bool {
        self.header(name).is_some_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    }
}

/// Splits at the first blank line (`\r\n\r\n` or `\n\n`, whichever comes first).
fn split_head(block: &[u8]) -> Option<(&[u8], &[u8])> {
    let crlf = find(block, b"\r\n\r\n").map(|i| (i, i + 4));
    let lf = find(block, b"\n\n").map(|i| (i, i + 2));
    let (head_end, body_start) = match (crlf, lf) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    Some((&block[..head_end], &block[body_start..]))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes `Transfer-Encoding: chunked`; `None` if `body` is not valid chunked data.
fn dechunk(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    loop {
        let line_end = find(rest, b"\n")?;
        let size_line = std::str::from_utf8(&rest[..line_end]).ok()?.trim();
        let size_hex = size_line.split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        rest = &rest[line_end + 1..];
        if size == 0 {
            return Some(out);
        }
        if rest.len() < size {
            // Truncated record (Common Crawl cuts long payloads): keep what is there.
            out.extend_from_slice(rest);
            return Some(out);
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
        rest = rest
            .strip_prefix(b"\r\n")
            .or_else(|| rest.strip_prefix(b"\n"))
            .unwrap_or(rest);
    }
}

/// Gunzips `body`, keeping at most `max_bytes`; a truncated stream keeps what decoded.
fn gunzip(body: &[u8], max_bytes: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let result = MultiGzDecoder::new(body)
        .take(max_bytes as u64)
        .read_to_end(&mut out);
    (result.is_ok() || !out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    #[test]
    fn parses_status_headers_and_body() {
        let block =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=\"ISO-8859-1\"\r\nX-A: 1\r\n\r\n<p>x";
        let response = HttpResponse::parse(block, 1 << 20).unwrap();
        assert_eq!(response.status, Some(200));
        assert_eq!(
            response.header("content-type").unwrap(),
            "text/html; charset=\"ISO-8859-1\""
        );
        let media = response.media_type().unwrap();
        assert_eq!(media.mime, "text/html");
        assert_eq!(media.charset.as_deref(), Some("ISO-8859-1"));
        assert!(media.is_html());
        assert_eq!(&response.body[..], b"<p>x");
    }

    #[test]
    fn lf_only_head_and_missing_head() {
        let response = HttpResponse::parse(b"HTTP/1.0 404 Not Found\nA: b\n\nbody", 100).unwrap();
        assert_eq!(response.status, Some(404));
        assert_eq!(&response.body[..], b"body");
        assert!(HttpResponse::parse(b"HTTP/1.1 200 OK\r\nA: b", 100).is_none());
        assert!(HttpResponse::parse(b"GET / HTTP/1.1\r\n\r\n", 100).is_none());
    }

    #[test]
    fn gzip_only_when_bytes_are_gzip() {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(b"<html>zipped</html>").unwrap();
        let zipped = encoder.finish().unwrap();
        let mut block = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n".to_vec();
        block.extend_from_slice(&zipped);
        let response = HttpResponse::parse(&block, 1 << 20).unwrap();
        assert_eq!(&response.body[..], b"<html>zipped</html>");
        // Already decoded by the crawler, header kept: bytes used as they are.
        let block = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n<html>plain</html>";
        let response = HttpResponse::parse(block, 1 << 20).unwrap();
        assert_eq!(&response.body[..], b"<html>plain</html>");
    }

    #[test]
    fn dechunks_when_valid() {
        let block =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        let response = HttpResponse::parse(block, 100).unwrap();
        assert_eq!(&response.body[..], b"hello world");
        let block = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n<html>not chunked";
        let response = HttpResponse::parse(block, 100).unwrap();
        assert_eq!(&response.body[..], b"<html>not chunked");
    }

    #[test]
    fn media_type_without_charset() {
        let media = MediaType::parse("Text/HTML");
        assert_eq!(media.mime, "text/html");
        assert_eq!(media.charset, None);
        assert!(!MediaType::parse("image/jpeg").is_html());
    }
}
