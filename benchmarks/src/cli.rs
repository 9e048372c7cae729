//! Command line of `vigil-bench` (the binary only calls [`main`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "vigil-bench",
    about = "Vigil benchmarks: engine throughput and ceilings, end to end, memory (docs/benchmarks.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Engine on one core from messages in memory, with its decode and
    /// batch-query ceilings (run it under `taskset -c 0`).
    Engine {
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "sql-rules")]
        rules: PathBuf,
        /// Distinct human users in the plain runs.
        #[arg(long, default_value_t = 200)]
        users: u32,
        /// Distinct human users in the correlation run.
        #[arg(long, default_value_t = 1_000_000)]
        correlation_users: u32,
        /// Run only the "all audit rules" measurement (for profiling).
        #[arg(long)]
        only_all_rules: bool,
        /// Run only the whole audit pack (per-event and correlation rules),
        /// with the slowest rules' times (for profiling correlation).
        #[arg(long)]
        only_pack: bool,
        /// One injected attack every this many events (default: the
        /// generator's, one in 1,000).
        #[arg(long, default_value_t = 0)]
        attack_every: u64,
        /// With --only-all-rules: plan the rules as before the planning
        /// changes (PlanOptions::DATAFUSION_DEFAULTS).
        #[arg(long)]
        as_before: bool,
        /// With --only-all-rules or --only-pack: run the rules with their
        /// lists and macros written out in their SQL (the inlined form),
        /// to compare with the rules as shipped.
        #[arg(long)]
        inlined: bool,
    },
    /// Through a broker: bare consumer vs the Vigil pipeline, and
    /// event-to-alert latency at half load.
    E2e {
        /// Broker to use; default: start tansu (~/.cargo/bin/tansu) on a free port.
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "sql-rules")]
        rules: PathBuf,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        #[arg(long, default_value_t = 30)]
        latency_secs: u64,
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        #[arg(long, default_value_t = 500)]
        max_wait_ms: u64,
        /// librdkafka fetch.wait.max.ms of every consumer (default: Vigil's, 100).
        #[arg(long)]
        fetch_wait_ms: Option<u64>,
    },
    /// Correlation scaled out through the broker (placement "repartition"):
    /// N `vigil` processes in one group, one killed and started again, one
    /// added; all alerts compared with a single-instance replay.
    Scale {
        /// Broker to use; default: start tansu (~/.cargo/bin/tansu) on a free port.
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long, default_value_t = 3)]
        instances: usize,
        #[arg(long, default_value_t = 30_000)]
        events: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "sql-rules")]
        rules: PathBuf,
        /// Partitions of each source topic.
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Partitions of the repartition topic.
        #[arg(long, default_value_t = 6)]
        repartitions: i32,
        /// One injected attack every this many events.
        #[arg(long, default_value_t = 200)]
        attack_every: u64,
        /// The vigil binary (default: the one beside vigil-bench).
        #[arg(long)]
        vigil: Option<PathBuf>,
        /// Give up on a stage of the run after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Print the physical plan of each per-event rule.
    Explain {
        #[arg(long, default_value = "sql-rules")]
        rules: PathBuf,
        /// Only rules whose id contains this text.
        #[arg(long)]
        filter: Option<String>,
    },
    /// RSS over a long run of the whole audit pack plus a high-cardinality
    /// correlation rule (memory flat over time).
    Soak {
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "sql-rules")]
        rules: PathBuf,
        /// Distinct human users (keys of the correlation state).
        #[arg(long, default_value_t = 100_000)]
        users: u32,
        #[arg(long, default_value_t = 30)]
        sample_secs: u64,
    },
    /// Imported Sigma rules against hand-written rules with the same
    /// conditions (docs/sigma.md), runs alternated; same alerts required.
    Sigma {
        /// The output directory of `vigil rules import sigma` over
        /// ../shared/reference/rules/sigma-kubernetes-audit.
        #[arg(long)]
        imported: PathBuf,
        #[arg(long, default_value = "benchmarks/sigma-handwritten")]
        handwritten: PathBuf,
        /// The pack whose lists and macros the rules may use.
        #[arg(long, default_value = "sql-rules")]
        rules: PathBuf,
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Peak RSS with this many distinct keys in correlation window state
    /// (or, with --first-seen, in a first-seen rule's state).
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        keys: usize,
        #[arg(long, default_value_t = 20_000)]
        batch: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Measure a first-seen rule's state (one combination per user).
        #[arg(long)]
        first_seen: bool,
        /// With --first-seen: spill past --memory-combinations to a file in
        /// this directory (rules.first_seen.spill_dir).
        #[arg(long, requires = "first_seen")]
        spill_dir: Option<std::path::PathBuf>,
        /// With --spill-dir: combinations kept in memory.
        #[arg(long, default_value_t = 1_000_000)]
        memory_combinations: usize,
    },
}

