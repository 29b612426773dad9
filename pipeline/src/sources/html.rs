//! `<img>` candidates from HTML pages: URL, `alt`, `title` and the text around each image.
//!
//! Parser: [`scraper`] over `html5ever`, Servo's implementation of the WHATWG HTML parsing
//! algorithm. Web pages are often malformed and archive payloads are often cut mid-document;
//! html5ever recovers from both exactly as browsers do (implied `<p>`/`<tbody>`, unclosed tags,
//! misnested tags), and scraper gives a DOM tree whose ancestors and descendants are easy to walk
//! for the "surrounding text" step. `lol_html` streams but cannot look back up the tree for an
//! enclosing block, and `tl` is not a spec parser. A page is at most a few MiB (Common Crawl cuts
//! payloads at 1 MiB), so a whole DOM per page is cheap next to fetching its images.
//!
//! Rules, per `<img>` element (one candidate per occurrence, no de-duplication):
//! - URL: the first of `data-src`, `data-lazy-src`, `data-original` (lazy-loading scripts put
//!   the real image there and a placeholder in `src`), `src`, then the first candidate of
//!   `srcset` / `data-srcset`, that resolves to an `http`/`https` URL. `data:` URIs and other
//!   schemes are skipped. Resolution is against the first `<base href>` (itself resolved against
//!   the page URL), else the page URL.
//! - `alt` and `title`: whitespace-collapsed; blank means `None`.
//! - context: the text of the `<figcaption>` of the enclosing `<figure>` if there is one; else the
//!   text of the nearest enclosing block element (`p`, `div`, `li`, `td`, ...) that has a letter
//!   or digit, looking at most [`HtmlOptions::max_context_blocks`] blocks up and never at
//!   `<body>` itself, cut to [`HtmlOptions::max_context_chars`] around the image's position
//!   (whole words, nearest first on both sides). Text in `script`, `style`, `noscript`,
//!   `template` and form controls is ignored.
//! - Charset: BOM, else the HTTP `Content-Type` charset, else a `<meta>` charset in the first
//!   1024 bytes, else UTF-8 if the bytes are valid UTF-8, else windows-1252 (see
//!   [`decode_html`]).

use std::borrow::Cow;
use std::io::BufRead;

use ego_tree::iter::Edge;
use ego_tree::{NodeId, NodeRef};
use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE, WINDOWS_1252};
use scraper::node::Node;
use scraper::{ElementRef, Html};
use url::Url;

use super::http::{HttpResponse, MediaType};
use super::warc::{WarcReader, WarcRecord};
use super::{
    Candidate, RecordCandidates, RecordExtractor, RecordOutcome, clean_text, document_base,
    resolve_image_url,
};

/// Knobs for HTML extraction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtmlOptions {
    /// Longest context kept, in characters.
    pub max_context_chars: usize,
    /// How many enclosing block elements to try for context before giving up.
    pub max_context_blocks: usize,
    /// Longest HTML payload parsed, in bytes; the rest is ignored (parsed as a cut page).
    pub max_html_bytes: usize,
}

impl Default for HtmlOptions {
    fn default() -> Self {
        HtmlOptions {
            max_context_chars: 300,
            max_context_blocks: 3,
            max_html_bytes: 4 << 20,
        }
    }
}

/// An image found on a page, before the input file is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageImage {
    /// Absolute image URL.
    pub url: String,
    /// Cleaned `alt`.
    pub alt: Option<String>,
    /// Cleaned `title`.
    pub title: Option<String>,
    /// Surrounding text.
    pub context: Option<String>,
}

/// Why a WARC record gave no page to search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not a `response` record, nor a `resource` record holding HTML.
    NotResponse,
    /// The block is not an HTTP response (no status line or no end of head).
    NotHttp,
    /// The HTTP status is not 2xx.
    HttpStatus(u16),
    /// The payload is not `text/html` / `application/xhtml+xml` (or has no Content-Type).
    NotHtml,
    /// No `WARC-Target-URI`, or it is not an absolute `http`/`https` URL.
    BadPageUrl,
}

