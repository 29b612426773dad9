//! `trainer run`: one pre-training stage — stream batches, apply the four objectives, step Adam,
//! log every step to `log.jsonl`, checkpoint every `checkpoint_every` steps and at the end, and
//! resume exactly from the newest checkpoint in `train.output` when there is one.
//!
//! Exact resume: the checkpoint holds the model, Adam's state, the step, the masking RNG and the
//! data cursor; dropout masks are re-seeded from `(seed, step)` every step and the learning rate
//! is a function of the step, so a resumed run computes the same steps as an uninterrupted one.
//! Log lines after the checkpoint's step (written before a crash) are dropped on resume.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::batch::build_pretrain_batch;
use crate::checkpoint::{
    CheckpointStore, module_from_bytes, module_to_bytes, optimizer_from_bytes, optimizer_to_bytes,
    seed_step,
};
use crate::config::RunConfig;
use crate::data::{
    Batcher, DataCursor, DataLimits, SampleStream, StreamOptions, check_detectors, list_shards,
};
use crate::losses::pretrain_losses;
use crate::model::hf::HfCheckpoint;
use crate::model::imagebert::{ImageBert, ImageBertConfig};
use wordpiece::WordPiece;

const MODEL_FILE: &str = "model.mpk";
const OPTIMIZER_FILE: &str = "optimizer.mpk";
const STATE_FILE: &str = "state.json";
const LOG_FILE: &str = "log.jsonl";

/// Everything besides weights that exact resume needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainingState {
    step: u64,
    rng: ChaCha8Rng,
    cursor: DataCursor,
}

/// One line of `log.jsonl`.
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
    /// Learning rate used.
    pub lr: f64,
    /// Samples in the batch.
    pub samples: usize,
    /// Text tokens + regions in the batch.
    pub tokens: usize,
    /// Samples per second of this step.
    pub samples_per_s: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Step the run started from (0, or the resumed checkpoint's step).
    pub resumed_from: u64,
    /// Steps done in total.
    pub steps: u64,
    /// The last step's log line.
    pub last: Option<StepLog>,
}

/// Keeps the log lines up to `step` and drops later ones (written after the last checkpoint).
fn truncate_log(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| serde_json::from_str::<StepLog>(line).is_ok_and(|l| l.step <= step))
        .map(|line| format!("{line}\n"))
        .collect();
    let temp = path.with_extension("jsonl.tmp");
    std::fs::write(&temp, kept).with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("replacing {}", path.display()))
}

