//! Region-feature extraction for imagebert: reads the pair shards `pipeline ingest` committed,
//! runs a real detector (Burn, CPU or CUDA) on every kept image and commits one region-feature
//! shard (`schemas::region_features`, `NNNNN.regions.parquet`) per pair shard.
//!
//! * [`centernet`]: the embedded default, MobileNetV3-CenterNet (COCO-80) from its TF.js graph,
//!   run by [`tfjs_program`] over the weights [`tfjs`] reads;
//! * [`ops`]: box coding, NMS and RoIAlign (torchvision semantics, RoIAlign on the device);
//! * [`regions`]: the [`regions::RegionDetector`] interface detectors implement, image decoding,
//!   and the conversion of their output to rows;
//! * [`extract`]: the resumable, sliced, pipelined driver; [`config`]: its TOML settings;
//!   [`cli`]: the `detector extract` flags and a runner for `main`.

pub mod bench;
pub mod butd;
pub mod centernet;
pub mod cli;
pub mod config;
pub mod extract;
pub mod ops;
pub mod regions;
pub mod tfjs;
pub mod tfjs_program;

/// `sha256:` and the first 16 hex digits of the SHA-256 of `files`' contents in order: the
/// detector version stored in region shards, so features from other weights are never mixed.
pub fn file_digest(files: &[&std::path::Path]) -> anyhow::Result<String> {
    use anyhow::Context;
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for file in files {
        digest.update(std::fs::read(file).with_context(|| format!("reading {}", file.display()))?);
    }
    let hex: String = digest.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("sha256:{hex}"))
}
