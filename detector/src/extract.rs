//! `detector extract`: committed pair shards to region-feature shards.
//!
//! One process owns the pair shards whose number (the `NNNNN` of `NNNNN.parquet`) its
//! [`Slice`] owns ([`Slice::owns_number`]). A pair shard counts only once its stats file
//! `NNNNN_stats.json` exists; one without stats is still being written (or its ingest died) and
//! is ignored. For each pair shard it writes `NNNNN.regions.parquet` and then its stats file
//! `NNNNN.regions_stats.json` (stage [`STAGE`]). Stats are written last, so a region shard with
//! stats is done and a rerun skips it; a region shard without stats (the process died between
//! the two writes) is redone and replaced.
//!
//! Rows: every `kept` pair row gets exactly one region row with the same key, in pair-shard
//! order: `ok` with the detector's regions, or `failed` with a message naming the key and the
//! reason when its image can't be decoded or prepared (never a crash). Rows of any other status
//! have no image and get no region row; the stats count them under `drop_reasons`, by pair
//! status. A `detect` error fails the run (nothing of that shard is committed).
//!
//! Throughput: a scoped thread streams the pair shard's rows, decodes and prepares images on a
//! rayon pool and groups them by prepared input size (size buckets: one bucket for fixed-size
//! models), handing full batches over a channel `prefetch_batches` deep to the calling thread,
//! which runs `detect`. So decoding the next batches overlaps the device's work on this one.
//! Reading the next pair shard and writing the previous region shard run on tokio meanwhile.
//!
//! Stats (`NNNNN.regions_stats.json`, the shared `shard_stats` format plus `boxes_total`):
//! `rows` and `counts_by_status` (`ok`, `failed`) of the region shard; `drop_reasons`: pair rows
//! given no region row, by pair status; `error_tallies`: failed rows by cause (`decode`,
//! `too_many_pixels`, `missing_image`, `prepare`, `panic`); `durations_s`: `read` (waiting for
//! the pair shard's bytes), `decode` and `prepare` (thread-seconds summed over the decoding
//! threads), `detect` (in `detect` calls), `host_wait` (the device side waiting for decoded
//! batches: near zero when the device is the bottleneck), `write`, `total`.
//!
//! The output location also holds a run file, [`RUN_FILE`], naming the detector: a later run
//! with another detector (or version) into the same output is refused, so one output never
//! mixes features of two detectors.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use cluster::Slice;
use indicatif::{ProgressBar, ProgressStyle};
use schemas::pair_shard::{self, Status};
use schemas::region_features::{self, DetectorInfo, RegionRecord};
use schemas::shard_stats::{ShardStats, stats_file_name};
use serde::{Deserialize, Serialize};
use storage::Location;
use tokio::task::JoinHandle;

use crate::config::ExtractConfig;
use crate::regions::{Prepared, Preprocess, RegionDetector, decode_rgb, failed_record, to_record};

/// The stage name written into stats files.
pub const STAGE: &str = "detector extract";
/// The run description at the output root, naming the detector that writes there.
pub const RUN_FILE: &str = "_extract.json";
/// Prepared images held in partly filled size buckets, in batches: past this, the fullest
/// bucket goes to the device early so many distinct input sizes can't pile up in memory.
const BUCKET_SLACK_BATCHES: usize = 4;

/// What to extract and where.
#[derive(Debug, Clone)]
pub struct ExtractJob {
    /// Where the pair shards are.
    pub input: Location,
    /// Where region shards and their stats go (may be `input`).
    pub output: Location,
    /// This process's share of the pair shards.
    pub slice: Slice,
    /// Settings (batch size, prefetch depth, pixel cap, threads).
    pub config: ExtractConfig,
    /// Draw a progress bar over images on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExtractSummary {
    /// Region shards written by this run.
    pub shards_done: u64,
    /// Pair shards whose region shard was already committed, left alone.
    pub shards_skipped: u64,
    /// Images with an `ok` row in the shards written.
    pub images_ok: u64,
    /// Images with a `failed` row in the shards written.
    pub images_failed: u64,
    /// Boxes over all `ok` rows written.
    pub boxes: u64,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
    /// Images (ok and failed) per wall-clock second.
    pub images_per_second: f64,
}

