//! `trainer finetune`: retrieval fine-tuning (ImageBERT §4.3) with the shared training loop
//! ([`crate::training::train_loop`]), hence the same exact resume, checkpoints and `log.jsonl`.
//!
//! Each step takes `batch_size` anchor pairs (an image and one of its captions) in an order
//! shuffled every epoch from the seed. For each anchor the model scores, with no masking, the
//! positive pair, `group_size - 1` captions of other images for the image, and `group_size - 1`
//! other images for the caption. The loss over those scores (the ITM logit) is one of:
//!
//! * `binary`: binary cross-entropy, positives 1, negatives 0 (the paper's best);
//! * `softmax`: cross-entropy over each group of the positive and its negatives (one group of
//!   captions per image, one of images per caption): the paper's multi-class loss;
//! * `triplet`: `max(0, margin - s(pos) + max s(neg))` per group, against the hardest sampled
//!   negative. The margin is on the logit scale (default 1.0).
//!
//! With `hard_negatives`, a share of each group's negatives is drawn from the negatives that
//! scored highest for that anchor during the previous epoch (mining from the previous epoch's
//! scores); the pools are part of the checkpoint, so resume stays exact.
//!
//! With `first_stage_weight` > 0 (the default, not in the paper), a contrastive loss over the
//! batch's anchors is added: captions and images each go through the encoder alone, and the
//! cosine of their mean-pooled outputs must pick each caption's image among the batch's and
//! each image's captions among the batch's. That cosine is the first-stage score of
//! `trainer eval --rerank K`, which an untrained model ranks at chance.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::Rng;
use rand::SeedableRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;
use schemas::karpathy::Split;
use serde::{Deserialize, Serialize};

use super::data::{RetrievalSet, RetrievalSource};
use crate::checkpoint::{LoadedCheckpoint, module_from_bytes};
use crate::config::{
    ModelSection, linear_schedule, refuse_first, resolve_location, schedule_checks,
};
use crate::data::{DEFAULT_MAX_REGIONS, DEFAULT_MAX_TEXT_LEN, DataLimits, derive_seed};
use crate::model::imagebert::{ImageBert, ImageBertConfig};
use crate::training::{
    LogLine, LoopSettings, LoopSummary, MODEL_FILE, Task, checkpoints_of, latest_model_config,
    scalar, train_loop,
};
use wordpiece::WordPiece;

/// The fine-tuning loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Binary cross-entropy on every pair's score.
    Binary,
    /// Cross-entropy over each group of one positive and its negatives.
    Softmax,
    /// Hinge against the hardest negative of each group.
    Triplet,
}

/// `[objective]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectiveSection {
    /// `binary` (default, the paper's best), `softmax` or `triplet`.
    pub loss: LossKind,
    /// P: the positive plus P - 1 negatives per group (4).
    pub group_size: usize,
    /// Triplet margin on the logit scale (1.0).
    pub margin: f64,
    /// Draw part of the negatives from the previous epoch's hardest ones (false).
    pub hard_negatives: bool,
    /// Share of each group's negatives drawn from the hard pool when `hard_negatives` (0.5).
    pub hard_share: f64,
    /// Weight of the first-stage contrastive loss added to the pair loss (0.25; 0.0 gives the
    /// paper's recipe). It trains the cheap score `trainer eval --rerank K` ranks candidates
    /// with; without it that score is untrained and reranking loses most of the recall.
    pub first_stage_weight: f64,
    /// Temperature of the first-stage loss's softmax over cosines (0.05).
    pub first_stage_temperature: f64,
}

impl Default for ObjectiveSection {
    fn default() -> Self {
        Self {
            loss: LossKind::Binary,
            group_size: 4,
            margin: 1.0,
            hard_negatives: false,
            hard_share: 0.5,
            first_stage_weight: 0.25,
            first_stage_temperature: 0.05,
        }
    }
}

