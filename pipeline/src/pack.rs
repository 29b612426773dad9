//! `pipeline pack`: a retrieval benchmark (a Karpathy-split JSON such as `dataset_coco.json`
//! plus a local image folder) to committed pair shards, so `detector extract` can add region
//! features and the trainer can evaluate on it.
//!
//! Each selected image becomes one pair row, in JSON order: key = its file name
//! ([`KarpathyImage::key`], the key the trainer joins captions and regions by), url = the
//! `file://` URL of the image, text = its first caption (`text_source` `caption`), and the image
//! re-encoded exactly as `pipeline ingest` stores it ([`imaging::process`] with the `[image]`
//! settings), with its sizes, SHA-256 and perceptual hash. `source_file` is the JSON file and
//! `source_offset` the image's index in its `images` array. The size filter is not applied: a
//! benchmark needs every image, so small images are kept. An image that can't be read or decoded
//! gets a `failed_permanent` row naming its file. No language, score or dedup step runs.
//!
//! Shards `00000.parquet`, `00001.parquet`, ... are committed as ingest commits them
//! ([`ingest::commit_shard`]: shard, then its stats file last); a shard whose stats exist is
//! skipped on rerun. The run file [`RUN_FILE`] pins the JSON's content, the splits and the shard
//! size, so a rerun that would group rows differently is refused.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use schemas::karpathy::{KarpathyDataset, KarpathyImage, Split};
use schemas::pair_shard::{self, PairRecord, Status, TextSource};
use serde::{Deserialize, Serialize};
use storage::Location;

use crate::imaging::{self, ImageConfig};
use crate::ingest;

/// The stage name written into stats files.
pub const STAGE: &str = "pipeline pack";
/// The run description at the output root.
pub const RUN_FILE: &str = "_pack.json";
/// Every Karpathy split, in the order run files list them.
pub const ALL_SPLITS: [Split; 4] = [Split::Train, Split::Restval, Split::Val, Split::Test];

/// What to pack and where.
#[derive(Debug, Clone)]
pub struct PackJob {
    /// The Karpathy-split JSON file.
    pub karpathy: PathBuf,
    /// The folder image paths (`filepath/filename`) are relative to.
    pub images: PathBuf,
    /// Output location URI (local folder, `s3://`, `gs://`, `az://`).
    pub output: String,
    /// The splits whose images are packed.
    pub splits: Vec<Split>,
    /// Images per shard.
    pub rows_per_shard: usize,
    /// Re-encoding settings (ingest's `[image]`); their minimum size is ignored.
    pub image: ImageConfig,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PackSummary {
    /// Shards written by this run.
    pub shards_written: u64,
    /// Shards found committed and left alone.
    pub shards_skipped: u64,
    /// Rows kept (image stored) in the shards this run wrote.
    pub rows_kept: u64,
    /// Rows failed (image unreadable or undecodable) in the shards this run wrote.
    pub rows_failed: u64,
}

/// The run description stored at [`RUN_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RunSpec {
    karpathy_sha256: String,
    splits: Vec<String>,
    rows_per_shard: usize,
}

/// Everything a row needs.
struct Packer {
    root: PathBuf,
    source_file: String,
    image: ImageConfig,
}

