//! Sources of candidate image–text pairs: the first step of LAIT ("parse image URLs and text from
//! HTML/DOM").
//!
//! - [`warc`]: streaming WARC/WAT/WET record reader, plain or gzip, with offsets.
//! - [`http`]: the HTTP response inside a WARC `response` record.
//! - [`html`]: `<img>` candidates (src, alt, title, surrounding text) from HTML pages, alone or
//!   straight from WARC files.
//! - [`wat`]: `<img>` candidates from Common Crawl WAT metadata (no page text, so no context).
//!
//! Every source yields [`Candidate`]s, one per image occurrence. Choosing the caption and cleaning
//! it is left to the filter stage; [`Candidate::text_options`] lists the texts in the order LAIT
//! prefers them.

pub mod html;
pub mod http;
pub mod warc;
pub mod wat;

use std::collections::BTreeMap;

use std::io::BufRead;

use schemas::pair_shard::TextSource;
use url::Url;

use self::warc::{WarcError, WarcReader, WarcRecord};

/// Counts kept while a source streams a file, for the ingest stage's accounting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// WARC records read.
    pub records: u64,
    /// Records that described a page and were searched for images.
    pub pages: u64,
    /// Candidates yielded.
    pub candidates: u64,
    /// Records passed over, by reason (e.g. `not_response`, `not_html`, `http_status`).
    pub skipped: BTreeMap<&'static str, u64>,
}

impl SourceStats {
    /// Counts one record passed over for `reason`.
    pub fn skip(&mut self, reason: &'static str) {
        *self.skipped.entry(reason).or_default() += 1;
    }
}

/// One image occurrence on one page, with the texts found next to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    /// Absolute `http`/`https` image URL, without fragment.
    pub url: String,
    /// The page the image was found on (its `WARC-Target-URI`); empty for URL-list rows that
    /// name no page.
    pub page_url: String,
    /// The caption given with the URL in an input list; `None` for images found on pages.
    pub caption: Option<String>,
    /// The `alt` attribute, whitespace-collapsed; `None` when missing or blank.
    pub alt: Option<String>,
    /// The image's `title` attribute, whitespace-collapsed; `None` when missing or blank.
    pub title: Option<String>,
    /// Text around the image (a `<figcaption>`, else the nearest enclosing block's text around
    /// the image), cut to the configured length; `None` for WAT input.
    pub context: Option<String>,
    /// The input file the candidate came from.
    pub source_file: String,
    /// Where its record starts in `source_file` (see [`warc::WarcRecord::file_offset`]).
    pub source_offset: Option<u64>,
}

impl Candidate {
    /// The non-empty texts of this candidate in LAIT preference order, a list's caption > alt >
    /// title > context, each with its [`TextSource`]; a text equal to an earlier one is listed once.
    pub fn text_options(&self) -> Vec<(&str, TextSource)> {
        let mut options: Vec<(&str, TextSource)> = Vec::with_capacity(3);
        let texts = [
            (self.caption.as_deref(), TextSource::Caption),
            (self.alt.as_deref(), TextSource::Alt),
            (self.title.as_deref(), TextSource::Title),
            (self.context.as_deref(), TextSource::Context),
        ];
        for (text, source) in texts {
            let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
                continue;
            };
            if options.iter().all(|(seen, _)| *seen != text) {
                options.push((text, source));
            }
        }
        options
    }
}

/// Collapses runs of whitespace to one space and trims; `None` if nothing is left.
pub fn clean_text(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    (!out.is_empty()).then_some(out)
}

/// Resolves an image reference against `base`, keeping only `http`/`https` URLs with a host.
/// `data:`, `javascript:` and other schemes, and empty references, give `None`. The fragment is
/// dropped (it never changes what is fetched).
pub fn resolve_image_url(base: &Url, reference: &str) -> Option<String> {
    let reference = reference.trim_matches(|c: char| c.is_ascii_whitespace());
    if reference.is_empty() {
        return None;
    }
    let mut url = base.join(reference).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return None;
    }
    url.set_fragment(None);
    Some(url.into())
}

/// The base URL for a page: `base_href` resolved against `page_url` when it gives an
/// `http`/`https` URL (the HTML rule ignores `data:` and `javascript:` bases), else `page_url`.
pub fn document_base(page_url: &Url, base_href: Option<&str>) -> Url {
    base_href
        .map(|href| href.trim_matches(|c: char| c.is_ascii_whitespace()))
        .filter(|href| !href.is_empty())
        .and_then(|href| page_url.join(href).ok())
        .filter(|base| matches!(base.scheme(), "http" | "https"))
        .unwrap_or_else(|| page_url.clone())
}

