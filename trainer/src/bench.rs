//! `trainer bench`: how fast this build scores retrieval pairs and takes pre-training steps, at
//! the paper's shapes (44 text tokens, 100 regions of 2048-d BUTD features, 1601 classes) on
//! synthetic inputs (speed does not depend on the values), for `mini` and `base`.
//!
//! Retrieval: pairs scored per second by the cross-encoder with embeddings reused (as `trainer
//! eval` does; embedding each item once is left out, it is N + M against N × M), extrapolated to
//! the full COCO 1k protocol (5 folds × 1k images × 5k captions = 25M pairs) and COCO 5k (5k ×
//! 25k = 125M pairs), beside UNITER's reported 2-3 hours on 8 V100 for COCO 5k.
//! Pre-training: samples per second of a whole step (four heads, backward, Adam).

use std::time::Instant;

use anyhow::{Result, bail};
use backend::FusedAdam;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use half::f16;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use schemas::region_features::DetectorInfo;
use serde::Serialize;

use crate::batch::{FixedShapes, PretrainSample, PretrainTargets, build_shaped_pretrain_batch};
use crate::data::Regions;
use crate::losses::{LossWeights, pretrain_losses};
use crate::model::bert::AttentionKernel;
use crate::model::config::EncoderConfig;
use crate::model::imagebert::{ImageBert, ImageBertConfig, ImageBertInput};
use crate::objectives::MaskingConfig;
use crate::retrieval::data::{RetrievalCaption, RetrievalImage, RetrievalSet};
use crate::retrieval::scoring::EmbeddedSet;

/// Pairs of the full COCO 1k protocol: 5 folds of 1,000 images × 5,000 captions.
pub const COCO_1K_PAIRS: f64 = 5.0 * 1000.0 * 5000.0;
/// Pairs of the COCO 5k protocol: 5,000 images × 25,000 captions.
pub const COCO_5K_PAIRS: f64 = 5000.0 * 25000.0;
/// Candidates per query of the reranked estimate (`trainer eval --rerank 20`).
pub const RERANK_K: f64 = 20.0;
/// Queries of COCO 5k: 5,000 images (text retrieval) and 25,000 captions (image retrieval).
pub const COCO_5K_QUERIES: f64 = 5000.0 + 25000.0;
/// UNITER's reported wall-clock hours for COCO 5k on 8 V100 (midpoint of 2-3 h).
pub const UNITER_COCO_5K_HOURS: f64 = 2.5;

/// `trainer bench`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Model sizes to measure, comma-separated (mini, base).
    #[arg(long, value_delimiter = ',', default_value = "mini,base")]
    pub models: Vec<String>,
    /// (image, caption) pairs per encoder call when scoring.
    #[arg(long, default_value_t = 32)]
    pub pair_batch: usize,
    /// Samples per pre-training step (the paper: 48; small by default for CPUs).
    #[arg(long, default_value_t = 8)]
    pub train_batch: usize,
    /// The synthetic inputs' shapes.
    #[command(flatten)]
    pub shapes: Shapes,
    /// Seconds to measure each figure for (after the warm-up calls).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Untimed calls before each figure is measured (kernel compilation and autotuning on GPUs);
    /// the first of them is always made, and its time reported.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// The training backend's float precision: f32 or f64 on the CPU; f32, bf16 or f16 in CUDA
    /// builds (every tensor in that type, weights included: Burn has no autocast).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: backend::Precision,
    /// How retrieval scoring computes attention: `fused` (Burn's attention operation, on GPU
    /// builds an autotuned flash-attention kernel), `explicit` (matmul, softmax, matmul) or
    /// `auto` (fused on GPU builds, explicit on the CPU). Training steps always take the explicit path (they
    /// need its gradient and dropout).
    #[arg(long, value_enum, default_value = "auto")]
    pub attention: AttentionKernel,
    /// Measure retrieval scoring only.
    #[arg(long, conflicts_with = "skip_scoring")]
    pub skip_train: bool,
    /// Measure the pre-training step only (then the first model's first step is the cold start:
    /// process start to first finished step).
    #[arg(long)]
    pub skip_scoring: bool,
    /// Pad every pre-training batch to fixed shapes, as `train.fixed_shapes` does (the
    /// synthetic samples all have the same text length and region count, so this pads the
    /// masked heads' chosen tokens to a multiple of 64).
    #[arg(long)]
    pub fixed_shapes: bool,
    /// Build the pre-training batch once and take every step on it, instead of pairing and
    /// masking afresh each step as training does: every step then has the same tensor shapes
    /// (on GPUs, no kernel is compiled or tuned after the first step) and no host work.
    #[arg(long)]
    pub same_batch: bool,
}

