//! `pipeline bench`: throughput of the CPU-bound steps on the real assets, one core.
//!
//! - images/s per CPU-second for decode + size filter + resize + JPEG encode + hashes on the
//!   real photos, per format (what one rayon thread sustains; the fetch is I/O and overlaps),
//!   and for the decode step alone, the ceiling no resize or encoder work can lift;
//! - MB/s for candidate extraction from the real Common Crawl WARC (HTML parsing) and WAT (JSON)
//!   files, read from memory so the disk is not measured.
//!
//! Prints figures; asserts nothing. Run in release mode.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::imaging::{self, ImageConfig};
use crate::inputs::{self, InputConfig, InputData};

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// Items or megabytes per second on one core.
    pub per_second: f64,
    /// `images/s` or `MB/s`.
    pub unit: &'static str,
    /// How many items (or bytes) were processed.
    pub processed: u64,
}

/// Runs every measurement for about `seconds` each on the assets under `assets`.
pub fn run(assets: &Path, seconds: f64, image: &ImageConfig) -> Result<Vec<Figure>> {
    let budget = Duration::from_secs_f64(seconds);
    let mut figures = bench_images(&assets.join("photos"), budget, image)?;
    let commoncrawl = assets.join("commoncrawl");
    for name in [
        "CC-MAIN-20140820021334-00006.warc",
        "CC-MAIN-20140820021334-00006.warc.wat",
    ] {
        figures.push(bench_extraction(&commoncrawl.join(name), budget)?);
    }
    Ok(figures)
}

fn bench_images(folder: &Path, budget: Duration, config: &ImageConfig) -> Result<Vec<Figure>> {
    let mut photos = Vec::new();
    for entry in
        std::fs::read_dir(folder).with_context(|| format!("reading {}", folder.display()))?
    {
        let path = entry?.path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("jpg" | "jpeg" | "png")
        ) {
            photos
                .push(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
        }
    }
    anyhow::ensure!(!photos.is_empty(), "no photos in {}", folder.display());
    let report = imaging::bench(&photos, config, budget.as_secs_f64());
    let mut figures: Vec<Figure> = report
        .rows
        .iter()
        .map(|row| Figure {
            name: format!(
                "image decode+filter+resize+encode+hash, {} ({} photos, mean {} KB, max side {})",
                row.format,
                row.photos,
                row.mean_bytes / 1000,
                report.max_side
            ),
            per_second: row.images_per_cpu_second.unwrap_or(row.images_per_second),
            unit: "images/s",
            processed: row.images,
        })
        .collect();
    figures.extend(report.rows.iter().map(|row| Figure {
        name: format!(
            "image decode only (the ceiling of the row above), {} ({} photos)",
            row.format, row.photos
        ),
        per_second: row.decode_only_per_second,
        unit: "images/s",
        processed: row.decode_only_images,
    }));
    Ok(figures)
}

fn bench_extraction(path: &Path, budget: Duration) -> Result<Figure> {
    let uri = path.to_str().context("non-UTF-8 asset path")?;
    let bytes = bytes::Bytes::from(std::fs::read(path).with_context(|| format!("reading {uri}"))?);
    let config = InputConfig::default();
    let started = Instant::now();
    let mut processed = 0u64;
    let mut per_pass = 0usize;
    while started.elapsed() < budget {
        let rows = inputs::read_rows(uri, InputData::Remote(bytes.clone()), &config)?;
        per_pass = rows.count();
        processed += bytes.len() as u64;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(uri);
    Ok(Figure {
        name: format!("candidates from {name} ({per_pass} per pass)"),
        per_second: processed as f64 / 1e6 / started.elapsed().as_secs_f64(),
        unit: "MB/s",
        processed,
    })
}
