//! `<img>` candidates from Common Crawl WAT files: the link metadata Common Crawl extracted from
//! each HTML response, without the page itself (so candidates have no context).
//!
//! A WAT file is a WARC file of `metadata` records whose JSON payload describes one record of the
//! original WARC. Only descriptions of `response` records with `HTML-Metadata` are used:
//!
//! ```text
//! Envelope
//!   WARC-Header-Metadata        { WARC-Type, WARC-Target-URI, ... }      (the described record)
//!   Payload-Metadata
//!     HTTP-Response-Metadata
//!       Response-Message        { Status, ... }
//!       HTML-Metadata
//!         Head                  { Title, Base, ... }
//!         Links [ { path: "IMG@/src", url, alt?, title? }, ... ]
//! Container                     { Filename, Offset, ... }              (where it is in the WARC)
//! ```
//!
//! Attribute values in WAT files are the raw HTML attribute text: entities are not decoded
//! (`&amp;` appears in URLs), and URLs are as written in the page. Both are fixed here: entities
//! are decoded, then the URL is resolved against `Head.Base` (itself resolved against the page
//! URL), else the page URL. Non-`http(s)` results, `data:` URIs among them, are dropped.

use std::borrow::Cow;
use std::io::BufRead;

use serde::Deserialize;
use url::Url;

use super::warc::{WarcError, WarcReader, WarcRecord};
use super::{
    Candidate, RecordCandidates, RecordExtractor, RecordOutcome, clean_text, document_base,
    resolve_image_url,
};

/// The `path` of image links in WAT `Links`.
pub const IMG_SRC_PATH: &str = "IMG@/src";

/// Where the described record sits in the original WARC file (from the WAT `Container`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarcOrigin {
    /// The original WARC file name.
    pub filename: String,
    /// The record's (gzip member) offset in it.
    pub offset: u64,
}

/// One image link of a page, as WAT lists it and as resolved here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatImage {
    /// The `url` value as in the WAT.
    pub raw_url: String,
    /// Absolute `http`/`https` URL; `None` if it does not resolve to one.
    pub url: Option<String>,
    /// Cleaned `alt`.
    pub alt: Option<String>,
    /// Cleaned `title`.
    pub title: Option<String>,
}

/// One HTML page described by a WAT record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatPage {
    /// The page URL (`WARC-Target-URI` of the described response).
    pub page_url: String,
    /// The base URL image links were resolved against.
    pub base_url: String,
    /// The page's `<title>`, cleaned.
    pub page_title: Option<String>,
    /// The HTTP status, if the WAT gives one that parses.
    pub http_status: Option<u16>,
    /// Where the described response is in the original WARC.
    pub origin: Option<WarcOrigin>,
    /// Every `IMG@/src` link, in page order.
    pub images: Vec<WatImage>,
}

impl WatPage {
    /// One candidate per image link that resolved to an `http`/`https` URL.
    pub fn candidates(&self, source_file: &str, source_offset: Option<u64>) -> Vec<Candidate> {
        self.images
            .iter()
            .filter_map(|image| {
                Some(Candidate {
                    url: image.url.clone()?,
                    page_url: self.page_url.clone(),
                    caption: None,
                    alt: image.alt.clone(),
                    title: image.title.clone(),
                    context: None,
                    source_file: source_file.to_owned(),
                    source_offset,
                })
            })
            .collect()
    }
}

#[derive(Deserialize)]
struct WatJson {
    #[serde(rename = "Envelope")]
    envelope: Envelope,
    #[serde(rename = "Container")]
    container: Option<Container>,
}

#[derive(Deserialize)]
struct Container {
    #[serde(rename = "Filename")]
    filename: Option<String>,
    #[serde(rename = "Offset")]
    offset: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "WARC-Header-Metadata", default)]
    warc_header: WarcHeaderMetadata,
    #[serde(rename = "Payload-Metadata", default)]
    payload: PayloadMetadata,
}

#[derive(Deserialize, Default)]
struct WarcHeaderMetadata {
    #[serde(rename = "WARC-Type")]
    warc_type: Option<String>,
    #[serde(rename = "WARC-Target-URI")]
    target_uri: Option<String>,
}