/// Runs (or resumes) the stage described by `config` on backend `B`.
pub fn run<B: burn::tensor::backend::AutodiffBackend>(
    config: &RunConfig,
    device: &B::Device,
) -> Result<RunSummary> {
    let tokenizer = WordPiece::from_file(&config.model.vocab)?;
    let shards = list_shards(&config.data.dataset)?;
    let options = StreamOptions {
        seed: config.data.seed,
        rank: 0,
        world_size: 1,
        limits: DataLimits {
            max_text_len: config.data.max_text_len,
            max_regions: config.data.max_regions,
        },
    };
    let encoder = config.encoder()?;
    ensure!(
        encoder.vocab_size == tokenizer.vocab_size(),
        "model vocab_size {} differs from the {} tokens of {}",
        encoder.vocab_size,
        tokenizer.vocab_size(),
        config.model.vocab.display()
    );
    let store = CheckpointStore::new(
        config.train.output.join("checkpoints"),
        config.train.keep_checkpoints,
    );
    let log_path = config.train.output.join(LOG_FILE);
    std::fs::create_dir_all(&config.train.output)
        .with_context(|| format!("creating {}", config.train.output.display()))?;

    let special = tokenizer.special();
    let vocab_size = tokenizer.vocab_size();
    // Footers only: every shard's detector is checked before training starts.
    let detector = check_detectors(&shards)?;
    let model_config = ImageBertConfig {
        encoder,
        region_feature_dim: detector.feature_dim,
        num_object_classes: detector.num_classes,
    };

    B::seed(device, config.data.seed);
    let mut model = ImageBert::<B>::init(&model_config, device);
    let mut optimizer = AdamConfig::new().init::<B, ImageBert<B>>();
    let (mut step, mut rng, stream) = match store.latest()? {
        Some(checkpoint) => {
            model = module_from_bytes(model, checkpoint.file(MODEL_FILE)?, device)?;
            optimizer = optimizer_from_bytes(optimizer, checkpoint.file(OPTIMIZER_FILE)?, device)?;
            let state: TrainingState = serde_json::from_slice(checkpoint.file(STATE_FILE)?)
                .with_context(|| {
                    format!("{}: corrupt training state", checkpoint.path.display())
                })?;
            truncate_log(&log_path, state.step)?;
            tracing::info!(step = state.step, path = %checkpoint.path.display(), "resuming");
            let stream = SampleStream::resume(state.cursor, shards, tokenizer, options)?;
            (state.step, state.rng, stream)
        }
        None => {
            if let Some(dir) = &config.model.init_from {
                let previous = CheckpointStore::new(dir, usize::MAX)
                    .latest()?
                    .with_context(|| {
                        format!("model.init_from: no checkpoint in {}", dir.display())
                    })?;
                model = module_from_bytes(model, previous.file(MODEL_FILE)?, device)?;
                tracing::info!(path = %previous.path.display(), "initialised from the previous stage");
            } else if let Some(path) = &config.model.init_hf {
                let (loaded, parts) = HfCheckpoint::open(path)?.load_imagebert(model, device)?;
                model = loaded;
                tracing::info!(?parts, path = %path.display(), "initialised from HuggingFace weights");
            }
            truncate_log(&log_path, 0)?;
            let stream = SampleStream::new(shards, tokenizer, options)?;
            (0, ChaCha8Rng::seed_from_u64(config.data.seed), stream)
        }
    };
    let resumed_from = step;
    let mut batcher = Batcher::new(stream);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let progress = indicatif::ProgressBar::new(config.train.steps).with_position(step);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  eta {eta}")
            .expect("valid template"),
    );
    let mut last = None;
    while step < config.train.steps {
        let started = Instant::now();
        seed_step::<B>(device, config.data.seed, step);
        let samples = batcher.next_batch(config.train.batch_size, config.train.max_tokens)?;
        let tokens: usize = samples.iter().map(crate::data::sample_tokens).sum();
        let (input, targets) = build_pretrain_batch::<B>(
            &samples,
            detector.feature_dim,
            special,
            vocab_size,
            &config.masking,
            &mut rng,
            device,
        );
        let losses = pretrain_losses(model.forward(&input), targets, &config.loss_weights);
        let read = |t: &burn::tensor::Tensor<B, 1>| {
            t.clone()
                .into_data()
                .to_vec::<f32>()
                .map(|v| v[0])
                .unwrap_or(f32::NAN)
        };
        let lr = config.learning_rate(step);
        let entry = StepLog {
            step: step + 1,
            loss: read(&losses.total),
            mlm: read(&losses.mlm),
            moc: read(&losses.moc),
            mrfr: read(&losses.mrfr),
            itm: read(&losses.itm),
            lr,
            samples: samples.len(),
            tokens,
            samples_per_s: 0.0,
        };
        ensure!(
            entry.loss.is_finite(),
            "step {}: loss is {}",
            entry.step,
            entry.loss
        );
        let gradients = GradientsParams::from_grads(losses.total.backward(), &model);
        model = optimizer.step(lr, model, gradients);
        step += 1;
        let entry = StepLog {
            samples_per_s: samples.len() as f64 / started.elapsed().as_secs_f64(),
            ..entry
        };
        writeln!(log, "{}", serde_json::to_string(&entry)?)?;
        progress.set_position(step);
        progress.set_message(format!("loss {:.3}  itm {:.3}", entry.loss, entry.itm));
        last = Some(entry);
        if step % config.train.checkpoint_every == 0 || step == config.train.steps {
            log.flush()?;
            let state = TrainingState {
                step,
                rng: rng.clone(),
                cursor: batcher.cursor(),
            };
            store.save(
                step,
                &[
                    (MODEL_FILE, &module_to_bytes::<B, _>(model.clone())?),
                    (OPTIMIZER_FILE, &optimizer_to_bytes(&optimizer)?),
                    (STATE_FILE, &serde_json::to_vec(&state)?),
                ],
            )?;
        }
    }
    progress.finish();
    Ok(RunSummary {
        resumed_from,
        steps: step,
        last,
    })
}
