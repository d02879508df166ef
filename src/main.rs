//! The `kpistream` command: a thin shell over the library.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use kpistream::config::{parse_duration, Overrides, Settings};
use kpistream::crm::Format;
use kpistream::sim::{SimConfig, Simulator};

#[derive(Parser)]
#[command(name = "kpistream", version, about = "Live sales KPIs from CRM events")]
struct Cli {
    /// Configuration file, read over the embedded defaults.
    #[arg(long, global = true, env = "KPISTREAM_CONFIG")]
    config: Option<PathBuf>,
    /// JSON object of rep id to team id (sets `teams_file`).
    #[arg(long, global = true)]
    teams: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the service: consumes the configured Kafka topics and serves
    /// /metrics, /api/v1/kpis, /healthz and /readyz.
    Run,
    /// Runs the engine over an NDJSON file (`-` for stdin) on the event
    /// clock and prints the KPI document to stdout.
    Replay {
        #[arg(long)]
        input: String,
        /// Payload format of each line: canonical, hubspot, pipedrive,
        /// salesforce_cdc, close or zoho (one native JSON document per line).
        #[arg(long, default_value = "canonical")]
        format: kpistream::crm::Format,
        /// Print only `as_of` and the outcome counts, not the KPIs.
        #[arg(long)]
        summary: bool,
    },
    /// Shows what a CRM's native payloads become: for each document of an
    /// NDJSON file (`-` or no --input: stdin), one JSON line per canonical
    /// event it maps to, with the event's outcome, and one per element that
    /// maps to none, with its outcome and reason.
    Adapt {
        /// hubspot, pipedrive, salesforce_cdc, close or zoho.
        #[arg(long)]
        format: kpistream::crm::Format,
        #[arg(long, default_value = "-")]
        input: String,
    },
    /// Generates a realistic stream of CRM events: to a Kafka topic with
    /// --brokers, else as NDJSON to stdout.
    Simulate {
        /// Bootstrap servers; without them, NDJSON goes to stdout.
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long, default_value = "crm-events")]
        topic: String,
        /// Messages per second of wall time (0: as fast as possible).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Stop after this many messages (default: never with --brokers and
        /// a rate, else 1,000,000).
        #[arg(long)]
        count: Option<u64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 16)]
        reps: usize,
        #[arg(long, default_value_t = 3)]
        team_count: usize,
        /// Include redeliveries, late, unknown and malformed messages.
        #[arg(long, default_value_t = false)]
        faults: bool,
        /// Write the simulator's rep to team map to this file.
        #[arg(long)]
        teams_out: Option<PathBuf>,
        /// Messages per second of event time (the spacing of occurred_at).
        #[arg(long, default_value_t = 1.0)]
        event_rate: f64,
    },
    /// The embedded default: an in-process mock Kafka cluster, a simulator
    /// producing live CRM events for three teams, and the full service on it.
    Demo {
        /// Messages per second, in event time and live.
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
        /// Event time simulated before now at start (produced at once), so
        /// that every window, deals and subscriptions included, has data.
        #[arg(long, default_value = "7d")]
        backfill: String,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let overrides = Overrides {
        teams_file: cli.teams.clone(),
        clock: None,
    };
    match cli.command {
        Command::Run => {
            let settings = Settings::load(cli.config.as_deref(), &overrides)?;
            runtime()?.block_on(kpistream::service::run(
                settings,
                kpistream::service::signal(),
            ))
        }
        Command::Replay {
            input,
            format,
            summary,
        } => {
            let settings = Settings::load(cli.config.as_deref(), &overrides)?;
            replay(settings, format, &input, summary)
        }
        Command::Adapt { format, input } => {
            if format == Format::Canonical {
                anyhow::bail!("--format must be a CRM format: canonical messages take no adapter");
            }
            let settings = Settings::load(cli.config.as_deref(), &overrides)?;
            let mut out = BufWriter::new(io::stdout().lock());
            let counts = if input == "-" {
                kpistream::replay::adapt(settings.engine, format, io::stdin().lock(), &mut out)
            } else {
                let f = File::open(&input).with_context(|| format!("cannot open {input}"))?;
                kpistream::replay::adapt(settings.engine, format, BufReader::new(f), &mut out)
            }
            .context("reading the input")?;
            out.flush()?;
            log_outcomes("adapt", &counts);
            Ok(())
        }
        Command::Simulate {
            brokers,
            topic,
            rate,
            count,
            seed,
            reps,
            team_count,
            faults,
            teams_out,
            event_rate,
        } => {
            if !(event_rate.is_finite() && event_rate > 0.0) {
                anyhow::bail!("--event-rate must be a positive number");
            }
            let sim = Simulator::new(SimConfig {
                seed,
                reps,
                teams: team_count,
                faults,
                events_per_second: event_rate,
                ..SimConfig::default()
            });
            if let Some(path) = teams_out {
                std::fs::write(&path, serde_json::to_vec_pretty(&sim.teams())?)?;
            }
            match brokers {
                None => simulate_stdout(sim, count.unwrap_or(1_000_000)),
                Some(b) => kpistream::demo::produce(sim, &b, &topic, rate, count, None),
            }
        }
        Command::Demo { rate, backfill } => {
            let backfill = parse_duration(&backfill).map_err(anyhow::Error::msg)?;
            let settings = Settings::load(cli.config.as_deref(), &overrides)?;
            runtime()?.block_on(kpistream::demo::run(settings, rate, backfill))
        }
    }
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

fn replay(settings: Settings, format: Format, input: &str, summary: bool) -> anyhow::Result<()> {
    fn go(
        cfg: kpistream::config::EngineConfig,
        format: Format,
        summary: bool,
        input: impl io::BufRead,
    ) -> io::Result<(serde_json::Value, kpistream::processor::Counts)> {
        if summary {
            kpistream::replay::replay_summary(cfg, format, input)
        } else {
            kpistream::replay::replay_format(cfg, format, input)
        }
    }
    let (doc, counts) = if input == "-" {
        go(settings.engine, format, summary, io::stdin().lock())
    } else {
        let f = File::open(input).with_context(|| format!("cannot open {input}"))?;
        go(
            settings.engine,
            format,
            summary,
            BufReader::with_capacity(1 << 16, f),
        )
    }
    .context("reading the input")?;
    log_outcomes("replay", &counts);
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &doc)?;
    writeln!(out)?;
    Ok(())
}

/// Logs the outcome counts of a finished `replay` or `adapt`.
fn log_outcomes(command: &str, counts: &kpistream::processor::Counts) {
    tracing::info!(
        applied = counts.applied,
        duplicate = counts.duplicate,
        ignored = counts.ignored_total(),
        rejected = counts.rejected_total(),
        "{command} done"
    );
}

fn simulate_stdout(mut sim: Simulator, count: u64) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    for _ in 0..count {
        out.write_all(&sim.next_message().payload)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "kpistream",
            "simulate",
            "--count",
            "5",
            "--reps",
            "4",
            "--team-count",
            "2",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Simulate {
                reps: 4,
                team_count: 2,
                count: Some(5),
                ..
            }
        ));
    }
}