/// The shapes of the synthetic inputs (the paper's by default).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Shapes {
    /// Text tokens per sample, [CLS]/[SEP] included (the paper: 44).
    #[arg(long, default_value_t = 44)]
    pub text_len: usize,
    /// Regions per image (the paper: 100).
    #[arg(long, default_value_t = 100)]
    pub regions: usize,
    /// Region feature length (BUTD: 2048).
    #[arg(long, default_value_t = 2048)]
    pub feature_dim: usize,
    /// Detector classes, the MOC head's size (BUTD: 1601).
    #[arg(long, default_value_t = 1601)]
    pub classes: usize,
}

impl Shapes {
    /// The model of preset `size` (mini, base) for these inputs.
    pub fn model(&self, size: &str) -> Result<ImageBertConfig> {
        let Some(encoder) = EncoderConfig::preset(size) else {
            bail!("`{size}` is not mini or base");
        };
        if self.text_len < 2 || self.regions == 0 {
            bail!("--text-len must be at least 2 and --regions positive");
        }
        Ok(ImageBertConfig {
            region_feature_dim: self.feature_dim,
            num_object_classes: self.classes,
            encoder,
        })
    }

    /// `count` synthetic samples for a model with `vocab` tokens.
    pub fn samples(&self, count: usize, vocab: usize) -> Vec<PretrainSample> {
        (0..count)
            .map(|i| synthetic_sample(self, vocab, i as u64))
            .collect()
    }
}

/// The gradients of one pre-training step (all four objectives) of `model` (with `vocab`
/// tokens) on `batch`.
pub fn pretrain_gradients<B: AutodiffBackend>(
    model: &ImageBert<B>,
    vocab: usize,
    batch: &[PretrainSample],
    shapes: &Shapes,
    rng: &mut ChaCha8Rng,
    device: &B::Device,
) -> GradientsParams {
    let (input, targets) = pretrain_batch::<B>(vocab, batch, shapes, None, rng, device);
    gradients_on(model, input, targets)
}

/// One pre-training batch of `samples` as training builds it: ITM pairs, masks, tensors (padded
/// to `fixed` shapes when given).
fn pretrain_batch<B: Backend>(
    vocab: usize,
    samples: &[PretrainSample],
    shapes: &Shapes,
    fixed: Option<&FixedShapes>,
    rng: &mut ChaCha8Rng,
    device: &B::Device,
) -> (ImageBertInput<B>, PretrainTargets<B>) {
    let special = wordpiece::SpecialTokens {
        pad: 0,
        unk: 100,
        cls: 101,
        sep: 102,
        mask: 103,
    };
    build_shaped_pretrain_batch::<B>(
        samples,
        shapes.feature_dim,
        special,
        vocab,
        &MaskingConfig::default(),
        fixed,
        rng,
        device,
    )
}

/// The gradients of the four objectives of `model` on a built batch.
fn gradients_on<B: AutodiffBackend>(
    model: &ImageBert<B>,
    input: ImageBertInput<B>,
    targets: PretrainTargets<B>,
) -> GradientsParams {
    let losses = pretrain_losses(
        model.forward(&input, &targets.chosen),
        targets,
        &LossWeights::default(),
    );
    GradientsParams::from_grads(losses.total.backward(), model)
}