/// The detector description stored in [`RUN_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RunSpec {
    name: String,
    version: String,
    feature_dim: usize,
    num_classes: usize,
    num_attributes: Option<usize>,
}

impl From<&DetectorInfo> for RunSpec {
    fn from(info: &DetectorInfo) -> Self {
        Self {
            name: info.name.clone(),
            version: info.version.clone(),
            feature_dim: info.feature_dim,
            num_classes: info.num_classes,
            num_attributes: info.num_attributes,
        }
    }
}

/// The stats file of a region shard: the shared shard stats plus the box total.
#[derive(Serialize)]
struct StatsFile<'a> {
    #[serde(flatten)]
    stats: &'a ShardStats,
    /// Boxes over every row of the shard.
    boxes_total: u64,
}

/// Runs `job` to the end: every committed pair shard of its slice has a committed region shard.
pub async fn extract(job: ExtractJob, detector: &mut dyn RegionDetector) -> Result<ExtractSummary> {
    job.config.validate()?;
    let started = Instant::now();
    let info = detector.info();
    check_run_file(&job.output, &info).await?;
    let (todo, skipped) = shards_to_do(&job).await?;
    tracing::info!(
        todo = todo.len(),
        skipped,
        detector = %format!("{} {}", info.name, info.version),
        "slice {} of {}: extracting from {} into {}",
        job.slice.index,
        job.slice.count,
        job.input.uri(),
        job.output.uri()
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(job.config.decode_threads)
        .thread_name(|i| format!("extract-decode-{i}"))
        .build()
        .context("starting the decoding threads")?;
    let preprocess = detector.preprocessor();
    let progress = progress_bar(job.progress);
    let mut summary = ExtractSummary {
        shards_skipped: skipped,
        ..ExtractSummary::default()
    };

    let read = |name: &String| {
        let (input, name) = (job.input.clone(), name.clone());
        tokio::spawn(async move { input.get(&name).await })
    };
    let mut next_read = todo.first().map(read);
    let mut committing: Option<JoinHandle<Result<()>>> = None;
    for (i, name) in todo.iter().enumerate() {
        let shard_started = Instant::now();
        let started_unix_s = unix_now();
        let uri = job.input.uri_of(name);
        let bytes = next_read
            .take()
            .context("internal: no read for the next shard")?
            .await
            .with_context(|| format!("reading {uri}"))??;
        let read_s = shard_started.elapsed().as_secs_f64();
        next_read = todo.get(i + 1).map(read);
        progress.set_message(name.clone());
        tracing::info!(shard = %uri, bytes = bytes.len(), "extracting");

        let work = ShardWork {
            uri: &uri,
            bytes,
            preprocess: &preprocess,
            pool: &pool,
            config: &job.config,
            feature_dim: info.feature_dim,
            progress: &progress,
        };
        let done = run_blocking(|| work.run(&mut *detector))
            .with_context(|| format!("extracting regions from {uri}"))?;

        let mut stats = ShardStats::new(&region_features::file_name_for(name), STAGE);
        stats.started_unix_s = started_unix_s;
        stats.durations_s.insert("read".into(), read_s);
        done.fill_stats(&mut stats);
        summary.images_ok += stats.counts_by_status.get("ok").copied().unwrap_or(0);
        summary.images_failed += stats.counts_by_status.get("failed").copied().unwrap_or(0);
        summary.boxes += done.boxes;

        // One region shard is written while the next is computed; an earlier failed write
        // stops the run before more work piles up.
        if let Some(previous) = committing.take() {
            previous.await.context("writing a region shard")??;
            summary.shards_done += 1;
        }
        committing = Some(tokio::spawn(commit(
            job.output.clone(),
            region_features::file_name_for(name),
            info.clone(),
            done.records,
            stats,
            done.boxes,
            shard_started,
        )));
    }
    if let Some(previous) = committing {
        previous.await.context("writing a region shard")??;
        summary.shards_done += 1;
    }
    progress.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    let images = summary.images_ok + summary.images_failed;
    summary.images_per_second = images as f64 / summary.seconds.max(1e-9);
    tracing::info!(
        done = summary.shards_done,
        skipped = summary.shards_skipped,
        ok = summary.images_ok,
        failed = summary.images_failed,
        images_per_second = summary.images_per_second,
        "slice {} of {} done",
        job.slice.index,
        job.slice.count
    );
    Ok(summary)
}

/// Records the detector at the output, or refuses a different one already recorded there.
async fn check_run_file(output: &Location, info: &DetectorInfo) -> Result<()> {
    let spec = RunSpec::from(info);
    if let Some(existing) = output.claim_run_file(RUN_FILE, &spec).await? {
        bail!(
            "{} says region shards there were made by detector `{} {}` ({existing:?}), not \
             `{} {}`; use a new --output, or the same detector",
            output.uri_of(RUN_FILE),
            existing.name,
            existing.version,
            spec.name,
            spec.version
        );
    }
    Ok(())
}

/// The committed pair shards of this slice without a committed region shard, by number, and
/// how many have one already.
async fn shards_to_do(job: &ExtractJob) -> Result<(Vec<String>, u64)> {
    let input_names = job.input.list().await?;
    let output_names = if job.output.uri() == job.input.uri() {
        input_names.clone()
    } else {
        job.output.list().await?
    };
    let present: HashSet<&str> = input_names.iter().map(String::as_str).collect();
    let done: HashSet<&str> = output_names.iter().map(String::as_str).collect();
    let mut shards: Vec<(u64, &String)> = input_names
        .iter()
        .filter_map(|name| Some((pair_shard::file_number(name)?, name)))
        .filter(|(number, _)| job.slice.owns_number(*number))
        .collect();
    shards.sort();
    let (mut todo, mut skipped, mut unfinished) = (Vec::new(), 0u64, 0usize);
    for (_, name) in shards {
        if !present.contains(stats_file_name(name).as_str()) {
            unfinished += 1;
        } else if done.contains(stats_file_name(&region_features::file_name_for(name)).as_str()) {
            skipped += 1;
        } else {
            todo.push(name.clone());
        }
    }
    if unfinished > 0 {
        tracing::info!(
            unfinished,
            "pair shards without a stats file are not finished; ignored"
        );
    }
    Ok((todo, skipped))
}

fn progress_bar(visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "extract {bar:30} {pos}/{len} images ({per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Runs blocking work from async code: on a multi-threaded runtime the worker thread hands its
/// other tasks (the next read, the previous write) to the rest of the pool first; on a
/// current-thread runtime they wait.
fn run_blocking<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Writes the region shard, then its stats (the commit).
async fn commit(
    output: Location,
    name: String,
    info: DetectorInfo,
    records: Vec<RegionRecord>,
    mut stats: ShardStats,
    boxes_total: u64,
    started: Instant,
) -> Result<()> {
    let write_started = Instant::now();
    let uri = output.uri_of(&name);
    let bytes = tokio::task::spawn_blocking(move || {
        region_features::write(&uri, Vec::new(), &info, &records)
    })
    .await
    .context("encoding a region shard")??;
    output.put(&name, Bytes::from(bytes)).await?;
    stats
        .durations_s
        .insert("write".into(), write_started.elapsed().as_secs_f64());
    stats
        .durations_s
        .insert("total".into(), started.elapsed().as_secs_f64());
    stats.finished_unix_s = unix_now();
    let file = StatsFile {
        stats: &stats,
        boxes_total,
    };
    let mut json = serde_json::to_vec_pretty(&file)?;
    json.push(b'\n');
    output
        .put(&stats_file_name(&name), Bytes::from(json))
        .await?;
    tracing::info!(
        shard = %output.uri_of(&name),
        rows = stats.rows,
        counts = ?stats.counts_by_status,
        errors = ?stats.error_tallies,
        boxes = boxes_total,
        durations = ?stats.durations_s,
        "committed"
    );
    Ok(())
}

/// Seconds since the Unix epoch.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// One pair shard's compute: everything between reading its bytes and writing its regions.
struct ShardWork<'a> {
    uri: &'a str,
    bytes: Bytes,
    preprocess: &'a Arc<dyn Preprocess>,
    pool: &'a rayon::ThreadPool,
    config: &'a ExtractConfig,
    feature_dim: usize,
    progress: &'a ProgressBar,
}

/// A kept row whose image is ready for the device.
struct Item {
    /// Position among the shard's kept rows (the output row).
    ordinal: usize,
    key: String,
    prepared: Prepared,
}

/// What the decoding thread hands to the device thread.
struct HostBatch {
    /// Images of one input size, at most `batch_size`.
    items: Vec<Item>,
    /// Rows whose image failed before the device, with their position.
    failed: Vec<(usize, RegionRecord)>,
}

/// What the decoding thread did, for the stats.
#[derive(Default)]
struct HostTotals {
    kept: usize,
    not_kept: BTreeMap<String, u64>,
    error_tallies: BTreeMap<String, u64>,
    decode_s: f64,
    prepare_s: f64,
}

/// What the device side did.
#[derive(Default)]
struct Consumed {
    /// Rows with their position among the kept rows, in arrival order.
    records: Vec<(usize, RegionRecord)>,
    boxes: u64,
    detect_s: f64,
    /// Seconds the device side waited for the host side.
    wait_s: f64,
}

/// The outcome of one pair shard's compute.
struct ShardDone {
    records: Vec<RegionRecord>,
    host: HostTotals,
    boxes: u64,
    detect_s: f64,
    host_wait_s: f64,
}

impl ShardDone {
    fn fill_stats(&self, stats: &mut ShardStats) {
        stats.rows = self.records.len() as u64;
        for record in &self.records {
            *stats
                .counts_by_status
                .entry(record.status.as_str().to_owned())
                .or_default() += 1;
        }
        stats.drop_reasons = self.host.not_kept.clone();
        stats.error_tallies = self.host.error_tallies.clone();
        let durations = [
            ("decode", self.host.decode_s),
            ("prepare", self.host.prepare_s),
            ("detect", self.detect_s),
            ("host_wait", self.host_wait_s),
        ];
        for (phase, seconds) in durations {
            stats.durations_s.insert(phase.into(), seconds);
        }
    }
}

impl ShardWork<'_> {
    /// Decodes on a scoped thread (and the rayon pool) while this thread runs `detector`.
    fn run(self, detector: &mut dyn RegionDetector) -> Result<ShardDone> {
        let (sender, receiver) = sync_channel(self.config.prefetch_batches);
        std::thread::scope(|scope| {
            let producer = std::thread::Builder::new()
                .name("extract-host".into())
                .spawn_scoped(scope, || self.produce(sender))
                .context("starting the decoding thread")?;
            // `consume` owns the receiver: when it stops early, the producer's next send fails
            // and it stops too.
            let consumed = self.consume(receiver, detector);
            let host = producer
                .join()
                .map_err(|_| anyhow!("the decoding thread panicked"))?;
            let Consumed {
                mut records,
                boxes,
                detect_s,
                wait_s,
            } = consumed?;
            if records.len() != host.kept {
                bail!(
                    "internal: {} region rows for {} kept pair rows",
                    records.len(),
                    host.kept
                );
            }
            records.sort_by_key(|(ordinal, _)| *ordinal);
            Ok(ShardDone {
                records: records.into_iter().map(|(_, record)| record).collect(),
                host,
                boxes,
                detect_s,
                host_wait_s: wait_s,
            })
        })
    }

    /// The device side: runs `detect` on each batch as it arrives and turns the results into
    /// rows.
    fn consume(
        &self,
        receiver: Receiver<Result<HostBatch>>,
        detector: &mut dyn RegionDetector,
    ) -> Result<Consumed> {
        let mut out = Consumed::default();
        loop {
            let waited = Instant::now();
            let Ok(batch) = receiver.recv() else {
                break;
            };
            out.wait_s += waited.elapsed().as_secs_f64();
            let batch = batch?;
            self.progress.inc(batch.failed.len() as u64);
            out.records.extend(batch.failed);
            if batch.items.is_empty() {
                continue;
            }
            let n = batch.items.len();
            let first_key = batch.items[0].key.clone();
            let (rows, inputs): (Vec<_>, Vec<_>) = batch
                .items
                .into_iter()
                .map(|item| {
                    let size = (item.prepared.original_width, item.prepared.original_height);
                    ((item.ordinal, item.key, size), item.prepared)
                })
                .unzip();
            let started = Instant::now();
            let found = detector
                .detect(inputs)
                .with_context(|| format!("detect on a batch of {n} images from {first_key}"))?;
            out.detect_s += started.elapsed().as_secs_f64();
            if found.len() != n {
                bail!(
                    "detect returned {} results for a batch of {n} images from {first_key}",
                    found.len()
                );
            }
            for ((ordinal, key, size), regions) in rows.into_iter().zip(found) {
                out.boxes += regions.boxes.len() as u64;
                let record = to_record(&key, size, regions, self.feature_dim)?;
                out.records.push((ordinal, record));
            }
            self.progress.inc(n as u64);
        }
        Ok(out)
    }

    /// The host side: streams the pair shard, decodes and prepares kept images in parallel,
    /// and sends full size buckets (then the rest) to the device side. A read error is sent
    /// on as the last message.
    fn produce(&self, sender: SyncSender<Result<HostBatch>>) -> HostTotals {
        let mut totals = HostTotals::default();
        let mut host = Host {
            work: self,
            sender,
            buckets: HashMap::new(),
            bucketed: 0,
            failed: Vec::new(),
        };
        if let Err(error) = host.stream(&mut totals) {
            let _ = host.sender.send(Err(error));
        }
        totals
    }
}

