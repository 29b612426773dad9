//! `trainer run` configuration: one TOML file per stage (`stage1.toml`, `stage2.toml`). Every key
//! has a documented default except `data.dataset` and `train.output`; unknown keys are refused
//! with their name. Relative paths are relative to the config file's folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::data::{DEFAULT_MAX_REGIONS, DEFAULT_MAX_TEXT_LEN};
use crate::losses::LossWeights;
use crate::model::config::EncoderConfig;
use crate::objectives::MaskingConfig;

/// A whole stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Model size and initialisation.
    #[serde(default)]
    pub model: ModelSection,
    /// Where the shards are and how samples are cut.
    pub data: DataSection,
    /// Steps, batch, optimiser, checkpoints.
    pub train: TrainSection,
    /// Masking and negative-sampling rates (the paper's by default).
    #[serde(default)]
    pub masking: MaskingConfig,
    /// Weight of each loss (1 each by default).
    #[serde(default)]
    pub loss_weights: LossWeights,
}

/// `[model]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// `mini` (MiniLM-L6 shape, default) or `base` (the paper's BERT-base).
    pub size: String,
    /// Explicit encoder shape; overrides `size` when given (`[model.encoder]`).
    pub encoder: Option<EncoderConfig>,
    /// WordPiece vocabulary (default `assets/minilm/vocab.txt` from the repository root).
    pub vocab: PathBuf,
    /// HuggingFace BERT `model.safetensors` for the text side (stage 1; default none).
    pub init_hf: Option<PathBuf>,
    /// Checkpoints of a previous stage whose newest model starts this one (stage 2): a folder
    /// (relative to this file) or an `s3://`, `gs://`, `az://` URI.
    pub init_from: Option<String>,
}

impl ModelSection {
    /// The encoder shape: `[model.encoder]` if given, else the `size` preset.
    pub fn encoder(&self) -> Result<EncoderConfig> {
        match &self.encoder {
            Some(encoder) => Ok(encoder.clone()),
            None => match EncoderConfig::preset(&self.size) {
                Some(encoder) => Ok(encoder),
                None => bail!("model.size is `{}`: expected `mini` or `base`", self.size),
            },
        }
    }

    /// Makes relative paths relative to `base` (the config file's folder).
    pub fn resolve(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.vocab);
        self.init_hf.as_mut().map(resolve);
        if let Some(location) = &mut self.init_from {
            resolve_location(location, base);
        }
    }
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            size: "mini".to_owned(),
            encoder: None,
            vocab: PathBuf::from("assets/minilm/vocab.txt"),
            init_hf: None,
            init_from: None,
        }
    }
}

/// `[data]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Where the pair shards are, with their region shards beside them: a local folder
    /// (relative to this file) or `file://`, `s3://`, `gs://`, `az://` (credentials from the
    /// environment).
    pub dataset: String,
    /// Most WordPiece ids per caption, `[CLS]`/`[SEP]` included (44).
    #[serde(default = "default_text_len")]
    pub max_text_len: usize,
    /// Most regions per image (100, the paper's top-100 ROIs).
    #[serde(default = "default_regions")]
    pub max_regions: usize,
    /// Seed of data order, masking and initialisation (42).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Batches each data rank reads ahead on a worker thread while the device trains (2).
    #[serde(default = "default_prefetch")]
    pub prefetch_batches: usize,
}

fn default_text_len() -> usize {
    DEFAULT_MAX_TEXT_LEN
}
fn default_regions() -> usize {
    DEFAULT_MAX_REGIONS
}
fn default_seed() -> u64 {
    42
}
fn default_prefetch() -> usize {
    2
}