/// One model's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// `mini` or `base`.
    pub model: String,
    /// The training backend's float precision.
    pub precision: String,
    /// How scoring computed attention.
    pub attention: AttentionKernel,
    /// Retrieval scoring's figures (absent with `--skip-scoring`).
    #[serde(flatten)]
    pub scoring: Option<ScoringFigures>,
    /// Pre-training's figures (absent with `--skip-train`).
    #[serde(flatten)]
    pub train: Option<TrainFigures>,
}

/// How fast the cross-encoder scores retrieval pairs.
#[derive(Debug, Clone, Serialize)]
pub struct ScoringFigures {
    /// Pairs scored per second.
    pub pairs_per_s: f64,
    /// Seconds of the first scoring call (kernel compilation, allocation).
    pub first_call_s: f64,
    /// Extrapolated hours for the full COCO 1k protocol.
    pub coco_1k_hours: f64,
    /// Extrapolated hours for COCO 5k.
    pub coco_5k_hours: f64,
    /// Extrapolated hours for COCO 5k with `--rerank 20`: 20 full-model pairs per query, plus
    /// one single-modality pass per image and caption for the first stage (counted as one pair
    /// each; a single-modality pass is shorter than a pair).
    pub coco_5k_rerank_20_hours: f64,
}

/// How fast pre-training steps run, and how long the first one took.
#[derive(Debug, Clone, Serialize)]
pub struct TrainFigures {
    /// Pre-training samples per second (batch over the median step).
    pub train_samples_per_s: f64,
    /// Median seconds of a step.
    pub train_step_s: f64,
    /// Seconds of the first step (kernel compilation and autotuning on GPUs).
    pub train_first_step_s: f64,
    /// Seconds from the process's start to the end of the first step: the cold start when this
    /// is the first model measured with `--skip-scoring`.
    pub train_first_step_after_start_s: f64,
}

/// A deterministic pseudo-random value in [0, 1).
fn value(rng: &mut u64) -> f32 {
    *rng = rng
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (*rng >> 40) as f32 / (1u64 << 24) as f32
}

fn synthetic_sample(args: &Shapes, vocab: usize, seed: u64) -> PretrainSample {
    let mut rng = seed.wrapping_add(1);
    let mut ids = vec![101u32];
    ids.extend(
        (0..args.text_len - 2).map(|_| 1000 + (value(&mut rng) * (vocab - 1000) as f32) as u32),
    );
    ids.push(102);
    PretrainSample {
        text_ids: ids,
        region_features: (0..args.regions * args.feature_dim)
            .map(|_| value(&mut rng) * 4.0)
            .collect(),
        region_boxes: (0..args.regions)
            .map(|_| {
                let (x, y) = (value(&mut rng) * 0.5, value(&mut rng) * 0.5);
                let (w, h) = (0.1 + value(&mut rng) * 0.4, 0.1 + value(&mut rng) * 0.4);
                [x, y, x + w, y + h, w * h]
            })
            .collect(),
        region_classes: (0..args.regions)
            .map(|_| (value(&mut rng) * args.classes as f32) as u32)
            .collect(),
    }
}

/// Median seconds per call of `f` after `warmup` untimed calls, measured for about `seconds`
/// (at least two calls); also the first call's seconds and when it ended.
fn time_calls(seconds: f64, warmup: usize, mut f: impl FnMut()) -> Timing {
    let started = Instant::now();
    f();
    let first_ended = Instant::now();
    for _ in 1..warmup {
        f();
    }
    let mut times = Vec::new();
    let timed = Instant::now();
    while times.len() < 2 || timed.elapsed().as_secs_f64() < seconds {
        let call = Instant::now();
        f();
        times.push(call.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Timing {
        median_s: times[times.len() / 2],
        first_s: (first_ended - started).as_secs_f64(),
        first_ended,
    }
}

/// What [`time_calls`] measured.
struct Timing {
    median_s: f64,
    first_s: f64,
    first_ended: Instant,
}

/// `trainer bench`: every model of `args` at `args.precision`, in order; `process_started` is
/// when the process started (for the cold-start figure).
pub fn bench_models(args: &BenchArgs, process_started: Instant) -> Result<Vec<BenchRow>> {
    struct Models<'a>(&'a BenchArgs, Instant);
    impl backend::AtPrecision for Models<'_> {
        type Output = Result<Vec<BenchRow>>;
        fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
            let Models(args, started) = self;
            args.models
                .iter()
                .map(|size| bench_model::<B>(args, size, device, started))
                .collect()
        }
    }
    backend::at_precision(args.precision, Models(args, process_started))?
}

