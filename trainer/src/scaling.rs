//! `trainer bench-scaling`: data-parallel scaling on this host. For 1, 2, ... N processes on
//! 127.0.0.1 it measures a pre-training step of one model size on synthetic inputs (a fixed
//! batch per process, so the global batch grows with the processes) and, within it, the
//! all-reduce of the gradients through [`crate::distributed`], as `trainer run` does them. It
//! prints the step time, the all-reduce time, global samples/s, the scaling efficiency and the
//! all-reduce bandwidth, then estimates from that bandwidth what a larger job would spend on
//! communication per step.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use backend::FusedAdam;
use burn::module::Module;
use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::bench::{Shapes, flag_value, pretrain_gradients};
use crate::distributed::{
    Collective, GradientEngine, Rendezvous, World, flatten_gradients, free_ports,
    gradients_from_flat,
};
use crate::model::imagebert::ImageBert;

/// `trainer bench-scaling`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ScalingArgs {
    /// Model size (mini, base).
    #[arg(long, default_value = "mini")]
    pub model: String,
    /// Most processes; every count from 1 up is measured.
    #[arg(long, default_value_t = 3)]
    pub max_ranks: usize,
    /// Samples per process and step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Timed steps per run, after one warm-up step; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// The job to estimate communication for: processes (GPUs) in all.
    #[arg(long, default_value_t = 32)]
    pub estimate_ranks: usize,
    /// The model size to estimate communication for.
    #[arg(long, default_value = "base")]
    pub estimate_model: String,
    /// What averages the gradients (as `train.all_reduce`): auto, burn-collective or nccl.
    /// NCCL needs a GPU per rank: rank r takes the r-th GPU this host shows.
    #[arg(long, value_enum, default_value_t = GradientEngine::Auto)]
    pub all_reduce: GradientEngine,
    /// The synthetic inputs' shapes.
    #[command(flatten)]
    pub shapes: Shapes,
    /// Internal: run as this rank of a measurement (set by the parent process).
    #[arg(long, hide = true)]
    pub as_rank: Option<usize>,
    /// Internal: the measurement's process count.
    #[arg(long, hide = true, default_value_t = 1)]
    pub world: usize,
    /// Internal: the measurement's rendezvous port.
    #[arg(long, hide = true, default_value_t = 0)]
    pub port: u16,
}

/// What one rank measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RankFigures {
    /// Median seconds of a whole step.
    pub step_s: f64,
    /// Median seconds of the gradient all-reduce within it (0 alone).
    pub allreduce_s: f64,
    /// Bytes of gradients all-reduced per step.
    pub gradient_bytes: usize,
    /// What averaged the gradients (none alone).
    pub engine: Option<GradientEngine>,
}

/// One row of the table: a process count.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingRow {
    /// Processes.
    pub ranks: usize,
    /// The slowest rank's median step seconds.
    pub step_s: f64,
    /// The slowest rank's median all-reduce seconds.
    pub allreduce_s: f64,
    /// Global samples per second.
    pub samples_per_s: f64,
    /// Samples/s over `ranks` × one process's samples/s.
    pub efficiency: f64,
    /// All-reduce bus bandwidth in GB/s: `2 (n - 1) / n × gradient bytes / all-reduce seconds`
    /// (what each rank sends in a ring all-reduce, per second).
    pub bus_gb_per_s: Option<f64>,
    /// What averaged the gradients (rank 0's report; none alone).
    pub engine: Option<GradientEngine>,
}

