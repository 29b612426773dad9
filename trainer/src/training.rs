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
//!
//! # Data parallelism
//!
//! A step's global batch is cut into `data ranks = world size × grad_accumulation` equal
//! micro-batches; process `rank` runs micro-batches `rank × grad_accumulation ..` and each data
//! rank reads its own slice of the shards. Each process averages its micro-batches' gradients,
//! then one all-reduce ([`crate::distributed`]) averages them, with the step's logged figures,
//! over all processes, and every rank takes the same Adam step. The masks and dropout of data
//! rank `d` at step `s` are seeded from `(seed, s, d)`, so the run computes the same steps
//! whichever way its data ranks are spread over processes: 2 processes × 1 micro-batch and
//! 1 process × 2 micro-batches give the same weights up to float rounding. Rank 0 alone writes
//! the log and the checkpoints (the output folder is shared); every `replica_check_every` steps
//! and at every checkpoint the ranks compare a hash of their weights and stop if they differ.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use backend::FusedAdam;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::batch::{FixedShapes, build_shaped_pretrain_batch};
use crate::checkpoint::{
    CheckpointStore, LoadedCheckpoint, module_from_bytes, module_to_bytes, optimizer_from_bytes,
    optimizer_to_bytes, seed_step,
};
use crate::config::RunConfig;
use crate::data::{
    Batcher, DataCursor, DataLimits, Prefetcher, SampleStream, ShardPair, StreamOptions,
    check_detectors, list_shards,
};
use crate::distributed::{
    Collective, World, check_replicas, flatten_gradients, gradients_from_flat, weights_hash,
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
    /// The step's figures as numbers, to be averaged over micro-batches and ranks.
    fn figures(&self) -> Vec<f32>;
    /// Takes the average `figures` of `parts` micro-batches; counts become totals.
    fn set_figures(&mut self, figures: &[f32], parts: usize);
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
    /// The state to checkpoint now (this process's part of it).
    fn state(&self) -> Self::State;
    /// One state from every process's part, in rank order (for the checkpoint rank 0 writes).
    fn merge_states(parts: Vec<Self::State>) -> Result<Self::State>;
    /// Learning rate of `step` (0-based).
    fn learning_rate(&self, step: u64) -> f64;
    /// Builds micro-batch `micro` of this process for step `step + 1` (see the module docs) and
    /// returns its loss and log line.
    fn step(
        &mut self,
        model: &ImageBert<B>,
        step: u64,
        micro: usize,
        lr: f64,
    ) -> Result<(Tensor<B, 1>, Self::Log)>;
}

/// Where and how long the loop runs.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// Folder for `log.jsonl`.
    pub output: PathBuf,
    /// Where the checkpoints go: a folder or an object-store URI.
    pub checkpoints: String,
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
    /// Micro-batches per process and step (1).
    pub grad_accumulation: usize,
    /// Steps between comparisons of the ranks' weights (0: only at checkpoints).
    pub replica_check_every: u64,
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