/// Measures one model size on backend `B`; `process_started` is when the process started.
pub fn bench_model<B: AutodiffBackend>(
    args: &BenchArgs,
    size: &str,
    device: &B::Device,
    process_started: Instant,
) -> Result<BenchRow> {
    let config = args
        .shapes
        .model(size)
        .map_err(|e| anyhow::anyhow!("--models: {e}"))?;
    if args.pair_batch == 0 || args.train_batch == 0 {
        bail!("--pair-batch and --train-batch must be positive");
    }
    let vocab = config.encoder.vocab_size;
    let samples = args
        .shapes
        .samples(args.pair_batch.max(args.train_batch), vocab);
    let scoring = (!args.skip_scoring)
        .then(|| bench_scoring::<B::InnerBackend>(args, &config, &samples, device));
    let train = (!args.skip_train).then(|| {
        bench_training::<B>(
            args,
            &config,
            &samples[..args.train_batch],
            device,
            process_started,
        )
    });
    Ok(BenchRow {
        model: size.to_owned(),
        precision: args.precision.to_string(),
        attention: args.attention,
        scoring,
        train,
    })
}

/// Retrieval scoring's figures: the cross-encoder on `args.pair_batch` distinct pairs per call.
fn bench_scoring<B: Backend>(
    args: &BenchArgs,
    config: &ImageBertConfig,
    samples: &[PretrainSample],
    device: &B::Device,
) -> ScoringFigures {
    let model = ImageBert::<B>::init(config, device).with_attention_kernel(args.attention);
    let set = RetrievalSet {
        detector: DetectorInfo {
            name: "synthetic".into(),
            version: "0".into(),
            feature_dim: args.shapes.feature_dim,
            num_classes: args.shapes.classes,
            num_attributes: None,
        },
        images: samples[..args.pair_batch]
            .iter()
            .enumerate()
            .map(|(i, s)| RetrievalImage {
                key: i.to_string(),
                regions: Regions {
                    features: s
                        .region_features
                        .iter()
                        .map(|&v| f16::from_f32(v))
                        .collect(),
                    boxes: s.region_boxes.clone(),
                    classes: s.region_classes.clone(),
                },
            })
            .collect(),
        captions: samples[..args.pair_batch]
            .iter()
            .enumerate()
            .map(|(i, s)| RetrievalCaption {
                image: i,
                text_ids: s.text_ids.clone(),
            })
            .collect(),
        digest: String::new(),
    };
    let embedded = EmbeddedSet::new(&model, &set, 0, device);
    // Every image with a different caption: a realistic gather, all pairs distinct.
    let pairs: Vec<(usize, usize)> = (0..args.pair_batch)
        .map(|i| (i, (i * 7 + 3) % args.pair_batch))
        .collect();
    let timing = time_calls(args.seconds, args.warmup, || {
        embedded.score(&model, &pairs, args.pair_batch);
    });
    let pairs_per_s = args.pair_batch as f64 / timing.median_s;
    ScoringFigures {
        pairs_per_s,
        first_call_s: timing.first_s,
        coco_1k_hours: COCO_1K_PAIRS / pairs_per_s / 3600.0,
        coco_5k_hours: COCO_5K_PAIRS / pairs_per_s / 3600.0,
        coco_5k_rerank_20_hours: COCO_5K_QUERIES * (RERANK_K + 1.0) / pairs_per_s / 3600.0,
    }
}