impl Skip {
    /// A short machine-readable name for stats.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NotResponse => "not_response",
            Skip::NotHttp => "not_http",
            Skip::HttpStatus(_) => "http_status",
            Skip::NotHtml => "not_html",
            Skip::BadPageUrl => "bad_page_url",
        }
    }
}

/// A page to search, with where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// The page's URL.
    pub url: &'a str,
    /// The HTML bytes as served.
    pub body: &'a [u8],
    /// Charset from the HTTP `Content-Type`, if any.
    pub charset: Option<&'a str>,
    /// The input file, copied into each candidate.
    pub source_file: &'a str,
    /// The record's offset, copied into each candidate.
    pub source_offset: Option<u64>,
}

/// Decodes HTML bytes to text; returns the text and the encoding used.
/// Order: byte-order mark, `http_charset`, a `<meta charset>` / `<meta http-equiv>` in the first
/// 1024 bytes (UTF-16 there means UTF-8, as in the HTML standard), UTF-8 if valid, windows-1252.
/// Labels follow the WHATWG Encoding standard (`iso-8859-1` decodes as windows-1252).
pub fn decode_html<'a>(
    bytes: &'a [u8],
    http_charset: Option<&str>,
) -> (Cow<'a, str>, &'static Encoding) {
    if let Some((encoding, bom_length)) = Encoding::for_bom(bytes) {
        let text = encoding.decode_without_bom_handling(&bytes[bom_length..]).0;
        return (text, encoding);
    }
    let declared = http_charset
        .and_then(|label| Encoding::for_label(label.trim().as_bytes()))
        .or_else(|| {
            meta_charset(&bytes[..bytes.len().min(1024)]).map(|encoding| {
                if encoding == UTF_16LE || encoding == UTF_16BE {
                    UTF_8
                } else {
                    encoding
                }
            })
        });
    let encoding = declared.unwrap_or_else(|| {
        if std::str::from_utf8(bytes).is_ok() {
            UTF_8
        } else {
            WINDOWS_1252
        }
    });
    (encoding.decode_without_bom_handling(bytes).0, encoding)
}

/// Finds a charset declared in a `<meta>` tag of `head` (a simplified HTML prescan).
fn meta_charset(head: &[u8]) -> Option<&'static Encoding> {
    let lower = head.to_ascii_lowercase();
    let mut rest = &lower[..];
    while let Some(start) = find(rest, b"<meta") {
        let tag = &rest[start..];
        let end = tag.iter().position(|&b| b == b'>').unwrap_or(tag.len());
        let tag = &tag[..end];
        if let Some(at) = find(tag, b"charset") {
            let value = tag[at + 7..].trim_ascii_start();
            if let Some(value) = value.strip_prefix(b"=") {
                let value = value
                    .trim_ascii_start()
                    .strip_prefix(b"\"")
                    .or_else(|| value.trim_ascii_start().strip_prefix(b"'"))
                    .unwrap_or(value.trim_ascii_start());
                let label_end = value
                    .iter()
                    .position(|b| {
                        matches!(b, b'"' | b'\'' | b';' | b'/' | b'>') || b.is_ascii_whitespace()
                    })
                    .unwrap_or(value.len());
                if let Some(encoding) = Encoding::for_label(&value[..label_end]) {
                    return Some(encoding);
                }
            }
        }
        rest = &rest[start + 5..];
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Elements whose text is never context.
const IGNORED: &[&str] = &[
    "script", "style", "noscript", "template", "head", "title", "select", "option", "textarea",
    "button",
];

/// Block-level elements: context boundaries, and word breaks in collected text.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "caption",
    "center",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hgroup",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "ul",
];

fn is_block(name: &str) -> bool {
    BLOCKS.contains(&name)
}

