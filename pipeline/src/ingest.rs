//! `pipeline ingest`: input rows to committed pair shards.
//!
//! One process owns one [`Slice`] of the input (by registrable domain, see [`crate::sharding`]).
//! It streams its rows in input order, cuts them into shards of `output.rows_per_shard` rows, and
//! for each shard runs the LAIT steps: text filter ([`crate::text`]), polite and safe fetch
//! ([`crate::fetch`], many requests in flight on tokio), decode / size filter / re-encode / hashes
//! on rayon threads ([`crate::imaging`]), scores ([`crate::scoring`]) and duplicate removal within
//! the shard ([`crate::dedup`]). Every input row becomes exactly one output row with a status.
//!
//! Commit protocol: the shard `NNNNN.parquet` is written whole (an atomic object PUT), then its
//! stats file `NNNNN.stats.json`. A shard with stats is done and skipped on rerun; a shard without
//! stats (the process died before committing) is redone from its input rows, which a rerun
//! regroups identically. Shard numbers interleave the slices (`seq * num_shards + index`) so
//! every process writes distinct files into one output location.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use schemas::pair_shard::{self, PairRecord, Status};
use schemas::shard_stats::{ShardStats, stats_file_name};
use serde::{Deserialize, Serialize};
use storage::Location;
use tokio::sync::mpsc;

use crate::config::IngestConfig;
use crate::dedup::{self, DedupRow};
use crate::fetch::{FetchOutcome, Fetcher};
use crate::imaging;
use crate::inputs::{self, InputRow};
use crate::scoring::{HeuristicScorer, Scorer};
use crate::seeds;
use crate::sharding::{self, Slice};
use crate::text::{TextFilter, TextVerdict};

/// The stage name written into stats files.
pub const STAGE: &str = "pipeline ingest";
/// The run description at the output root, shared by every slice.
pub const RUN_FILE: &str = "_ingest.json";

/// What to ingest and where.
#[derive(Debug, Clone)]
pub struct IngestJob {
    /// Input URIs (local paths or object-store URIs), read in this order.
    pub inputs: Vec<String>,
    /// Output location URI.
    pub output: String,
    /// Settings.
    pub config: IngestConfig,
    /// This process's slice of the input.
    pub slice: Slice,
    /// Refetch rows of finished shards whose status is `failed_transient`.
    pub retry_failed: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngestSummary {
    /// Shards written (or rewritten by `--retry-failed`) by this run.
    pub shards_written: u64,
    /// Shards found committed and left alone.
    pub shards_skipped: u64,
    /// Rows in the shards this run wrote.
    pub rows_written: u64,
    /// Rows per status in the shards this run wrote.
    pub counts_by_status: BTreeMap<String, u64>,
}

/// The run description stored at [`RUN_FILE`]: a rerun or another slice with different inputs,
/// slice count or shard size would regroup rows differently, so it is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Input URIs in order.
    pub inputs: Vec<String>,
    /// Processes splitting the input.
    pub num_shards: u32,
    /// Input rows per shard.
    pub rows_per_shard: usize,
}

/// The key of row `row` of shard `number`: stable across reruns.
pub fn row_key(number: u64, row: usize) -> String {
    format!("{number:05}-{row:06}")
}

/// The pair shards at a location: committed (with their stats file) and not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardListing {
    /// Shard names (`NNNNN.parquet`) with a stats file, sorted.
    pub committed: Vec<String>,
    /// Shard names without one (a run died before committing them), sorted.
    pub uncommitted: Vec<String>,
}

/// Lists the pair shards at the top of `location` (run files, `_seeds/` and the region shards
/// `detector extract` writes beside them are not pair shards).
pub async fn list_shards(location: &Location) -> Result<ShardListing> {
    let names = location.list().await?;
    let present: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut listing = ShardListing::default();
    for name in names
        .iter()
        .filter(|n| pair_shard::file_number(n).is_some())
    {
        if present.contains(stats_file_name(name).as_str()) {
            listing.committed.push(name.clone());
        } else {
            listing.uncommitted.push(name.clone());
        }
    }
    Ok(listing)
}