/// Runs (or resumes) `task` for `settings.steps` steps with Adam, alone or as one rank of
/// `collective` (see the module docs).
pub fn train_loop<B: AutodiffBackend, T: Task<B>>(
    settings: &LoopSettings,
    task: &mut T,
    collective: Option<&Collective>,
    device: &B::Device,
) -> Result<LoopSummary<T::Log>> {
    let world = collective.map_or(World::SINGLE, Collective::world);
    let leader = world.rank == 0;
    ensure!(
        settings.grad_accumulation > 0,
        "train.grad_accumulation must be positive"
    );
    let data_ranks = world.size * settings.grad_accumulation;
    let store = CheckpointStore::open(&settings.checkpoints, settings.keep_checkpoints)?;
    let log_path = settings.output.join(LOG_FILE);
    std::fs::create_dir_all(&settings.output)
        .with_context(|| format!("creating {}", settings.output.display()))?;
    B::seed(device, settings.seed);
    let mut model = ImageBert::<B>::init(&settings.model, device);
    materialize(&model);
    let mut optimizer = FusedAdam::default().init::<B, ImageBert<B>>();
    let mut step = match store.latest()? {
        Some(checkpoint) => {
            model = module_from_bytes(model, checkpoint.file(MODEL_FILE)?, device)?;
            optimizer = optimizer_from_bytes(optimizer, checkpoint.file(OPTIMIZER_FILE)?, device)?;
            let saved: SavedState<T::State> = serde_json::from_slice(checkpoint.file(STATE_FILE)?)
                .with_context(|| format!("{}: corrupt training state", checkpoint.uri))?;
            if leader {
                truncate_log::<T::Log>(&log_path, saved.step)?;
            }
            tracing::info!(step = saved.step, uri = %checkpoint.uri, "resuming");
            task.restore(saved.task)?;
            saved.step
        }
        None => {
            model = task.start(model, device)?;
            if leader {
                truncate_log::<T::Log>(&log_path, 0)?;
            }
            0
        }
    };
    let resumed_from = step;
    if let Some(collective) = collective {
        compare_replicas(collective, &model, step)?;
    }
    let mut log = leader
        .then(|| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .with_context(|| format!("opening {}", log_path.display()))
        })
        .transpose()?;
    let model_config = serde_json::to_vec_pretty(&settings.model)?;
    let progress = if leader {
        step_progress(settings.steps, step)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut last = None;
    while step < settings.steps {
        let started = Instant::now();
        let lr = task.learning_rate(step);
        let (gradients, mut entry) = if data_ranks == 1 {
            seed_step::<B>(device, settings.seed, step);
            let (loss, entry) = task.step(&model, step, 0, lr)?;
            (GradientsParams::from_grads(loss.backward(), &model), entry)
        } else {
            data_parallel_step(settings, task, &model, collective, step, lr, device)?
        };
        ensure!(
            entry.loss().is_finite(),
            "step {}: loss is {}",
            entry.step(),
            entry.loss()
        );
        model = optimizer.step(lr, model, gradients);
        step += 1;
        entry.set_samples_per_s(1.0 / started.elapsed().as_secs_f64());
        if let Some(log) = &mut log {
            writeln!(log, "{}", serde_json::to_string(&entry)?)?;
        }
        progress.set_position(step);
        progress.set_message(entry.summary());
        last = Some(entry);
        let checkpoint = step % settings.checkpoint_every == 0 || step == settings.steps;
        if let Some(collective) = collective {
            let every = settings.replica_check_every;
            if checkpoint || (every > 0 && step.is_multiple_of(every)) {
                compare_replicas(collective, &model, step)?;
            }
        }
        if checkpoint {
            let task_state = match collective {
                Some(collective) => {
                    let parts = collective
                        .gather_bytes(
                            &serde_json::to_vec(&task.state())?,
                            "gathering data cursors",
                        )?
                        .iter()
                        .map(|bytes| serde_json::from_slice(bytes))
                        .collect::<Result<Vec<T::State>, _>>()
                        .context("a rank's training state")?;
                    T::merge_states(parts)?
                }
                None => task.state(),
            };
            if let Some(log) = &mut log {
                log.flush()?;
                let state = SavedState {
                    step,
                    task: task_state,
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
    }
    progress.finish();
    Ok(LoopSummary {
        resumed_from,
        steps: step,
        last,
    })
}

/// Draws every parameter's initial value now, in module order. Burn initialises parameters
/// lazily, on first use, from the backend's RNG at that moment: left lazy, the values would
/// depend on what used the RNG first (a forward pass after [`seed_step`], or the replica check).
fn materialize<B: Backend>(model: &ImageBert<B>) {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    model.visit(&mut Touch);
}

/// One step's gradients and log line over several data ranks: this process's micro-batches,
/// averaged, then averaged with the other processes' in one all-reduce that also carries the
/// logged figures.
fn data_parallel_step<B: AutodiffBackend, T: Task<B>>(
    settings: &LoopSettings,
    task: &mut T,
    model: &ImageBert<B>,
    collective: Option<&Collective>,
    step: u64,
    lr: f64,
    device: &B::Device,
) -> Result<(GradientsParams, T::Log)> {
    let world = collective.map_or(World::SINGLE, Collective::world);
    let micros = settings.grad_accumulation;
    let data_ranks = (world.size * micros) as u64;
    let mut summed: Vec<f32> = Vec::new();
    let mut figures: Vec<f32> = Vec::new();
    let mut first = None;
    for micro in 0..micros {
        let data_rank = (world.rank * micros + micro) as u64;
        seed_step::<B>(device, settings.seed, step * data_ranks + data_rank);
        let (loss, entry) = task.step(model, step, micro, lr)?;
        let gradients = GradientsParams::from_grads(loss.backward(), model);
        add_into(&mut summed, &flatten_gradients(model, &gradients));
        add_into(&mut figures, &entry.figures());
        first.get_or_insert(entry);
    }
    let gradient_count = summed.len();
    summed.extend(figures);
    let scale = 1.0 / micros as f32;
    summed.iter_mut().for_each(|value| *value *= scale);
    let averaged = match collective {
        Some(collective) => collective.mean(summed, &format!("all-reduce of step {}", step + 1))?,
        None => summed,
    };
    let mut entry = first.context("no micro-batch ran")?;
    entry.set_figures(&averaged[gradient_count..], data_ranks as usize);
    let gradients = gradients_from_flat(model, &averaged[..gradient_count])?;
    Ok((gradients, entry))
}

/// `total += values`, element-wise; an empty `total` becomes `values`.
fn add_into(total: &mut Vec<f32>, values: &[f32]) {
    if total.is_empty() {
        total.extend_from_slice(values);
    } else {
        total.iter_mut().zip(values).for_each(|(t, v)| *t += v);
    }
}

/// Stops unless every rank holds the same weights as rank 0 after `step`.
fn compare_replicas<B: AutodiffBackend>(
    collective: &Collective,
    model: &ImageBert<B>,
    step: u64,
) -> Result<()> {
    let hashes = collective.gather_bytes(&weights_hash(model), "comparing weights")?;
    check_replicas(&hashes, step)
}

/// Where a run's checkpoints go: `configured` when given, else `<output>/checkpoints`.
pub fn checkpoints_of(output: &Path, configured: Option<&str>) -> String {
    configured.map_or_else(
        || output.join("checkpoints").to_string_lossy().into_owned(),
        str::to_owned,
    )
}

/// The newest checkpoint in `checkpoints` and the model shape it holds (`model_config.json`).
pub fn latest_model_config(checkpoints: &str) -> Result<(ImageBertConfig, LoadedCheckpoint)> {
    let checkpoint = CheckpointStore::open(checkpoints, usize::MAX)?
        .latest()?
        .with_context(|| format!("no checkpoint in {checkpoints}"))?;
    let config = serde_json::from_slice(checkpoint.file(MODEL_CONFIG_FILE)?)
        .with_context(|| format!("{}: corrupt {MODEL_CONFIG_FILE}", checkpoint.uri))?;
    Ok((config, checkpoint))
}

/// The model of the newest checkpoint in `checkpoints`, rebuilt from its `model_config.json`,
/// with that config and the checkpoint.
pub fn load_model<B: Backend>(
    checkpoints: &str,
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

/// Everything besides weights that exact resume of pre-training needs: where each data rank's
/// stream stands (masks are seeded from the step, so there is no RNG to keep).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PretrainState {
    /// Data ranks of the run that saved it.
    data_ranks: usize,
    /// `(data rank, cursor)` of the data ranks the saving process (or, merged, all) ran.
    cursors: Vec<(usize, DataCursor)>,
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
    fn figures(&self) -> Vec<f32> {
        vec![
            self.loss,
            self.mlm,
            self.moc,
            self.mrfr,
            self.itm,
            self.mlm_accuracy,
            self.moc_accuracy,
            self.itm_accuracy,
            self.samples as f32,
            self.tokens as f32,
        ]
    }
    fn set_figures(&mut self, figures: &[f32], parts: usize) {
        if let [
            loss,
            mlm,
            moc,
            mrfr,
            itm,
            mlm_acc,
            moc_acc,
            itm_acc,
            samples,
            tokens,
        ] = *figures
        {
            (self.loss, self.mlm, self.moc, self.mrfr, self.itm) = (loss, mlm, moc, mrfr, itm);
            (self.mlm_accuracy, self.moc_accuracy, self.itm_accuracy) = (mlm_acc, moc_acc, itm_acc);
            self.samples = (samples * parts as f32).round() as usize;
            self.tokens = (tokens * parts as f32).round() as usize;
        }
    }
}

/// What a finished `trainer run` reports.
pub type RunSummary = LoopSummary<StepLog>;

/// Pre-training with the four objectives over the shard stream.
struct Pretrain<'a> {
    config: &'a RunConfig,
    shards: Vec<ShardPair>,
    tokenizer: WordPiece,
    options: StreamOptions,
    special: SpecialTokens,
    vocab_size: usize,
    feature_dim: usize,
    /// Data ranks of the run (world size × micro-batches per process).
    data_ranks: usize,
    /// This process's data ranks, one per micro-batch.
    own_data_ranks: std::ops::Range<usize>,
    /// Samples per micro-batch.
    micro_batch: usize,
    /// One stream per own data rank, read ahead on worker threads, once opened.
    batchers: Vec<Prefetcher>,
}

impl Pretrain<'_> {
    /// Opens this process's streams, each at its data rank's cursor.
    fn open_streams(&mut self, cursor_of: impl Fn(usize) -> DataCursor) -> Result<()> {
        self.batchers = self
            .own_data_ranks
            .clone()
            .map(|data_rank| {
                let options = StreamOptions {
                    rank: data_rank,
                    world_size: self.data_ranks,
                    ..self.options
                };
                let stream = SampleStream::resume(
                    cursor_of(data_rank),
                    self.shards.clone(),
                    self.tokenizer.clone(),
                    options,
                )?;
                Prefetcher::spawn(
                    Batcher::new(stream),
                    self.micro_batch,
                    self.config.train.max_tokens,
                    self.config.data.prefetch_batches,
                )
            })
            .collect::<Result<_>>()?;
        Ok(())
    }
}

impl<B: AutodiffBackend> Task<B> for Pretrain<'_> {
    type State = PretrainState;
    type Log = StepLog;

    fn start(&mut self, model: ImageBert<B>, device: &B::Device) -> Result<ImageBert<B>> {
        self.open_streams(|_| DataCursor::default())?;
        let model = if let Some(dir) = &self.config.model.init_from {
            let previous = CheckpointStore::open(dir, usize::MAX)?
                .latest()?
                .with_context(|| format!("model.init_from: no checkpoint in {dir}"))?;
            tracing::info!(uri = %previous.uri, "initialised from the previous stage");
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
        let cursors: std::collections::HashMap<usize, DataCursor> =
            state.cursors.iter().copied().collect();
        if state.data_ranks == self.data_ranks
            && (0..self.data_ranks).all(|rank| cursors.contains_key(&rank))
        {
            return self.open_streams(|data_rank| cursors[&data_rank]);
        }
        // Another world size or accumulation: the old slices no longer exist. Every data rank
        // starts the epoch after the furthest one any old data rank had reached.
        let epoch = cursors.values().map(|c| c.epoch).max().unwrap_or(0) + 1;
        tracing::warn!(
            saved = state.data_ranks,
            now = self.data_ranks,
            epoch,
            "the number of data ranks changed: every stream restarts at a new epoch"
        );
        self.open_streams(|_| DataCursor {
            epoch,
            ..DataCursor::default()
        })
    }

    fn state(&self) -> PretrainState {
        PretrainState {
            data_ranks: self.data_ranks,
            cursors: self
                .own_data_ranks
                .clone()
                .zip(&self.batchers)
                .map(|(data_rank, batcher)| (data_rank, batcher.cursor()))
                .collect(),
        }
    }

    fn merge_states(parts: Vec<PretrainState>) -> Result<PretrainState> {
        let data_ranks = parts.first().context("no state to merge")?.data_ranks;
        let mut cursors: Vec<(usize, DataCursor)> =
            parts.into_iter().flat_map(|part| part.cursors).collect();
        cursors.sort_by_key(|(data_rank, _)| *data_rank);
        Ok(PretrainState {
            data_ranks,
            cursors,
        })
    }

    fn learning_rate(&self, step: u64) -> f64 {
        self.config.learning_rate(step)
    }

    fn step(
        &mut self,
        model: &ImageBert<B>,
        step: u64,
        micro: usize,
        lr: f64,
    ) -> Result<(Tensor<B, 1>, StepLog)> {
        let data_rank = self.own_data_ranks.start + micro;
        let batcher = self
            .batchers
            .get_mut(micro)
            .context("the stream is not open")?;
        let samples = batcher.next_batch()?;
        let tokens: usize = samples.iter().map(crate::data::sample_tokens).sum();
        let device = model.mlm_bias.device();
        // Masks and ITM pairs of data rank `d` at step `s` come from `(seed, s, d)` alone.
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.data.seed);
        rng.set_stream(step * self.data_ranks as u64 + data_rank as u64);
        let fixed = self.config.train.fixed_shapes.then(|| {
            FixedShapes::padded_to(self.config.data.max_text_len, self.config.data.max_regions)
        });
        let (input, targets) = build_shaped_pretrain_batch::<B>(
            &samples,
            self.feature_dim,
            self.special,
            self.vocab_size,
            &self.config.masking,
            fixed.as_ref(),
            &mut rng,
            &device,
        );
        let losses = pretrain_losses(
            model.forward(&input, &targets.chosen),
            targets,
            &self.config.loss_weights,
        );
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

/// Runs (or resumes) the stage described by `config` on backend `B`, as one rank of
/// `collective` when there is one.
pub fn run<B: AutodiffBackend>(
    config: &RunConfig,
    collective: Option<&Collective>,
    device: &B::Device,
) -> Result<RunSummary> {
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
    let world = collective.map_or(World::SINGLE, Collective::world);
    let micros = config.train.grad_accumulation;
    let data_ranks = world.size * micros;
    ensure!(
        config.train.batch_size.is_multiple_of(data_ranks),
        "train.batch_size {} is not a multiple of {} data ranks ({} processes x \
         train.grad_accumulation {micros}): the global batch must split evenly",
        config.train.batch_size,
        data_ranks,
        world.size
    );
    // Footers only: every shard's detector is checked before training starts.
    let detector = check_detectors(&shards)?;
    let settings = LoopSettings {
        checkpoints: checkpoints_of(&config.train.output, config.train.checkpoints.as_deref()),
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
        grad_accumulation: micros,
        replica_check_every: config.train.replica_check_every,
    };
    let mut task = Pretrain {
        config,
        shards,
        special: tokenizer.special(),
        vocab_size: tokenizer.vocab_size(),
        tokenizer,
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
        data_ranks,
        own_data_ranks: world.rank * micros..(world.rank + 1) * micros,
        micro_batch: config.train.batch_size / data_ranks,
        batchers: Vec::new(),
    };
    train_loop::<B, _>(&settings, &mut task, collective, device)
}