/// Finds every `<img>` in `html` and resolves its URL against the page's base.
pub fn extract_images(html: &str, page_url: &Url, options: &HtmlOptions) -> Vec<PageImage> {
    let document = Html::parse_document(html);
    let root = document.root_element();
    let base_href = root
        .descendent_elements()
        .find(|e| e.value().name() == "base" && e.value().attr("href").is_some())
        .and_then(|e| e.value().attr("href"));
    let base = document_base(page_url, base_href);
    root.descendent_elements()
        .filter(|e| e.value().name() == "img")
        .filter_map(|img| {
            let url = image_url(&img, &base)?;
            Some(PageImage {
                url,
                alt: img.value().attr("alt").and_then(clean_text),
                title: img.value().attr("title").and_then(clean_text),
                context: context_for(img, options),
            })
        })
        .collect()
}

/// The image URL of an `<img>` (see the module doc for the attribute order).
fn image_url(img: &ElementRef<'_>, base: &Url) -> Option<String> {
    let element = img.value();
    let plain = ["data-src", "data-lazy-src", "data-original", "src"]
        .into_iter()
        .filter_map(|name| element.attr(name));
    let from_srcset = ["srcset", "data-srcset"]
        .into_iter()
        .filter_map(|name| element.attr(name))
        .filter_map(first_srcset_url);
    plain
        .chain(from_srcset)
        .find_map(|reference| resolve_image_url(base, reference))
}

/// The URL of the first image candidate in a `srcset` value.
fn first_srcset_url(srcset: &str) -> Option<&str> {
    let srcset = srcset.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == ',');
    let end = srcset
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(srcset.len());
    let url = srcset[..end].trim_end_matches(',');
    (!url.is_empty()).then_some(url)
}

/// The text around `img`: its figure's caption, else its nearest block's text around it.
fn context_for(img: ElementRef<'_>, options: &HtmlOptions) -> Option<String> {
    let max = options.max_context_chars;
    if max == 0 {
        return None;
    }
    let ancestors = || {
        img.ancestors()
            .filter_map(ElementRef::wrap)
            .take_while(|e| !matches!(e.value().name(), "body" | "html"))
    };
    if let Some(figure) = ancestors().find(|e| e.value().name() == "figure") {
        let caption = figure
            .child_elements()
            .find(|e| e.value().name() == "figcaption")
            .and_then(|caption| {
                let mut text = String::new();
                subtree_text(*caption, &mut text, max.saturating_mul(4).max(256));
                window("", &text, max)
            });
        if caption.is_some() {
            return caption;
        }
    }
    ancestors()
        .filter(|e| is_block(e.value().name()))
        .take(options.max_context_blocks)
        .find_map(|block| {
            let (before, after) = text_around(block, img, max);
            window(&before, &after, max)
        })
}

/// Siblings read on each side at each level when looking for context.
const MAX_CONTEXT_SIBLINGS: usize = 64;

/// Text of `block` around `img`: `(before, after)`. Walks outward from the image (previous
/// siblings, then the parent's previous siblings, ... up to `block`; likewise forward), stopping
/// once each side has well over `max_chars` or [`MAX_CONTEXT_SIBLINGS`] siblings were read, so a
/// block with thousands of images costs little.
fn text_around(block: ElementRef<'_>, img: ElementRef<'_>, max_chars: usize) -> (String, String) {
    let enough = max_chars.saturating_mul(4).max(256);
    let mut before_pieces: Vec<String> = Vec::new();
    let mut before_length = 0;
    let mut after = String::new();
    let mut node = *img;
    while node.id() != block.id() {
        for sibling in node.prev_siblings().take(MAX_CONTEXT_SIBLINGS) {
            if before_length > enough {
                break;
            }
            let mut piece = String::new();
            subtree_text(sibling, &mut piece, usize::MAX);
            before_length += piece.len();
            before_pieces.push(piece);
        }
        for sibling in node.next_siblings().take(MAX_CONTEXT_SIBLINGS) {
            if after.len() > enough {
                break;
            }
            subtree_text(sibling, &mut after, enough);
        }
        let Some(parent) = node.parent() else { break };
        if parent
            .value()
            .as_element()
            .is_some_and(|e| is_block(e.name()))
        {
            before_pieces.push(" ".into());
            after.push(' ');
        }
        node = parent;
    }
    before_pieces.reverse();
    (before_pieces.concat(), after)
}