/// `[data]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneData {
    /// Required: the Karpathy-split JSON (path relative to this file, or a URI).
    pub karpathy: String,
    /// Required: where the region shards of its images are (folder or URI).
    pub features: String,
    /// Splits to train on (`["train", "restval"]`).
    #[serde(default = "default_splits")]
    pub splits: Vec<Split>,
    /// Most WordPiece ids per caption (44).
    #[serde(default = "default_text_len")]
    pub max_text_len: usize,
    /// Most regions per image (100).
    #[serde(default = "default_regions")]
    pub max_regions: usize,
    /// Seed of order, negatives and initialisation (42).
    #[serde(default = "default_seed")]
    pub seed: u64,
}

/// `[train]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneTrain {
    /// Required: folder for checkpoints and `log.jsonl`.
    pub output: PathBuf,
    /// Where the checkpoints go instead of `<output>/checkpoints`: a folder (relative to this
    /// file) or an `s3://`, `gs://`, `az://` URI.
    #[serde(default)]
    pub checkpoints: Option<String>,
    /// Required: optimiser steps.
    pub steps: u64,
    /// Anchor pairs per step (24, the paper's).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Peak learning rate of Adam (5e-5, the paper's).
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

fn default_splits() -> Vec<Split> {
    vec![Split::Train, Split::Restval]
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
fn default_batch() -> usize {
    24
}
fn default_lr() -> f64 {
    5e-5
}
fn default_every() -> u64 {
    100
}
fn default_keep() -> usize {
    3
}

/// A fine-tuning run (`trainer/configs/finetune.toml` documents every key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    /// Model size and initialisation: `init_from` names the pre-training checkpoints.
    #[serde(default)]
    pub model: ModelSection,
    /// The retrieval data.
    pub data: FinetuneData,
    /// Steps, batch, optimiser, checkpoints.
    pub train: FinetuneTrain,
    /// Loss and negatives.
    #[serde(default)]
    pub objective: ObjectiveSection,
}

impl FinetuneConfig {
    /// Reads and validates `path`; errors name the file and the key. Relative paths are
    /// relative to the file's folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: Self =
            toml::from_str(&text).with_context(|| format!("{}: invalid config", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.model.resolve(base);
        resolve_location(&mut config.data.karpathy, base);
        resolve_location(&mut config.data.features, base);
        if config.train.output.is_relative() {
            config.train.output = base.join(&config.train.output);
        }
        if let Some(location) = &mut config.train.checkpoints {
            resolve_location(location, base);
        }
        config
            .validate()
            .with_context(|| format!("{}: invalid config", path.display()))?;
        Ok(config)
    }

    /// Refuses values the run cannot use, naming the key.
    pub fn validate(&self) -> Result<()> {
        self.model.encoder()?;
        let (t, o, d) = (&self.train, &self.objective, &self.data);
        let rest = [
            (
                o.group_size < 2,
                "objective.group_size must be at least 2 (a positive and a negative)",
            ),
            (
                o.margin.is_nan() || o.margin < 0.0,
                "objective.margin must not be negative",
            ),
            (
                !(0.0..=1.0).contains(&o.hard_share),
                "objective.hard_share must be within [0, 1]",
            ),
            (
                o.first_stage_weight.is_nan() || o.first_stage_weight < 0.0,
                "objective.first_stage_weight must not be negative",
            ),
            (
                o.first_stage_temperature.is_nan() || o.first_stage_temperature <= 0.0,
                "objective.first_stage_temperature must be positive",
            ),
            (
                d.splits.is_empty(),
                "data.splits must name at least one split",
            ),
            (d.max_text_len < 2, "data.max_text_len must be at least 2"),
            (d.max_regions == 0, "data.max_regions must be positive"),
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
            .chain(rest),
        )
    }

    /// The retrieval data this run trains on.
    pub fn source(&self) -> RetrievalSource {
        RetrievalSource {
            karpathy: self.data.karpathy.clone(),
            features: self.data.features.clone(),
            splits: self.data.splits.clone(),
        }
    }

    /// The text and region limits.
    pub fn limits(&self) -> DataLimits {
        DataLimits {
            max_text_len: self.data.max_text_len,
            max_regions: self.data.max_regions,
        }
    }
}

/// One line of `trainer finetune`'s `log.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneLog {
    /// Steps done after this one (1-based).
    pub step: u64,
    /// The loss.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f64,
    /// Anchor pairs in the batch.
    pub anchors: usize,
    /// Pairs scored (anchors × (2 P - 1)).
    pub pairs: usize,
    /// Share of groups whose positive outscored all its negatives.
    pub group_accuracy: f64,
    /// Mean score of the positives.
    pub positive_score: f64,
    /// Mean score of the negatives.
    pub negative_score: f64,
    /// The first-stage contrastive loss before its weight (0 when off).
    #[serde(default)]
    pub first_stage_loss: f32,
    /// Anchors per second of this step.
    pub samples_per_s: f64,
}