/// The decoding thread's state: size buckets and failures not yet sent.
struct Host<'a, 'w> {
    work: &'a ShardWork<'w>,
    sender: SyncSender<Result<HostBatch>>,
    buckets: HashMap<(u32, u32), Vec<Item>>,
    /// Items in `buckets`.
    bucketed: usize,
    failed: Vec<(usize, RegionRecord)>,
}

/// The device side hung up (it failed); stop quietly, its error is the one reported.
struct Hangup;

impl Host<'_, '_> {
    fn stream(&mut self, totals: &mut HostTotals) -> Result<()> {
        let batch_size = self.work.config.batch_size;
        let mut reader = pair_shard::open(self.work.uri, self.work.bytes.clone())?;
        let mut pending: Vec<(usize, String, Option<Vec<u8>>)> = Vec::new();
        while let Some(batch) = reader.next_batch() {
            let (first_row, batch) = batch?;
            let rows = pair_shard::from_batch(self.work.uri, first_row, &batch)?;
            let before = totals.kept;
            for row in rows {
                if row.status == Status::Kept {
                    pending.push((totals.kept, row.key, row.image));
                    totals.kept += 1;
                } else {
                    *totals
                        .not_kept
                        .entry(row.status.as_str().to_owned())
                        .or_default() += 1;
                }
            }
            self.work.progress.inc_length((totals.kept - before) as u64);
            while pending.len() >= batch_size {
                let chunk: Vec<_> = pending.drain(..batch_size).collect();
                if self.prepare_chunk(chunk, totals).is_err() {
                    return Ok(());
                }
            }
        }
        if self.prepare_chunk(pending, totals).is_err() {
            return Ok(());
        }
        let mut sizes: Vec<(u32, u32)> = self.buckets.keys().copied().collect();
        sizes.sort();
        for size in sizes {
            if self.send_bucket(size).is_err() {
                return Ok(());
            }
        }
        if !self.failed.is_empty() {
            let failed = std::mem::take(&mut self.failed);
            let _ = self.sender.send(Ok(HostBatch {
                items: Vec::new(),
                failed,
            }));
        }
        Ok(())
    }