/// Appends the text of `node`'s subtree to `out`, a space at block boundaries, `<br>` and `<img>`;
/// skips [`IGNORED`] elements; stops adding once `out` is longer than `limit` bytes.
fn subtree_text(node: NodeRef<'_, Node>, out: &mut String, limit: usize) {
    let mut ignoring: Option<NodeId> = None;
    for edge in node.traverse() {
        if out.len() > limit {
            return;
        }
        match edge {
            Edge::Open(node) => {
                if ignoring.is_some() {
                    continue;
                }
                match node.value() {
                    Node::Text(text) => out.push_str(text),
                    Node::Element(element) => {
                        let name = element.name();
                        if IGNORED.contains(&name) {
                            ignoring = Some(node.id());
                        } else if is_block(name) || name == "br" || name == "img" {
                            out.push(' ');
                        }
                    }
                    _ => {}
                }
            }
            Edge::Close(node) => {
                if ignoring == Some(node.id()) {
                    ignoring = None;
                } else if ignoring.is_none()
                    && node
                        .value()
                        .as_element()
                        .is_some_and(|e| is_block(e.name()))
                {
                    out.push(' ');
                }
            }
        }
    }
}

/// At most `max` characters of whole words around the split point: the nearest words on each
/// side first, alternating. A first word longer than `max` is cut. `None` if there is no letter
/// or digit at all (a block holding only `:` or `|` separators is no context).
fn window(before: &str, after: &str, max: usize) -> Option<String> {
    let before: Vec<&str> = before.split_whitespace().collect();
    let after: Vec<&str> = after.split_whitespace().collect();
    let (mut b, mut a) = (before.len(), 0);
    let mut length = 0;
    let mut turn_before = true;
    loop {
        let take_before = (turn_before && b > 0) || a == after.len();
        let word = if take_before {
            if b == 0 {
                break;
            }
            before[b - 1]
        } else {
            after[a]
        };
        let added = word.chars().count() + usize::from(length > 0);
        if length + added > max {
            break;
        }
        length += added;
        if take_before {
            b -= 1;
        } else {
            a += 1;
        }
        turn_before = !turn_before;
    }
    if !before
        .iter()
        .chain(&after)
        .any(|w| w.chars().any(char::is_alphanumeric))
    {
        return None;
    }
    let words: Vec<&str> = before[b..].iter().chain(&after[..a]).copied().collect();
    if words.is_empty() {
        // Only a word longer than `max` was near: cut it.
        let word = before.last().or(after.first())?;
        return Some(word.chars().take(max).collect());
    }
    Some(words.join(" "))
}

/// Candidates from one HTML page.
pub fn candidates_from_page(
    page: &Page<'_>,
    options: &HtmlOptions,
) -> Result<Vec<Candidate>, Skip> {
    let page_url = Url::parse(page.url).map_err(|_| Skip::BadPageUrl)?;
    if !matches!(page_url.scheme(), "http" | "https") {
        return Err(Skip::BadPageUrl);
    }
    let body = &page.body[..page.body.len().min(options.max_html_bytes)];
    let (html, _encoding) = decode_html(body, page.charset);
    Ok(extract_images(&html, &page_url, options)
        .into_iter()
        .map(|image| Candidate {
            url: image.url,
            page_url: page.url.to_owned(),
            caption: None,
            alt: image.alt,
            title: image.title,
            context: image.context,
            source_file: page.source_file.to_owned(),
            source_offset: page.source_offset,
        })
        .collect())
}