impl LogLine for FinetuneLog {
    fn step(&self) -> u64 {
        self.step
    }
    fn loss(&self) -> f32 {
        self.loss
    }
    fn set_samples_per_s(&mut self, steps_per_s: f64) {
        self.samples_per_s = self.anchors as f64 * steps_per_s;
    }
    fn summary(&self) -> String {
        format!("loss {:.3}  acc {:.2}", self.loss, self.group_accuracy)
    }
    fn figures(&self) -> Vec<f32> {
        vec![
            self.loss,
            self.group_accuracy as f32,
            self.positive_score as f32,
            self.negative_score as f32,
            self.first_stage_loss,
            self.anchors as f32,
            self.pairs as f32,
        ]
    }
    fn set_figures(&mut self, figures: &[f32], parts: usize) {
        if let [
            loss,
            accuracy,
            positive,
            negative,
            first_stage,
            anchors,
            pairs,
        ] = *figures
        {
            self.loss = loss;
            self.group_accuracy = f64::from(accuracy);
            self.positive_score = f64::from(positive);
            self.negative_score = f64::from(negative);
            self.first_stage_loss = first_stage;
            self.anchors = (anchors * parts as f32).round() as usize;
            self.pairs = (pairs * parts as f32).round() as usize;
        }
    }
}

/// The hardest negatives seen per anchor: `captions[i]` for image `i`, `images[c]` for caption `c`,
/// each as (index, score), hardest first, at most P - 1.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HardPools {
    /// Per image: negative captions.
    pub captions: Vec<Vec<(u32, f32)>>,
    /// Per caption: negative images.
    pub images: Vec<Vec<(u32, f32)>>,
}

impl HardPools {
    fn new(images: usize, captions: usize) -> Self {
        Self {
            captions: vec![Vec::new(); images],
            images: vec![Vec::new(); captions],
        }
    }

    fn record(pool: &mut Vec<(u32, f32)>, item: usize, score: f32, keep: usize) {
        if let Some(entry) = pool.iter_mut().find(|(i, _)| *i as usize == item) {
            entry.1 = entry.1.max(score);
        } else {
            pool.push((item as u32, score));
        }
        pool.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        pool.truncate(keep);
    }
}

/// Where fine-tuning is in its data, plus the mining pools: what a checkpoint saves.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FinetuneState {
    rng: ChaCha8Rng,
    epoch: u64,
    position: usize,
    previous: HardPools,
    current: HardPools,
}

struct Finetune<'a> {
    config: &'a FinetuneConfig,
    /// The pre-training checkpoint of `model.init_from`, read once by [`finetune`].
    init: Option<LoadedCheckpoint>,
    set: RetrievalSet,
    pad_id: u32,
    state: FinetuneState,
    order: Vec<usize>,
}

/// Domain tag of the epoch order's seed.
const EPOCH_ORDER_TAG: u64 = 0x4654_5f4f_5244_4552; // "FT_ORDER"