/// Entry point of `vigil-bench`: a current-thread runtime (rules already
/// run with one target partition), so the engine numbers are one core's;
/// `e2e` runs on a multi-thread runtime.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The pipeline's own log (e2e), on stderr, filtered by RUST_LOG (off by
    // default: the benchmark's output is its report).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    // The end-to-end run is several programs in one process (generator and
    // producer, the pipeline, the alert reader): on a multi-thread runtime
    // the pipeline does not wait for the generator's thread.
    let runtime = if matches!(cli.command, Command::E2e { .. }) {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    let result = runtime.block_on(async {
        match cli.command {
            Command::Engine {
                events,
                batch,
                seed,
                rules,
                users,
                correlation_users,
                only_all_rules,
                only_pack,
                attack_every,
                as_before,
                inlined,
            } => {
                let planning = if as_before {
                    vigil::rules::engine::PlanOptions::DATAFUSION_DEFAULTS
                } else {
                    vigil::rules::engine::PlanOptions::default()
                };
                let opts = super::engine::EngineOptions {
                    events,
                    batch,
                    seed,
                    rules,
                    users,
                    correlation_users,
                    only_all_rules,
                    only_pack,
                    attack_every,
                    planning,
                    inlined,
                };
                super::engine::run(&opts, &mut stdout).await.map(|_| ())
            }
            Command::E2e {
                brokers,
                events,
                seed,
                rules,
                partitions,
                latency_secs,
                batch,
                max_wait_ms,
                fetch_wait_ms,
            } => {
                let opts = super::e2e::E2eOptions {
                    brokers,
                    events,
                    seed,
                    rules,
                    partitions,
                    latency_secs,
                    batch,
                    max_wait_ms,
                    fetch_wait_ms,
                    ..Default::default()
                };
                super::e2e::run(&opts, &mut stdout).await
            }
            Command::Scale {
                brokers,
                instances,
                events,
                seed,
                rules,
                partitions,
                repartitions,
                attack_every,
                vigil,
                timeout_secs,
            } => {
                let opts = super::scale::ScaleOptions {
                    brokers,
                    instances,
                    events,
                    seed,
                    rules,
                    partitions,
                    repartitions,
                    attack_every,
                    vigil,
                    timeout: std::time::Duration::from_secs(timeout_secs),
                };
                super::scale::run(&opts, &mut stdout).await
            }
            Command::Explain { rules, filter } => {
                super::engine::explain(&rules, filter.as_deref(), &mut stdout).await
            }
            Command::Sigma {
                imported,
                handwritten,
                rules,
                events,
                batch,
                runs,
            } => {
                super::engine::sigma(
                    &imported,
                    &handwritten,
                    &rules,
                    events,
                    batch,
                    runs,
                    &mut stdout,
                )
                .await
            }
            Command::Memory {
                keys,
                batch,
                seed,
                first_seen,
                spill_dir,
                memory_combinations,
            } => {
                let state = match (first_seen, spill_dir) {
                    (false, _) => super::memory::State::Correlation,
                    (true, None) => super::memory::State::FirstSeen { spill: None },
                    (true, Some(dir)) => super::memory::State::FirstSeen {
                        spill: Some((dir, memory_combinations)),
                    },
                };
                super::memory::run(state, keys, batch, seed, &mut stdout).await
            }
            Command::Soak {
                minutes,
                batch,
                seed,
                rules,
                users,
                sample_secs,
            } => {
                let opts = super::soak::SoakOptions {
                    duration: std::time::Duration::from_secs_f64(minutes * 60.0),
                    batch,
                    seed,
                    rules,
                    users,
                    every: std::time::Duration::from_secs(sample_secs.max(1)),
                };
                super::soak::run(&opts, &mut stdout).await.map(|_| ())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