/// `[train]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Folder for checkpoints and `log.jsonl`.
    pub output: PathBuf,
    /// Where the checkpoints go instead of `<output>/checkpoints`: a folder (relative to this
    /// file) or an `s3://`, `gs://`, `az://` URI (credentials from the environment), so that the
    /// ranks of a multi-node job need no shared file system for them.
    #[serde(default)]
    pub checkpoints: Option<String>,
    /// Optimiser steps of this stage.
    pub steps: u64,
    /// Most samples per global batch (48, the paper's), over all processes and micro-batches:
    /// each of the `world size × grad_accumulation` data ranks takes an equal share, so it must
    /// divide evenly. The learning rate is the one for this global batch; nothing is rescaled
    /// when the world size changes.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Most text tokens + regions per micro-batch (48 × 144).
    #[serde(default = "default_tokens")]
    pub max_tokens: usize,
    /// Pad every micro-batch to fixed shapes (false): text to `data.max_text_len`, regions to
    /// `data.max_regions`, and the chosen tokens and regions of the masked heads to a multiple
    /// of 64. The losses do not change (only the dropout masks, drawn over the padded shapes,
    /// do); the tensor shapes stop changing from step to step, which
    /// spares a GPU a kernel compilation or autotune run for each new shape, at the price of
    /// computing on the padding. Turn it on for GPUs; the CPU gains nothing from it.
    #[serde(default)]
    pub fixed_shapes: bool,
    /// Micro-batches each process runs per step before the gradients are averaged (1): one
    /// process with 4 emulates 4 processes with 1, with the same global batch and the same
    /// weights up to float rounding.
    #[serde(default = "default_accumulation")]
    pub grad_accumulation: usize,
    /// Seconds a process waits in one collective operation (joining, all-reduce) before it
    /// gives up: a peer that died or hangs ends every rank with an error (300).
    #[serde(default = "default_collective_timeout")]
    pub collective_timeout_s: u64,
    /// What averages the gradients across processes ("auto"): "nccl" (CUDA builds, on each
    /// process's GPU, inside and across nodes), "burn-collective" (host copies over TCP, any
    /// build), or "auto": NCCL when every process can load libnccl, burn-collective otherwise.
    #[serde(default)]
    pub all_reduce: crate::distributed::GradientEngine,
    /// Steps between comparisons of the processes' weights (100; 0: only at checkpoints).
    /// Ranks that diverged stop the run with an error naming them.
    #[serde(default = "default_replica_check")]
    pub replica_check_every: u64,
    /// Peak learning rate of Adam (1e-4, the paper's).
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    /// Steps of linear warm-up before linear decay to zero (0).
    #[serde(default)]
    pub warmup_steps: u64,
    /// Steps between checkpoints (100); the last step is always checkpointed.
    #[serde(default = "default_every")]
    pub checkpoint_every: u64,
    /// Checkpoints kept (3).
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
}

fn default_batch() -> usize {
    48
}
fn default_tokens() -> usize {
    48 * 144
}
fn default_lr() -> f64 {
    1e-4
}
fn default_accumulation() -> usize {
    1
}
fn default_collective_timeout() -> u64 {
    300
}
fn default_replica_check() -> u64 {
    100
}
fn default_every() -> u64 {
    100
}
fn default_keep() -> usize {
    3
}