impl Finetune<'_> {
    fn shuffle(&mut self) {
        let mut order: Vec<usize> = (0..self.set.captions.len()).collect();
        let seed = derive_seed(&[EPOCH_ORDER_TAG, self.config.data.seed, self.state.epoch]);
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        self.order = order;
    }

    fn next_anchor(&mut self) -> usize {
        if self.state.position == self.order.len() {
            self.state.epoch += 1;
            self.state.position = 0;
            self.state.previous = std::mem::replace(
                &mut self.state.current,
                HardPools::new(self.set.images.len(), self.set.captions.len()),
            );
            self.shuffle();
        }
        self.state.position += 1;
        self.order[self.state.position - 1]
    }

    /// `count` distinct negatives: hard ones from `pool` first, then uniform draws accepted by
    /// `is_negative`.
    fn negatives(
        rng: &mut ChaCha8Rng,
        pool: &[(u32, f32)],
        hard: usize,
        count: usize,
        universe: usize,
        is_negative: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        let mut chosen: Vec<usize> = pool
            .choose_multiple(rng, hard.min(pool.len()))
            .map(|(i, _)| *i as usize)
            .collect();
        while chosen.len() < count {
            let candidate = rng.random_range(0..universe);
            if is_negative(candidate) && !chosen.contains(&candidate) {
                chosen.push(candidate);
            }
        }
        chosen
    }

    /// The first-stage loss over the batch's anchor `(image, caption)` pairs: each caption and
    /// each distinct image goes through the encoder alone
    /// ([`ImageBert::single_modality_embedding`]), and their cosines over the temperature are
    /// the logits of [`contrastive_loss`].
    fn first_stage_loss<B: AutodiffBackend>(
        &self,
        model: &ImageBert<B>,
        anchors: &[(usize, usize)],
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let mut images: Vec<usize> = Vec::new();
        for &(image, _) in anchors {
            if !images.contains(&image) {
                images.push(image);
            }
        }
        let text = self
            .set
            .text_input::<B>(anchors.iter().map(|a| a.1), self.pad_id, 0, device);
        let regions = self
            .set
            .region_input::<B>(images.iter().copied(), 0, device);
        let captions = model.single_modality_embedding(model.embed_text(text.ids), text.mask);
        let pictures = model.single_modality_embedding(
            model.embed_regions(regions.features, regions.boxes),
            regions.mask,
        );
        let logits =
            pictures.matmul(captions.transpose()) / self.config.objective.first_stage_temperature;
        let positive: Vec<f32> = images
            .iter()
            .flat_map(|&image| {
                anchors
                    .iter()
                    .map(move |a| f32::from(u8::from(a.0 == image)))
            })
            .collect();
        let positive = Tensor::from_data(
            TensorData::new(positive, [images.len(), anchors.len()]),
            device,
        );
        contrastive_loss(logits, positive)
    }
}

/// The symmetric contrastive loss of `logits` `[images, captions]` whose 1/0 `positive` marks
/// each caption's one image: the mean over captions of the cross-entropy of a softmax over
/// images, and the mean over images of `-log` of the softmax mass over captions on its own
/// captions, averaged.
fn contrastive_loss<B: Backend>(logits: Tensor<B, 2>, positive: Tensor<B, 2>) -> Tensor<B, 1> {
    let [rows, columns] = logits.dims();
    let caption_to_image = (log_softmax(logits.clone(), 0) * positive.clone())
        .sum()
        .neg()
        / columns as f64;
    let all = log_sum_exp(logits.clone());
    let on_positives = log_sum_exp(logits + (positive - 1.0) * MASKED_LOGIT);
    let image_to_caption = (all - on_positives).sum() / rows as f64;
    (caption_to_image + image_to_caption) / 2.0
}

/// Added to the logits of non-positives so that `exp` of them is 0.
const MASKED_LOGIT: f64 = 1e4;

/// `log Σ_j exp(x[i, j])` per row, `[rows, 1]`, stable.
fn log_sum_exp<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let max = x.clone().max_dim(1).detach();
    (x - max.clone()).exp().sum_dim(1).log() + max
}