/// Candidates from one WARC record: a `response` holding a 2xx HTML HTTP response, or a
/// `resource` record whose own Content-Type is HTML. Other records give a [`Skip`].
pub fn candidates_from_record(
    record: &WarcRecord,
    source_file: &str,
    options: &HtmlOptions,
) -> Result<Vec<Candidate>, Skip> {
    let page_url = record.target_uri().ok_or(Skip::BadPageUrl);
    let media: MediaType;
    let response;
    let body: &[u8] = match record.warc_type() {
        Some("response") => {
            response =
                HttpResponse::parse(&record.body, options.max_html_bytes).ok_or(Skip::NotHttp)?;
            if let Some(status) = response.status
                && !(200..300).contains(&status)
            {
                return Err(Skip::HttpStatus(status));
            }
            media = response.media_type().ok_or(Skip::NotHtml)?;
            &response.body
        }
        Some("resource") => {
            media = record
                .content_type()
                .map(MediaType::parse)
                .ok_or(Skip::NotHtml)?;
            &record.body
        }
        _ => return Err(Skip::NotResponse),
    };
    if !media.is_html() {
        return Err(Skip::NotHtml);
    }
    let page = Page {
        url: page_url?,
        body,
        charset: media.charset.as_deref(),
        source_file,
        source_offset: Some(record.file_offset()),
    };
    candidates_from_page(&page, options)
}

/// How HTML pages in WARC response records become candidates.
pub struct HtmlExtractor {
    options: HtmlOptions,
}

impl RecordExtractor for HtmlExtractor {
    fn extract(&self, record: &WarcRecord, file: &str) -> RecordOutcome {
        match candidates_from_record(record, file, &self.options) {
            Ok(candidates) => RecordOutcome::Page(candidates),
            Err(skip) => RecordOutcome::Skipped(skip.as_str()),
        }
    }
}

/// Streams the candidates of every HTML page in a WARC file.
pub type HtmlCandidates<R> = RecordCandidates<R, HtmlExtractor>;

impl<R: BufRead> HtmlCandidates<R> {
    /// Searches every record `records` yields.
    pub fn new(records: WarcReader<R>, options: HtmlOptions) -> Self {
        RecordCandidates::with_extractor(records, HtmlExtractor { options })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "http://example.com/dir/page.html";

    fn images(html: &str) -> Vec<PageImage> {
        extract_images(html, &Url::parse(PAGE).unwrap(), &HtmlOptions::default())
    }

    #[test]
    fn alt_title_and_relative_urls() {
        let found = images(
            r#"<html><body>
            <img src="a.jpg" alt=" A  red
              fox " title="Fox">
            <img src="../up.png">
            <img src="//cdn.example.org/x/y.gif" alt="">
            <img src="?size=2">
            <img src="/root.jpg#top">
            </body></html>"#,
        );
        let urls: Vec<&str> = found.iter().map(|i| i.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://example.com/dir/a.jpg",
                "http://example.com/up.png",
                "http://cdn.example.org/x/y.gif",
                "http://example.com/dir/page.html?size=2",
                "http://example.com/root.jpg",
            ]
        );
        assert_eq!(found[0].alt.as_deref(), Some("A red fox"));
        assert_eq!(found[0].title.as_deref(), Some("Fox"));
        assert_eq!(found[1].alt, None, "missing alt");
        assert_eq!(found[2].alt, None, "empty alt");
    }

