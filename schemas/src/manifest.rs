//! Dataset manifest: the JSON index of a dataset's shards, so later stages and users know what
//! exists, which detector made the features and how many rows each shard holds.

use serde::{Deserialize, Serialize};

use crate::{Result, SchemaId, json_io};

/// Name and version of this format.
pub const ID: SchemaId = SchemaId {
    name: "dataset_manifest",
    version: 1,
};

/// The conventional file name of a manifest at a dataset's root.
pub const FILE_NAME: &str = "manifest.json";

/// One pair shard and the files that belong to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestShard {
    /// Pair shard path, relative to the manifest.
    pub pair_shard: String,
    /// Its stats file, relative to the manifest.
    pub stats: String,
    /// Rows in the pair shard.
    pub rows: u64,
    /// Rows with status `kept`.
    pub kept: u64,
    /// The region-feature shard for it, once `detector extract` has run.
    pub region_features: Option<String>,
}

/// The index of one dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetManifest {
    /// Always `dataset_manifest`.
    pub schema: String,
    /// Always [`ID`]'s version.
    pub schema_version: u32,
    /// Dataset name.
    pub name: String,
    /// Tool and version that wrote the manifest.
    pub created_by: String,
    /// Version of the pair-shard schema the shards use.
    pub pair_shard_version: u32,
    /// Version of the region-feature schema, once features exist.
    pub region_features_version: Option<u32>,
    /// `name version` of the detector that made the features, once they exist.
    pub detector: Option<String>,
    /// Every shard, in shard order.
    pub shards: Vec<ManifestShard>,
}

impl DatasetManifest {
    /// An empty manifest for dataset `name`.
    pub fn new(name: &str, created_by: &str) -> Self {
        Self {
            schema: ID.name.to_owned(),
            schema_version: ID.version,
            name: name.to_owned(),
            created_by: created_by.to_owned(),
            pair_shard_version: crate::pair_shard::ID.version,
            region_features_version: None,
            detector: None,
            shards: Vec::new(),
        }
    }

    /// Total rows over all shards.
    pub fn total_rows(&self) -> u64 {
        self.shards.iter().map(|s| s.rows).sum()
    }

    /// Serialises to JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        json_io::to_vec(self)
    }

    /// Parses manifest JSON, refusing another schema or version. `file` names the input in errors.
    pub fn from_json(file: &str, bytes: &[u8]) -> Result<Self> {
        json_io::parse(file, bytes, ID)
    }
}
