//! The `trainer` command line: `run`, `finetune`, `eval`, `doctor`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use trainer::config::RunConfig;
use trainer::distributed::{Collective, Rendezvous, World, local_rank};

/// ImageBERT pretraining, fine-tuning and image-text retrieval evaluation for imagebert, on Burn (CPU by default, CUDA with --features cuda).
#[derive(Parser)]
#[command(name = "trainer", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    kernels: backend::KernelOptions,
}

#[derive(Subcommand)]
enum Command {
    /// Check that this build computes correctly on this machine: prints the compiled-in backend
    /// and device, multiplies two matrices and differentiates a small expression on the device,
    /// compares both with host arithmetic, and reports first-call (compile) and warm timings;
    /// CUDA builds also all-reduce through a one-rank NCCL communicator (a missing libnccl is
    /// reported, not failed). Exits non-zero when a result is off.
    Doctor(backend::DoctorArgs),
    /// Run (or resume) one pre-training stage described by a TOML config: streams the shards in
    /// `data.dataset`, trains with MLM, MOC, MRFR and ITM, logs every step to
    /// `<train.output>/log.jsonl` and checkpoints to `<train.output>/checkpoints`. Run it again
    /// after a crash and it resumes exactly from the newest checkpoint.
    ///
    /// Data parallel over processes and nodes: the rank and world size come from
    /// IMAGEBERT_RANK/IMAGEBERT_WORLD_SIZE, SLURM_PROCID/SLURM_NTASKS (srun) or
    /// JOB_COMPLETION_INDEX/IMAGEBERT_WORLD_SIZE (Kubernetes Indexed Job); the ranks meet at
    /// IMAGEBERT_MASTER_ADDR:IMAGEBERT_MASTER_PORT (default: the first Slurm node, else
    /// 127.0.0.1; port 29500), and each is reached at IMAGEBERT_NODE_ADDR (default
    /// SLURMD_NODENAME) on master port + 1 + rank. Servers bind BURN_COMMUNICATION_BIND_HOST
    /// (default 0.0.0.0). Each rank computes on the GPU numbered (its local rank mod the GPUs it
    /// sees), the local rank from IMAGEBERT_LOCAL_RANK, SLURM_LOCALID or LOCAL_RANK (default 0);
    /// the gradients go through NCCL or burn-collective as train.all_reduce says. See
    /// deploy/README.md.
    Run {
        /// The stage's config file (see trainer/configs/ for documented examples).
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Fine-tune (or resume fine-tuning) for image-text retrieval as a TOML config describes
    /// (trainer/configs/finetune.toml): Karpathy-split captions joined with their images' region
    /// shards, the paper's binary / softmax / triplet loss over sampled negatives, optional
    /// hard-negative mining. Same log, checkpoints and exact resume as `run`.
    Finetune {
        /// The fine-tuning config file.
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Evaluate image-text retrieval (TR and IR Recall@1/5/10) of a checkpoint, zero-shot
    /// (pre-trained) or fine-tuned, under the benchmarks' protocols. Writes report.json and
    /// report.md to --output; a killed evaluation resumes from its finished score chunks.
    Eval(trainer::retrieval::eval::EvalArgs),
    /// Measure speed at the paper's shapes on synthetic inputs: retrieval pairs scored per
    /// second (extrapolated to the COCO 1k and 5k protocols, beside UNITER's 2-3 h on 8 V100)
    /// and pre-training samples per second, for each model size. Prints a table and JSON.
    Bench(trainer::bench::BenchArgs),
    /// Measure data-parallel scaling on this host: a pre-training step of one model size with
    /// 1, 2, ... --max-ranks processes on 127.0.0.1 (a fixed batch per process), the gradient
    /// all-reduce within it, the scaling efficiency and the all-reduce bandwidth, and from that
    /// bandwidth the communication time per step of a larger job. Prints a table and JSON.
    BenchScaling(trainer::scaling::ScalingArgs),
    /// Write one Markdown page for a whole run: a PNG loss curve per training stage (from each
    /// log.jsonl) and the recall table of the evaluations (from each report.json) beside chance.
    /// Prints the page's path.
    Report(trainer::report::ReportArgs),
}

/// `trainer run`: alone, or as one rank of the job the environment describes.
fn run(config: &std::path::Path) -> anyhow::Result<trainer::training::RunSummary> {
    let config = RunConfig::load(config)?;
    let world = World::from_env()?;
    let device = backend::device_for_local_rank(local_rank(|name| std::env::var(name).ok())?);
    let collective = if world.size > 1 {
        let timeout = std::time::Duration::from_secs(config.train.collective_timeout_s);
        Some(
            Collective::join(world, &Rendezvous::from_env()?, timeout)?
                .with_gradient_engine(config.train.all_reduce, backend::device_ordinal(&device))?,
        )
    } else {
        None
    };
    trainer::training::run::<backend::Train>(&config, collective.as_ref(), &device)
}

/// `trainer bench-scaling`: the parent measures every process count, a child one rank.
fn bench_scaling(
    args: &trainer::scaling::ScalingArgs,
    kernels: &backend::KernelOptions,
) -> anyhow::Result<()> {
    if let Some(rank) = args.as_rank {
        let world = World {
            rank,
            size: args.world,
        };
        // Every rank runs on this host: rank r takes the r-th GPU it sees.
        let device = backend::device_for_local_rank(rank);
        let figures = trainer::scaling::measure_rank::<backend::Train>(
            args,
            world,
            &device,
            backend::device_ordinal(&device),
        )?;
        println!("{}", serde_json::to_string(&figures)?);
        return Ok(());
    }
    let rows = trainer::scaling::measure_all(args, kernels)?;
    let name = trainer::bench::device_name::<backend::Compute>(&backend::default_device());
    print!("{}", trainer::scaling::table(args, &rows, &name)?);
    println!("{}", serde_json::json!({ "device": name, "rows": rows }));
    Ok(())
}

/// Prints the error with its causes and returns failure.
fn failed(error: anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::FAILURE
}

/// Prints a finished training loop's summary, or the error.
fn finished<L: trainer::training::LogLine>(
    result: anyhow::Result<trainer::training::LoopSummary<L>>,
) -> ExitCode {
    match result {
        Ok(summary) => {
            println!("{}", summary.describe());
            ExitCode::SUCCESS
        }
        Err(error) => failed(error),
    }
}

fn main() -> ExitCode {
    let process_started = std::time::Instant::now();
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
    let (command, kernels) = (cli.command, cli.kernels);
    // Burn's operations are issued from a compute-pool worker, which joins their parallel work.
    backend::on_compute_threads(move || match command {
        Command::Doctor(args) => backend::doctor(&args),
        Command::Run { config } => finished(run(&config)),
        Command::Finetune { config } => finished(
            trainer::retrieval::finetune::FinetuneConfig::load(&config).and_then(|config| {
                let world = World::from_env()?;
                anyhow::ensure!(
                    world.size == 1,
                    "trainer finetune runs as one process; this one is rank {} of {}",
                    world.rank,
                    world.size
                );
                trainer::retrieval::finetune::finetune::<backend::Train>(
                    &config,
                    &backend::default_device(),
                )
            }),
        ),
        Command::Bench(args) => match trainer::bench::bench_models(&args, process_started) {
            Ok(rows) => {
                let name = format!(
                    "{} ({})",
                    trainer::bench::device_name::<backend::Compute>(&backend::default_device()),
                    args.precision
                );
                print!("{}", trainer::bench::table(&rows, &name, &args));
                println!("{}", serde_json::json!({ "device": name, "rows": rows }));
                ExitCode::SUCCESS
            }
            Err(error) => failed(error),
        },
        Command::BenchScaling(args) => match bench_scaling(&args, &kernels) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => failed(error),
        },
        Command::Report(args) => match trainer::report::write_report(&args) {
            Ok(path) => {
                println!("report: {}", path.display());
                ExitCode::SUCCESS
            }
            Err(error) => failed(error),
        },
        Command::Eval(args) => {
            match trainer::retrieval::eval::run_eval::<backend::Compute>(
                &args,
                &backend::default_device(),
            ) {
                Ok(report) => {
                    print!("{}", report.markdown());
                    println!("report: {}", args.output.join("report.md").display());
                    ExitCode::SUCCESS
                }
                Err(error) => failed(error),
            }
        }
    })
}
