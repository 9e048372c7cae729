//! Command-line interface of the `vigil` binary.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::config::Settings;
use crate::correlate::RuleStrategy;
use crate::detect::Detector;
use crate::metrics::Metrics;
use crate::rules::{self, RuleEngine};
use crate::source::SourceKind;
use crate::{embedded, pipeline, replay};

#[derive(Parser, Debug)]
#[command(name = "vigil", version, about = "Streaming SIEM detection for Kubernetes: Kafka → Arrow → SQL rules → alerts")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the detection service. Without kafka.brokers configured, runs the
    /// embedded demo: an in-process broker fed with the bundled samples.
    Run {
        /// TOML configuration file (environment: VIGIL__SECTION__KEY).
        #[arg(long, short, env = "VIGIL_CONFIG")]
        config: Option<PathBuf>,
        /// Rules directory (overrides rules.dir).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Sample events for the embedded demo.
        #[arg(long, default_value = "samples")]
        samples: PathBuf,
    },
    /// Evaluate rules over a JSON-lines file (or stdin) without Kafka;
    /// alerts are printed on stdout, dead letters and a summary on stderr.
    Replay {
        /// Rules directory.
        #[arg(long, default_value = "sql-rules")]
        rules: PathBuf,
        /// Source of the events: k8s_audit, falco or tetragon.
        #[arg(long)]
        source: SourceKind,
        /// Events per micro-batch.
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
        /// JSON-lines input; `-` or nothing for stdin.
        #[arg(default_value = "-")]
        input: PathBuf,
    },
    /// Rule tools.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Subcommand, Debug)]
enum RulesCommand {
    /// Parse and plan every rule; report every problem with file and line.
    Validate {
        #[arg(default_value = "sql-rules")]
        dir: PathBuf,
    },
    /// Run every rule's test cases (`<rule>.tests.jsonl` beside the rule).
    Test {
        #[arg(default_value = "sql-rules")]
        dir: PathBuf,
        /// Only rules whose id contains this text.
        #[arg(long)]
        filter: Option<String>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Human-readable logs on a terminal, JSON lines otherwise; `RUST_LOG`
/// filters (default `info`). Logs go to stderr: stdout carries alerts.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
}

async fn load_engine(dir: &Path) -> Result<RuleEngine> {
    load_engine_with(dir, Default::default()).await
}

async fn load_engine_with(dir: &Path, correlation: crate::correlate::CorrelationSettings) -> Result<RuleEngine> {
    let rules = rules::load_dir(dir).map_err(anyhow::Error::new)?;
    RuleEngine::compile_with(rules, correlation).await.map_err(anyhow::Error::new)
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run { config, rules, samples } => {
            let mut settings = Settings::load(config.as_deref())?;
            if let Some(dir) = rules {
                settings.rules.dir = dir;
            }
            let engine = load_engine_with(&settings.rules.dir, settings.correlation.clone())
                .await
                .with_context(|| format!("loading rules from {}", settings.rules.dir.display()))?;
            tracing::info!(rules = engine.rules().count(), dir = %settings.rules.dir.display(), "rules loaded");
            let detector = Detector::new(engine, settings.limits.decode_limits(), Arc::new(Metrics::default()));
            let stop = stop_on_signal();
            match settings.kafka.brokers.clone() {
                Some(brokers) => {
                    pipeline::run(&settings, &brokers, detector, stop, Default::default()).await?;
                }
                None => {
                    let (output, metrics) = embedded::run_demo(&settings, &samples, detector, stop).await?;
                    for alert in &output.alerts {
                        println!("{alert}");
                    }
                    eprintln!(
                        "embedded demo: {} sample messages → {} alerts on topic {:?}, {} dead letters on topic {:?}",
                        Metrics::get(&metrics.messages_consumed),
                        output.alerts.len(),
                        settings.topics.alerts,
                        output.dead_letters.len(),
                        settings.topics.dead_letter,
                    );
                    for (rule, n) in metrics.alerts_by_rule() {
                        eprintln!("  {n:>5}  {rule}");
                    }
                    for dl in &output.dead_letters {
                        eprintln!("dead letter: {dl}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay { rules, source, batch_size, input } => {
            let engine = load_engine(&rules).await?;
            let mut detector = Detector::new(engine, Default::default(), Arc::new(Metrics::default()));
            let mut stdout = std::io::stdout().lock();
            let mut stderr = std::io::stderr();
            let summary =
                replay::replay(&mut detector, source, &input, batch_size.max(1), &mut stdout, &mut stderr).await?;
            let alerts: u64 = summary.alerts_by_rule.values().sum();
            eprintln!(
                "replay: {} lines, {} events, {} alerts, {} dead letters",
                summary.lines, summary.events, alerts, summary.dead_letters
            );
            for (rule, n) in &summary.alerts_by_rule {
                eprintln!("  {n:>6}  {rule}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules { command: RulesCommand::Test { dir, filter } } => {
            let mut loaded = rules::load_dir(&dir).map_err(anyhow::Error::new)?;
            if let Some(f) = &filter {
                loaded.retain(|r| r.meta.id.contains(f.as_str()));
            }
            let engine = RuleEngine::compile(loaded.clone()).await.map_err(anyhow::Error::new)?;
            let results = rules::testing::run(&loaded, engine).await;
            let (mut passed, mut failed) = (0, 0);
            for r in &results {
                if r.passed {
                    passed += 1;
                    println!("PASS  {:<40} {}", r.rule_id, r.name);
                } else {
                    failed += 1;
                    println!("FAIL  {:<40} {}  ({}:{}: {})", r.rule_id, r.name, r.file.display(), r.line, r.detail);
                }
            }
            println!("rule tests: {passed} passed, {failed} failed");
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Rules { command: RulesCommand::Validate { dir } } => match load_engine(&dir).await {
            Ok(engine) => {
                println!("{} rules OK in {}", engine.rules().count(), dir.display());
                for (id, strategy) in engine.correlator().strategies() {
                    match strategy {
                        RuleStrategy::Incremental => println!("correlation rule {id}: incremental"),
                        RuleStrategy::Rescan(None) => println!("correlation rule {id}: re-scan"),
                        RuleStrategy::Rescan(Some(why)) => println!("correlation rule {id}: re-scan ({why})"),
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e:#}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

/// A channel that turns true on SIGTERM or Ctrl-C.
fn stop_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("stop requested: finishing the current batch");
        let _ = tx.send(true);
    });
    rx
}
