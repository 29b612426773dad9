//! `pipeline`: from web sources to clean image–text pair shards (LAIT, the paper's
//! weakly-supervised collection, at web scale).
//!
//! - [`sources`]: candidate image–text pairs from WARC/WAT files and HTML pages;
//!   [`inputs`]: every input kind as one row stream; [`seeds`]: seed pages fetched and parsed.
//! - [`text`], [`fetch`], [`imaging`], [`scoring`], [`dedup`]: the filter steps.
//! - [`sharding`]: the input split across processes by registrable domain.
//! - [`ingest`]: `pipeline ingest`, the steps over shards with atomic commits and resume;
//!   [`config`]: its TOML settings.
//! - [`pack`]: `pipeline pack`, a retrieval benchmark (Karpathy-split JSON + image folder) to
//!   pair shards.
//! - [`bench`]: `pipeline bench`, one-core throughput of the CPU-bound steps.
//! - [`shard_dedup`]: `pipeline dedup`, duplicate removal across all shards.
//! - [`audit`]: checks an output accounts for every input row exactly once.
//! - [`inspect`]: validates and summarises any imagebert file.

pub mod audit;
pub mod bench;
pub mod config;
pub mod dedup;
pub mod fetch;
pub mod imaging;
pub mod ingest;
pub mod inputs;
pub mod inspect;
pub mod pack;
pub mod scoring;
pub mod seeds;
pub mod shard_dedup;
pub mod sharding;
pub mod sources;
pub mod text;