    /// Decodes and prepares `chunk` on the pool, files the results into buckets or failures,
    /// and sends every bucket that is full.
    fn prepare_chunk(
        &mut self,
        chunk: Vec<(usize, String, Option<Vec<u8>>)>,
        totals: &mut HostTotals,
    ) -> Result<(), Hangup> {
        use rayon::prelude::*;
        let preprocess = self.work.preprocess;
        let max_pixels = self.work.config.max_decoded_pixels;
        let results: Vec<_> = self.work.pool.install(|| {
            chunk
                .into_par_iter()
                .map(|(ordinal, key, image)| {
                    let outcome = prepare_one(&key, image.as_deref(), &**preprocess, max_pixels);
                    (ordinal, key, outcome)
                })
                .collect()
        });
        let batch_size = self.work.config.batch_size;
        for (ordinal, key, outcome) in results {
            totals.decode_s += outcome.decode_s;
            totals.prepare_s += outcome.prepare_s;
            match outcome.result {
                Ok(prepared) => {
                    let size = (prepared.input_width, prepared.input_height);
                    let bucket = self.buckets.entry(size).or_default();
                    bucket.push(Item {
                        ordinal,
                        key,
                        prepared,
                    });
                    self.bucketed += 1;
                    if bucket.len() >= batch_size {
                        self.send_bucket(size)?;
                    }
                }
                Err((code, message)) => {
                    *totals.error_tallies.entry(code.to_owned()).or_default() += 1;
                    self.failed.push((ordinal, failed_record(&key, message)));
                }
            }
        }
        if self.bucketed > BUCKET_SLACK_BATCHES * batch_size {
            let fullest = self
                .buckets
                .iter()
                .max_by_key(|(size, items)| (items.len(), **size))
                .map(|(size, _)| *size);
            if let Some(size) = fullest {
                self.send_bucket(size)?;
            }
        }
        Ok(())
    }

