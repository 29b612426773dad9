//! The `trainer` command line. Stages not built yet are listed in the README.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ImageBERT pretraining, fine-tuning and image-text retrieval evaluation for imagebert, on Burn (CPU by default, CUDA with --features cuda).
#[derive(Parser)]
#[command(name = "trainer", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        Command::Doctor(args) => backend::doctor(&args),
    }
}