/// Everything a row needs, shared by the tasks of one run.
struct Workers {
    text: TextFilter,
    fetcher: Fetcher,
    scorer: Arc<dyn Scorer>,
    config: IngestConfig,
}

/// Runs `job` to the end: every shard of its slice committed.
pub async fn ingest(job: IngestJob) -> Result<IngestSummary> {
    job.config.validate()?;
    // Inputs are opened before anything is written, so a mistyped one can't leave a run file
    // that pins the output to the wrong inputs.
    let mut opened = Vec::with_capacity(job.inputs.len());
    for uri in &job.inputs {
        let (kind, _) = inputs::kind_of(uri)?;
        opened.push((uri.clone(), kind, inputs::open_input(uri).await?));
    }
    let output = Location::parse(&job.output)?;
    check_run_spec(&output, &job).await?;
    let vocab = wordpiece::WordPiece::from_file(&job.config.output.vocab).with_context(|| {
        format!(
            "loading the vocabulary {} (output.vocab)",
            job.config.output.vocab.display()
        )
    })?;
    let workers = Arc::new(Workers {
        text: TextFilter::new(job.config.text.clone(), Arc::new(vocab))?,
        fetcher: Fetcher::new(job.config.fetch.clone())?,
        scorer: Arc::new(HeuristicScorer::default()),
        config: job.config.clone(),
    });

    let progress = progress_bar(job.progress);
    let mut summary = IngestSummary::default();
    let mut chunks = spawn_reader(&job, opened, &output, &workers).await?;
    while let Some(chunk) = chunks.recv().await {
        let (number, rows) = chunk?;
        let name = pair_shard::file_name(number);
        let stats_name = stats_file_name(&name);
        if let Some(stats) = output.get_if_exists(&stats_name).await? {
            let stats = ShardStats::from_json(&output.uri_of(&stats_name), &stats)?;
            let transient = stats
                .counts_by_status
                .get(Status::FailedTransient.as_str())
                .copied()
                .unwrap_or(0);
            if job.retry_failed && transient > 0 {
                let records = retry_shard(&output, &name, &workers, &progress).await?;
                commit(&output, &name, &records, &mut summary, Instant::now()).await?;
            } else {
                summary.shards_skipped += 1;
                progress.inc(rows.len() as u64);
            }
            continue;
        }
        let started = Instant::now();
        let records = process_shard(number, rows, &workers, &progress).await;
        commit(&output, &name, &records, &mut summary, started).await?;
    }
    progress.finish_and_clear();
    tracing::info!(
        written = summary.shards_written,
        skipped = summary.shards_skipped,
        rows = summary.rows_written,
        "slice {} of {} done",
        job.slice.index,
        job.slice.count
    );
    Ok(summary)
}

async fn check_run_spec(output: &Location, job: &IngestJob) -> Result<()> {
    let spec = RunSpec {
        inputs: job.inputs.clone(),
        num_shards: job.slice.count,
        rows_per_shard: job.config.output.rows_per_shard,
    };
    if let Some(existing) = output.claim_run_file(RUN_FILE, &spec).await? {
        bail!(
            "{} was written by an ingest run with other inputs, --num-shards or \
             output.rows_per_shard ({existing:?}); rerun with the same ones or use a new output",
            output.uri()
        );
    }
    Ok(())
}