impl<B: AutodiffBackend> Task<B> for Finetune<'_> {
    type State = FinetuneState;
    type Log = FinetuneLog;

    fn start(&mut self, model: ImageBert<B>, device: &B::Device) -> Result<ImageBert<B>> {
        self.shuffle();
        let model_section = &self.config.model;
        if let Some(checkpoint) = self.init.take() {
            let loaded = module_from_bytes(model, checkpoint.file(MODEL_FILE)?, device)
                .with_context(|| format!("model.init_from {}", checkpoint.uri))?;
            tracing::info!(uri = %checkpoint.uri, "initialised from pre-training");
            return Ok(loaded);
        }
        if let Some(path) = &model_section.init_hf {
            let (loaded, parts) =
                crate::model::hf::HfCheckpoint::open(path)?.load_imagebert(model, device)?;
            tracing::info!(?parts, path = %path.display(), "initialised from HuggingFace weights");
            return Ok(loaded);
        }
        Ok(model)
    }

    fn restore(&mut self, state: FinetuneState) -> Result<()> {
        ensure!(
            state.current.images.len() == self.set.captions.len()
                && state.current.captions.len() == self.set.images.len(),
            "the checkpoint was made on another data set ({} images, {} captions now)",
            self.set.images.len(),
            self.set.captions.len()
        );
        self.state = state;
        self.shuffle();
        Ok(())
    }

    fn state(&self) -> FinetuneState {
        self.state.clone()
    }

    fn merge_states(parts: Vec<FinetuneState>) -> Result<FinetuneState> {
        // Fine-tuning runs as one process.
        parts.into_iter().next().context("no state to merge")
    }

    fn learning_rate(&self, step: u64) -> f64 {
        let t = &self.config.train;
        linear_schedule(t.learning_rate, t.warmup_steps, t.steps, step)
    }

    fn step(
        &mut self,
        model: &ImageBert<B>,
        step: u64,
        _micro: usize,
        lr: f64,
    ) -> Result<(Tensor<B, 1>, FinetuneLog)> {
        let objective = &self.config.objective;
        let p = objective.group_size;
        let hard = if objective.hard_negatives {
            ((p - 1) as f64 * objective.hard_share).round() as usize
        } else {
            0
        };
        let anchors = self.config.train.batch_size;
        let mut pairs = Vec::with_capacity(anchors * (2 * p - 1));
        for _ in 0..anchors {
            let caption = self.next_anchor();
            let image = self.set.captions[caption].image;
            pairs.push((image, caption));
            let captions = &self.set.captions;
            let negative_captions = Self::negatives(
                &mut self.state.rng,
                &self.state.previous.captions[image],
                hard,
                p - 1,
                captions.len(),
                |c| captions[c].image != image,
            );
            pairs.extend(negative_captions.iter().map(|&c| (image, c)));
            let negative_images = Self::negatives(
                &mut self.state.rng,
                &self.state.previous.images[caption],
                hard,
                p - 1,
                self.set.images.len(),
                |i| i != image,
            );
            pairs.extend(negative_images.iter().map(|&i| (i, caption)));
        }
        let device = model.mlm_bias.device();
        let input = self.set.pair_input::<B>(&pairs, self.pad_id, &device);
        let logits = model.match_logits(model.encode(&input));
        let groups = logits.clone().reshape([anchors, 2 * p - 1]);
        let positive = groups.clone().slice([0..anchors, 0..1]);
        let caption_negatives = groups.clone().slice([0..anchors, 1..p]);
        let image_negatives = groups.slice([0..anchors, p..2 * p - 1]);
        let pair_loss = match objective.loss {
            LossKind::Binary => {
                let negatives = Tensor::cat(vec![caption_negatives, image_negatives], 1);
                // -log σ(pos) - Σ log(1 - σ(neg)) = -log σ(pos) - Σ log σ(-neg), mean over pairs.
                let total = log_sigmoid(positive).sum() + log_sigmoid(negatives.neg()).sum();
                total.neg() / (anchors * (2 * p - 1)) as f64
            }
            LossKind::Softmax => {
                let by_image = Tensor::cat(vec![positive.clone(), caption_negatives], 1);
                let by_caption = Tensor::cat(vec![positive, image_negatives], 1);
                let nll = |group: Tensor<B, 2>| {
                    log_softmax(group, 1).slice([0..anchors, 0..1]).sum().neg()
                };
                (nll(by_image) + nll(by_caption)) / (2 * anchors) as f64
            }
            LossKind::Triplet => {
                let hinge = |negatives: Tensor<B, 2>| {
                    (negatives.max_dim(1) - positive.clone() + objective.margin)
                        .clamp_min(0.0)
                        .sum()
                };
                (hinge(caption_negatives) + hinge(image_negatives)) / (2 * anchors) as f64
            }
        };
        let (loss, first_stage_loss) = if objective.first_stage_weight > 0.0 {
            let anchor_pairs: Vec<(usize, usize)> =
                pairs.iter().step_by(2 * p - 1).copied().collect();
            let first_stage = self.first_stage_loss(model, &anchor_pairs, &device);
            let value = scalar(&first_stage);
            (
                pair_loss + first_stage * objective.first_stage_weight,
                value,
            )
        } else {
            (pair_loss, 0.0)
        };

        // Host copy of the scores: metrics and the mining pools.
        let scores: Vec<f32> = logits.into_data().iter::<f32>().collect();
        let (mut correct, mut positive_sum, mut negative_sum) = (0usize, 0f64, 0f64);
        for (a, group) in scores.chunks(2 * p - 1).enumerate() {
            let positive = group[0];
            positive_sum += f64::from(positive);
            negative_sum += group[1..].iter().map(|&s| f64::from(s)).sum::<f64>();
            correct += usize::from(group[1..p].iter().all(|&s| positive > s));
            correct += usize::from(group[p..].iter().all(|&s| positive > s));
            let base = a * (2 * p - 1);
            let (image, caption) = pairs[base];
            for k in 1..p {
                let (_, c) = pairs[base + k];
                HardPools::record(&mut self.state.current.captions[image], c, group[k], p - 1);
            }
            for k in p..2 * p - 1 {
                let (i, _) = pairs[base + k];
                HardPools::record(&mut self.state.current.images[caption], i, group[k], p - 1);
            }
        }
        let entry = FinetuneLog {
            step: step + 1,
            loss: scalar(&loss),
            lr,
            anchors,
            pairs: pairs.len(),
            group_accuracy: correct as f64 / (2 * anchors) as f64,
            positive_score: positive_sum / anchors as f64,
            negative_score: negative_sum / (anchors * 2 * (p - 1)) as f64,
            first_stage_loss,
            samples_per_s: 0.0,
        };
        Ok((loss, entry))
    }
}

