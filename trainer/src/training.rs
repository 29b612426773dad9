//! The training loop shared by `trainer run` (pre-training, [`run`]) and `trainer finetune`
//! ([`crate::retrieval::finetune`]): step Adam on the task's loss, log every step to
//! `log.jsonl`, checkpoint every `checkpoint_every` steps and at the end, and resume exactly from
//! the newest checkpoint in the output folder when there is one.
//!
//! Exact resume: the checkpoint holds the model, Adam's state, the step and the task's own state
//! (RNG and data cursor); dropout masks are re-seeded from `(seed, step)` every step and the
//! learning rate is a function of the step, so a resumed run computes the same steps as an
//! uninterrupted one. Log lines after the checkpoint's step (written before a crash) are dropped
//! on resume. Every checkpoint also holds `model_config.json`, the model's shape, so that
//! `trainer eval` can rebuild the model from the checkpoint alone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::batch::build_pretrain_batch;
use crate::checkpoint::{
    CheckpointStore, LoadedCheckpoint, module_from_bytes, module_to_bytes, optimizer_from_bytes,
    optimizer_to_bytes, seed_step,
};
use crate::config::RunConfig;
use crate::data::{
    Batcher, DataCursor, DataLimits, SampleStream, ShardPair, StreamOptions, check_detectors,
    list_shards,
};
use crate::losses::pretrain_losses;
use crate::model::hf::HfCheckpoint;
use crate::model::imagebert::{ImageBert, ImageBertConfig};
use wordpiece::{SpecialTokens, WordPiece};

/// Checkpoint file holding the model's weights.
pub const MODEL_FILE: &str = "model.mpk";
/// Checkpoint file holding the model's shape ([`ImageBertConfig`] as JSON).
pub const MODEL_CONFIG_FILE: &str = "model_config.json";
const OPTIMIZER_FILE: &str = "optimizer.mpk";
const STATE_FILE: &str = "state.json";
const LOG_FILE: &str = "log.jsonl";

/// One line of a task's `log.jsonl`.
pub trait LogLine: Serialize + DeserializeOwned {
    /// Steps done after this one (1-based).
    fn step(&self) -> u64;
    /// The loss that was back-propagated.
    fn loss(&self) -> f32;
    /// Records the step's speed once it is known.
    fn set_samples_per_s(&mut self, samples_per_s: f64);
    /// A few numbers for the progress bar.
    fn summary(&self) -> String;
}

/// A training task the loop drives: pre-training or fine-tuning.
pub trait Task<B: AutodiffBackend> {
    /// What the task must save to continue exactly (RNG, data cursor...).
    type State: Serialize + DeserializeOwned;
    /// Its log line.
    type Log: LogLine;
    /// Starts from nothing: may replace the freshly initialised `model` (pretrained weights).
    fn start(&mut self, model: ImageBert<B>, device: &B::Device) -> Result<ImageBert<B>>;
    /// Continues from a checkpoint's state.
    fn restore(&mut self, state: Self::State) -> Result<()>;
    /// The state to checkpoint now.
    fn state(&self) -> Self::State;
    /// Learning rate of `step` (0-based).
    fn learning_rate(&self, step: u64) -> f64;
    /// Builds the next batch and returns its loss and log line (for step `step + 1`).
    fn step(
        &mut self,
        model: &ImageBert<B>,
        step: u64,
        lr: f64,
    ) -> Result<(Tensor<B, 1>, Self::Log)>;
}

/// Where and how long the loop runs.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// Folder for `checkpoints/` and `log.jsonl`.
    pub output: PathBuf,
    /// Steps in total.
    pub steps: u64,
    /// Steps between checkpoints; the last step is always checkpointed.
    pub checkpoint_every: u64,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// Seed of initialisation and dropout.
    pub seed: u64,
    /// The model's shape.
    pub model: ImageBertConfig,
}

#[derive(Serialize, Deserialize)]
struct SavedState<S> {
    step: u64,
    task: S,
}

/// What a finished loop reports.
#[derive(Debug, Clone)]
pub struct LoopSummary<L> {
    /// Step the run started from (0, or the resumed checkpoint's step).
    pub resumed_from: u64,
    /// Steps done in total.
    pub steps: u64,
    /// The last step's log line.
    pub last: Option<L>,
}