fn progress_bar(visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} ingest {pos} rows ({per_sec}) {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

type Chunk = Result<(u64, Vec<InputRow>)>;

/// An input ready to stream: a file, or the expanded rows of a seed list.
enum Source {
    File(String, inputs::InputData),
    Rows(Vec<InputRow>),
}

/// Reads this slice's rows on a blocking thread and hands them over shard by shard.
async fn spawn_reader(
    job: &IngestJob,
    opened: Vec<(String, inputs::InputKind, inputs::InputData)>,
    output: &Location,
    workers: &Arc<Workers>,
) -> Result<mpsc::Receiver<Chunk>> {
    // Seed lists are expanded (pages fetched and parsed) once per slice, see `crate::seeds`.
    let mut sources: Vec<Source> = Vec::with_capacity(opened.len());
    for (uri, kind, data) in opened {
        sources.push(if kind == inputs::InputKind::Seeds {
            Source::Rows(
                seeds::expand(&uri, data, output, job.slice, &workers.fetcher, &job.config).await?,
            )
        } else {
            Source::File(uri, data)
        });
    }
    let (sender, receiver) = mpsc::channel::<Chunk>(2);
    let slice = job.slice;
    let rows_per_shard = job.config.output.rows_per_shard;
    let input_config = job.config.input.clone();
    tokio::task::spawn_blocking(move || {
        let mut sequence = 0u64;
        let mut chunk: Vec<InputRow> = Vec::with_capacity(rows_per_shard);
        let send = |sequence: &mut u64, chunk: Vec<InputRow>| -> bool {
            let number = *sequence * u64::from(slice.count) + u64::from(slice.index);
            *sequence += 1;
            sender.blocking_send(Ok((number, chunk))).is_ok()
        };
        for source in sources {
            let (rows, sliced): (Box<dyn Iterator<Item = InputRow> + Send>, bool) = match source {
                Source::File(uri, data) => match inputs::read_rows(&uri, data, &input_config) {
                    Ok(rows) => (rows, false),
                    Err(error) => {
                        let _ = sender.blocking_send(Err(error));
                        return;
                    }
                },
                // Expanded seed lists already hold only this slice's pages.
                Source::Rows(rows) => (Box::new(rows.into_iter()), true),
            };
            for row in rows {
                if !sliced && !sharding::owns(slice, row.url()) {
                    continue;
                }
                chunk.push(row);
                if chunk.len() == rows_per_shard {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(rows_per_shard));
                    if !send(&mut sequence, full) {
                        return;
                    }
                }
            }
        }
        if !chunk.is_empty() {
            send(&mut sequence, chunk);
        }
    });
    Ok(receiver)
}

/// Rows of a shard worked on at once: more than the fetcher's request limit, so rows waiting for
/// a slow or rate-limited host's turn don't keep other hosts idle (a waiting row costs a few
/// hundred bytes).
fn rows_in_flight(config: &IngestConfig) -> usize {
    config.fetch.max_concurrency.max(1) * 8
}

/// Runs every row of one shard through the steps and removes duplicates within it.
async fn process_shard(
    number: u64,
    rows: Vec<InputRow>,
    workers: &Arc<Workers>,
    progress: &ProgressBar,
) -> Vec<PairRecord> {
    run_rows(
        rows,
        workers,
        progress,
        move |row, input, workers| async move {
            process_row(row_key(number, row), input, &workers).await
        },
    )
    .await
}

/// Runs `step` on every item of one shard, many at once, and returns the records in item order
/// with duplicates removed among the kept ones.
async fn run_rows<T, Step, Fut>(
    items: Vec<T>,
    workers: &Arc<Workers>,
    progress: &ProgressBar,
    step: Step,
) -> Vec<PairRecord>
where
    Step: Fn(usize, T, Arc<Workers>) -> Fut,
    Fut: std::future::Future<Output = PairRecord>,
{
    let mut indexed: Vec<(usize, PairRecord)> =
        futures::stream::iter(items.into_iter().enumerate())
            .map(|(i, item)| {
                let record = step(i, item, Arc::clone(workers));
                async move { (i, record.await) }
            })
            .buffer_unordered(rows_in_flight(&workers.config))
            .inspect(|_| progress.inc(1))
            .collect()
            .await;
    indexed.sort_by_key(|(i, _)| *i);
    let mut records: Vec<PairRecord> = indexed.into_iter().map(|(_, r)| r).collect();
    apply_dedup(&mut records, &workers.config.dedup);
    records
}