impl RunConfig {
    /// Reads and validates `path`; errors name the file and the key.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: RunConfig =
            toml::from_str(&text).with_context(|| format!("{}: invalid config", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        resolve_location(&mut config.data.dataset, base);
        if config.train.output.is_relative() {
            config.train.output = base.join(&config.train.output);
        }
        if let Some(location) = &mut config.train.checkpoints {
            resolve_location(location, base);
        }
        config.model.resolve(base);
        config
            .validate()
            .with_context(|| format!("{}: invalid config", path.display()))?;
        Ok(config)
    }

    /// The encoder shape: `[model.encoder]` if given, else the `size` preset.
    pub fn encoder(&self) -> Result<EncoderConfig> {
        self.model.encoder()
    }

    /// Refuses values the run cannot use, naming the key.
    pub fn validate(&self) -> Result<()> {
        self.encoder()?
            .validate()
            .map_err(|e| anyhow::anyhow!("model.encoder: {e}"))?;
        self.masking
            .validate()
            .map_err(|e| anyhow::anyhow!("masking.{e}"))?;
        let t = &self.train;
        let data = [
            (
                self.data.max_text_len < 2,
                "data.max_text_len must be at least 2",
            ),
            (
                self.data.max_regions == 0,
                "data.max_regions must be positive",
            ),
            (
                t.max_tokens < self.data.max_text_len + self.data.max_regions,
                "train.max_tokens must hold one full sample (data.max_text_len + data.max_regions)",
            ),
            (
                t.grad_accumulation == 0,
                "train.grad_accumulation must be positive",
            ),
            (
                t.collective_timeout_s == 0,
                "train.collective_timeout_s must be positive",
            ),
        ];
        refuse_first(
            schedule_checks(
                t.steps,
                t.batch_size,
                t.checkpoint_every,
                t.learning_rate,
                t.warmup_steps,
            )
            .into_iter()
            .chain(data),
        )
    }

    /// Learning rate at `step` (0-based): linear warm-up, then linear decay to zero.
    pub fn learning_rate(&self, step: u64) -> f64 {
        let t = &self.train;
        linear_schedule(t.learning_rate, t.warmup_steps, t.steps, step)
    }
}

/// The checks of the `[train]` keys every training config has, as (fails, message naming the
/// key).
pub fn schedule_checks(
    steps: u64,
    batch_size: usize,
    checkpoint_every: u64,
    learning_rate: f64,
    warmup_steps: u64,
) -> [(bool, &'static str); 5] {
    [
        (steps == 0, "train.steps must be positive"),
        (batch_size == 0, "train.batch_size must be positive"),
        (
            checkpoint_every == 0,
            "train.checkpoint_every must be positive",
        ),
        (
            learning_rate.is_nan() || learning_rate <= 0.0,
            "train.learning_rate must be positive",
        ),
        (
            warmup_steps > steps,
            "train.warmup_steps must not exceed train.steps",
        ),
    ]
}

/// Fails with the message of the first check that fails.
pub fn refuse_first(checks: impl IntoIterator<Item = (bool, &'static str)>) -> Result<()> {
    match checks.into_iter().find(|(bad, _)| *bad) {
        Some((_, message)) => bail!("{message}"),
        None => Ok(()),
    }
}

/// Learning rate at `step` (0-based) of `steps`: linear warm-up over `warmup` steps to `peak`,
/// then linear decay to zero.
pub fn linear_schedule(peak: f64, warmup: u64, steps: u64, step: u64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let decay_steps = (steps - warmup).max(1) as f64;
    peak * (1.0 - (step - warmup) as f64 / decay_steps).max(0.0)
}

/// Makes a local dataset path relative to `base` (the config's folder); URIs (`s3://...`) stay.
pub fn resolve_location(location: &mut String, base: &Path) {
    if !location.contains("://") && Path::new(location.as_str()).is_relative() {
        *location = base.join(location.as_str()).to_string_lossy().into_owned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RunConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage1.toml");
        std::fs::write(&path, text).unwrap();
        RunConfig::load(&path)
    }

    const MINIMAL: &str = "[data]\ndataset = \"shards\"\n[train]\noutput = \"out\"\nsteps = 10\n";

    #[test]
    fn defaults_are_the_papers_and_paths_are_relative_to_the_file() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.train.batch_size, 48);
        assert_eq!(config.train.learning_rate, 1e-4);
        assert_eq!(config.data.max_regions, 100);
        assert_eq!(config.masking, MaskingConfig::default());
        assert_eq!(config.encoder().unwrap(), EncoderConfig::mini());
        let dataset = Path::new(&config.data.dataset);
        assert!(dataset.ends_with("shards") && dataset.is_absolute());
        let remote =
            "[data]\ndataset = \"s3://bucket/shards\"\n[train]\noutput = \"out\"\nsteps = 10\n";
        assert_eq!(parse(remote).unwrap().data.dataset, "s3://bucket/shards");
    }

    #[test]
    fn unknown_and_invalid_keys_are_refused_by_name() {
        let err = format!("{:#}", parse(&format!("{MINIMAL}lr = 3\n")).unwrap_err());
        assert!(err.contains("unknown field `lr`"), "{err}");
        let err = format!(
            "{:#}",
            parse(&MINIMAL.replace("steps = 10", "steps = 0")).unwrap_err()
        );
        assert!(err.contains("train.steps must be positive"), "{err}");
        let err = format!(
            "{:#}",
            parse(&format!("{MINIMAL}[masking]\nmlm_probability = 2.0\n")).unwrap_err()
        );
        assert!(
            err.contains("masking.mlm_probability must be within [0, 1]"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            parse(&format!("[model]\nsize = \"huge\"\n{MINIMAL}")).unwrap_err()
        );
        assert!(err.contains("model.size is `huge`"), "{err}");
    }

    #[test]
    fn the_shipped_stage_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let stage1 = RunConfig::load(&dir.join("stage1.toml")).unwrap();
        assert!(stage1.model.init_hf.is_some() && stage1.model.init_from.is_none());
        let stage2 = RunConfig::load(&dir.join("stage2.toml")).unwrap();
        assert!(
            stage2
                .model
                .init_from
                .unwrap()
                .ends_with("runs/stage1/checkpoints")
        );
        assert_eq!(stage2.train.batch_size, 48);
    }

    #[test]
    fn learning_rate_warms_up_then_decays_to_zero() {
        let mut config = parse(MINIMAL).unwrap();
        config.train.warmup_steps = 2;
        let lrs: Vec<f64> = (0..10).map(|s| config.learning_rate(s)).collect();
        assert_eq!(lrs[0], 0.5e-4);
        assert_eq!(lrs[1], 1e-4);
        assert_eq!(lrs[2], 1e-4);
        assert!(lrs[9] > 0.0 && lrs[9] < lrs[5]);
    }
}
