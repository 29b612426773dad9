//! Seed lists: page URLs that `pipeline ingest` fetches and parses for `<img>` candidates.
//!
//! Each process takes the seed pages whose registrable domain falls in its slice, fetches them
//! with the same polite, safe [`Fetcher`] as images (robots.txt, rate limits, private addresses
//! refused; HTML content types accepted), and extracts candidates with [`crate::sources::html`].
//! The result is stored once per slice at `_seeds/<input>.<index>-of-<count>.json` in the output
//! and reused by reruns, so shard contents stay fixed even when pages change or go away later
//! (delete that file to crawl the pages again). Every seed line is accounted for: its images, or
//! one row saying why there were none.

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use storage::Location;

use crate::config::IngestConfig;
use crate::fetch::{FetchOutcome, Fetcher};
use crate::inputs::{InputData, InputRow};
use crate::sharding::{self, Slice};
use crate::sources::html::{Page, candidates_from_page};
use crate::sources::http::MediaType;

/// Where the expansion of seed list `uri` for `slice` is stored in the output.
pub fn expansion_name(uri: &str, slice: Slice) -> String {
    let digest = Sha256::digest(uri.as_bytes());
    let stem = uri.rsplit('/').next().unwrap_or(uri);
    let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "_seeds/{stem}.{short}.{}-of-{}.json",
        slice.index, slice.count
    )
}

/// This slice's rows from seed list `uri`: read from the stored expansion, or made by fetching
/// the pages and stored.
pub async fn expand(
    uri: &str,
    data: InputData,
    output: &Location,
    slice: Slice,
    fetcher: &Fetcher,
    config: &IngestConfig,
) -> Result<Vec<InputRow>> {
    let name = expansion_name(uri, slice);
    if let Some(bytes) = output.get_if_exists(&name).await? {
        return serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a seed expansion", output.uri_of(&name)));
    }
    let text = match data {
        InputData::Local(path) => {
            std::fs::read_to_string(&path).with_context(|| format!("reading seed list {uri}"))?
        }
        InputData::Remote(bytes) => String::from_utf8(bytes.to_vec())
            .with_context(|| format!("seed list {uri} is not UTF-8"))?,
    };
    let pages: Vec<(u64, String)> = text
        .lines()
        .enumerate()
        .map(|(line, page)| (line as u64, page.trim().to_owned()))
        .filter(|(_, page)| !page.is_empty() && !page.starts_with('#'))
        .filter(|(_, page)| sharding::owns(slice, page))
        .collect();
    let options = config.input.html_options();
    let concurrency = config.fetch.max_concurrency.max(1);
    let mut expanded: Vec<(u64, Vec<InputRow>)> = futures::stream::iter(pages)
        .map(|(line, page)| {
            let options = options.clone();
            async move {
                let rows = page_rows(uri, line, &page, fetcher, &options).await;
                (line, rows)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    expanded.sort_by_key(|(line, _)| *line);
    let rows: Vec<InputRow> = expanded.into_iter().flat_map(|(_, rows)| rows).collect();
    output
        .put(&name, Bytes::from(serde_json::to_vec(&rows)?))
        .await?;
    tracing::info!(seed_list = uri, rows = rows.len(), "expanded seed pages");
    Ok(rows)
}

/// The candidates of one seed page, or one row saying why there are none.
async fn page_rows(
    uri: &str,
    line: u64,
    page: &str,
    fetcher: &Fetcher,
    options: &crate::sources::html::HtmlOptions,
) -> Vec<InputRow> {
    let failed = |reason: &str, message: String| {
        vec![InputRow::Invalid {
            url: page.to_owned(),
            source_file: uri.to_owned(),
            source_offset: line,
            reason: reason.to_owned(),
            message,
        }]
    };
    let (final_url, body, content_type) = match fetcher.fetch_page(page).await {
        FetchOutcome::Fetched {
            final_url,
            body,
            content_type,
            ..
        } => (final_url, body, content_type),
        FetchOutcome::Failed(failure) => {
            return failed(
                "seed_page_failed",
                format!(
                    "{uri} line {}: {} ({})",
                    line + 1,
                    failure.message,
                    failure.reason()
                ),
            );
        }
    };
    let media = content_type.as_deref().map(MediaType::parse);
    let page_view = Page {
        url: &final_url,
        body: &body,
        charset: media.as_ref().and_then(|m| m.charset.as_deref()),
        source_file: uri,
        source_offset: Some(line),
    };
    match candidates_from_page(&page_view, options) {
        Ok(candidates) if !candidates.is_empty() => {
            candidates.into_iter().map(InputRow::Candidate).collect()
        }
        Ok(_) => failed(
            "seed_page_no_images",
            format!("{uri} line {}: {final_url} has no images", line + 1),
        ),
        Err(skip) => failed(
            "seed_page_failed",
            format!("{uri} line {}: {final_url}: {}", line + 1, skip.as_str()),
        ),
    }
}