/// One input row to one output row.
async fn process_row(key: String, input: InputRow, workers: &Arc<Workers>) -> PairRecord {
    let candidate = match input {
        InputRow::Invalid {
            url,
            source_file,
            source_offset,
            reason,
            message,
        } => {
            return PairRecord {
                drop_reason: Some(reason),
                error_message: Some(message),
                source_offset: Some(source_offset),
                ..PairRecord::new(key, url, Status::FailedPermanent, source_file)
            };
        }
        InputRow::Candidate(candidate) => candidate,
    };
    let mut record = PairRecord {
        page_url: (!candidate.page_url.is_empty()).then(|| candidate.page_url.clone()),
        source_offset: candidate.source_offset,
        ..PairRecord::new(
            key,
            candidate.url.clone(),
            Status::Dropped,
            candidate.source_file.clone(),
        )
    };
    match workers.text.choose(&candidate.text_options()) {
        TextVerdict::Kept {
            text,
            source,
            language,
            language_score,
        } => {
            record.text = Some(text);
            record.text_source = Some(source);
            record.language = Some(language);
            record.language_score = Some(language_score);
        }
        TextVerdict::Dropped {
            reason,
            message,
            language,
            language_score,
        } => {
            record.drop_reason = Some(reason.into());
            record.error_message = Some(message);
            record.language = language;
            record.language_score = language_score;
            return record;
        }
    }
    fetch_and_process(record, workers).await
}

/// Fetches the image of a row whose text passed, then decodes, filters, scores it.
async fn fetch_and_process(mut record: PairRecord, workers: &Arc<Workers>) -> PairRecord {
    let (body, content_type) = match workers.fetcher.fetch(&record.url).await {
        FetchOutcome::Fetched {
            http_status,
            content_type,
            body,
            ..
        } => {
            record.http_status = Some(http_status);
            (body, content_type)
        }
        FetchOutcome::Failed(failure) => {
            record.http_status = failure.http_status;
            record.status = if failure.kind.is_refusal() {
                Status::Dropped
            } else if failure.kind.is_transient() {
                Status::FailedTransient
            } else {
                Status::FailedPermanent
            };
            record.drop_reason = Some(failure.reason());
            record.error_message = Some(failure.message);
            return record;
        }
    };
    let workers = Arc::clone(workers);
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let fallback = record.clone();
    rayon::spawn(move || {
        // A decoder that panics on a hostile file costs its row, never the run.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decode_and_score(record, &body, content_type.as_deref(), &workers)
        }));
        let _ = sender.send(outcome.ok());
    });
    match receiver.await {
        Ok(Some(record)) => record,
        _ => PairRecord {
            status: Status::FailedPermanent,
            drop_reason: Some("decoder_panic".into()),
            error_message: Some(format!("{}: the image decoder panicked", fallback.url)),
            ..fallback
        },
    }
}

/// The CPU part of a row: decode, size filter, re-encode, hashes, scores.
fn decode_and_score(
    mut record: PairRecord,
    body: &[u8],
    content_type: Option<&str>,
    workers: &Workers,
) -> PairRecord {
    let image = match imaging::process(body, content_type, &workers.config.image) {
        Ok(image) => image,
        Err(reject) => {
            record.status = if reject.is_drop() {
                Status::Dropped
            } else {
                Status::FailedPermanent
            };
            record.drop_reason = Some(reject.code().into());
            record.error_message = Some(format!("{}: {reject}", record.url));
            return record;
        }
    };
    let text = record.text.as_deref().unwrap_or_default();
    let scores = workers.scorer.score(&image.rgb, text);
    record.original_width = Some(image.original_width);
    record.original_height = Some(image.original_height);
    record.sha256 = Some(image.sha256.clone());
    record.perceptual_hash = Some(image.phash);
    record.nsfw_score = Some(scores.nsfw);
    record.relevance_score = Some(scores.relevance);
    if let Some(reason) = workers.config.scoring.verdict(&scores) {
        record.status = Status::Dropped;
        record.drop_reason = Some(reason.into());
        record.error_message = Some(format!(
            "{}: nsfw {:.2}, relevance {:.2} ({})",
            record.url,
            scores.nsfw,
            scores.relevance,
            workers.scorer.name()
        ));
        return record;
    }
    record.status = Status::Kept;
    record.drop_reason = None;
    record.error_message = None;
    record.width = Some(image.width);
    record.height = Some(image.height);
    record.image = Some(image.jpeg);
    record
}

/// Drops duplicate images (keeping the best-scored text) and over-shared texts among the kept
/// rows of one shard.
fn apply_dedup(records: &mut [PairRecord], config: &dedup::DedupConfig) {
    let kept: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == Status::Kept)
        .map(|(i, _)| i)
        .collect();
    let rows: Vec<DedupRow> = kept.iter().map(|&i| dedup_row(&records[i])).collect();
    for drop in dedup::plan(&rows, config).dropped {
        let record = &mut records[kept[drop.index]];
        record.status = Status::Dropped;
        record.drop_reason = Some(drop.reason.into());
        record.error_message = Some(drop.message);
        record.image = None;
        record.width = None;
        record.height = None;
    }
}

