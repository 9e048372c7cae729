//! Command-line interface of the `vigil` binary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::config::Settings;
use crate::correlate::Placement;
use crate::correlate::RuleStrategy;
use crate::decode::envelope::AuditFormat;
use crate::detect::{Detector, EventTimeBounds};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::rules::{self, coverage, Layers, RuleEngine, RulePack, RuleSet};
use crate::source::SourceKind;

/// A `--source` the registry holds.
fn registered_source(name: &str) -> Result<SourceKind, crate::registry::UnknownSource> {
    crate::registry::resolve(name)
}

/// Why a `--source` of `vigil gen` cannot be generated.
#[derive(Debug, thiserror::Error)]
enum GeneratedSourceError {
    #[error(transparent)]
    Unknown(#[from] crate::registry::UnknownSource),
    /// A registered source the generator has no events of.
    #[error("the generator makes no {0} events")]
    NotGenerated(SourceKind),
}

/// A `--source` the generator makes events of.
fn generated_source(name: &str) -> Result<SourceKind, GeneratedSourceError> {
    let source = registered_source(name)?;
    if vigil_gen::GENERATED.contains(&source) {
        Ok(source)
    } else {
        Err(GeneratedSourceError::NotGenerated(source))
    }
}
use crate::telemetry::{self, LogSettings};
use crate::{embedded, http, leader, outputs, pipeline, reload, replay};

#[derive(Parser, Debug)]
#[command(
    name = "vigil",
    version,
    about = "Streaming SIEM detection for Kubernetes: Kafka → Arrow → SQL rules → alerts"
)]
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
        /// Site overlay directory, applied over the rules in the order
        /// given; repeatable (overrides rules.overlays).
        #[arg(long = "overlay", value_name = "DIR")]
        overlays: Vec<PathBuf>,
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
        /// Site overlay directory, applied over the rules in the order
        /// given; repeatable.
        #[arg(long = "overlay", value_name = "DIR")]
        overlays: Vec<PathBuf>,
        /// Source of the events: k8s_audit, falco or tetragon (a source of
        /// the registry).
        #[arg(long, value_parser = registered_source)]
        source: SourceKind,
        /// How audit events are wrapped: native, eks_cloudwatch,
        /// aks_event_hubs or gke_cloud_logging (each line one message).
        #[arg(long, default_value = "native")]
        audit_format: AuditFormat,
        /// Events per micro-batch (the default is `vigil run`'s
        /// `batch.max_events`; docs/benchmarks.md measures it).
        #[arg(long, default_value_t = 5000)]
        batch_size: usize,
        /// Evaluate only events at or after this event time (RFC 3339,
        /// e.g. 2024-05-01T00:00:00Z); earlier events are skipped and counted.
        #[arg(long, value_parser = parse_rfc3339_ns)]
        from: Option<i64>,
        /// Evaluate only events before this event time (RFC 3339); later
        /// events are skipped and counted.
        #[arg(long, value_parser = parse_rfc3339_ns)]
        to: Option<i64>,
        /// Print no alerts and no dead letters: only the summary, on stdout.
        #[arg(long)]
        summary_only: bool,
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
    #[arg(long, value_parser = generated_source)]
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
    /// Parse and plan every rule; report every problem with file and line;
    /// list every effective list, macro and lookup table and where it came
    /// from.
    Validate {
        #[arg(default_value = "sql-rules")]
        dir: PathBuf,
        /// Site overlay directory, applied in the order given; repeatable.
        #[arg(long = "overlay", value_name = "DIR")]
        overlays: Vec<PathBuf>,
    },
    /// Run every rule's test cases (`<rule>.tests.jsonl` beside the rule).
    Test {
        #[arg(default_value = "sql-rules")]
        dir: PathBuf,
        /// Site overlay directory, applied in the order given; repeatable.
        #[arg(long = "overlay", value_name = "DIR")]
        overlays: Vec<PathBuf>,
        /// Only rules whose id contains this text.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Convert rules of another format into Vigil rule files.
    Import {
        #[command(subcommand)]
        from: ImportFormat,
    },
    /// Which MITRE ATT&CK for Containers techniques the rules cover, by
    /// tactic, with the uncovered techniques and a total.
    Coverage {
        #[arg(default_value = "sql-rules")]
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// A matrix file in the format of crates/vigil-engine/data/attack-containers.toml
        /// (default: that file, built in).
        #[arg(long)]
        matrix: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ImportFormat {
    /// Sigma rules (detections and correlations; docs/sigma.md): one Vigil
    /// rule file per rule under DIR/<table>/. Exit 0 when all imported, 1
    /// when some were skipped (each named with its reason), 2 on a usage
    /// error.
    Sigma {
        /// Sigma YAML files or directories of them (single or multi-document).
        #[arg(required = true)]
        sources: Vec<PathBuf>,
        /// Where the rule files go (an overlay directory: docs/rules.md).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A pipeline file extending or overriding the shipped pipelines.
        #[arg(long, value_name = "FILE")]
        pipeline: Option<PathBuf>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OutputFormat {
    Text,
    Json,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // A blocking call librdkafka has not returned from (a consumer close or
    // an offset commit no coordinator answers, see `stopping`) must not keep
    // the process alive: what it would finish is redone after a restart.
    runtime.shutdown_timeout(EXIT_WAIT);
    code
}

/// How long the process waits at exit for blocking calls still running.
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// The layers of a rules directory and overlays given on the command line.
fn layers(dir: &Path, overlays: Vec<PathBuf>) -> Layers {
    Layers {
        overlays,
        ..Layers::dir(dir)
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run {
            config,
            rules,
            overlays,
            samples,
        } => {
            // Logs start after the configuration is read (it says how to log);
            // a configuration error is printed by `main`.
            let mut settings = Settings::load(config.as_deref())?;
            if let Some(dir) = rules {
                settings.rules.dir = dir;
            }
            if !overlays.is_empty() {
                settings.rules.overlays = overlays;
            }
            let telemetry = telemetry::init(&settings.log, Some(&settings.tracing))?;
            let result = run(settings, samples).await;
            // Export the spans still queued (the last batches) before exiting.
            let _waiting = crate::stopping::waiting("exporting the last trace spans");
            let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
            result
        }
        command => {
            telemetry::init(&LogSettings::default(), None)?.shutdown();
            dispatch_tool(command).await
        }
    }
}

/// `vigil run`: the HTTP server, the rules, then the pipeline (or the demo).
async fn run(settings: Settings, samples: PathBuf) -> Result<ExitCode> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(Duration::from_millis(
        settings.http.ready_max_poll_gap_ms,
    )));
    // The console's window, filled by the outputs' consumer (Kafka only).
    let window = (settings.console.enabled && settings.kafka.brokers.is_some()).then(|| {
        Arc::new(outputs::console::AlertWindow::new(
            settings.console.max_alerts,
        ))
    });
    // Serve /healthz before the rules compile (which takes seconds), so a
    // liveness probe does not kill a starting instance.
    if let Some(addr) = settings.http.address()? {
        let console = window
            .clone()
            .map(outputs::console::router)
            .unwrap_or_default();
        http::start_with(addr, metrics.clone(), health.clone(), console).await?;
    }
    let leader_placement =
        settings.correlation.placement == Placement::Leader && settings.kafka.brokers.is_some();
    let repartition_placement = settings.correlation.placement == Placement::Repartition
        && settings.kafka.brokers.is_some();
    let mut engine = if leader_placement {
        // This instance runs the per-event rules; the elected leader runs
        // the correlation rules (`leader`).
        rules::load_split_rule_set(&settings.rules.layers(), settings.correlation.clone())
            .await
            .map(|(per_event, _)| per_event)
    } else {
        rules::load_rule_set(&settings.rules.layers(), settings.correlation.clone()).await
    }
    .map_err(anyhow::Error::new)
    .with_context(|| format!("loading rules from {}", settings.rules.dir.display()))?;
    engine.set_time_budget(settings.rules.max_eval());
    // One spill file per process, shared by both stages' rules.
    let first_seen_storage = settings.rules.first_seen.storage()?;
    engine.set_first_seen_storage(first_seen_storage.clone());
    if repartition_placement {
        // Correlation rules route events here; the second stage runs them.
        engine = engine.into_lanes().await.map_err(anyhow::Error::new)?;
    }
    tracing::info!(rules = engine.rules().count(), dir = %settings.rules.dir.display(), "rules loaded");
    metrics.set_rules_loaded(engine.rules().count());
    health.set_rules_loaded(true);
    let mut detector = Detector::new(engine, settings.limits.decode_limits(), metrics.clone())
        .with_audit_format(settings.topics.k8s_audit_format);
    if settings.rules.reload && (leader_placement || repartition_placement) {
        tracing::warn!("rules.reload is not supported with correlation.placement = \"leader\" or \"repartition\": restart to apply rule changes");
    } else if settings.rules.reload {
        let source = reload::RuleSource {
            layers: settings.rules.layers(),
            correlation: settings.correlation.clone(),
        };
        detector = detector.with_reloads(reload::spawn(source, metrics.clone())?);
    }
    let stop = stop_on_signal();
    let outputs = match &settings.kafka.brokers {
        Some(brokers) => {
            outputs::start(&settings, brokers, metrics.clone(), stop.clone(), window).await?
        }
        None => None,
    };
    match settings.kafka.brokers.clone() {
        Some(brokers) if leader_placement => {
            let options = pipeline::RunOptions {
                health: Some(health),
                ..Default::default()
            };
            // An error of either ends the service (a failed election, e.g. a
            // missing lease topic, would otherwise surface only at exit);
            // the other's batch in flight is re-read after the restart.
            tokio::try_join!(
                pipeline::run(
                    &settings,
                    &brokers,
                    detector,
                    metrics.clone(),
                    stop.clone(),
                    options
                ),
                leader::run(&settings, &brokers, metrics, stop)
            )?;
        }
        Some(brokers) if repartition_placement => {
            let options = pipeline::RunOptions {
                health: Some(health),
                ..Default::default()
            };
            let (stage_two, correlating) =
                crate::repartition::second_stage(&settings, &metrics, first_seen_storage).await?;
            // An error of either ends the service; the other's batch in
            // flight is re-read after the restart.
            tokio::try_join!(
                pipeline::run(
                    &settings,
                    &brokers,
                    detector,
                    metrics.clone(),
                    stop.clone(),
                    options
                ),
                pipeline::run(
                    &stage_two,
                    &brokers,
                    correlating,
                    metrics,
                    stop,
                    pipeline::RunOptions {
                        role: pipeline::Role::Correlating,
                        ..Default::default()
                    }
                )
            )?;
        }
        Some(brokers) => {
            let options = pipeline::RunOptions {
                health: Some(health),
                ..Default::default()
            };
            pipeline::run(
                &settings,
                &brokers,
                detector,
                metrics.clone(),
                stop,
                options,
            )
            .await?;
        }
        None => {
            let (output, metrics) = embedded::run_demo(
                &settings,
                &samples,
                detector,
                metrics.clone(),
                stop,
                Some(health),
            )
            .await?;
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
    if let Some(task) = outputs {
        let _waiting = crate::stopping::waiting("the alert outputs' last deliveries");
        task.await.context("the outputs task")??;
    }
    Ok(ExitCode::SUCCESS)
}

/// The offline tools: replay and rule commands.
async fn dispatch_tool(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run { .. } => unreachable!("dispatch handles run"),
        Command::Replay {
            rules,
            overlays,
            source,
            audit_format,
            batch_size,
            from,
            to,
            summary_only,
            input,
        } => {
            if let (Some(f), Some(t)) = (from, to) {
                if f >= t {
                    anyhow::bail!("--from must be before --to");
                }
            }
            let engine =
                rules::load_rule_set_for(&layers(&rules, overlays), Default::default(), source)
                    .await
                    .map_err(anyhow::Error::new)?;
            let bounds = EventTimeBounds {
                from_ns: from,
                to_ns: to,
            };
            let mut detector =
                Detector::new(engine, Default::default(), Arc::new(Metrics::default()))
                    .with_event_time_bounds(bounds)
                    .with_audit_format(audit_format);
            let options = replay::ReplayOptions {
                batch_size,
                count_only: summary_only,
            };
            let summary = if summary_only {
                replay::replay_with(
                    &mut detector,
                    source,
                    &input,
                    options,
                    &mut std::io::sink(),
                    &mut std::io::sink(),
                )
                .await?
            } else {
                let mut stdout = std::io::stdout().lock();
                let mut stderr = std::io::stderr();
                replay::replay_with(
                    &mut detector,
                    source,
                    &input,
                    options,
                    &mut stdout,
                    &mut stderr,
                )
                .await?
            };
            // The process exits next: freeing the plans and correlation
            // state piece by piece is wasted work (docs/benchmarks.md).
            std::mem::forget(detector);
            let text = summary.render();
            if summary_only {
                write_stdout(&text)?;
            } else {
                let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Gen(args) => run_gen(args).await,
        Command::Rules {
            command:
                RulesCommand::Test {
                    dir,
                    overlays,
                    filter,
                },
        } => {
            let pack = RulePack::load(&layers(&dir, overlays)).map_err(anyhow::Error::new)?;
            let mut loaded = pack.rules.clone();
            if let Some(f) = &filter {
                loaded.retain(|r| r.meta.id.contains(f.as_str()));
            }
            for r in &pack.disabled {
                if filter
                    .as_ref()
                    .is_none_or(|f| r.meta.id.contains(f.as_str()))
                {
                    println!("SKIP  {:<40} disabled by an overlay", r.meta.id);
                }
            }
            let mut exceptions = pack.exceptions.clone();
            if filter.is_some() {
                exceptions
                    .entries
                    .retain(|e| loaded.iter().any(|r| r.meta.id == e.rule));
            }
            let set = RuleSet {
                rules: loaded.clone(),
                definitions: pack.definitions.clone(),
            };
            let engine = RuleEngine::compile(set)
                .await
                .and_then(|e| e.with_exceptions(exceptions))
                .map_err(anyhow::Error::new)?;
            let results = rules::testing::run(&loaded, engine).await;
            let (mut passed, mut failed) = (0, 0);
            for r in &results {
                if r.passed {
                    passed += 1;
                    println!("PASS  {:<40} {}", r.rule_id, r.name);
                } else {
                    failed += 1;
                    println!(
                        "FAIL  {:<40} {}  ({}:{}: {})",
                        r.rule_id,
                        r.name,
                        r.file.display(),
                        r.line,
                        r.detail
                    );
                }
            }
            println!("rule tests: {passed} passed, {failed} failed");
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Rules {
            command:
                RulesCommand::Coverage {
                    dir,
                    format,
                    matrix,
                },
        } => {
            let matrix = match matrix {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    coverage::Matrix::parse(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                }
                None => coverage::Matrix::builtin(),
            };
            let loaded = RulePack::load_dir(&dir).map_err(anyhow::Error::new)?.rules;
            let report = coverage::coverage(&matrix, &loaded);
            match format {
                OutputFormat::Text => write_stdout(&report.render_text())?,
                OutputFormat::Json => {
                    write_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?))?
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules {
            command: RulesCommand::Validate { dir, overlays },
        } => validate(&layers(&dir, overlays)).await,
        Command::Rules {
            command:
                RulesCommand::Import {
                    from:
                        ImportFormat::Sigma {
                            sources,
                            out,
                            pipeline,
                        },
                },
        } => import_sigma(&sources, &out, pipeline.as_deref()),
    }
}

/// `vigil rules import sigma` (docs/sigma.md): one line per input rule,
/// then the count; exit 0 when all imported, 1 when some were skipped, 2
/// when the command cannot run (a source or the pipeline file).
fn import_sigma(sources: &[PathBuf], out: &Path, pipeline: Option<&Path>) -> Result<ExitCode> {
    let pipelines = match pipeline {
        None => Ok(vigil_sigma::Pipelines::builtin()),
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| vigil_sigma::SigmaError::Io {
                path: p.display().to_string(),
                why: e.to_string(),
            })
            .and_then(|text| vigil_sigma::Pipelines::with_user(&p.display().to_string(), &text)),
    };
    let report = match pipelines.and_then(|p| vigil_sigma::import(sources, out, &p)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("vigil rules import sigma: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    write_stdout(&format!("{}\n", report.lines().join("\n")))?;
    Ok(if report.imported() == report.total() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `vigil rules validate`: load and compile every layer, then list what is
/// in effect and where each piece came from.
async fn validate(layers: &Layers) -> Result<ExitCode> {
    let loaded = match RulePack::load(layers) {
        Ok(pack) => rules::load_rule_set(layers, Default::default())
            .await
            .map(|engine| (pack, engine)),
        Err(e) => Err(e),
    };
    let (pack, engine) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let dirs: Vec<String> = layers.dirs().map(|d| d.display().to_string()).collect();
    let exceptions = match engine.exceptions().paths.as_slice() {
        [] => String::new(),
        paths => format!(
            ", {} exceptions OK in {}",
            engine.exceptions().len(),
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    println!(
        "{} rules OK in {}{exceptions}",
        engine.rules().count(),
        dirs.join(" + ")
    );
    print!("{}", rules::definitions::describe(&pack.definitions));
    for unused in engine.unused_definitions() {
        println!("note: {unused}");
    }
    for c in &pack.changes {
        println!("rule {}: {} by {}", c.rule, c.what, c.at);
    }
    for (id, strategy) in engine.correlator().strategies() {
        match strategy {
            RuleStrategy::Incremental => println!("correlation rule {id}: incremental"),
            RuleStrategy::Rescan(None) => println!("correlation rule {id}: re-scan"),
            RuleStrategy::Rescan(Some(why)) => println!("correlation rule {id}: re-scan ({why})"),
            RuleStrategy::DeltaRescan => println!("correlation rule {id}: delta re-scan (each emission reads only the trigger events due, and those their window frames reach)"),
        }
    }
    for (id, key) in engine.correlator().keys() {
        println!("correlation rule {id}: key {key}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Write a command's result to stdout. A reader that went away
/// (`vigil rules coverage | head`) is not an error.
fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// Why a `--from`/`--to` time cannot be read. chrono's error is in the
/// text, so it is not also the source (clap and `{:#}` would repeat it).
#[derive(Debug, thiserror::Error)]
enum TimeArgError {
    #[error("invalid RFC 3339 time {value:?} (expected e.g. 2024-05-01T00:00:00Z): {error}")]
    Invalid {
        value: String,
        error: chrono::ParseError,
    },
    #[error("time {value:?} is outside the representable range")]
    OutOfRange { value: String },
}

/// Parse an RFC 3339 time (`--from`/`--to`) to nanoseconds since the epoch.
fn parse_rfc3339_ns(s: &str) -> Result<i64, TimeArgError> {
    let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|error| TimeArgError::Invalid {
        value: s.to_string(),
        error,
    })?;
    t.timestamp_nanos_opt()
        .ok_or_else(|| TimeArgError::OutOfRange {
            value: s.to_string(),
        })
}

async fn run_gen(args: GenArgs) -> Result<ExitCode> {
    use crate::gen::{produce, GenConfig, Generator};
    let settings = Settings::load(args.config.as_deref())?;
    let producing = args.out.is_none();
    let start_ns = match &args.start {
        Some(t) => crate::decode::parse_time("--start", t)?,
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
        // As fast as possible (rate 0): 1 ms apart.
        step_ns: 1_000_000_000u64
            .checked_div(args.rate)
            .map_or(1_000_000, |step| step.max(1) as i64),
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
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut out = std::io::BufWriter::new(file);
            produce::write_jsonl(&mut generator, args.count, &mut out)?
        }
        None => {
            let brokers = args.brokers.clone().or_else(|| settings.kafka.brokers.clone()).ok_or_else(|| {
                anyhow::anyhow!("vigil gen needs --brokers (or kafka.brokers in the configuration), or --out FILE")
            })?;
            let producer =
                produce::load_producer(&crate::kafka::base_config(&settings.kafka, &brokers))?;
            let topics = settings.topics.clone();
            tracing::info!(brokers = %brokers, rate = args.rate, count = args.count, seed = args.seed, "producing generated events");
            produce::produce(
                &producer,
                &topics,
                &mut generator,
                args.count,
                args.rate,
                stop_on_signal(),
                |_| {},
            )
            .await?
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
    let per_source: Vec<String> = summary
        .per_source
        .iter()
        .map(|(source, n)| format!("{source} {n}"))
        .collect();
    eprintln!(
        "gen: {} events ({} bytes; {}), {} attacks injected, {} alerts expected",
        summary.events,
        summary.bytes,
        per_source.join(", "),
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
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("stop requested: finishing the current batch");
        crate::stopping::report_from_now();
        let _ = tx.send(true);
    });
    rx
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// clap's message for a value one of the parsers refuses.
    fn refusal(args: &[&str]) -> String {
        Cli::try_parse_from(args).unwrap_err().to_string()
    }

    #[test]
    fn value_parsers_word_what_is_wrong() {
        let e = refusal(&["vigil", "replay", "--source", "dns"]);
        assert!(
            e.contains("unknown source \"dns\": expected one of k8s_audit, falco, tetragon"),
            "{e}"
        );
        let e = refusal(&["vigil", "gen", "--source", "dns"]);
        assert!(e.contains("unknown source \"dns\""), "{e}");
        assert_eq!(
            GeneratedSourceError::NotGenerated(SourceKind::named("dns")).to_string(),
            "the generator makes no dns events"
        );
        let e = refusal(&[
            "vigil",
            "replay",
            "--source",
            "falco",
            "--from",
            "yesterday",
        ]);
        assert!(
            e.contains(
                "invalid RFC 3339 time \"yesterday\" (expected e.g. 2024-05-01T00:00:00Z): "
            ),
            "{e}"
        );
        assert_eq!(
            parse_rfc3339_ns("9999-12-31T00:00:00Z")
                .unwrap_err()
                .to_string(),
            "time \"9999-12-31T00:00:00Z\" is outside the representable range"
        );
        assert_eq!(
            parse_rfc3339_ns("1970-01-01T00:00:01Z").unwrap(),
            1_000_000_000
        );
        let e = refusal(&[
            "vigil",
            "replay",
            "--source",
            "k8s_audit",
            "--audit-format",
            "eks",
        ]);
        assert!(e.contains("unknown audit format \"eks\""), "{e}");
    }
}
