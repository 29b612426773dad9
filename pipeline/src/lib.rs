//! `pipeline`: from web sources to clean image–text pair shards.
//!
//! Built so far: [`inspect`], which validates and summarises any imagebert file. The crawl,
//! filter and shard stages (`pipeline ingest`) are listed as not built yet in the README.

pub mod inspect;
