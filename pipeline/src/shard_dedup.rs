//! `pipeline dedup`: duplicate removal across all shards of an ingest output, the second pass
//! after the per-shard one `pipeline ingest` does.
//!
//! Every process reads the dedup columns (key, status, sha256, perceptual hash, text, relevance
//! score) of every committed input shard, computes the same deterministic plan
//! ([`crate::dedup::plan`] over all kept rows), and rewrites its own shards (shard number modulo
//! `--num-shards`) into the output location with the dropped rows marked `dropped` /
//! `duplicate_image` or `shared_text`, each shard committed with its stats file last. A rerun
//! skips shards already committed in the output. The plan's input is ~100 bytes a row: 100 M rows
//! need ~10 GB in each process; beyond that, split the dataset by sha256 prefix first.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float32Type, UInt64Type};
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use schemas::pair_shard::{self, Status};
use schemas::shard_stats::{ShardStats, stats_file_name};
use serde::Serialize;
use storage::Location;

use crate::dedup::{self, DedupConfig, DedupRow};
use crate::sharding::Slice;

/// The stage name written into stats files.
pub const STAGE: &str = "pipeline dedup";

/// What a dedup run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DedupSummary {
    /// Kept rows the plan looked at, over all shards.
    pub kept_rows: u64,
    /// Rows the plan drops, by reason, over all shards.
    pub dropped: BTreeMap<String, u64>,
    /// Shards this process wrote.
    pub shards_written: u64,
    /// Shards already committed in the output.
    pub shards_skipped: u64,
}

/// Where the plan drops a row: shard name and row, with reason and message.
type Drops = HashMap<String, HashMap<usize, (&'static str, String)>>;

/// Runs the cross-shard dedup of `input` into `output` for `slice`.
pub async fn run(
    input: &str,
    output: &str,
    config: &DedupConfig,
    slice: Slice,
) -> Result<DedupSummary> {
    if input.trim_end_matches('/') == output.trim_end_matches('/') {
        bail!("pipeline dedup writes a new dataset: --output must differ from --input ({input})");
    }
    let input = Location::parse(input)?;
    let output = Location::parse(output)?;
    // The dedup output is the same dataset with other statuses: it carries the ingest run file,
    // so `pipeline audit` checks it against the same inputs.
    if let Some(run) = input.get_if_exists(crate::ingest::RUN_FILE).await? {
        output.put_if_absent(crate::ingest::RUN_FILE, run).await?;
    }
    let names = crate::ingest::list_shards(&input).await?.committed;
    let mut rows: Vec<DedupRow> = Vec::new();
    let mut origin: Vec<(usize, usize)> = Vec::new();
    for (shard, name) in names.iter().enumerate() {
        let bytes = input.get(name).await?;
        for (row, dedup_row) in kept_rows(&input.uri_of(name), bytes)? {
            rows.push(dedup_row);
            origin.push((shard, row));
        }
    }
    let plan = dedup::plan(&rows, config);
    let mut summary = DedupSummary {
        kept_rows: rows.len() as u64,
        ..DedupSummary::default()
    };
    let mut drops: Drops = HashMap::new();
    for dropped in plan.dropped {
        *summary
            .dropped
            .entry(dropped.reason.to_owned())
            .or_default() += 1;
        let (shard, row) = origin[dropped.index];
        drops
            .entry(names[shard].clone())
            .or_default()
            .insert(row, (dropped.reason, dropped.message));
    }
    for name in &names {
        if !slice.owns_number(shard_number(name)?) {
            continue;
        }
        if output.exists(&stats_file_name(name)).await? {
            summary.shards_skipped += 1;
            continue;
        }
        rewrite(&input, &output, name, drops.get(name)).await?;
        summary.shards_written += 1;
    }
    Ok(summary)
}

fn shard_number(name: &str) -> Result<u64> {
    name.trim_end_matches(".parquet")
        .parse()
        .with_context(|| format!("{name}: not a shard name (NNNNN.parquet)"))
}

/// The kept rows of one shard (row index and dedup columns), decoding only those columns.
fn kept_rows(uri: &str, bytes: Bytes) -> Result<Vec<(usize, DedupRow)>> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .with_context(|| format!("{uri}: not a Parquet file"))?;
    let wanted = [
        "key",
        "status",
        "sha256",
        "perceptual_hash",
        "text",
        "relevance_score",
    ];
    let schema = builder.parquet_schema();
    let indices: Vec<usize> = wanted
        .iter()
        .map(|name| {
            schema
                .columns()
                .iter()
                .position(|c| c.name() == *name)
                .with_context(|| format!("{uri}: no `{name}` column"))
        })
        .collect::<Result<_>>()?;
    let mask = ProjectionMask::leaves(schema, indices);
    let reader = builder
        .with_projection(mask)
        .build()
        .with_context(|| format!("reading {uri}"))?;
    let mut out = Vec::new();
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.with_context(|| format!("reading {uri}"))?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .with_context(|| format!("{uri}: no `{name}` column"))
        };
        let keys = column("key")?.as_string::<i32>();
        let statuses = column("status")?.as_string::<i32>();
        let shas = column("sha256")?.as_string::<i32>();
        let hashes = column("perceptual_hash")?.as_primitive::<UInt64Type>();
        let texts = column("text")?.as_string::<i32>();
        let scores = column("relevance_score")?.as_primitive::<Float32Type>();
        for i in 0..batch.num_rows() {
            if statuses.value(i) == Status::Kept.as_str() {
                out.push((
                    row,
                    DedupRow {
                        key: keys.value(i).to_owned(),
                        sha256: text_at(shas, i),
                        phash: hashes.is_valid(i).then(|| hashes.value(i)),
                        text: text_at(texts, i),
                        score: if scores.is_valid(i) {
                            scores.value(i)
                        } else {
                            0.0
                        },
                    },
                ));
            }
            row += 1;
        }
    }
    Ok(out)
}

/// The string at row `i`, empty when null.
fn text_at(column: &arrow::array::StringArray, i: usize) -> String {
    if column.is_valid(i) {
        column.value(i).to_owned()
    } else {
        String::new()
    }
}

/// Copies one shard with the plan's drops applied, then commits its stats.
async fn rewrite(
    input: &Location,
    output: &Location,
    name: &str,
    drops: Option<&HashMap<usize, (&'static str, String)>>,
) -> Result<()> {
    let started = Instant::now();
    let mut records = pair_shard::read(&input.uri_of(name), input.get(name).await?)?;
    if let Some(drops) = drops {
        for (&row, (reason, message)) in drops {
            let record = &mut records[row];
            record.status = Status::Dropped;
            record.drop_reason = Some((*reason).to_owned());
            record.error_message = Some(message.clone());
            record.image = None;
            record.width = None;
            record.height = None;
        }
    }
    let bytes = pair_shard::write(&output.uri_of(name), Vec::new(), &records)?;
    output.put(name, Bytes::from(bytes)).await?;
    let mut stats = ShardStats::new(name, STAGE);
    crate::ingest::tally(&mut stats, &records);
    stats
        .durations_s
        .insert("total".into(), started.elapsed().as_secs_f64());
    stats.finished_unix_s = crate::ingest::unix_now();
    stats.started_unix_s = stats.finished_unix_s - started.elapsed().as_secs_f64();
    output
        .put(&stats_file_name(name), Bytes::from(stats.to_json()))
        .await
}
