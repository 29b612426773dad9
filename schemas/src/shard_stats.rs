//! Shard stats: the JSON side file written after its shard. A shard whose stats file exists is
//! finished; a rerun skips it (img2dataset's `_stats.json` rule).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Result, SchemaId, json_io};

/// Name and version of this format.
pub const ID: SchemaId = SchemaId {
    name: "shard_stats",
    version: 1,
};

/// The stats file name that belongs to a shard file name: `00042.parquet` -> `00042_stats.json`.
pub fn stats_file_name(shard_file_name: &str) -> String {
    let stem = shard_file_name
        .strip_suffix(".parquet")
        .unwrap_or(shard_file_name);
    format!("{stem}_stats.json")
}

/// What happened while one shard was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardStats {
    /// Always `shard_stats`.
    pub schema: String,
    /// Always [`ID`]'s version.
    pub schema_version: u32,
    /// The shard file this describes, relative to the stats file.
    pub shard: String,
    /// The command that wrote it, e.g. `pipeline ingest`.
    pub stage: String,
    /// Version of the tool that wrote it.
    pub tool_version: String,
    /// Rows in the shard.
    pub rows: u64,
    /// Row count per `status` value.
    pub counts_by_status: BTreeMap<String, u64>,
    /// Row count per `drop_reason` value (what each filter dropped).
    pub drop_reasons: BTreeMap<String, u64>,
    /// Count per error kind (e.g. `http_404`, `timeout`, `decode`).
    pub error_tallies: BTreeMap<String, u64>,
    /// Seconds spent per phase (e.g. `fetch`, `decode`, `write`, `total`).
    pub durations_s: BTreeMap<String, f64>,
    /// Unix time, seconds, when work on the shard started.
    pub started_unix_s: f64,
    /// Unix time, seconds, when the shard was committed.
    pub finished_unix_s: f64,
}

impl ShardStats {
    /// Empty stats for `shard`, written by `stage`.
    pub fn new(shard: &str, stage: &str) -> Self {
        Self {
            schema: ID.name.to_owned(),
            schema_version: ID.version,
            shard: shard.to_owned(),
            stage: stage.to_owned(),
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            rows: 0,
            counts_by_status: BTreeMap::new(),
            drop_reasons: BTreeMap::new(),
            error_tallies: BTreeMap::new(),
            durations_s: BTreeMap::new(),
            started_unix_s: 0.0,
            finished_unix_s: 0.0,
        }
    }

    /// Serialises to JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        json_io::to_vec(self)
    }

    /// Parses stats JSON, refusing another schema or version. `file` names the input in errors.
    pub fn from_json(file: &str, bytes: &[u8]) -> Result<Self> {
        json_io::parse(file, bytes, ID)
    }
}