    #[test]
    fn base_href_wins_over_page_url() {
        let found = images(
            r#"<html><head><base href="https://static.example.net/assets/"></head>
            <body><img src="cat.jpg"><img src="/abs.jpg"><img src="http://other.example.com/o.jpg"></body></html>"#,
        );
        let urls: Vec<&str> = found.iter().map(|i| i.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://static.example.net/assets/cat.jpg",
                "https://static.example.net/abs.jpg",
                "http://other.example.com/o.jpg",
            ]
        );
        // A relative base resolves against the page first.
        let found = images(r#"<base href="../media/"><img src="d.jpg">"#);
        assert_eq!(found[0].url, "http://example.com/media/d.jpg");
    }

    #[test]
    fn data_uris_and_other_schemes_skipped() {
        let found = images(
            r#"<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="pixel">
            <img src="javascript:void(0)"><img src="mailto:a@example.com"><img>
            <img src="data:image/gif;base64,AAAA" data-src="/real.jpg" alt="lazy">
            <img srcset=" small.jpg 1x, big.jpg 2x" alt="set">"#,
        );
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].url, "http://example.com/real.jpg");
        assert_eq!(found[0].alt.as_deref(), Some("lazy"));
        assert_eq!(found[1].url, "http://example.com/dir/small.jpg");
    }

    #[test]
    fn figcaption_is_context() {
        let found = images(
            r#"<p>Unrelated intro.</p><figure><img src="f.jpg" alt="x">
            <figcaption>  A lighthouse   at dusk. </figcaption></figure>"#,
        );
        assert_eq!(found[0].context.as_deref(), Some("A lighthouse at dusk."));
    }

    #[test]
    fn block_text_around_image_is_context() {
        let found = images(
            r#"<div><p>Our trip to <b>Lisbon</b>:<br><img src="l.jpg"> the tram <script>var x = 1;</script>was yellow.</p></div>
            <div><span><img src="lonely.jpg"></span></div><div>text of a sibling</div>"#,
        );
        assert_eq!(
            found[0].context.as_deref(),
            Some("Our trip to Lisbon: the tram was yellow.")
        );
        // No text in any enclosing block (and <body> is never used).
        assert_eq!(found[1].context, None);
    }

    #[test]
    fn context_is_cut_around_the_image() {
        let before = (0..100)
            .map(|i| format!("b{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let after = (0..100)
            .map(|i| format!("a{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let html = format!(r#"<p>{before} <img src="x.jpg"> {after}</p>"#);
        let options = HtmlOptions {
            max_context_chars: 20,
            ..HtmlOptions::default()
        };
        let found = extract_images(&html, &Url::parse(PAGE).unwrap(), &options);
        let context = found[0].context.as_deref().unwrap();
        assert!(context.chars().count() <= 20, "{context}");
        assert!(context.contains("b99 a0"), "{context}");
        assert!(!context.contains("b0 "), "{context}");
    }

    #[test]
    fn window_rules() {
        assert_eq!(
            window("one two", "three", 100).as_deref(),
            Some("one two three")
        );
        assert_eq!(window("", "", 10), None);
        assert_eq!(window("", "abcdefghijkl", 5).as_deref(), Some("abcde"));
        assert_eq!(window("x y z", "", 3).as_deref(), Some("y z"));
        assert_eq!(window(" : ", "|", 10), None);
    }

    #[test]
    fn malformed_html_still_yields_images() {
        let found = images(
            "<html><body><div><p>unclosed <table><tr><td><img src=a.jpg alt=unquoted>cell\
             <p><img src='b.jpg' alt=\"b\" <i>broken <img src=\"c.jpg\"",
        );
        let urls: Vec<&str> = found.iter().map(|i| i.url.as_str()).collect();
        assert!(urls.contains(&"http://example.com/dir/a.jpg"), "{urls:?}");
        assert!(urls.contains(&"http://example.com/dir/b.jpg"), "{urls:?}");
        assert_eq!(found[0].alt.as_deref(), Some("unquoted"));
        // The unclosed <p> and the broken tag end up inside the same table cell.
        assert_eq!(found[0].context.as_deref(), Some("cell broken"));
    }

    #[test]
    fn windows_1252_from_http_header() {
        // "Café über" in windows-1252: é = 0xE9, ü = 0xFC; “ ” = 0x93 0x94.
        let body = b"<p><img src=\"c.jpg\" alt=\"Caf\xe9 \x93\xfcber\x94\"></p>".to_vec();
        let page = Page {
            url: PAGE,
            body: &body,
            charset: Some("windows-1252"),
            source_file: "f",
            source_offset: Some(7),
        };
        let found = candidates_from_page(&page, &HtmlOptions::default()).unwrap();
        assert_eq!(
            found[0].alt.as_deref(),
            Some("Caf\u{e9} \u{201c}\u{fc}ber\u{201d}")
        );
        assert_eq!(found[0].source_offset, Some(7));
        // Same bytes, no header: not UTF-8, so windows-1252 is guessed.
        let page = Page {
            charset: None,
            ..page
        };
        let found = candidates_from_page(&page, &HtmlOptions::default()).unwrap();
        assert_eq!(
            found[0].alt.as_deref(),
            Some("Caf\u{e9} \u{201c}\u{fc}ber\u{201d}")
        );
        // A <meta> charset is honoured when the header has none.
        let mut with_meta =
            b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=iso-8859-15\">"
                .to_vec();
        with_meta.extend_from_slice(&body);
        with_meta.extend_from_slice(b"<img src=\"e.jpg\" alt=\"\xa4\">");
        let page = Page {
            body: &with_meta,
            charset: None,
            ..page
        };
        let found = candidates_from_page(&page, &HtmlOptions::default()).unwrap();
        assert_eq!(found[1].alt.as_deref(), Some("\u{20ac}"));
    }

    #[test]
    fn decode_html_prefers_bom_then_header() {
        let (text, encoding) = decode_html(b"\xEF\xBB\xBFh\xC3\xA9", Some("windows-1252"));
        assert_eq!(encoding, UTF_8);
        assert_eq!(text, "h\u{e9}");
        let (text, encoding) = decode_html(b"h\xC3\xA9", Some("latin1"));
        assert_eq!(encoding, WINDOWS_1252);
        assert_eq!(text, "h\u{c3}\u{a9}");
        let (_, encoding) = decode_html(b"<meta charset='utf-16'>", None);
        assert_eq!(encoding, UTF_8);
    }

    fn warc_record(warc_type: &str, block: &[u8]) -> WarcRecord {
        WarcRecord {
            version: "WARC/1.0".into(),
            headers: vec![
                ("WARC-Type".into(), warc_type.into()),
                ("WARC-Target-URI".into(), PAGE.into()),
                (
                    "Content-Type".into(),
                    "application/http; msgtype=response".into(),
                ),
            ],
            body: block.to_vec(),
            content_length: block.len() as u64,
            body_truncated: false,
            offset: 10,
            member_offset: Some(3),
        }
    }

    #[test]
    fn warc_response_records() {
        let ok = warc_record(
            "response",
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<img src=i.jpg alt=I>",
        );
        let found = candidates_from_record(&ok, "x.warc.gz", &HtmlOptions::default()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].url, "http://example.com/dir/i.jpg");
        assert_eq!(found[0].page_url, PAGE);
        assert_eq!(found[0].source_file, "x.warc.gz");
        assert_eq!(found[0].source_offset, Some(3));

        let image = warc_record(
            "response",
            b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8",
        );
        assert_eq!(
            candidates_from_record(&image, "x", &HtmlOptions::default()),
            Err(Skip::NotHtml)
        );
        let missing = warc_record(
            "response",
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n\r\n<img src=a>",
        );
        assert_eq!(
            candidates_from_record(&missing, "x", &HtmlOptions::default()),
            Err(Skip::HttpStatus(404))
        );
        let request = warc_record("request", b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            candidates_from_record(&request, "x", &HtmlOptions::default()),
            Err(Skip::NotResponse)
        );
    }
}
