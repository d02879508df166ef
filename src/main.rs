//! The `kpistream` command: a thin shell over the library.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use kpistream::config::{Overrides, Settings};

#[derive(Parser)]
#[command(name = "kpistream", version, about = "Live sales KPIs from CRM events")]
struct Cli {
    /// Configuration file, read over the embedded defaults.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// JSON object of rep id to team id (sets `teams_file`).
    #[arg(long, global = true)]
    teams: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the engine over an NDJSON file (`-` for stdin) on the event
    /// clock and prints the KPI document to stdout.
    Replay {
        #[arg(long)]
        input: String,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Replay { input } => {
            let overrides = Overrides {
                teams_file: cli.teams,
                clock: Some("event".into()),
            };
            let settings = Settings::load(cli.config.as_deref(), &overrides)?;
            let (doc, counts) = if input == "-" {
                kpistream::replay::replay(settings.engine, io::stdin().lock())
            } else {
                let f = File::open(&input).with_context(|| format!("cannot open {input}"))?;
                kpistream::replay::replay(settings.engine, BufReader::with_capacity(1 << 16, f))
            }
            .context("reading the input")?;
            tracing::info!(
                applied = counts.applied,
                duplicate = counts.duplicate,
                ignored = counts.ignored_total(),
                rejected = counts.rejected_total(),
                "replay done"
            );
            let mut out = io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
        }
    }
    Ok(())
}