#[derive(Deserialize, Default)]
struct PayloadMetadata {
    #[serde(rename = "HTTP-Response-Metadata")]
    http: Option<HttpResponseMetadata>,
}

#[derive(Deserialize)]
struct HttpResponseMetadata {
    #[serde(rename = "Response-Message")]
    response: Option<ResponseMessage>,
    #[serde(rename = "HTML-Metadata")]
    html: Option<HtmlMetadata>,
}

#[derive(Deserialize)]
struct ResponseMessage {
    #[serde(rename = "Status")]
    status: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct HtmlMetadata {
    #[serde(rename = "Head", default)]
    head: Head,
    #[serde(rename = "Links", default)]
    links: Vec<Link>,
}

#[derive(Deserialize, Default)]
struct Head {
    #[serde(rename = "Title")]
    title: Option<String>,
    #[serde(rename = "Base")]
    base: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Link {
    path: Option<String>,
    url: Option<String>,
    alt: Option<String>,
    title: Option<String>,
}

/// A number that WAT may write as a JSON string or number.
fn number(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::String(s) => s.trim().parse().ok(),
        other => other.as_u64(),
    }
}

/// Why a WAT record gave no page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not a `metadata` record with a JSON payload (e.g. the `warcinfo` record).
    NotMetadata,
    /// Describes a record other than a `response` (request, metadata, warcinfo).
    NotResponse,
    /// A response without `HTML-Metadata` (not HTML, or not parsed by Common Crawl).
    NoHtml,
    /// The HTTP status is not 2xx.
    HttpStatus(u16),
    /// No page URL, or not an absolute `http`/`https` URL.
    BadPageUrl,
}

impl Skip {
    /// A short machine-readable name for stats.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NotMetadata => "not_metadata",
            Skip::NotResponse => "not_response",
            Skip::NoHtml => "no_html_metadata",
            Skip::HttpStatus(_) => "http_status",
            Skip::BadPageUrl => "bad_page_url",
        }
    }
}

/// What a WAT record gives: a page, a reason to skip it, or a payload that is not valid JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatOutcome {
    /// An HTML page and its image links.
    Page(WatPage),
    /// Nothing to use in this record.
    Skipped(Skip),
    /// The JSON payload is malformed (message from the JSON parser).
    BadJson(String),
}

/// Reads the page described by one WAT record.
pub fn page_from_record(record: &WarcRecord) -> WatOutcome {
    let is_json = record.content_type().is_some_and(|t| {
        t.trim()
            .to_ascii_lowercase()
            .starts_with("application/json")
    });
    if record.warc_type() != Some("metadata") || !is_json {
        return WatOutcome::Skipped(Skip::NotMetadata);
    }
    let json: WatJson = match serde_json::from_slice(&record.body) {
        Ok(json) => json,
        Err(e) => return WatOutcome::BadJson(e.to_string()),
    };
    match page_from_json(json, record.target_uri()) {
        Ok(page) => WatOutcome::Page(page),
        Err(skip) => WatOutcome::Skipped(skip),
    }
}

fn page_from_json(json: WatJson, record_uri: Option<&str>) -> Result<WatPage, Skip> {
    let envelope = json.envelope;
    if envelope.warc_header.warc_type.as_deref() != Some("response") {
        return Err(Skip::NotResponse);
    }
    let http = envelope.payload.http.ok_or(Skip::NoHtml)?;
    let html = http.html.ok_or(Skip::NoHtml)?;
    let http_status = http
        .response
        .and_then(|r| r.status)
        .as_ref()
        .and_then(number)
        .and_then(|s| u16::try_from(s).ok());
    if let Some(status) = http_status
        && !(200..300).contains(&status)
    {
        return Err(Skip::HttpStatus(status));
    }
    let page_url_text = envelope
        .warc_header
        .target_uri
        .as_deref()
        .or(record_uri)
        .ok_or(Skip::BadPageUrl)?;
    let page_url = Url::parse(page_url_text).map_err(|_| Skip::BadPageUrl)?;
    if !matches!(page_url.scheme(), "http" | "https") {
        return Err(Skip::BadPageUrl);
    }
    let base_href = html.head.base.as_ref().and_then(|base| match base {
        serde_json::Value::String(s) => Some(s.as_str()),
        serde_json::Value::Object(o) => o.get("href").or(o.get("url")).and_then(|v| v.as_str()),
        _ => None,
    });
    let base_href = base_href.map(decode_entities);
    let base = document_base(&page_url, base_href.as_deref());
    let images = html
        .links
        .into_iter()
        .filter(|link| link.path.as_deref() == Some(IMG_SRC_PATH))
        .filter_map(|link| {
            let raw_url = link.url?;
            Some(WatImage {
                url: resolve_image_url(&base, &decode_entities(&raw_url)),
                raw_url,
                alt: link
                    .alt
                    .as_deref()
                    .map(decode_entities)
                    .as_deref()
                    .and_then(clean_text),
                title: link
                    .title
                    .as_deref()
                    .map(decode_entities)
                    .as_deref()
                    .and_then(clean_text),
            })
        })
        .collect();
    let origin = json.container.and_then(|c| {
        Some(WarcOrigin {
            filename: c.filename?,
            offset: number(c.offset.as_ref()?)?,
        })
    });
    Ok(WatPage {
        page_url: page_url_text.to_owned(),
        base_url: base.into(),
        page_title: html
            .head
            .title
            .as_deref()
            .map(decode_entities)
            .as_deref()
            .and_then(clean_text),
        http_status,
        origin,
        images,
    })
}

