//! Command-line interface of the `vigil` binary.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::config::Settings;
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
    /// Generate realistic synthetic events with injected attacks: to the
    /// configured source topics (--brokers), or as JSON lines (--out).
    Gen(GenArgs),
    /// Rule tools.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

/// `vigil gen`: see docs/benchmarks.md#the-generator.
#[derive(clap::Args, Debug)]
struct GenArgs {
    /// Kafka bootstrap servers to produce to (default: kafka.brokers of the
    /// configuration). Topics are the configured source topics.
    #[arg(long)]
    brokers: Option<String>,
    /// Write JSON lines to this file (`-` for stdout) instead of producing.
    #[arg(long, conflicts_with = "brokers")]
    out: Option<PathBuf>,
    /// Only this source (k8s_audit, falco or tetragon); default: all three,
    /// 80% audit, 10% Falco, 10% Tetragon.
    #[arg(long)]
    source: Option<SourceKind>,
    /// Events per second (0: as fast as possible).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Number of events (0: until stopped).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Seed of the deterministic stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// TOML configuration file (topic names, Kafka properties).
    #[arg(long, short, env = "VIGIL_CONFIG")]
    config: Option<PathBuf>,
    /// Distinct human users.
    #[arg(long, default_value_t = 200)]
    users: u32,
    /// Distinct namespaces.
    #[arg(long, default_value_t = 50)]
    namespaces: u32,
    /// Distinct pods.
    #[arg(long, default_value_t = 2000)]
    pods: u32,
    /// One injected attack every this many events (0: none).
    #[arg(long, default_value_t = 1000)]
    attack_every: u64,
    /// Event time of the first event (RFC 3339); default: now when
    /// producing, 2026-01-01T00:00:00Z with --out. Events are 1/rate
    /// seconds apart (1 ms when the rate is 0).
    #[arg(long)]
    start: Option<String>,
    /// Write the injected attacks (JSON lines: position, attack, event id,
    /// rule ids expected to fire) to this file.
    #[arg(long)]
    manifest: Option<PathBuf>,
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
        Command::Gen(args) => run_gen(args).await,
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
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e:#}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

async fn run_gen(args: GenArgs) -> Result<ExitCode> {
    use crate::gen::{produce, GenConfig, Generator};
    let settings = Settings::load(args.config.as_deref())?;
    let producing = args.out.is_none();
    let start_ns = match &args.start {
        Some(t) => crate::decode::parse_time("--start", t).map_err(anyhow::Error::msg)?,
        None if producing => crate::detect::now_ns(),
        None => crate::gen::DEFAULT_START_NS,
    };
    let base = match args.source {
        Some(source) => GenConfig::single(source),
        None => GenConfig::default(),
    };
    let config = GenConfig {
        seed: args.seed,
        users: args.users,
        namespaces: args.namespaces,
        pods: args.pods,
        start_ns,
        step_ns: if args.rate == 0 { 1_000_000 } else { (1_000_000_000 / args.rate).max(1) as i64 },
        attack_every: args.attack_every,
        ..base
    };
    let mut generator = Generator::new(config);
    let summary = match &args.out {
        Some(path) if path.as_os_str() == "-" => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            produce::write_jsonl(&mut generator, args.count, &mut out)?
        }
        Some(path) => {
            let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
            let mut out = std::io::BufWriter::new(file);
            produce::write_jsonl(&mut generator, args.count, &mut out)?
        }
        None => {
            let brokers = args.brokers.clone().or_else(|| settings.kafka.brokers.clone()).ok_or_else(|| {
                anyhow::anyhow!("vigil gen needs --brokers (or kafka.brokers in the configuration), or --out FILE")
            })?;
            let producer = produce::load_producer(&crate::kafka::base_config(&settings.kafka, &brokers))?;
            let topics = produce::SourceTopics {
                k8s_audit: settings.topics.k8s_audit.clone(),
                falco: settings.topics.falco.clone(),
                tetragon: settings.topics.tetragon.clone(),
            };
            tracing::info!(brokers = %brokers, rate = args.rate, count = args.count, seed = args.seed, "producing generated events");
            produce::produce(&producer, &topics, &mut generator, args.count, args.rate, stop_on_signal(), |_| {}).await?
        }
    };
    if let Some(path) = &args.manifest {
        let mut text = String::new();
        for a in &summary.attacks {
            text.push_str(&serde_json::to_string(a)?);
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "gen: {} events ({} bytes; k8s_audit {}, falco {}, tetragon {}), {} attacks injected, {} alerts expected",
        summary.events,
        summary.bytes,
        summary.per_source[0],
        summary.per_source[1],
        summary.per_source[2],
        summary.attacks.len(),
        summary.expected_alerts()
    );
    Ok(ExitCode::SUCCESS)
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
