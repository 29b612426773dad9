//! `pipeline::sources` on a real Common Crawl sample (CC-MAIN-2014-35: one WARC with 4 captures,
//! its WAT and its WET), pinned in `scripts/assets.toml` and fetched by `scripts/fetch-assets`.
//! Also writes the WARC back out as gzip, one member per record as Common Crawl does, and reads it
//! again.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use flate2::Compression;
use flate2::write::GzEncoder;
use pipeline::sources::Candidate;
use pipeline::sources::html::{HtmlCandidates, HtmlOptions};
use pipeline::sources::warc::{WarcReader, WarcRecord};
use pipeline::sources::wat::{IMG_SRC_PATH, WatCandidates};
use url::Url;

const STEM: &str = "CC-MAIN-20140820021334-00006";

fn asset(extension: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/commoncrawl");
    let path = dir.join(format!("{STEM}.{extension}"));
    assert!(
        path.is_file(),
        "missing real Common Crawl fixture {}: run `scripts/fetch-assets` first",
        path.display()
    );
    path
}

fn read_records(extension: &str) -> Vec<WarcRecord> {
    WarcReader::open(&asset(extension))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn counts_by_type(records: &[WarcRecord]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        *counts
            .entry(record.warc_type().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    counts
}

fn html_candidates(reader: WarcReader<impl std::io::BufRead>) -> Vec<Candidate> {
    let mut source = HtmlCandidates::new(reader, HtmlOptions::default());
    let candidates: Vec<Candidate> = source.by_ref().collect::<Result<_, _>>().unwrap();
    let stats = source.stats();
    assert_eq!(stats.candidates, candidates.len() as u64);
    assert_eq!(stats.records, 13);
    assert_eq!(stats.pages, 3);
    assert_eq!(stats.skipped.get("not_response"), Some(&9));
    assert_eq!(stats.skipped.get("not_html"), Some(&1));
    candidates
}

#[test]
fn warc_records_by_type_and_offsets() {
    let records = read_records("warc");
    let counts = counts_by_type(&records);
    let expected: BTreeMap<String, usize> = [
        ("metadata", 4),
        ("request", 4),
        ("response", 4),
        ("warcinfo", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(counts, expected);
    // Offsets: the first record at 0, each next one right after the previous body and its
    // CRLF CRLF; checked against the bytes on disk.
    let bytes = std::fs::read(asset("warc")).unwrap();
    assert_eq!(records[0].offset, 0);
    for record in &records {
        assert!(bytes[record.offset as usize..].starts_with(b"WARC/1.0\r\n"));
        assert_eq!(record.member_offset, None);
        assert_eq!(record.body.len() as u64, record.content_length);
    }
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [
            0, 648, 1581, 2455, 3014, 3675, 11628, 12051, 12786, 236357, 236818, 237506, 255869
        ]
    );

    let wat = counts_by_type(&read_records("warc.wat"));
    assert_eq!(wat.get("warcinfo"), Some(&1));
    assert_eq!(wat.get("metadata"), Some(&8));
    let wet = counts_by_type(&read_records("warc.wet"));
    assert_eq!(wet.get("warcinfo"), Some(&1));
    assert_eq!(wet.get("conversion"), Some(&3));
}

#[test]
fn wat_image_links_found_with_absolute_urls() {
    let wat_path = asset("warc.wat");
    // Every IMG@/src link with an alt, read straight from the JSON as the reference.
    let mut expected = Vec::new();
    for record in read_records("warc.wat") {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&record.body) else {
            continue;
        };
        let envelope = &json["Envelope"];
        let Some(page) = envelope["WARC-Header-Metadata"]["WARC-Target-URI"].as_str() else {
            continue;
        };
        let links =
            &envelope["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]["Links"];
        for link in links.as_array().into_iter().flatten() {
            if link["path"] == IMG_SRC_PATH
                && let Some(alt) = link["alt"].as_str()
            {
                let raw = link["url"].as_str().unwrap();
                let url = Url::parse(page).unwrap().join(raw).unwrap();
                expected.push((
                    url.to_string(),
                    alt.to_owned(),
                    page.to_owned(),
                    record.offset,
                ));
            }
        }
    }
    assert_eq!(expected.len(), 4, "IMG links with alt in the sample WAT");

    let mut source = WatCandidates::new(WarcReader::open(&wat_path).unwrap());
    let candidates: Vec<Candidate> = source.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(source.stats().records, 9);
    assert_eq!(source.stats().pages, 1, "one HTML response described");
    for (url, alt, page, offset) in &expected {
        let found = candidates
            .iter()
            .find(|c| &c.url == url)
            .unwrap_or_else(|| panic!("WAT image {url} not found in {candidates:#?}"));
        assert_eq!(found.alt.as_deref(), Some(alt.as_str()));
        assert_eq!(&found.page_url, page);
        assert_eq!(found.source_offset, Some(*offset));
        assert_eq!(found.source_file, wat_path.display().to_string());
        assert!(!found.url.contains("/./"), "{url} not normalised");
    }
    assert!(candidates.iter().any(|c| {
        c.url
            .ends_with("/photos/galleries/Australia/lq/img-496.jpg")
            && c.alt.as_deref() == Some("496")
    }));
}

#[test]
fn warc_html_pages_yield_resolved_candidates() {
    let candidates = html_candidates(WarcReader::open(&asset("warc")).unwrap());
    let mut per_page: BTreeMap<&str, usize> = BTreeMap::new();
    for candidate in &candidates {
        *per_page.entry(&candidate.page_url).or_default() += 1;
        let url = Url::parse(&candidate.url).unwrap();
        assert!(
            matches!(url.scheme(), "http" | "https"),
            "{}",
            candidate.url
        );
        assert!(url.host_str().is_some());
        assert!(url.fragment().is_none());
        assert!(candidate.source_offset.is_some());
    }
    // Three HTML responses; the fourth response is an empty redirect body without Content-Type.
    let mut counts: Vec<usize> = per_page.values().copied().collect();
    counts.sort();
    assert_eq!(counts, [3, 4, 854], "{per_page:?}");
    let preview = candidates
        .iter()
        .find(|c| {
            c.url
                .ends_with("/photos/galleries/Australia/lq/img-496.jpg")
        })
        .unwrap();
    assert_eq!(preview.alt.as_deref(), Some("496"));
    assert!(
        preview
            .page_url
            .ends_with("/photos/?gallery=Australia&photo=496")
    );
    assert_eq!(preview.source_offset, Some(3675));
    let license = candidates
        .iter()
        .find(|c| c.alt.as_deref() == Some("Creative Commons License"))
        .unwrap();
    assert!(
        license
            .context
            .as_deref()
            .unwrap()
            .contains("Creative Commons Attribution-ShareAlike 3.0 License"),
        "{license:?}"
    );
    // Spaces in a relative path are percent-encoded on resolution.
    assert!(
        candidates
            .iter()
            .any(|c| c.url.contains("/Thailand%202011-01/thumbs/"))
    );
    // The WAT describes the first HTML page: every image link it lists with an alt is found in
    // the page itself with the same URL and alt.
    let wat: Vec<Candidate> = WatCandidates::new(WarcReader::open(&asset("warc.wat")).unwrap())
        .collect::<Result<_, _>>()
        .unwrap();
    for from_wat in wat.iter().filter(|c| c.alt.is_some()) {
        assert!(
            candidates.iter().any(|c| c.url == from_wat.url
                && c.alt == from_wat.alt
                && c.page_url == from_wat.page_url),
            "WAT image {} not found by the HTML path",
            from_wat.url
        );
    }
}

#[test]
fn gzip_member_per_record_copy_reads_back_with_member_offsets() {
    let plain = read_records("warc");
    let bytes = std::fs::read(asset("warc")).unwrap();
    // One gzip member per record, as Common Crawl writes.
    let mut gz = Vec::new();
    let mut member_offsets = Vec::new();
    for (i, record) in plain.iter().enumerate() {
        let end = plain
            .get(i + 1)
            .map_or(bytes.len(), |next| next.offset as usize);
        member_offsets.push(gz.len() as u64);
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder
            .write_all(&bytes[record.offset as usize..end])
            .unwrap();
        gz.extend(encoder.finish().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    // The name does not say gzip: detection is by magic bytes.
    let path = dir.path().join("sample.warc");
    std::fs::write(&path, &gz).unwrap();
    let reader = WarcReader::open(&path).unwrap();
    assert!(reader.is_gzip());
    let zipped: Vec<WarcRecord> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(zipped.len(), plain.len());
    for ((z, p), member) in zipped.iter().zip(&plain).zip(&member_offsets) {
        assert_eq!(z.member_offset, Some(*member));
        assert_eq!(z.offset, p.offset);
        assert_eq!(z.headers, p.headers);
        assert_eq!(z.body, p.body);
    }
    // Candidates from the gzip copy point at the gzip members.
    let from_gz = html_candidates(WarcReader::open(&path).unwrap());
    let from_plain = html_candidates(WarcReader::open(&asset("warc")).unwrap());
    assert_eq!(from_gz.len(), from_plain.len());
    for candidate in &from_gz {
        assert!(member_offsets.contains(&candidate.source_offset.unwrap()));
    }
}

#[test]
fn truncated_real_warc_fails_at_the_cut_record() {
    let bytes = std::fs::read(asset("warc")).unwrap();
    // Cut inside the 222,942-byte response that starts at offset 12786.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.warc");
    std::fs::write(&path, &bytes[..20_000]).unwrap();
    let results: Vec<_> = WarcReader::open(&path).unwrap().collect();
    assert_eq!(results.len(), 9);
    assert!(results[..8].iter().all(Result::is_ok));
    let error = results[8].as_ref().unwrap_err();
    assert_eq!(error.offset, 12786);
    let message = error.to_string();
    assert!(message.contains("cut.warc"), "{message}");
    assert!(message.contains("offset 12786"), "{message}");
    assert!(message.contains("body truncated"), "{message}");
}