    /// Sends the bucket of input size `size`, with the failures gathered so far.
    fn send_bucket(&mut self, size: (u32, u32)) -> Result<(), Hangup> {
        let items = self.buckets.remove(&size).unwrap_or_default();
        self.bucketed -= items.len();
        let failed = std::mem::take(&mut self.failed);
        self.sender
            .send(Ok(HostBatch { items, failed }))
            .map_err(|_| Hangup)
    }
}

/// One image's host work and its cost.
struct HostOutcome {
    /// The model input, or an error code for the tallies and a message for the row.
    result: Result<Prepared, (&'static str, String)>,
    decode_s: f64,
    prepare_s: f64,
}

/// Decodes and prepares one kept row's image. Never panics: a decoder or preprocessing panic
/// on a hostile file costs its row, not the run.
fn prepare_one(
    key: &str,
    image: Option<&[u8]>,
    preprocess: &dyn Preprocess,
    max_pixels: u64,
) -> HostOutcome {
    let (mut decode_s, mut prepare_s) = (0.0, 0.0);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let bytes = image.ok_or_else(|| {
            (
                "missing_image",
                format!("{key}: the pair row is kept but holds no image"),
            )
        })?;
        let started = Instant::now();
        let decoded = decode_rgb(bytes, max_pixels);
        decode_s = started.elapsed().as_secs_f64();
        let decoded = decoded.map_err(|e| (e.code(), format!("{key}: {e}")))?;
        let started = Instant::now();
        let prepared = preprocess.prepare(&decoded);
        prepare_s = started.elapsed().as_secs_f64();
        prepared.map_err(|e| ("prepare", format!("{key}: preprocessing failed: {e:#}")))
    }));
    let result = result.unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err((
            "panic",
            format!("{key}: decoding or preprocessing panicked: {reason}"),
        ))
    });
    HostOutcome {
        result,
        decode_s,
        prepare_s,
    }
}