/// The columns duplicate removal looks at.
pub fn dedup_row(record: &PairRecord) -> DedupRow {
    DedupRow {
        key: record.key.clone(),
        sha256: record.sha256.clone().unwrap_or_default(),
        phash: record.perceptual_hash,
        text: record.text.clone().unwrap_or_default(),
        score: record.relevance_score.unwrap_or(0.0),
    }
}

/// Refetches the `failed_transient` rows of a committed shard; the rest stay as they were.
async fn retry_shard(
    output: &Location,
    name: &str,
    workers: &Arc<Workers>,
    progress: &ProgressBar,
) -> Result<Vec<PairRecord>> {
    let uri = output.uri_of(name);
    let bytes = output.get(name).await?;
    let records = pair_shard::read(&uri, bytes)?;
    // Rows dropped as duplicates earlier stay dropped; newly kept rows are checked against the
    // rows already kept.
    Ok(run_rows(
        records,
        workers,
        progress,
        |_, record, workers| async move {
            if record.status != Status::FailedTransient {
                return record;
            }
            let fresh = PairRecord {
                page_url: record.page_url,
                text: record.text,
                text_source: record.text_source,
                language: record.language,
                language_score: record.language_score,
                source_offset: record.source_offset,
                ..PairRecord::new(record.key, record.url, Status::Dropped, record.source_file)
            };
            fetch_and_process(fresh, &workers).await
        },
    )
    .await)
}

/// Writes the shard, then its stats (the commit), and adds them to `summary`.
async fn commit(
    output: &Location,
    name: &str,
    records: &[PairRecord],
    summary: &mut IngestSummary,
    started: Instant,
) -> Result<()> {
    let stats = commit_shard(output, name, records, STAGE, started).await?;
    summary.shards_written += 1;
    summary.rows_written += stats.rows;
    for (status, count) in stats.counts_by_status {
        *summary.counts_by_status.entry(status).or_default() += count;
    }
    Ok(())
}

/// Writes `records` as the pair shard `name` into `output`, then its stats file, stamped with
/// `stage` (the commit: a shard counts as finished once its stats exist). `started` is when work
/// on the shard began. Returns the stats written.
pub async fn commit_shard(
    output: &Location,
    name: &str,
    records: &[PairRecord],
    stage: &str,
    started: Instant,
) -> Result<ShardStats> {
    let started_unix_s = unix_now() - started.elapsed().as_secs_f64();
    let write_started = Instant::now();
    let bytes = pair_shard::write(&output.uri_of(name), Vec::new(), records)?;
    output.put(name, Bytes::from(bytes)).await?;
    let mut stats = ShardStats::new(name, stage);
    tally(&mut stats, records);
    stats
        .durations_s
        .insert("process".into(), (write_started - started).as_secs_f64());
    stats
        .durations_s
        .insert("write".into(), write_started.elapsed().as_secs_f64());
    stats
        .durations_s
        .insert("total".into(), started.elapsed().as_secs_f64());
    stats.started_unix_s = started_unix_s;
    stats.finished_unix_s = unix_now();
    output
        .put(&stats_file_name(name), Bytes::from(stats.to_json()))
        .await?;
    tracing::info!(shard = name, rows = stats.rows, counts = ?stats.counts_by_status, "committed");
    Ok(stats)
}

/// Fills the row counts of `stats` from `records`: per status, drop reasons of dropped rows,
/// error codes of failed rows.
pub fn tally(stats: &mut ShardStats, records: &[PairRecord]) {
    stats.rows = records.len() as u64;
    for record in records {
        *stats
            .counts_by_status
            .entry(record.status.as_str().to_owned())
            .or_default() += 1;
        if let Some(reason) = &record.drop_reason {
            let tally = if record.status == Status::Dropped {
                &mut stats.drop_reasons
            } else {
                &mut stats.error_tallies
            };
            *tally.entry(reason.clone()).or_default() += 1;
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
