//! The `detector` command line. Stages not built yet are listed in the README.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Batched region-feature extraction for imagebert: reads pair shards, detects regions in every kept image and writes region-feature shards beside them.
#[derive(Parser)]
#[command(name = "detector", version)]
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