impl<L: LogLine> LoopSummary<L> {
    /// One line for the terminal: steps done, where the run resumed, the last step's figures.
    pub fn describe(&self) -> String {
        format!(
            "finished {} steps (resumed from step {}); last: {}",
            self.steps,
            self.resumed_from,
            self.last
                .as_ref()
                .map(LogLine::summary)
                .unwrap_or_else(|| "no step run".to_owned())
        )
    }
}

/// Keeps the log lines up to `step` and drops later ones (written after the last checkpoint).
fn truncate_log<L: LogLine>(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| serde_json::from_str::<L>(line).is_ok_and(|l| l.step() <= step))
        .map(|line| format!("{line}\n"))
        .collect();
    let temp = path.with_extension("jsonl.tmp");
    std::fs::write(&temp, kept).with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("replacing {}", path.display()))
}

/// A progress bar over `steps` starting at `position`.
pub fn step_progress(steps: u64, position: u64) -> indicatif::ProgressBar {
    let progress = indicatif::ProgressBar::new(steps).with_position(position);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  eta {eta}")
            .expect("valid template"),
    );
    progress
}

/// Reads the first value of a one-element tensor (NaN when it cannot be read).
pub fn scalar<B: Backend>(tensor: &Tensor<B, 1>) -> f32 {
    tensor
        .clone()
        .into_data()
        .to_vec::<f32>()
        .ok()
        .and_then(|v| v.first().copied())
        .unwrap_or(f32::NAN)
}

/// Runs (or resumes) `task` for `settings.steps` steps with Adam.
pub fn train_loop<B: AutodiffBackend, T: Task<B>>(
    settings: &LoopSettings,
    task: &mut T,
    device: &B::Device,
) -> Result<LoopSummary<T::Log>> {
    let store = CheckpointStore::new(
        settings.output.join("checkpoints"),
        settings.keep_checkpoints,
    );
    let log_path = settings.output.join(LOG_FILE);
    std::fs::create_dir_all(&settings.output)
        .with_context(|| format!("creating {}", settings.output.display()))?;
    B::seed(device, settings.seed);
    let mut model = ImageBert::<B>::init(&settings.model, device);
    let mut optimizer = AdamConfig::new().init::<B, ImageBert<B>>();
    let mut step = match store.latest()? {
        Some(checkpoint) => {
            model = module_from_bytes(model, checkpoint.file(MODEL_FILE)?, device)?;
            optimizer = optimizer_from_bytes(optimizer, checkpoint.file(OPTIMIZER_FILE)?, device)?;
            let saved: SavedState<T::State> = serde_json::from_slice(checkpoint.file(STATE_FILE)?)
                .with_context(|| {
                    format!("{}: corrupt training state", checkpoint.path.display())
                })?;
            truncate_log::<T::Log>(&log_path, saved.step)?;
            tracing::info!(step = saved.step, path = %checkpoint.path.display(), "resuming");
            task.restore(saved.task)?;
            saved.step
        }
        None => {
            model = task.start(model, device)?;
            truncate_log::<T::Log>(&log_path, 0)?;
            0
        }
    };
    let resumed_from = step;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let model_config = serde_json::to_vec_pretty(&settings.model)?;
    let progress = step_progress(settings.steps, step);
    let mut last = None;
    while step < settings.steps {
        let started = Instant::now();
        seed_step::<B>(device, settings.seed, step);
        let lr = task.learning_rate(step);
        let (loss, mut entry) = task.step(&model, step, lr)?;
        ensure!(
            entry.loss().is_finite(),
            "step {}: loss is {}",
            entry.step(),
            entry.loss()
        );
        let gradients = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(lr, model, gradients);
        step += 1;
        entry.set_samples_per_s(1.0 / started.elapsed().as_secs_f64());
        writeln!(log, "{}", serde_json::to_string(&entry)?)?;
        progress.set_position(step);
        progress.set_message(entry.summary());
        last = Some(entry);
        if step % settings.checkpoint_every == 0 || step == settings.steps {
            log.flush()?;
            let state = SavedState {
                step,
                task: task.state(),
            };
            store.save(
                step,
                &[
                    (MODEL_FILE, &module_to_bytes::<B, _>(model.clone())?),
                    (MODEL_CONFIG_FILE, &model_config),
                    (OPTIMIZER_FILE, &optimizer_to_bytes(&optimizer)?),
                    (STATE_FILE, &serde_json::to_vec(&state)?),
                ],
            )?;
        }
    }
    progress.finish();
    Ok(LoopSummary {
        resumed_from,
        steps: step,
        last,
    })
}

