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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
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
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
