//! The `pipeline` command line: thin flag parsing over the `pipeline` library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Crawl, filter and shard image–text pairs for imagebert, and check the files every stage
/// shares.
#[derive(Parser)]
#[command(name = "pipeline", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Crawl and filter image–text pairs into Parquet pair shards (LAIT's steps: text filter,
    /// polite and safe fetch, image filter and re-encode, scores, duplicate removal). Every input
    /// row becomes one output row with a status. Shards commit atomically with a stats file
    /// written last; rerunning the same command skips finished shards and redoes unfinished ones.
    /// Prints a JSON summary.
    Ingest(IngestArgs),
    /// Pack a retrieval benchmark (COCO, Flickr30k) into pair shards for `detector extract`:
    /// one row per image of the selected splits of a Karpathy-split JSON, in file order, keyed
    /// by file name, with its first caption and the image re-encoded as ingest does (every image
    /// kept whatever its size; an unreadable or undecodable one gets a failed row naming its
    /// file). Shards commit with a stats file written last; a rerun skips finished shards.
    /// Prints a JSON summary.
    Pack(PackArgs),
    /// Remove duplicates across all shards of an ingest output (the per-shard pass already ran
    /// in ingest): exact and near-duplicate images keep their best-scored text, texts shared by
    /// too many images are dropped. Writes a new dataset; splits the rewriting across processes
    /// like ingest. Prints a JSON summary.
    Dedup {
        /// The ingest output to read.
        #[arg(long, value_name = "URI")]
        input: String,
        /// Where the deduplicated shards go (must differ from --input).
        #[arg(long, value_name = "URI")]
        output: String,
        /// TOML settings whose `[dedup]` table is used.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// This process's index (defaults as for ingest: JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID).
        #[arg(long, value_name = "I")]
        shard_index: Option<u32>,
        /// How many processes share the rewriting (IMAGEBERT_NUM_SHARDS, SLURM_ARRAY_TASK_COUNT).
        #[arg(long, value_name = "N")]
        num_shards: Option<u32>,
    },
    /// Measure the CPU-bound steps on one core with the real assets: images/s for decode +
    /// filter + resize + JPEG encode + hashes on the photos, MB/s for candidate
    /// extraction from the Common Crawl WARC and WAT files. Prints a table and JSON.
    Bench {
        /// The assets folder (scripts/fetch-assets fills it).
        #[arg(long, default_value = "assets")]
        assets: PathBuf,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// TOML settings whose `[image]` table is used (max side, quality...).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check an ingest output against its inputs: every input row in exactly one committed
    /// shard, nothing duplicated or unexpected, every shard with its stats file, keys unique.
    /// Prints a JSON report; exits non-zero when anything is off.
    Audit {
        /// The inputs the ingest ran on (same URIs).
        #[arg(long = "input", required = true, value_name = "URI")]
        inputs: Vec<String>,
        /// The ingest output location.
        #[arg(long, value_name = "URI")]
        output: String,
        /// The TOML settings the ingest used (for URL-list column names).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate imagebert files against their schemas and print a JSON summary of each: pair
    /// shards and region-feature shards (Parquet), shard stats and dataset manifests (JSON).
    /// Every row is read, so a bad value anywhere is reported with its file, row and column.
    /// Exits non-zero if any file is refused.
    Inspect {
        /// Files to check (`.parquet` shards, `*_stats.json`, `manifest.json`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Flags of `pipeline ingest`.
#[derive(clap::Args)]
struct IngestArgs {
    /// Input files, read in this order: URL lists (.parquet, .csv, .tsv, .jsonl), Common Crawl
    /// .warc / .wat files, seed page lists (.seeds, .seeds.txt); `.gz` allowed except on Parquet.
    /// Local paths or s3:// gs:// az:// file:// URIs.
    #[arg(long = "input", required = true, value_name = "URI")]
    inputs: Vec<String>,
    /// Where the shards go: a local folder or an s3:// gs:// az:// URI. Credentials come from the
    /// environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...).
    #[arg(long, value_name = "URI")]
    output: String,
    /// TOML settings (every key optional; defaults in pipeline/configs/ingest.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// This process's index among --num-shards processes splitting the input by domain. Default:
    /// JOB_COMPLETION_INDEX (Kubernetes Indexed Job) or SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN
    /// (Slurm job array), else 0.
    #[arg(long, value_name = "I")]
    shard_index: Option<u32>,
    /// How many processes split the input. Default: IMAGEBERT_NUM_SHARDS (set it to the Indexed
    /// Job's completions) or SLURM_ARRAY_TASK_COUNT, else 1. Keep it fixed across reruns.
    #[arg(long, value_name = "N")]
    num_shards: Option<u32>,
    /// Also refetch the rows of finished shards whose status is failed_transient (timeouts,
    /// HTTP 429/5xx), and rewrite those shards.
    #[arg(long)]
    retry_failed: bool,
    /// For tests on 127.0.0.1 only: allow loopback addresses (private, link-local and other
    /// special addresses stay refused).
    #[arg(long)]
    allow_loopback: bool,
}

/// Flags of `pipeline pack`.
#[derive(clap::Args)]
struct PackArgs {
    /// The Karpathy-split JSON (`dataset_coco.json`, `dataset_flickr30k.json`): every image with
    /// its split, file name, optional folder (`filepath`) and captions.
    #[arg(long, value_name = "FILE")]
    karpathy: PathBuf,
    /// The image root: each image is read from IMAGES/<filepath>/<filename> (COCO: the folder
    /// holding val2014/ and train2014/; Flickr30k: the folder of the .jpg files).
    #[arg(long, value_name = "DIR")]
    images: PathBuf,
    /// Where the shards go: a local folder or an s3:// gs:// az:// URI. Credentials come from the
    /// environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...).
    #[arg(long, value_name = "URI")]
    output: String,
    /// Comma-separated splits whose images are packed: train, restval, val, test. Keep it fixed
    /// across reruns into one output.
    #[arg(
        long,
        value_name = "SPLITS",
        value_delimiter = ',',
        default_value = "train,restval,val,test",
        value_parser = parse_split
    )]
    splits: Vec<schemas::karpathy::Split>,
    /// Images per shard (the unit of resume). Keep it fixed across reruns into one output.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    rows_per_shard: u32,
    /// TOML settings (as for ingest) whose `[image]` table sets the re-encoding: max side, JPEG
    /// quality, decompression-bomb caps, formats. Its minimum size is not applied: benchmark
    /// images are all kept.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// A `--splits` value.
fn parse_split(value: &str) -> Result<schemas::karpathy::Split, String> {
    schemas::karpathy::Split::parse(value)
        .ok_or_else(|| format!("`{value}` is not train, restval, val or test"))
}

fn run_pack(args: PackArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let config = load_config(args.config.as_deref())?;
    let job = pipeline::pack::PackJob {
        karpathy: args.karpathy,
        images: args.images,
        output: args.output,
        splits: args.splits,
        rows_per_shard: args.rows_per_shard as usize,
        image: config.image,
        progress: true,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let summary = runtime.block_on(pipeline::pack::pack(job))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

fn run_ingest(args: IngestArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut config = load_config(args.config.as_deref())?;
    if args.allow_loopback {
        config.fetch.allow_loopback = true;
    }
    let slice = pipeline::sharding::Slice::from_args_or_env(args.shard_index, args.num_shards)?;
    let job = pipeline::ingest::IngestJob {
        inputs: args.inputs,
        output: args.output,
        config,
        slice,
        retry_failed: args.retry_failed,
        progress: true,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let summary = runtime.block_on(pipeline::ingest::ingest(job))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

fn run_audit(
    inputs: &[String],
    output: &str,
    config: Option<&std::path::Path>,
) -> anyhow::Result<bool> {
    let config = load_config(config)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(pipeline::audit::audit(inputs, output, &config.input))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report.is_clean())
}

fn run_dedup(
    input: &str,
    output: &str,
    config: Option<&std::path::Path>,
    shard_index: Option<u32>,
    num_shards: Option<u32>,
) -> anyhow::Result<()> {
    let config = load_config(config)?;
    let slice = pipeline::sharding::Slice::from_args_or_env(shard_index, num_shards)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let summary = runtime.block_on(pipeline::shard_dedup::run(
        input,
        output,
        &config.dedup,
        slice,
    ))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// The settings in `path`, or the defaults.
fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<pipeline::config::IngestConfig> {
    match path {
        Some(path) => pipeline::config::IngestConfig::load(path),
        None => Ok(pipeline::config::IngestConfig::default()),
    }
}

fn run_bench(
    assets: &std::path::Path,
    seconds: f64,
    config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let config = load_config(config)?;
    let figures = pipeline::bench::run(assets, seconds, &config.image)?;
    for figure in &figures {
        println!(
            "{:>10.1} {:<9} {}",
            figure.per_second, figure.unit, figure.name
        );
    }
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}

/// The exit status of a command: success when it ran and found everything in order; a failure
/// (with the error and its causes on stderr) otherwise.
fn exit_code(outcome: anyhow::Result<bool>) -> ExitCode {
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let outcome = match Cli::parse().command {
        Command::Dedup {
            input,
            output,
            config,
            shard_index,
            num_shards,
        } => run_dedup(&input, &output, config.as_deref(), shard_index, num_shards).map(|()| true),
        Command::Bench {
            assets,
            seconds,
            config,
        } => run_bench(&assets, seconds, config.as_deref()).map(|()| true),
        Command::Audit {
            inputs,
            output,
            config,
        } => run_audit(&inputs, &output, config.as_deref()),
        Command::Ingest(args) => run_ingest(args).map(|()| true),
        Command::Pack(args) => run_pack(args).map(|()| true),
        Command::Inspect { files } => {
            let mut ok = true;
            for file in files {
                match pipeline::inspect::inspect(&file) {
                    Ok(summary) => println!("{summary}"),
                    Err(error) => {
                        eprintln!("error: {error:#}");
                        ok = false;
                    }
                }
            }
            Ok(ok)
        }
    };
    exit_code(outcome)
}