/// The newest checkpoint in `checkpoints` and the model shape it holds (`model_config.json`).
pub fn latest_model_config(checkpoints: &Path) -> Result<(ImageBertConfig, LoadedCheckpoint)> {
    let checkpoint = CheckpointStore::new(checkpoints, usize::MAX)
        .latest()?
        .with_context(|| format!("no checkpoint in {}", checkpoints.display()))?;
    let config = serde_json::from_slice(checkpoint.file(MODEL_CONFIG_FILE)?)
        .with_context(|| format!("{}: corrupt {MODEL_CONFIG_FILE}", checkpoint.path.display()))?;
    Ok((config, checkpoint))
}

/// The model of the newest checkpoint in `checkpoints`, rebuilt from its `model_config.json`,
/// with that config and the checkpoint.
pub fn load_model<B: Backend>(
    checkpoints: &Path,
    device: &B::Device,
) -> Result<(ImageBert<B>, ImageBertConfig, LoadedCheckpoint)> {
    let (config, checkpoint) = latest_model_config(checkpoints)?;
    let model = module_from_bytes(
        ImageBert::<B>::init(&config, device),
        checkpoint.file(MODEL_FILE)?,
        device,
    )?;
    Ok((model, config, checkpoint))
}

/// Everything besides weights that exact resume of pre-training needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PretrainState {
    rng: ChaCha8Rng,
    cursor: DataCursor,
}

/// One line of `trainer run`'s `log.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// Steps done after this one (1-based).
    pub step: u64,
    /// Weighted total loss.
    pub loss: f32,
    /// MLM loss.
    pub mlm: f32,
    /// MOC loss.
    pub moc: f32,
    /// MRFR loss.
    pub mrfr: f32,
    /// ITM loss.
    pub itm: f32,
    /// Share of MLM targets predicted right.
    #[serde(default)]
    pub mlm_accuracy: f32,
    /// Share of MOC targets predicted right.
    #[serde(default)]
    pub moc_accuracy: f32,
    /// Share of ITM pairs classified right.
    #[serde(default)]
    pub itm_accuracy: f32,
    /// Learning rate used.
    pub lr: f64,
    /// Samples in the batch.
    pub samples: usize,
    /// Text tokens + regions in the batch.
    pub tokens: usize,
    /// Samples per second of this step.
    pub samples_per_s: f64,
}

impl LogLine for StepLog {
    fn step(&self) -> u64 {
        self.step
    }
    fn loss(&self) -> f32 {
        self.loss
    }
    fn set_samples_per_s(&mut self, steps_per_s: f64) {
        self.samples_per_s = self.samples as f64 * steps_per_s;
    }
    fn summary(&self) -> String {
        format!(
            "loss {:.3}  mlm acc {:.2}  itm acc {:.2}",
            self.loss, self.mlm_accuracy, self.itm_accuracy
        )
    }
}

/// What a finished `trainer run` reports.
pub type RunSummary = LoopSummary<StepLog>;

/// Pre-training with the four objectives over the shard stream.
struct Pretrain<'a> {
    config: &'a RunConfig,
    shards: Vec<ShardPair>,
    tokenizer: Option<WordPiece>,
    options: StreamOptions,
    special: SpecialTokens,
    vocab_size: usize,
    feature_dim: usize,
    rng: ChaCha8Rng,
    batcher: Option<Batcher>,
}

impl Pretrain<'_> {
    fn open_stream(&mut self, cursor: DataCursor) -> Result<()> {
        let tokenizer = self
            .tokenizer
            .take()
            .context("the stream is already open")?;
        let stream = SampleStream::resume(cursor, self.shards.clone(), tokenizer, self.options)?;
        self.batcher = Some(Batcher::new(stream));
        Ok(())
    }
}