/// Runs (or resumes) fine-tuning as `config` describes, on backend `B`.
pub fn finetune<B: AutodiffBackend>(
    config: &FinetuneConfig,
    device: &B::Device,
) -> Result<LoopSummary<FinetuneLog>> {
    let tokenizer = WordPiece::from_file(&config.model.vocab)?;
    let set = RetrievalSet::load(&config.source(), &tokenizer, &config.limits())?;
    let p = config.objective.group_size;
    ensure!(
        set.images.len() >= p,
        "objective.group_size {p} needs at least {p} images; {} has {}",
        config.data.karpathy,
        set.images.len()
    );
    let mut init = None;
    let model = match &config.model.init_from {
        // The pre-trained model's shape wins over `size`; its region side must fit the data.
        Some(dir) => {
            let (previous, checkpoint) =
                latest_model_config(dir).with_context(|| format!("model.init_from {dir}"))?;
            ensure!(
                previous.region_feature_dim == set.detector.feature_dim
                    && previous.num_object_classes == set.detector.num_classes,
                "{} was pre-trained on {}-d features of {} classes, but {} holds detector `{}` ({}-d, {} classes)",
                checkpoint.uri,
                previous.region_feature_dim,
                previous.num_object_classes,
                config.data.features,
                set.detector.name,
                set.detector.feature_dim,
                set.detector.num_classes
            );
            init = Some(checkpoint);
            previous
        }
        None => ImageBertConfig {
            encoder: config.model.encoder()?,
            region_feature_dim: set.detector.feature_dim,
            num_object_classes: set.detector.num_classes,
        },
    };
    ensure!(
        model.encoder.vocab_size == tokenizer.vocab_size(),
        "model vocab_size {} differs from the {} tokens of {}",
        model.encoder.vocab_size,
        tokenizer.vocab_size(),
        config.model.vocab.display()
    );
    let settings = LoopSettings {
        checkpoints: checkpoints_of(&config.train.output, config.train.checkpoints.as_deref()),
        output: config.train.output.clone(),
        steps: config.train.steps,
        checkpoint_every: config.train.checkpoint_every,
        keep_checkpoints: config.train.keep_checkpoints,
        seed: config.data.seed,
        model,
        grad_accumulation: 1,
        replica_check_every: 0,
    };
    let (images, captions) = (set.images.len(), set.captions.len());
    let mut task = Finetune {
        config,
        init,
        pad_id: tokenizer.special().pad,
        set,
        state: FinetuneState {
            rng: ChaCha8Rng::seed_from_u64(config.data.seed),
            epoch: 0,
            position: 0,
            previous: HardPools::new(images, captions),
            current: HardPools::new(images, captions),
        },
        order: Vec::new(),
    };
    train_loop::<B, _>(&settings, &mut task, None, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_is_valid_and_keys_are_checked_by_name() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/finetune.toml");
        let config = FinetuneConfig::load(&path).unwrap();
        assert_eq!(config.train.batch_size, 24);
        assert_eq!(config.train.learning_rate, 5e-5);
        assert_eq!(config.objective.loss, LossKind::Binary);
        assert_eq!(config.data.splits, [Split::Train, Split::Restval]);
        assert!(Path::new(&config.data.karpathy).is_absolute());

        let dir = tempfile::tempdir().unwrap();
        let minimal = "[data]\nkarpathy = \"k.json\"\nfeatures = \"s3://b/f\"\n[train]\noutput = \"o\"\nsteps = 5\n";
        let parse = |text: &str| {
            let file = dir.path().join("f.toml");
            std::fs::write(&file, text).unwrap();
            FinetuneConfig::load(&file).map_err(|e| format!("{e:#}"))
        };
        let config = parse(minimal).unwrap();
        assert_eq!(config.data.features, "s3://b/f");
        assert_eq!(config.objective, ObjectiveSection::default());
        let err = parse(&format!("{minimal}[objective]\nloss = \"hinge\"\n")).unwrap_err();
        assert!(err.contains("unknown variant `hinge`"), "{err}");
        let err = parse(&format!("{minimal}[objective]\ngroup_size = 1\n")).unwrap_err();
        assert!(
            err.contains("objective.group_size must be at least 2"),
            "{err}"
        );
        let err = parse(&minimal.replace("steps = 5", "steps = 5\nbatch = 3")).unwrap_err();
        assert!(err.contains("unknown field `batch`"), "{err}");
    }

    #[test]
    fn the_contrastive_loss_matches_a_hand_computation() {
        // Two images, three captions: captions 0 and 1 show image 0, caption 2 image 1.
        let logits = [[2.0f64, 0.5, -1.0], [0.0, 1.0, 3.0]];
        let owner = [0, 0, 1];
        let device = Default::default();
        let tensor = |values: Vec<f32>| {
            Tensor::<backend::Compute, 2>::from_data(TensorData::new(values, [2, 3]), &device)
        };
        let positive = (0..2)
            .flat_map(|i| owner.iter().map(move |&o| if o == i { 1.0 } else { 0.0 }))
            .collect();
        let flat = logits.iter().flatten().map(|&x| x as f32).collect();
        let loss = scalar(&contrastive_loss(tensor(flat), tensor(positive)));

        let mut caption_to_image = 0.0;
        for (c, &o) in owner.iter().enumerate() {
            let denominator = logits[0][c].exp() + logits[1][c].exp();
            caption_to_image -= (logits[o][c].exp() / denominator).ln();
        }
        let mut image_to_caption = 0.0;
        for (i, row) in logits.iter().enumerate() {
            let mass: f64 = (0..3)
                .filter(|&c| owner[c] == i)
                .map(|c| row[c].exp())
                .sum();
            image_to_caption -= (mass / row.iter().map(|x| x.exp()).sum::<f64>()).ln();
        }
        let expected = (caption_to_image / 3.0 + image_to_caption / 2.0) / 2.0;
        assert!(
            (f64::from(loss) - expected).abs() < 1e-5,
            "{loss} vs {expected}"
        );
    }

    #[test]
    fn hard_pools_keep_the_hardest_distinct_negatives() {
        let mut pool = Vec::new();
        for (item, score) in [(3, 0.1), (5, 0.9), (3, 0.7), (8, -1.0), (9, 0.5)] {
            HardPools::record(&mut pool, item, score, 3);
        }
        assert_eq!(pool, [(5, 0.9), (3, 0.7), (9, 0.5)]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let picked = Finetune::negatives(&mut rng, &pool, 2, 3, 10, |i| i != 4);
        assert_eq!(picked.len(), 3);
        assert!(picked.iter().filter(|i| [5, 3, 9].contains(*i)).count() >= 2);
        assert!(!picked.contains(&4));
        let mut unique = picked.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 3);
    }
}