/// Measures one rank of a `world`-process run on `device` (GPU `ordinal`; called in the child
/// processes).
pub fn measure_rank<B: AutodiffBackend>(
    args: &ScalingArgs,
    world: World,
    device: &B::Device,
    ordinal: usize,
) -> Result<RankFigures> {
    let collective = if world.size > 1 {
        let rendezvous = Rendezvous {
            master_host: "127.0.0.1".into(),
            master_port: args.port,
            node_host: "127.0.0.1".into(),
        };
        Some(
            Collective::join(world, &rendezvous, Duration::from_secs(300))?
                .with_gradient_engine(args.all_reduce, ordinal)?,
        )
    } else {
        None
    };
    let config = args.shapes.model(&args.model)?;
    let vocab = config.encoder.vocab_size;
    let batch = args.shapes.samples(args.batch, vocab);
    B::seed(device, 0);
    let mut model = ImageBert::<B>::init(&config, device);
    let mut optimizer = FusedAdam::default().init::<B, ImageBert<B>>();
    let mut rng = ChaCha8Rng::seed_from_u64(world.rank as u64);
    let (mut steps, mut reduces, mut gradient_bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..=args.steps {
        let started = Instant::now();
        let mut gradients =
            pretrain_gradients(&model, vocab, &batch, &args.shapes, &mut rng, device);
        let mut reduce_s = 0.0;
        if let Some(collective) = &collective {
            let flat = flatten_gradients(&model, &gradients);
            gradient_bytes = flat.len() * 4;
            let reduce = Instant::now();
            let mean = collective.mean(flat, "the benchmark's all-reduce")?;
            reduce_s = reduce.elapsed().as_secs_f64();
            gradients = gradients_from_flat(&model, &mean)?;
        }
        model = optimizer.step(1e-4, model, gradients);
        steps.push(started.elapsed().as_secs_f64());
        reduces.push(reduce_s);
    }
    Ok(RankFigures {
        step_s: median(&steps[1..]),
        allreduce_s: median(&reduces[1..]),
        gradient_bytes,
        engine: collective.as_ref().map(Collective::gradient_engine),
    })
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs every process count from 1 to `--max-ranks` as child processes of this binary (with
/// this process's `kernels` options) and returns the table's rows.
pub fn measure_all(
    args: &ScalingArgs,
    kernels: &backend::KernelOptions,
) -> Result<Vec<ScalingRow>> {
    ensure!(
        args.max_ranks >= 1 && args.batch >= 1 && args.steps >= 1,
        "--max-ranks, --batch and --steps must be positive"
    );
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut rows: Vec<ScalingRow> = Vec::new();
    for ranks in 1..=args.max_ranks {
        let port = free_ports(ranks as u16 + 1)?;
        let children = (0..ranks)
            .map(|rank| {
                Command::new(&exe)
                    .args(kernels.as_args())
                    .arg("bench-scaling")
                    .args(["--model", &args.model])
                    .args(["--batch", &args.batch.to_string()])
                    .args(["--steps", &args.steps.to_string()])
                    .args(["--text-len", &args.shapes.text_len.to_string()])
                    .args(["--regions", &args.shapes.regions.to_string()])
                    .args(["--feature-dim", &args.shapes.feature_dim.to_string()])
                    .args(["--classes", &args.shapes.classes.to_string()])
                    .arg("--all-reduce")
                    .arg(flag_value(&args.all_reduce))
                    .args(["--as-rank", &rank.to_string()])
                    .args(["--world", &ranks.to_string()])
                    .args(["--port", &port.to_string()])
                    .env("BURN_COMMUNICATION_BIND_HOST", "127.0.0.1")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .context("starting a rank")
            })
            .collect::<Result<Vec<_>>>()?;
        let mut figures = Vec::new();
        for (rank, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!("rank {rank} of {ranks} failed");
            }
            // The figures are the last line (burn-communication prints its connections).
            let stdout = String::from_utf8_lossy(&out.stdout);
            figures.push(
                serde_json::from_str::<RankFigures>(stdout.lines().last().unwrap_or_default())
                    .with_context(|| format!("rank {rank} of {ranks}: unreadable figures"))?,
            );
        }
        let step_s = figures.iter().map(|f| f.step_s).fold(0.0, f64::max);
        let allreduce_s = figures.iter().map(|f| f.allreduce_s).fold(0.0, f64::max);
        let samples_per_s = (ranks * args.batch) as f64 / step_s;
        let alone = rows.first().map_or(samples_per_s, |row| row.samples_per_s);
        let bytes = figures[0].gradient_bytes as f64;
        rows.push(ScalingRow {
            ranks,
            step_s,
            allreduce_s,
            samples_per_s,
            efficiency: samples_per_s / (ranks as f64 * alone),
            bus_gb_per_s: (ranks > 1)
                .then(|| 2.0 * (ranks - 1) as f64 / ranks as f64 * bytes / allreduce_s / 1e9),
            engine: figures[0].engine,
        });
    }
    Ok(rows)
}

/// The table, with the communication estimate for `--estimate-ranks` × `--estimate-model`
/// from the best measured bus bandwidth.
pub fn table(args: &ScalingArgs, rows: &[ScalingRow], device: &str) -> Result<String> {
    let mut out = format!(
        "device: {device}; model {}; {} samples per process of {} text + {} regions of {}-d\n\n\
         | processes | step s | all-reduce s | all-reduce by | samples/s | scaling efficiency | all-reduce bus GB/s |\n\
         |---|---|---|---|---|---|---|\n",
        args.model, args.batch, args.shapes.text_len, args.shapes.regions, args.shapes.feature_dim
    );
    for row in rows {
        out += &format!(
            "| {} | {:.3} | {:.3} | {} | {:.2} | {:.2} | {} |\n",
            row.ranks,
            row.step_s,
            row.allreduce_s,
            row.engine
                .as_ref()
                .map_or_else(|| "-".to_owned(), flag_value),
            row.samples_per_s,
            row.efficiency,
            row.bus_gb_per_s
                .map_or_else(|| "-".to_owned(), |gb| format!("{gb:.3}"))
        );
    }
    let bandwidth = rows
        .iter()
        .filter_map(|row| row.bus_gb_per_s)
        .fold(0.0, f64::max);
    if bandwidth > 0.0 {
        let config = args.shapes.model(&args.estimate_model)?;
        let device = Default::default();
        let parameters =
            ImageBert::<burn::backend::NdArray<f32>>::init(&config, &device).num_params();
        let n = args.estimate_ranks as f64;
        let bytes = parameters as f64 * 4.0;
        let seconds = 2.0 * (n - 1.0) / n * bytes / (bandwidth * 1e9);
        out += &format!(
            "\nEstimate: `{}` has {parameters} parameters ({:.0} MB of f32 gradients); at the \
             measured {bandwidth:.3} GB/s per rank, one all-reduce over {} ranks moves {:.0} MB \
             per rank and takes {seconds:.2} s per step.\n",
            args.estimate_model,
            bytes / 1e6,
            args.estimate_ranks,
            2.0 * (n - 1.0) / n * bytes / 1e6,
        );
    }
    Ok(out)
}