impl<B: AutodiffBackend> Task<B> for Pretrain<'_> {
    type State = PretrainState;
    type Log = StepLog;

    fn start(&mut self, model: ImageBert<B>, device: &B::Device) -> Result<ImageBert<B>> {
        self.open_stream(DataCursor::default())?;
        let model = if let Some(dir) = &self.config.model.init_from {
            let previous = CheckpointStore::new(dir, usize::MAX)
                .latest()?
                .with_context(|| format!("model.init_from: no checkpoint in {}", dir.display()))?;
            tracing::info!(path = %previous.path.display(), "initialised from the previous stage");
            module_from_bytes(model, previous.file(MODEL_FILE)?, device)?
        } else if let Some(path) = &self.config.model.init_hf {
            let (loaded, parts) = HfCheckpoint::open(path)?.load_imagebert(model, device)?;
            tracing::info!(?parts, path = %path.display(), "initialised from HuggingFace weights");
            loaded
        } else {
            model
        };
        Ok(model)
    }

    fn restore(&mut self, state: PretrainState) -> Result<()> {
        self.rng = state.rng;
        self.open_stream(state.cursor)
    }

    fn state(&self) -> PretrainState {
        PretrainState {
            rng: self.rng.clone(),
            cursor: self
                .batcher
                .as_ref()
                .map(Batcher::cursor)
                .unwrap_or_default(),
        }
    }

    fn learning_rate(&self, step: u64) -> f64 {
        self.config.learning_rate(step)
    }

    fn step(
        &mut self,
        model: &ImageBert<B>,
        step: u64,
        lr: f64,
    ) -> Result<(Tensor<B, 1>, StepLog)> {
        let batcher = self.batcher.as_mut().context("the stream is not open")?;
        let samples =
            batcher.next_batch(self.config.train.batch_size, self.config.train.max_tokens)?;
        let tokens: usize = samples.iter().map(crate::data::sample_tokens).sum();
        let device = model.mlm_bias.device();
        let (input, targets) = build_pretrain_batch::<B>(
            &samples,
            self.feature_dim,
            self.special,
            self.vocab_size,
            &self.config.masking,
            &mut self.rng,
            &device,
        );
        let losses = pretrain_losses(model.forward(&input), targets, &self.config.loss_weights);
        let entry = StepLog {
            step: step + 1,
            loss: scalar(&losses.total),
            mlm: scalar(&losses.mlm),
            moc: scalar(&losses.moc),
            mrfr: scalar(&losses.mrfr),
            itm: scalar(&losses.itm),
            mlm_accuracy: scalar(&losses.mlm_accuracy),
            moc_accuracy: scalar(&losses.moc_accuracy),
            itm_accuracy: scalar(&losses.itm_accuracy),
            lr,
            samples: samples.len(),
            tokens,
            samples_per_s: 0.0,
        };
        Ok((losses.total, entry))
    }
}

/// Runs (or resumes) the stage described by `config` on backend `B`.
pub fn run<B: AutodiffBackend>(config: &RunConfig, device: &B::Device) -> Result<RunSummary> {
    let tokenizer = WordPiece::from_file(&config.model.vocab)?;
    let shards = list_shards(&config.data.dataset)?;
    let encoder = config.encoder()?;
    ensure!(
        encoder.vocab_size == tokenizer.vocab_size(),
        "model vocab_size {} differs from the {} tokens of {}",
        encoder.vocab_size,
        tokenizer.vocab_size(),
        config.model.vocab.display()
    );
    // Footers only: every shard's detector is checked before training starts.
    let detector = check_detectors(&shards)?;
    let settings = LoopSettings {
        output: config.train.output.clone(),
        steps: config.train.steps,
        checkpoint_every: config.train.checkpoint_every,
        keep_checkpoints: config.train.keep_checkpoints,
        seed: config.data.seed,
        model: ImageBertConfig {
            encoder,
            region_feature_dim: detector.feature_dim,
            num_object_classes: detector.num_classes,
        },
    };
    let mut task = Pretrain {
        config,
        shards,
        special: tokenizer.special(),
        vocab_size: tokenizer.vocab_size(),
        tokenizer: Some(tokenizer),
        options: StreamOptions {
            seed: config.data.seed,
            rank: 0,
            world_size: 1,
            limits: DataLimits {
                max_text_len: config.data.max_text_len,
                max_regions: config.data.max_regions,
            },
        },
        feature_dim: detector.feature_dim,
        rng: ChaCha8Rng::seed_from_u64(config.data.seed),
        batcher: None,
    };
    train_loop::<B, _>(&settings, &mut task, device)
}
