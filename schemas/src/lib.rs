//! The file formats every imagebert stage shares.
//!
//! Data moves `pipeline` -> `detector` -> `trainer` through files in these formats and nothing else:
//!
//! * [`pair_shard`]: one Parquet row per candidate image–text pair, kept or dropped;
//! * [`region_features`]: one Parquet row per kept image, with boxes, classes and pooled features;
//! * [`shard_stats`]: the JSON side file written last, which marks a shard as finished;
//! * [`manifest`]: the JSON index of a whole dataset;
//! * [`karpathy`]: the retrieval benchmarks' Karpathy-split JSON (an outside format, read only).
//!
//! Every file carries its schema name and version ([`identity`]); readers refuse a file whose
//! name, version or columns do not match, with an error naming the file and the column
//! ([`SchemaError`]). Column documentation with units lives in `schemas/README.md`.

pub mod error;
pub mod identity;
mod json_io;
pub mod karpathy;
pub mod manifest;
pub mod pair_shard;
pub mod parquet_io;
pub mod region_features;
pub mod shard_stats;

pub use error::SchemaError;
pub use identity::SchemaId;

/// Result type of this crate.
pub type Result<T, E = SchemaError> = std::result::Result<T, E>;