/// What one WARC record gave.
pub enum RecordOutcome {
    /// The record described a page; these are its candidates (possibly none).
    Page(Vec<Candidate>),
    /// The record was passed over, for the reason named.
    Skipped(&'static str),
    /// The record was broken: counted under the reason and reported; reading goes on.
    Failed(&'static str, WarcError),
}

/// How one kind of source turns a WARC record into candidates.
pub trait RecordExtractor {
    /// Candidates of `record`, read from `file`.
    fn extract(&self, record: &WarcRecord, file: &str) -> RecordOutcome;
}

/// Streams the candidates of every record of a WARC-format file, counting what it saw.
/// A framing error of the file ends the stream.
pub struct RecordCandidates<R, E> {
    records: WarcReader<R>,
    extractor: E,
    pending: std::vec::IntoIter<Candidate>,
    stats: SourceStats,
}

impl<R: BufRead, E: RecordExtractor> RecordCandidates<R, E> {
    /// Applies `extractor` to every record `records` yields.
    pub fn with_extractor(records: WarcReader<R>, extractor: E) -> Self {
        Self {
            records,
            extractor,
            pending: Vec::new().into_iter(),
            stats: SourceStats::default(),
        }
    }

    /// Counts so far.
    pub fn stats(&self) -> &SourceStats {
        &self.stats
    }
}

impl<R: BufRead, E: RecordExtractor> Iterator for RecordCandidates<R, E> {
    type Item = Result<Candidate, WarcError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(candidate) = self.pending.next() {
                return Some(Ok(candidate));
            }
            let record = match self.records.next()? {
                Ok(record) => record,
                Err(e) => return Some(Err(e)),
            };
            self.stats.records += 1;
            match self.extractor.extract(&record, self.records.name()) {
                RecordOutcome::Page(candidates) => {
                    self.stats.pages += 1;
                    self.stats.candidates += candidates.len() as u64;
                    self.pending = candidates.into_iter();
                }
                RecordOutcome::Skipped(reason) => self.stats.skip(reason),
                RecordOutcome::Failed(reason, error) => {
                    self.stats.skip(reason);
                    return Some(Err(error));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(alt: Option<&str>, title: Option<&str>, context: Option<&str>) -> Candidate {
        Candidate {
            url: "http://example.com/a.jpg".into(),
            page_url: "http://example.com/".into(),
            caption: None,
            alt: alt.map(Into::into),
            title: title.map(Into::into),
            context: context.map(Into::into),
            source_file: "f".into(),
            source_offset: Some(0),
        }
    }

    #[test]
    fn text_options_in_preference_order() {
        let c = candidate(Some("a dog"), Some("dog photo"), Some("my dog on a beach"));
        assert_eq!(
            c.text_options(),
            vec![
                ("a dog", TextSource::Alt),
                ("dog photo", TextSource::Title),
                ("my dog on a beach", TextSource::Context),
            ]
        );
        let c = candidate(None, Some("same"), Some("same"));
        assert_eq!(c.text_options(), vec![("same", TextSource::Title)]);
        let c = candidate(Some("  "), None, None);
        assert!(c.text_options().is_empty());
    }

    #[test]
    fn clean_text_collapses_whitespace() {
        assert_eq!(clean_text("  a \n\t b  ").as_deref(), Some("a b"));
        assert_eq!(clean_text(" \u{a0} "), None);
    }

    #[test]
    fn resolves_and_filters_schemes() {
        let base = Url::parse("http://example.com/dir/page.html?x=1").unwrap();
        let r = |s| resolve_image_url(&base, s);
        assert_eq!(r("a.jpg").as_deref(), Some("http://example.com/dir/a.jpg"));
        assert_eq!(r("../b.png").as_deref(), Some("http://example.com/b.png"));
        assert_eq!(
            r("//cdn.example.org/c.gif").as_deref(),
            Some("http://cdn.example.org/c.gif")
        );
        assert_eq!(
            r("?size=big").as_deref(),
            Some("http://example.com/dir/page.html?size=big")
        );
        assert_eq!(
            r(" /d.jpg#frag ").as_deref(),
            Some("http://example.com/d.jpg")
        );
        assert_eq!(r("data:image/png;base64,AAAA"), None);
        assert_eq!(r("javascript:void(0)"), None);
        assert_eq!(r("ftp://example.com/x.jpg"), None);
        assert_eq!(r(""), None);
    }

    #[test]
    fn document_base_rules() {
        let page = Url::parse("http://example.com/a/b.html").unwrap();
        assert_eq!(
            document_base(&page, Some("/img/")).as_str(),
            "http://example.com/img/"
        );
        assert_eq!(document_base(&page, Some("javascript:x")), page);
        assert_eq!(document_base(&page, None), page);
    }
}
