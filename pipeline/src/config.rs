//! `pipeline ingest` configuration: one TOML file, every key optional with a documented default
//! (`pipeline/configs/ingest.toml` lists them all); unknown keys are refused with their name.
//! Relative paths are relative to the config file's folder; without a config file, to the current
//! folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::dedup::DedupConfig;
use crate::fetch::FetchConfig;
use crate::imaging::ImageConfig;
use crate::inputs::InputConfig;
use crate::scoring::ScoringConfig;
use crate::text::TextFilterConfig;

/// The whole ingest configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// `[output]`: shard size and the vocabulary.
    pub output: OutputConfig,
    /// `[input]`: URL-list columns and HTML extraction.
    pub input: InputConfig,
    /// `[text]`: language, cleaning, length and out-of-vocabulary filters.
    pub text: TextFilterConfig,
    /// `[fetch]`: politeness, consent, safety and timeouts.
    pub fetch: FetchConfig,
    /// `[image]`: size filter, decompression-bomb caps, re-encoding.
    pub image: ImageConfig,
    /// `[scoring]`: NSFW / non-natural and relevance thresholds.
    pub scoring: ScoringConfig,
    /// `[dedup]`: duplicate images and over-shared texts within a shard.
    pub dedup: DedupConfig,
}

/// `[output]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// Input rows per pair shard. Default 10000 (img2dataset's default shard size); a shard is
    /// the unit of resume, so smaller shards lose less work to a crash.
    pub rows_per_shard: usize,
    /// WordPiece `vocab.txt` the out-of-vocabulary filter measures against; the trainer's
    /// vocabulary, so kept captions tokenize well. Default `assets/minilm/vocab.txt`.
    pub vocab: PathBuf,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            rows_per_shard: 10_000,
            vocab: PathBuf::from("assets/minilm/vocab.txt"),
        }
    }
}

impl IngestConfig {
    /// Reads and checks `path`; relative paths in it become relative to its folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let mut config: IngestConfig =
            toml::from_str(&text).with_context(|| format!("config {}", path.display()))?;
        let folder = path.parent().unwrap_or(Path::new("."));
        if config.output.vocab.is_relative() {
            config.output.vocab = folder.join(&config.output.vocab);
        }
        config
            .validate()
            .with_context(|| format!("config {}", path.display()))?;
        Ok(config)
    }

    /// Refuses values that can't work, naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.output.rows_per_shard == 0 {
            bail!("output.rows_per_shard must be at least 1");
        }
        self.image
            .validate()
            .map_err(|e| anyhow::anyhow!("image: {}", e.0))?;
        self.text.validate()
    }
}
