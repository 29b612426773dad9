//! The `detector extract` command-line flags and a runner `main` calls with its detector.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use cluster::Slice;
use storage::Location;

use crate::config::ExtractConfig;
use crate::extract::{ExtractJob, extract};
use crate::regions::RegionDetector;

/// Flags of `detector extract`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExtractArgs {
    /// Where the pair shards are: a local folder, file://, s3://bucket/prefix, gs://bucket/prefix
    /// or az://container/prefix (credentials from the environment). Only pair shards with their
    /// stats file (NNNNN_stats.json) are read.
    #[arg(long, value_name = "URI")]
    pub input: String,
    /// Where region shards (NNNNN.regions.parquet and NNNNN.regions_stats.json) go, same forms
    /// as --input. Default: beside the pair shards, in --input.
    #[arg(long, value_name = "URI")]
    pub output: Option<String>,
    /// This process's index, 0-based, among --num-shards processes: it handles the pair shards
    /// whose number modulo --num-shards is this index. Default: from JOB_COMPLETION_INDEX
    /// (Kubernetes Indexed Job) or SLURM_ARRAY_TASK_ID (Slurm job array), else 0.
    #[arg(long, value_name = "I")]
    pub shard_index: Option<u32>,
    /// Number of processes sharing the pair shards. Default: from IMAGEBERT_NUM_SHARDS or
    /// SLURM_ARRAY_TASK_COUNT, else 1.
    #[arg(long, value_name = "N")]
    pub num_shards: Option<u32>,
    /// Images per detector call; overrides `batch_size` in --config (default 32).
    #[arg(long, value_name = "B")]
    pub batch_size: Option<usize>,
    /// TOML settings file; every key is optional (configs/extract.toml lists them with their
    /// defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Draw no progress bar (none is drawn anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

impl ExtractArgs {
    /// The job these flags describe: config loaded, flags applied, slice resolved, locations
    /// parsed.
    pub fn job(&self) -> Result<ExtractJob> {
        let mut config = match &self.config {
            Some(path) => ExtractConfig::load(path)?,
            None => ExtractConfig::default(),
        };
        if let Some(batch_size) = self.batch_size {
            config.batch_size = batch_size;
        }
        config.validate().context("--batch-size")?;
        let input = Location::parse(&self.input)?;
        let output = match &self.output {
            Some(uri) => Location::parse(uri)?,
            None => input.clone(),
        };
        Ok(ExtractJob {
            input,
            output,
            slice: Slice::from_args_or_env(self.shard_index, self.num_shards)?,
            config,
            progress: !self.no_progress,
        })
    }
}

/// Runs `detector extract` with `detector` on a multi-threaded tokio runtime: prints the
/// summary as one JSON line on stdout and returns success, or prints the error chain on stderr
/// and returns failure.
pub fn run_extract(args: &ExtractArgs, detector: &mut dyn RegionDetector) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(async { extract(args.job()?, detector).await }))
        .and_then(|summary| Ok(serde_json::to_string(&summary)?));
    match outcome {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        extract: ExtractArgs,
    }

    fn parse(args: &[&str]) -> ExtractArgs {
        Cli::try_parse_from(std::iter::once("extract").chain(args.iter().copied()))
            .unwrap()
            .extract
    }

    #[test]
    fn output_defaults_to_input_and_flags_override_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("pairs");
        let config = dir.path().join("extract.toml");
        std::fs::write(&config, "batch_size = 4\nprefetch_batches = 3\n").unwrap();
        let input = input.to_str().unwrap();
        let job = parse(&["--input", input, "--config", config.to_str().unwrap()])
            .job()
            .unwrap();
        assert_eq!(job.output.uri(), input);
        assert_eq!((job.config.batch_size, job.config.prefetch_batches), (4, 3));
        assert!(job.progress);

        let elsewhere = dir.path().join("regions");
        let elsewhere = elsewhere.to_str().unwrap();
        let job = parse(&[
            "--input",
            input,
            "--output",
            elsewhere,
            "--batch-size",
            "7",
            "--shard-index",
            "1",
            "--num-shards",
            "2",
            "--no-progress",
        ])
        .job()
        .unwrap();
        assert_eq!(job.output.uri(), elsewhere);
        assert_eq!(job.config.batch_size, 7);
        assert_eq!(job.slice, Slice::new(1, 2).unwrap());
        assert!(!job.progress);

        let error = parse(&["--input", input, "--batch-size", "0"])
            .job()
            .unwrap_err();
        assert!(format!("{error:#}").contains("batch_size"), "{error:#}");
        let error = parse(&["--input", input, "--shard-index", "2", "--num-shards", "2"])
            .job()
            .unwrap_err();
        assert!(format!("{error:#}").contains("out of range"), "{error:#}");
    }

    #[test]
    fn every_flag_is_documented() {
        let help = Cli::command().render_long_help().to_string();
        for flag in [
            "--input",
            "--output",
            "--shard-index",
            "--num-shards",
            "--batch-size",
            "--config",
            "--no-progress",
        ] {
            let line = help
                .lines()
                .position(|l| l.trim_start().starts_with(flag))
                .unwrap_or_else(|| panic!("{flag} missing from\n{help}"));
            let doc = help.lines().nth(line + 1).unwrap_or_default().trim();
            assert!(!doc.is_empty() && !doc.starts_with("--"), "{flag}:\n{help}");
        }
    }
}