/// Pre-training's figures: whole steps (four heads, backward, Adam) on `batch`.
fn bench_training<B: AutodiffBackend>(
    args: &BenchArgs,
    config: &ImageBertConfig,
    batch: &[PretrainSample],
    device: &B::Device,
    process_started: Instant,
) -> TrainFigures {
    let vocab = config.encoder.vocab_size;
    // In an Option so each step can hand the model to the optimizer, as training does (a clone
    // kept alive would make the optimizer copy every parameter instead of updating it).
    let mut model = Some(ImageBert::<B>::init(config, device));
    let mut optimizer = FusedAdam::default().init::<B, ImageBert<B>>();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let fixed = args
        .fixed_shapes
        .then(|| FixedShapes::padded_to(args.shapes.text_len, args.shapes.regions));
    let built = |rng: &mut ChaCha8Rng| {
        pretrain_batch::<B>(vocab, batch, &args.shapes, fixed.as_ref(), rng, device)
    };
    let same = args.same_batch.then(|| built(&mut rng));
    let timing = time_calls(args.seconds, args.warmup, || {
        let current = model
            .take()
            .expect("the model is put back after every step");
        let (input, targets) = match &same {
            Some(prepared) => prepared.clone(),
            None => built(&mut rng),
        };
        let gradients = gradients_on(&current, input, targets);
        let next = optimizer.step(1e-4, current, gradients);
        // Wait for the device, so a step's time is its work, not its launch.
        B::sync(device).expect("the device finishes the step");
        model = Some(next);
    });
    TrainFigures {
        train_samples_per_s: batch.len() as f64 / timing.median_s,
        train_step_s: timing.median_s,
        train_first_step_s: timing.first_s,
        train_first_step_after_start_s: (timing.first_ended - process_started).as_secs_f64(),
    }
}

/// The command-line value that selects `value` (a flag's `clap::ValueEnum`).
pub fn flag_value<T: clap::ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .map(|value| value.get_name().to_owned())
        .unwrap_or_default()
}

/// The table `trainer bench` prints.
pub fn table(rows: &[BenchRow], device: &str, args: &BenchArgs) -> String {
    let mut out = format!(
        "device: {device}; {} text + {} regions of {}-d; pair batch {} ({} attention), train batch {}{}\n\n\
         | model | precision | pairs/s | first call s | COCO 1k hours | COCO 5k hours | COCO 5k hours / UNITER's {UNITER_COCO_5K_HOURS} h on 8 V100 | COCO 5k --rerank 20 hours | train samples/s | step s | first step s | first step ends, s after start |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        args.shapes.text_len,
        args.shapes.regions,
        args.shapes.feature_dim,
        args.pair_batch,
        flag_value(&args.attention),
        args.train_batch,
        match (args.same_batch, args.fixed_shapes) {
            (true, _) => " (same batch every step)",
            (false, true) => " (fixed shapes)",
            (false, false) => "",
        }
    );
    let cells = |values: Option<Vec<String>>, count: usize| {
        values
            .unwrap_or_else(|| vec!["-".into(); count])
            .join(" | ")
    };
    for row in rows {
        let scoring = row.scoring.as_ref().map(|s| {
            vec![
                format!("{:.1}", s.pairs_per_s),
                format!("{:.2}", s.first_call_s),
                format!("{:.1}", s.coco_1k_hours),
                format!("{:.1}", s.coco_5k_hours),
                format!("{:.1}", s.coco_5k_hours / UNITER_COCO_5K_HOURS),
                format!("{:.2}", s.coco_5k_rerank_20_hours),
            ]
        });
        let train = row.train.as_ref().map(|t| {
            vec![
                format!("{:.2}", t.train_samples_per_s),
                format!("{:.4}", t.train_step_s),
                format!("{:.2}", t.train_first_step_s),
                format!("{:.2}", t.train_first_step_after_start_s),
            ]
        });
        out += &format!(
            "| {} | {} | {} | {} |\n",
            row.model,
            row.precision,
            cells(scoring, 6),
            cells(train, 4)
        );
    }
    out
}

