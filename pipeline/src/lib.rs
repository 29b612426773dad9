//! `pipeline`: from web sources to clean image–text pair shards.
//!
//! Built so far: [`inspect`], which validates and summarises any imagebert file, and [`sources`],
//! which reads candidate image–text pairs out of WARC/WAT files and HTML pages. The crawl,
//! filter and shard stages (`pipeline ingest`) are listed as not built yet in the README.

pub mod inspect;
pub mod sources;