/// Runs `job` to the end: every shard of the selected images committed.
pub async fn pack(job: PackJob) -> Result<PackSummary> {
    if job.rows_per_shard == 0 {
        bail!("--rows-per-shard must be at least 1");
    }
    if job.splits.is_empty() {
        bail!("--splits must name at least one split");
    }
    job.image
        .validate()
        .map_err(|e| anyhow::anyhow!("image: {}", e.0))?;
    let source_file = job.karpathy.display().to_string();
    let bytes = std::fs::read(&job.karpathy)
        .with_context(|| format!("reading the Karpathy file {source_file}"))?;
    let dataset = KarpathyDataset::parse(&source_file, &bytes)?;
    let splits: Vec<&str> = ALL_SPLITS
        .into_iter()
        .filter(|s| job.splits.contains(s))
        .map(split_name)
        .collect();
    let selected: Vec<(u64, KarpathyImage)> = dataset
        .images
        .into_iter()
        .enumerate()
        .filter(|(_, image)| job.splits.contains(&image.split))
        .map(|(index, image)| (index as u64, image))
        .collect();
    if selected.is_empty() {
        bail!("{source_file}: no image in split {}", splits.join(", "));
    }
    // A mistyped folder would otherwise commit a whole benchmark of failed rows.
    let root = std::path::absolute(&job.images)
        .with_context(|| format!("resolving the image folder {}", job.images.display()))?;
    if !root.is_dir() {
        bail!("image folder {}: not a folder", root.display());
    }

    let output = Location::parse(&job.output)?;
    let spec = RunSpec {
        karpathy_sha256: imaging::sha256_hex(&bytes),
        splits: splits.iter().map(|s| (*s).to_owned()).collect(),
        rows_per_shard: job.rows_per_shard,
    };
    if let Some(existing) = output.claim_run_file(RUN_FILE, &spec).await? {
        bail!(
            "{} was written by a pack run with another Karpathy file, --splits or \
             --rows-per-shard ({existing:?}); rerun with the same ones or use a new output",
            output.uri()
        );
    }
    let committed: HashSet<String> = ingest::list_shards(&output)
        .await?
        .committed
        .into_iter()
        .collect();

    let packer = Arc::new(Packer {
        root,
        source_file,
        // Benchmark images are all kept, whatever their size.
        image: ImageConfig {
            min_width: 0,
            min_height: 0,
            ..job.image
        },
    });
    let progress = progress_bar(job.progress, selected.len() as u64);
    let mut summary = PackSummary::default();
    for (number, chunk) in selected.chunks(job.rows_per_shard).enumerate() {
        let name = pair_shard::file_name(number as u64);
        if committed.contains(&name) {
            summary.shards_skipped += 1;
            progress.inc(chunk.len() as u64);
            continue;
        }
        let started = Instant::now();
        let (packer, chunk, bar) = (Arc::clone(&packer), chunk.to_vec(), progress.clone());
        let records = tokio::task::spawn_blocking(move || {
            chunk
                .par_iter()
                .map(|(index, image)| {
                    let record = packer.record(*index, image);
                    bar.inc(1);
                    record
                })
                .collect::<Vec<_>>()
        })
        .await
        .with_context(|| format!("packing the images of {name}"))?;
        let stats = ingest::commit_shard(&output, &name, &records, STAGE, started).await?;
        let count = |status: Status| stats.counts_by_status.get(status.as_str()).copied();
        summary.shards_written += 1;
        summary.rows_kept += count(Status::Kept).unwrap_or(0);
        summary.rows_failed += count(Status::FailedPermanent).unwrap_or(0);
    }
    progress.finish_and_clear();
    Ok(summary)
}

impl Packer {
    /// The pair row of `image`, entry `index` of the JSON's `images`.
    fn record(&self, index: u64, image: &KarpathyImage) -> PairRecord {
        let path = self.root.join(image.relative_path());
        let url = url::Url::from_file_path(&path)
            .map(String::from)
            .unwrap_or_else(|()| format!("file://{}", path.display()));
        let record = PairRecord {
            text: image.captions.first().cloned(),
            text_source: Some(TextSource::Caption),
            source_offset: Some(index),
            ..PairRecord::new(image.key(), url, Status::FailedPermanent, &self.source_file)
        };
        let failed =
            |record: PairRecord, reason: &str, message: &dyn std::fmt::Display| PairRecord {
                drop_reason: Some(reason.to_owned()),
                error_message: Some(format!("{}: {message}", path.display())),
                ..record
            };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) => return failed(record, "unreadable", &error),
        };
        // A decoder that panics on a bad file costs its row, never the run.
        match catch_unwind(AssertUnwindSafe(|| {
            imaging::process(&bytes, None, &self.image)
        })) {
            Ok(Ok(processed)) => PairRecord {
                status: Status::Kept,
                width: Some(processed.width),
                height: Some(processed.height),
                original_width: Some(processed.original_width),
                original_height: Some(processed.original_height),
                sha256: Some(processed.sha256),
                perceptual_hash: Some(processed.phash),
                image: Some(processed.jpeg),
                ..record
            },
            Ok(Err(reject)) => failed(record, reject.code(), &reject),
            Err(_) => failed(record, "decoder_panic", &"the image decoder panicked"),
        }
    }
}

/// The name of `split` as the JSON and `--splits` write it.
fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Restval => "restval",
        Split::Val => "val",
        Split::Test => "test",
    }
}

fn progress_bar(visible: bool, images: u64) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(images);
    bar.set_style(
        ProgressStyle::with_template("pack {bar:40} {pos}/{len} images ({per_sec}) {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