/// `B::Device`'s description for the table.
pub fn device_name<B: Backend>(device: &B::Device) -> String {
    format!("{} {device:?}", B::name(device))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_args() -> BenchArgs {
        BenchArgs {
            models: vec!["mini".into()],
            pair_batch: 2,
            train_batch: 2,
            shapes: Shapes {
                text_len: 5,
                regions: 3,
                feature_dim: 8,
                classes: 4,
            },
            seconds: 0.0,
            warmup: 1,
            precision: backend::Precision::F32,
            attention: AttentionKernel::Auto,
            skip_train: false,
            skip_scoring: false,
            fixed_shapes: false,
            same_batch: false,
        }
    }

    #[test]
    fn measures_both_figures_and_extrapolates_from_the_rate() {
        let args = tiny_args();
        let started = Instant::now();
        let rows = bench_models(&args, started).unwrap();
        let scoring = rows[0].scoring.as_ref().expect("scoring measured");
        assert!(scoring.pairs_per_s.is_finite() && scoring.pairs_per_s > 0.0);
        let hours = COCO_5K_PAIRS / scoring.pairs_per_s / 3600.0;
        assert!((scoring.coco_5k_hours - hours).abs() < 1e-9 * hours);
        assert!(scoring.coco_5k_rerank_20_hours < scoring.coco_5k_hours);
        let train = rows[0].train.as_ref().expect("training measured");
        assert!(train.train_samples_per_s > 0.0);
        assert!((train.train_samples_per_s * train.train_step_s - 2.0).abs() < 1e-9);
        // The first step ends after the scoring figure was measured, all since `started`.
        assert!(
            train.train_first_step_after_start_s >= train.train_first_step_s
                && train.train_first_step_after_start_s >= scoring.first_call_s
                && train.train_first_step_after_start_s <= started.elapsed().as_secs_f64()
        );
        let table = table(&rows, "cpu", &args);
        assert!(table.contains("| mini | f32 |"), "{table}");
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert!(
            json["pairs_per_s"].is_number() && json["train_step_s"].is_number(),
            "{json}"
        );
        assert_eq!(json["attention"], "auto", "{json}");
        let mut fused = args.clone();
        fused.attention = AttentionKernel::Fused;
        fused.skip_train = true;
        let rows = bench_models(&fused, started).unwrap();
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert!(
            json["attention"] == "fused" && json["pairs_per_s"].as_f64() > Some(0.0),
            "{json}"
        );
        assert!(super::table(&rows, "cpu", &fused).contains("(fused attention)"));
        let mut huge = args.clone();
        huge.models = vec!["huge".into()];
        let err = bench_models(&huge, started).unwrap_err();
        assert!(err.to_string().contains("`huge` is not mini or base"));
    }

    #[test]
    fn the_step_alone_on_one_fixed_batch() {
        // Another precision needs a process of its own (tests/integration/doctor_and_bench_cli.rs).
        let mut args = tiny_args();
        args.skip_scoring = true;
        args.same_batch = true;
        args.warmup = 2;
        let rows = bench_models(&args, Instant::now()).unwrap();
        assert!(rows[0].scoring.is_none());
        assert!(
            rows[0]
                .train
                .as_ref()
                .is_some_and(|t| t.train_samples_per_s > 0.0)
        );
        let table = table(&rows, "cpu", &args);
        assert!(
            table.contains("| mini | f32 | - | - | - | - | - | - |")
                && table.contains("same batch"),
            "{table}"
        );
        args.precision = backend::Precision::Bf16;
        let err = bench_models(&args, Instant::now()).unwrap_err();
        assert!(err.to_string().contains("bf16"), "{err}");
    }
}
