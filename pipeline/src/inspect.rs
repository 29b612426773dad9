//! `pipeline inspect`: validate any imagebert file against its schema and summarise it.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result, bail};
use parquet::file::reader::{FileReader, SerializedFileReader};
use schemas::identity::SCHEMA_NAME_KEY;
use schemas::manifest::DatasetManifest;
use schemas::pair_shard::{self, Status};
use schemas::region_features::RegionReader;
use schemas::shard_stats::ShardStats;
use serde_json::{Value, json};

/// Validates the file at `path` against the schema it names and returns a JSON summary.
/// Parquet shards are read in full (streaming, batch by batch), so a bad row anywhere fails.
pub fn inspect(path: &Path) -> Result<Value> {
    let label = path.display().to_string();
    if path.extension().is_some_and(|e| e == "json") {
        let bytes = std::fs::read(path).with_context(|| format!("reading {label}"))?;
        return inspect_json(&label, &bytes);
    }
    let open = || File::open(path).with_context(|| format!("opening {label}"));
    let schema_name = SerializedFileReader::new(open()?)
        .with_context(|| format!("{label}: not a Parquet file"))?
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .find(|kv| kv.key == SCHEMA_NAME_KEY)
        .and_then(|kv| kv.value.clone())
        .with_context(|| {
            format!("{label}: no `{SCHEMA_NAME_KEY}` metadata; not an imagebert file")
        })?;
    match schema_name.as_str() {
        name if name == pair_shard::ID.name => inspect_pair_shard(&label, open()?),
        name if name == schemas::region_features::ID.name => inspect_region_shard(&label, open()?),
        other => bail!("{label}: unknown imagebert schema `{other}`"),
    }
}

fn inspect_pair_shard(label: &str, file: File) -> Result<Value> {
    let mut reader = pair_shard::open(label, file)?;
    let mut by_status: BTreeMap<&str, u64> = Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    let mut drop_reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut image_bytes = 0u64;
    while let Some(batch) = reader.next_batch() {
        let (first_row, batch) = batch?;
        for record in pair_shard::from_batch(label, first_row, &batch)? {
            *by_status.entry(record.status.as_str()).or_default() += 1;
            if let Some(reason) = record.drop_reason {
                *drop_reasons.entry(reason).or_default() += 1;
            }
            image_bytes += record.image.map_or(0, |i| i.len() as u64);
        }
    }
    Ok(json!({
        "file": label,
        "schema": pair_shard::ID.name,
        "schema_version": pair_shard::ID.version,
        "rows": reader.num_rows(),
        "counts_by_status": by_status,
        "drop_reasons": drop_reasons,
        "image_bytes": image_bytes,
    }))
}

fn inspect_region_shard(label: &str, file: File) -> Result<Value> {
    let (detector, records) = RegionReader::open(label, file)?.read_all()?;
    let boxes: usize = records.iter().map(|r| r.boxes.len()).sum();
    let failed = records
        .iter()
        .filter(|r| r.status == schemas::region_features::RegionStatus::Failed)
        .count();
    Ok(json!({
        "file": label,
        "schema": schemas::region_features::ID.name,
        "schema_version": schemas::region_features::ID.version,
        "rows": records.len(),
        "failed_rows": failed,
        "boxes": boxes,
        "detector": {
            "name": detector.name,
            "version": detector.version,
            "feature_dim": detector.feature_dim,
            "num_classes": detector.num_classes,
            "num_attributes": detector.num_attributes,
        },
    }))
}

fn inspect_json(label: &str, bytes: &[u8]) -> Result<Value> {
    let value: Value =
        serde_json::from_slice(bytes).with_context(|| format!("{label}: not JSON"))?;
    match value.get("schema").and_then(Value::as_str) {
        Some(name) if name == schemas::shard_stats::ID.name => {
            let stats = ShardStats::from_json(label, bytes)?;
            Ok(json!({
                "file": label,
                "schema": name,
                "schema_version": stats.schema_version,
                "shard": stats.shard,
                "rows": stats.rows,
                "counts_by_status": stats.counts_by_status,
                "drop_reasons": stats.drop_reasons,
            }))
        }
        Some(name) if name == schemas::manifest::ID.name => {
            let manifest = DatasetManifest::from_json(label, bytes)?;
            Ok(json!({
                "file": label,
                "schema": name,
                "schema_version": manifest.schema_version,
                "dataset": manifest.name,
                "shards": manifest.shards.len(),
                "rows": manifest.total_rows(),
                "detector": manifest.detector,
            }))
        }
        Some(other) => bail!("{label}: unknown imagebert schema `{other}`"),
        None => bail!("{label}: no `schema` field; not an imagebert file"),
    }
}