/// Decodes the HTML character references that appear in raw attribute values: `&amp;`, `&lt;`,
/// `&gt;`, `&quot;`, `&apos;`, `&nbsp;` and numeric ones (`&#233;`, `&#xE9;`). Others are kept.
pub fn decode_entities(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest.find(';').filter(|&end| end <= 10).and_then(|end| {
            let name = &rest[1..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => {
                    let code = if let Some(hex) =
                        name.strip_prefix("#x").or_else(|| name.strip_prefix("#X"))
                    {
                        u32::from_str_radix(hex, 16).ok()
                    } else {
                        name.strip_prefix('#').and_then(|dec| dec.parse().ok())
                    };
                    code.and_then(char::from_u32).filter(|&c| c != '\0')
                }
            };
            c.map(|c| (c, end + 1))
        });
        match decoded {
            Some((c, length)) => {
                out.push(c);
                rest = &rest[length..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// How WAT metadata records become candidates. A malformed JSON payload is an `Err` naming its
/// record; reading goes on after it.
pub struct WatExtractor;

impl RecordExtractor for WatExtractor {
    fn extract(&self, record: &WarcRecord, file: &str) -> RecordOutcome {
        match page_from_record(record) {
            WatOutcome::Page(page) => {
                RecordOutcome::Page(page.candidates(file, Some(record.file_offset())))
            }
            WatOutcome::Skipped(skip) => RecordOutcome::Skipped(skip.as_str()),
            WatOutcome::BadJson(message) => RecordOutcome::Failed(
                "bad_json",
                WarcError::payload(file, record, format!("WAT JSON: {message}")),
            ),
        }
    }
}

/// Streams the image candidates of every page described in a WAT file.
pub type WatCandidates<R> = RecordCandidates<R, WatExtractor>;

impl<R: BufRead> WatCandidates<R> {
    /// Reads every record `records` yields.
    pub fn new(records: WarcReader<R>) -> Self {
        RecordCandidates::with_extractor(records, WatExtractor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn wat_record(envelope: serde_json::Value) -> WarcRecord {
        let body = serde_json::to_vec(&envelope).unwrap();
        WarcRecord {
            version: "WARC/1.0".into(),
            headers: vec![
                ("WARC-Type".into(), "metadata".into()),
                ("WARC-Target-URI".into(), "http://example.com/p/".into()),
                ("Content-Type".into(), "application/json".into()),
            ],
            content_length: body.len() as u64,
            body,
            body_truncated: false,
            offset: 100,
            member_offset: None,
        }
    }

    fn response(head: serde_json::Value, links: serde_json::Value) -> serde_json::Value {
        json!({
            "Container": {"Filename": "orig.warc.gz", "Offset": "2520"},
            "Envelope": {
                "WARC-Header-Metadata": {
                    "WARC-Type": "response",
                    "WARC-Target-URI": "http://example.com/p/index.html?a=1"
                },
                "Payload-Metadata": {"HTTP-Response-Metadata": {
                    "Response-Message": {"Status": "200"},
                    "HTML-Metadata": {"Head": head, "Links": links}
                }}
            }
        })
    }

    fn page(value: serde_json::Value) -> WatPage {
        match page_from_record(&wat_record(value)) {
            WatOutcome::Page(page) => page,
            other => panic!("expected a page, got {other:?}"),
        }
    }

    #[test]
    fn image_links_resolved_and_decoded() {
        let page = page(response(
            json!({"Title": " My  page "}),
            json!([
                {"path": "A@/href", "url": "/x"},
                {"path": "IMG@/src", "url": "./img/a.jpg", "alt": "A &amp; B", "title": "T"},
                {"path": "IMG@/src", "url": "/b.png?x=1&amp;y=2"},
                {"path": "IMG@/src", "url": "data:image/png;base64,AAAA", "alt": "inline"},
                {"path": "IMG@/src", "url": "//cdn.example.org/c.gif", "alt": " "}
            ]),
        ));
        assert_eq!(page.page_title.as_deref(), Some("My page"));
        assert_eq!(page.http_status, Some(200));
        assert_eq!(
            page.origin,
            Some(WarcOrigin {
                filename: "orig.warc.gz".into(),
                offset: 2520
            })
        );
        assert_eq!(page.images.len(), 4);
        assert_eq!(
            page.images[0].url.as_deref(),
            Some("http://example.com/p/img/a.jpg")
        );
        assert_eq!(page.images[0].alt.as_deref(), Some("A & B"));
        assert_eq!(page.images[0].title.as_deref(), Some("T"));
        assert_eq!(
            page.images[1].url.as_deref(),
            Some("http://example.com/b.png?x=1&y=2")
        );
        assert_eq!(page.images[2].url, None);
        assert_eq!(page.images[3].alt, None);
        let candidates = page.candidates("f.wat", Some(100));
        assert_eq!(candidates.len(), 3);
        assert_eq!(
            candidates[0].page_url,
            "http://example.com/p/index.html?a=1"
        );
        assert_eq!(candidates[0].context, None);
        assert_eq!(candidates[0].source_offset, Some(100));
    }

    #[test]
    fn head_base_is_used() {
        let page = page(response(
            json!({"Base": "https://static.example.net/s/"}),
            json!([{"path": "IMG@/src", "url": "a.jpg"}, {"path": "IMG@/src", "url": "../b.jpg"}]),
        ));
        assert_eq!(page.base_url, "https://static.example.net/s/");
        assert_eq!(
            page.images[0].url.as_deref(),
            Some("https://static.example.net/s/a.jpg")
        );
        assert_eq!(
            page.images[1].url.as_deref(),
            Some("https://static.example.net/b.jpg")
        );
    }

    #[test]
    fn non_pages_are_skipped() {
        let request = json!({"Envelope": {"WARC-Header-Metadata": {"WARC-Type": "request"}}});
        assert_eq!(
            page_from_record(&wat_record(request)),
            WatOutcome::Skipped(Skip::NotResponse)
        );
        let no_html = json!({"Envelope": {
            "WARC-Header-Metadata": {"WARC-Type": "response"},
            "Payload-Metadata": {"HTTP-Response-Metadata": {}}
        }});
        assert_eq!(
            page_from_record(&wat_record(no_html)),
            WatOutcome::Skipped(Skip::NoHtml)
        );
        let mut bad = wat_record(json!({}));
        bad.body = b"{not json".to_vec();
        assert!(matches!(page_from_record(&bad), WatOutcome::BadJson(_)));
        let mut info = wat_record(json!({}));
        info.headers[0].1 = "warcinfo".into();
        assert_eq!(
            page_from_record(&info),
            WatOutcome::Skipped(Skip::NotMetadata)
        );
    }

    #[test]
    fn entities() {
        assert_eq!(decode_entities("a &amp; b"), "a & b");
        assert_eq!(
            decode_entities("&#233;&#xE9;&lt;&gt;&quot;"),
            "\u{e9}\u{e9}<>\""
        );
        assert_eq!(
            decode_entities("AT&T &unknown; & &#0;"),
            "AT&T &unknown; & &#0;"
        );
        assert!(matches!(decode_entities("plain"), Cow::Borrowed(_)));
    }
}
