//! Engine throughput on one core, from messages already in memory, and the
//! ceilings it is compared with, all over the same generated audit events:
//!
//! * **Vigil**: `Detector::process` (decode + per-event rules + correlation)
//!   per micro-batch, plus encoding every alert as the JSON produced to
//!   Kafka; for 1 rule, 10 rules and every shipped audit rule, and with a
//!   high-cardinality correlation rule added.
//! * **Decode ceilings**: `serde_json` parsing each message into a `Value`;
//!   `arrow-json` decoding the messages into record batches (schema inferred
//!   beforehand, not timed); Vigil's own decoder alone.
//! * **Batch ceiling**: DataFusion running the same rules' SQL as plain
//!   queries over all events loaded as one in-memory table (decoding not
//!   timed).
//!
//! The caller decides the threading: `vigil-bench` runs this on a
//! current-thread Tokio runtime, rules run with one target partition, and
//! docs/benchmarks.md runs it under `taskset -c 0`.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use datafusion::arrow::compute::concat_batches;
use datafusion::datasource::MemTable;
use datafusion::physical_plan::collect;

use super::{audit_config, generate, Rate};
use vigil::correlate::CorrelationSettings;
use vigil::decode::{decode, DecodeLimits};
use vigil::detect::Detector;
use vigil::gen::GeneratedEvent;
use vigil::metrics::Metrics;
use vigil::rules::engine::PlanOptions;
use vigil::rules::{parse_rule, Rule, RuleEngine, RuleMode, RulePack, RuleSet};
use vigil::schema::SourceSchema;
use vigil::source::{RawMessage, SourceKind};

/// What to run.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub events: usize,
    /// Messages per micro-batch (the service's `batch.max_events`).
    pub batch: usize,
    pub seed: u64,
    pub rules: PathBuf,
    /// Distinct human users in the plain runs.
    pub users: u32,
    /// Distinct human users in the correlation run.
    pub correlation_users: u32,
    /// Only the "all audit rules" run (to profile it alone).
    pub only_all_rules: bool,
    /// Run only the whole-pack measurement (per-event + correlation rules).
    pub only_pack: bool,
    /// One injected attack every this many events (0: the generator's default).
    pub attack_every: u64,
    /// Planning of that run.
    pub planning: PlanOptions,
    /// Run the rules with their definitions written out ([`inlined`]).
    pub inlined: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            events: 200_000,
            batch: 5000,
            seed: 1,
            rules: "sql-rules".into(),
            users: 200,
            correlation_users: 1_000_000,
            only_all_rules: false,
            only_pack: false,
            attack_every: 0,
            planning: PlanOptions::default(),
            inlined: false,
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Measured {
    pub name: String,
    pub rate: Rate,
    pub note: String,
}

/// A per-user request count in one-minute windows: a typical "burst"
/// correlation whose state grows with the number of distinct users. The
/// threshold is above anything the generator produces, so it measures the
/// cost of holding and re-aggregating state, not of emitting alerts.
pub const CORRELATION_RULE: &str = "-- id: bench.user_request_burst
-- title: Request burst by one user (benchmark)
-- severity: low
-- description: More than 100000 requests by one user in one minute.
-- mitre: T1078
-- source: k8s_audit
-- author: vigil benchmark
-- based_on: vigil:bench
-- mode: correlation
-- window: 1m
SELECT user_info.username AS username,
       tumble_end(event_time, INTERVAL '1 minute') AS window_end,
       count(*) AS requests
FROM k8s_audit
GROUP BY user_info.username, tumble_end(event_time, INTERVAL '1 minute')
HAVING count(*) > 100000
";

fn batches(messages: &[RawMessage], size: usize) -> Vec<Vec<RawMessage>> {
    messages
        .chunks(size.max(1))
        .map(<[RawMessage]>::to_vec)
        .collect()
}

fn bytes(messages: &[RawMessage]) -> u64 {
    messages.iter().map(|m| m.payload.len() as u64).sum()
}

/// `set` with its lists and macros written out: each rule's SQL is its
/// expanded query under its own header, compiled without lists or macros
/// (lookup tables stay: `lookup(...)` is a function of the session). The
/// inlined form a rule author would have written by hand; the benchmark
/// runs both to show what the definitions cost.
pub fn inlined(set: &RuleSet) -> Result<RuleSet> {
    let ctx = vigil::rules::engine::new_session();
    vigil::rules::engine::register_definitions(&ctx, &set.definitions);
    let rules = set
        .rules
        .iter()
        .map(|rule| {
            let sql = vigil::rules::engine::expanded_sql(&ctx, &set.definitions, rule)?;
            let header: String = rule
                .sql()
                .lines()
                .take_while(|l| l.trim_start().starts_with("--") || l.trim().is_empty())
                .map(|l| format!("{l}\n"))
                .collect();
            parse_rule(&rule.path, &format!("{header}{sql}\n"))
                .map_err(|e| anyhow::anyhow!("{}: {e:?}", rule.path.display()))
        })
        .collect::<Result<Vec<Rule>>>()?;
    let lookups_only = vigil::rules::definitions::Definitions {
        lookups: set.definitions.lookups.clone(),
        ..Default::default()
    };
    Ok(RuleSet {
        rules,
        definitions: Arc::new(lookups_only),
    })
}

/// The shipped per-event rules of `source`, sorted by id, with the pack's
/// definitions.
pub fn event_rules(dir: &Path, source: SourceKind) -> Result<RuleSet> {
    let mut set = source_rules(dir, source)?;
    set.rules.retain(|r| r.meta.mode == RuleMode::Event);
    Ok(set)
}

/// Every shipped rule of `source`, per-event and correlation, sorted by id,
/// with the pack's definitions.
pub fn source_rules(dir: &Path, source: SourceKind) -> Result<RuleSet> {
    let mut set = RulePack::load_dir(dir)
        .map_err(anyhow::Error::new)
        .with_context(|| format!("loading rules from {}", dir.display()))?
        .rule_set();
    set.rules.retain(|r| r.meta.source == source);
    set.rules.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
    Ok(set)
}

/// The twelve slowest of `per_rule` (slowest first), as `id N ms, ...`.
pub(crate) fn slowest(per_rule: &[(String, f64)]) -> String {
    let shown: Vec<String> = per_rule
        .iter()
        .take(12)
        .map(|(id, s)| format!("{id} {:.0} ms", s * 1e3))
        .collect();
    shown.join(", ")
}

/// The total rule time and the share of it the join rules took: the
/// correlation rules of the pack in `rules` whose query (header and
/// comments aside) has the keyword JOIN.
pub(crate) fn join_share(per_rule: &[(String, f64)], rules: &Path) -> Result<String> {
    let pack = RulePack::load_dir(rules).map_err(anyhow::Error::new)?;
    let joins: BTreeSet<String> = pack
        .rule_set()
        .rules
        .into_iter()
        .filter(|r| r.meta.mode == RuleMode::Correlation && joins_tables(r.sql()))
        .map(|r| r.meta.id)
        .collect();
    let all: f64 = per_rule.iter().map(|(_, s)| s).sum();
    let join: f64 = per_rule
        .iter()
        .filter(|(id, _)| joins.contains(id))
        .map(|(_, s)| s)
        .sum();
    Ok(format!(
        "{:.0} ms in all, of which the {} join rules {:.0} ms ({:.1}%)",
        all * 1e3,
        joins.len(),
        join * 1e3,
        100.0 * join / all.max(f64::MIN_POSITIVE)
    ))
}

/// Whether `sql`, its `--` comments left out, has the word JOIN.
fn joins_tables(sql: &str) -> bool {
    sql.lines()
        .map(|line| line.split("--").next().unwrap_or(""))
        .flat_map(|code| code.split(|c: char| !c.is_ascii_alphanumeric() && c != '_'))
        .any(|word| word.eq_ignore_ascii_case("join"))
}

/// Total evaluation time per rule from `vigil_rule_evaluation_seconds`
/// (wall clock), slowest first.
pub(crate) fn rule_seconds(metrics: &Metrics) -> Vec<(String, f64)> {
    per_rule_totals(metrics, "vigil_rule_evaluation_seconds_sum")
}

/// Total CPU time per rule from `vigil_rule_cpu_seconds_total`, costliest
/// first.
pub(crate) fn rule_cpu_seconds(metrics: &Metrics) -> Vec<(String, f64)> {
    per_rule_totals(metrics, "vigil_rule_cpu_seconds_total")
}

fn per_rule_totals(metrics: &Metrics, series: &str) -> Vec<(String, f64)> {
    let prefix = format!("{series}{{rule=\"");
    let mut out: Vec<(String, f64)> = metrics
        .encode()
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|l| {
            let (rule, rest) = l.split_once('"')?;
            Some((
                rule.to_string(),
                rest.trim_start_matches('}').trim().parse().ok()?,
            ))
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// serde_json into `Value`s: the cost of reading the JSON at all.
pub fn serde_json_ceiling(messages: &[RawMessage]) -> Result<Rate> {
    let start = Instant::now();
    for m in messages {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).context("serde_json")?;
        black_box(v);
    }
    Ok(Rate {
        events: messages.len() as u64,
        bytes: bytes(messages),
        elapsed: start.elapsed(),
    })
}

/// arrow-json into record batches of `batch` rows, with a schema inferred
/// (untimed) from the first 10,000 messages.
pub fn arrow_json_ceiling(messages: &[RawMessage], batch: usize) -> Result<Rate> {
    let mut sample = Vec::new();
    for m in messages.iter().take(10_000) {
        sample.extend_from_slice(&m.payload);
        sample.push(b'\n');
    }
    let (schema, _) = arrow_json::reader::infer_json_schema(std::io::Cursor::new(sample), None)
        .context("arrow-json schema inference")?;
    let schema = Arc::new(schema);
    let start = Instant::now();
    for chunk in messages.chunks(batch.max(1)) {
        let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
            .with_batch_size(chunk.len())
            .build_decoder()
            .context("arrow-json decoder")?;
        for m in chunk {
            decoder.decode(&m.payload).context("arrow-json decode")?;
            decoder.decode(b"\n").context("arrow-json decode")?;
        }
        black_box(decoder.flush().context("arrow-json flush")?);
    }
    Ok(Rate {
        events: messages.len() as u64,
        bytes: bytes(messages),
        elapsed: start.elapsed(),
    })
}

/// Vigil's decoder alone.
pub fn vigil_decode(messages: &[RawMessage], batch: usize) -> Rate {
    let now = vigil::detect::now_ns();
    let start = Instant::now();
    for chunk in messages.chunks(batch.max(1)) {
        black_box(decode(
            SourceKind::K8sAudit,
            chunk,
            DecodeLimits::default(),
            now,
        ));
    }
    Rate {
        events: messages.len() as u64,
        bytes: bytes(messages),
        elapsed: start.elapsed(),
    }
}

/// DataFusion over one table holding every event: each rule's SQL as an
/// ordinary query (planned and run), decoding untimed. Returns the rate,
/// the total number of rows the rules returned, and each rule's time
/// (slowest first): a per-rule profile.
///
/// `stock`: a plain DataFusion session (one target partition, the rule
/// functions, every default optimizer rule) instead of the engine's.
pub async fn datafusion_batch_ceiling(
    messages: &[RawMessage],
    set: &RuleSet,
    stock: bool,
) -> Result<(Rate, usize, Vec<(String, Duration)>)> {
    let decoded = decode(
        SourceKind::K8sAudit,
        messages,
        DecodeLimits {
            max_events_per_message: 10_000,
            max_message_bytes: usize::MAX,
            ..DecodeLimits::default()
        },
        vigil::detect::now_ns(),
    );
    let schema = SourceKind::K8sAudit.schema();
    let table = concat_batches(&schema, [&decoded.batch]).context("one batch")?;
    let ctx = if stock {
        let mut ctx = datafusion::prelude::SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_target_partitions(1),
        );
        vigil::functions::register(&mut ctx)?;
        ctx
    } else {
        vigil::rules::engine::new_session()
    };
    ctx.register_table(
        "k8s_audit",
        Arc::new(MemTable::try_new(schema, vec![vec![table]])?),
    )?;
    vigil::rules::engine::register_definitions(&ctx, &set.definitions);
    let start = Instant::now();
    let mut rows = 0;
    let mut per_rule = Vec::new();
    let shared_conditions = Arc::default();
    for rule in &set.rules {
        let rule_start = Instant::now();
        let sql = vigil::rules::engine::expanded_sql(&ctx, &set.definitions, rule)?;
        let plan = ctx
            .sql(&sql)
            .await
            .with_context(|| format!("planning {}", rule.meta.id))?;
        let mut plan = plan.create_physical_plan().await?;
        if !stock {
            plan = vigil::rules::conjunction::selective_filters(plan, &shared_conditions)?;
        }
        let out = collect(plan, ctx.task_ctx())
            .await
            .with_context(|| format!("running {}", rule.meta.id))?;
        rows += out.iter().map(|b| b.num_rows()).sum::<usize>();
        per_rule.push((rule.meta.id.clone(), rule_start.elapsed()));
    }
    per_rule.sort_by_key(|r| std::cmp::Reverse(r.1));
    Ok((
        Rate {
            events: messages.len() as u64,
            bytes: bytes(messages),
            elapsed: start.elapsed(),
        },
        rows,
        per_rule,
    ))
}

/// Vigil over pre-cut micro-batches: process, then encode every alert.
/// Returns the rate and every (rule id, event id) alerted.
pub async fn vigil_engine(
    rules: RuleSet,
    settings: CorrelationSettings,
    planning: PlanOptions,
    warmup: &[RawMessage],
    messages: &[RawMessage],
    batch: usize,
) -> Result<(Rate, BTreeSet<(String, String)>, u64, Vec<(String, f64)>)> {
    let engine = RuleEngine::compile_planned(rules, settings, planning)
        .await
        .map_err(anyhow::Error::new)?;
    let metrics = Arc::new(Metrics::default());
    let mut detector = Detector::new(engine, DecodeLimits::default(), metrics.clone());
    for chunk in batches(warmup, batch) {
        black_box(detector.process(chunk).await);
    }
    detector.reset();
    let warmup_seconds: std::collections::BTreeMap<String, f64> =
        rule_seconds(&metrics).into_iter().collect();
    let input = batches(messages, batch);
    let mut alerted = BTreeSet::new();
    let mut failures = 0;
    let mut first_failure = None;
    let mut encoded = 0u64;
    let start = Instant::now();
    for chunk in input {
        let out = detector.process(chunk).await;
        failures += out.dead_letters.len();
        if first_failure.is_none() {
            first_failure = out.dead_letters.first().map(|d| {
                format!(
                    "{:?} {}: {}",
                    d.kind,
                    d.rule_id.as_deref().unwrap_or(""),
                    d.reason
                )
            });
        }
        for a in &out.alerts {
            encoded += a.to_json().len() as u64;
        }
        for a in out.alerts {
            if let Some(e) = a.events.first() {
                alerted.insert((a.rule_id, e.event_id.clone()));
            }
        }
    }
    let elapsed = start.elapsed();
    anyhow::ensure!(
        failures == 0,
        "{failures} dead letters while benchmarking: the input or a rule is broken; the first: {}",
        first_failure.unwrap_or_default()
    );
    let mut per_rule: Vec<(String, f64)> = rule_seconds(&metrics)
        .into_iter()
        .map(|(rule, s)| {
            let before = warmup_seconds.get(&rule).copied().unwrap_or(0.0);
            (rule, s - before)
        })
        .collect();
    per_rule.sort_by(|a, b| b.1.total_cmp(&a.1));
    // Correlation windows still open at the end are not closed: the line
    // measures the steady state, not the end of input.
    let retained = Metrics::get(&metrics.retained_events);
    black_box(encoded);
    Ok((
        Rate {
            events: messages.len() as u64,
            bytes: bytes(messages),
            elapsed,
        },
        alerted,
        retained,
        per_rule,
    ))
}

fn expected(events: &[GeneratedEvent], rules: &[Rule]) -> BTreeSet<(String, String)> {
    let ids: BTreeSet<&str> = rules.iter().map(|r| r.meta.id.as_str()).collect();
    events
        .iter()
        .filter_map(|e| e.manifest_entry())
        .flat_map(|m| {
            m.rules
                .iter()
                .filter(|r| ids.contains(**r))
                .map(|r| (r.to_string(), m.event_id.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Run every measurement, printing each as it completes.
pub async fn run(opts: &EngineOptions, out: &mut dyn Write) -> Result<Vec<Measured>> {
    let mut results = Vec::new();
    let mut report = |out: &mut dyn Write, m: Measured| -> Result<()> {
        writeln!(out, "{:<44} {} {}", m.name, m.rate, m.note)?;
        out.flush()?;
        results.push(m);
        Ok(())
    };
    let gen_start = Instant::now();
    let mut config = audit_config(opts.seed, opts.users);
    if opts.attack_every > 0 {
        config.attack_every = opts.attack_every;
    }
    let (events, messages) = generate(config, opts.events);
    let (_, warmup) = generate(
        audit_config(opts.seed.wrapping_add(1), opts.users),
        opts.batch.min(opts.events),
    );
    let total = bytes(&messages);
    writeln!(
        out,
        "input: {} audit events, {:.1} MB, mean {} bytes/event, {} injected attacks; generated in {:.1} s; batch {} events",
        messages.len(),
        total as f64 / 1e6,
        total / messages.len().max(1) as u64,
        events.iter().filter(|e| e.attack.is_some()).count(),
        gen_start.elapsed().as_secs_f64(),
        opts.batch
    )?;

    if opts.only_all_rules {
        let all = event_rules(&opts.rules, SourceKind::K8sAudit)?;
        let all = if opts.inlined { inlined(&all)? } else { all };
        let want = expected(&events, &all.rules);
        let (rate, got, _, _) = vigil_engine(
            all,
            CorrelationSettings::default(),
            opts.planning,
            &warmup,
            &messages,
            opts.batch,
        )
        .await?;
        anyhow::ensure!(got == want, "alerts differ from the manifest");
        report(
            out,
            Measured {
                name: if opts.inlined {
                    "vigil engine, all audit rules, inlined".into()
                } else {
                    "vigil engine, all audit rules".into()
                },
                rate,
                note: format!("{} alerts = manifest", got.len()),
            },
        )?;
        return Ok(results);
    }
    if opts.only_pack {
        pack_line(opts, &events, &warmup, &messages, &mut report, out).await?;
        return Ok(results);
    }
    report(
        out,
        Measured {
            name: "ceiling: serde_json -> Value".into(),
            rate: serde_json_ceiling(&messages)?,
            note: String::new(),
        },
    )?;
    match arrow_json_ceiling(&messages, opts.batch) {
        Ok(rate) => report(
            out,
            Measured {
                name: "ceiling: arrow-json -> RecordBatch".into(),
                rate,
                note: String::new(),
            },
        )?,
        Err(e) => writeln!(
            out,
            "ceiling: arrow-json -> RecordBatch            failed: {e:#}"
        )?,
    }
    report(
        out,
        Measured {
            name: "vigil decode only".into(),
            rate: vigil_decode(&messages, opts.batch),
            note: String::new(),
        },
    )?;

    let all = event_rules(&opts.rules, SourceKind::K8sAudit)?;
    let subset = |rules: Vec<Rule>| RuleSet {
        rules,
        definitions: all.definitions.clone(),
    };
    let one = subset(
        all.rules
            .iter()
            .filter(|r| r.meta.id == "k8s.pod_exec")
            .cloned()
            .collect(),
    );
    let ten = subset(all.rules.iter().take(10).cloned().collect());
    for (stock, name) in [(true, "stock session"), (false, "engine's session")] {
        let (rate, rows, per_rule) = datafusion_batch_ceiling(&messages, &all, stock).await?;
        report(
            out,
            Measured {
                name: format!("ceiling: DataFusion batch, {name}"),
                rate,
                note: format!("{} rules, {rows} rows", all.rules.len()),
            },
        )?;
        let slowest: Vec<String> = per_rule
            .iter()
            .take(6)
            .map(|(id, t)| format!("{id} {:.0} ms", t.as_secs_f64() * 1e3))
            .collect();
        writeln!(out, "  slowest: {}", slowest.join(", "))?;
    }

    let runs = [
        ("vigil engine, 1 rule", one.clone(), PlanOptions::default()),
        ("vigil engine, 10 rules", ten, PlanOptions::default()),
        (
            "vigil engine, all audit rules",
            all.clone(),
            PlanOptions::default(),
        ),
        (
            "vigil engine, all audit rules, inlined",
            inlined(&all)?,
            PlanOptions::default(),
        ),
        (
            "  as planned before (1 rule)",
            one,
            PlanOptions::DATAFUSION_DEFAULTS,
        ),
        (
            "  as planned before (all audit rules)",
            all.clone(),
            PlanOptions::DATAFUSION_DEFAULTS,
        ),
    ];
    for (name, rules, planning) in runs {
        let n = rules.rules.len();
        let want = expected(&events, &rules.rules);
        let (rate, got, _, _) = vigil_engine(
            rules,
            CorrelationSettings::default(),
            planning,
            &warmup,
            &messages,
            opts.batch,
        )
        .await?;
        let check = if got == want {
            "alerts = manifest".to_string()
        } else {
            format!(
                "ALERTS DIFFER FROM MANIFEST: {} got, {} expected",
                got.len(),
                want.len()
            )
        };
        report(
            out,
            Measured {
                name: format!("{name} ({n})"),
                rate,
                note: format!("{} alerts, {check}", got.len()),
            },
        )?;
    }

    pack_line(opts, &events, &warmup, &messages, &mut report, out).await?;

    // High-cardinality correlation state: many distinct users.
    let (cevents, cmessages) =
        generate(audit_config(opts.seed, opts.correlation_users), opts.events);
    let mut rules = all.clone();
    rules.rules.push(
        parse_rule(Path::new("bench/user_request_burst.sql"), CORRELATION_RULE)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
    );
    let distinct: BTreeSet<&str> = cevents.iter().map(|e| e.key.as_str()).collect();
    let want = expected(&cevents, &all.rules);
    let settings = CorrelationSettings {
        max_retained_events: usize::MAX,
        ..Default::default()
    };
    let (rate, got, retained, _) = vigil_engine(
        rules,
        settings,
        PlanOptions::default(),
        &warmup,
        &cmessages,
        opts.batch,
    )
    .await?;
    let check = if got == want {
        "alerts = manifest"
    } else {
        "ALERTS DIFFER FROM MANIFEST"
    };
    report(
        out,
        Measured {
            name: "vigil engine, all + 1m correlation".into(),
            rate,
            note: format!(
                "{} distinct users/keys, {retained} events retained at end, {check}",
                distinct.len()
            ),
        },
    )?;
    Ok(results)
}

/// The whole shipped audit pack, per-event and correlation rules, as the
/// pipeline runs it; with the rules that took the most time.
async fn pack_line(
    opts: &EngineOptions,
    events: &[GeneratedEvent],
    warmup: &[RawMessage],
    messages: &[RawMessage],
    report: &mut impl FnMut(&mut dyn Write, Measured) -> Result<()>,
    out: &mut dyn Write,
) -> Result<()> {
    let pack = source_rules(&opts.rules, SourceKind::K8sAudit)?;
    let pack = if opts.inlined { inlined(&pack)? } else { pack };
    let correlation: BTreeSet<String> = pack
        .rules
        .iter()
        .filter(|r| r.meta.mode == RuleMode::Correlation)
        .map(|r| r.meta.id.clone())
        .collect();
    let n = pack.rules.len();
    let want = expected(events, &pack.rules);
    let (rate, got, retained, per_rule) = vigil_engine(
        pack,
        CorrelationSettings::default(),
        opts.planning,
        warmup,
        messages,
        opts.batch,
    )
    .await?;
    // The manifest names the per-event detections; correlation rules may
    // legitimately fire on the generated background too (reported, not checked).
    let (from_correlation, from_event): (BTreeSet<_>, BTreeSet<_>) = got
        .into_iter()
        .partition(|(rule, _)| correlation.contains(rule));
    let want_event: BTreeSet<_> = want
        .into_iter()
        .filter(|(rule, _)| !correlation.contains(rule))
        .collect();
    let check = if from_event == want_event {
        "per-event alerts = manifest"
    } else {
        "PER-EVENT ALERTS DIFFER FROM MANIFEST"
    };
    report(
        out,
        Measured {
            name: format!(
                "vigil engine, whole audit pack{} ({n})",
                if opts.inlined { ", inlined" } else { "" }
            ),
            rate,
            note: format!(
                "{} correlation rules, {} per-event + {} correlation alerts, {check}, {retained} events retained at end",
                correlation.len(),
                from_event.len(),
                from_correlation.len()
            ),
        },
    )?;
    let total: f64 = per_rule.iter().map(|(_, s)| s).sum();
    writeln!(
        out,
        "  rule time {:.0} ms in all; slowest: {}",
        total * 1e3,
        slowest(&per_rule)
    )?;
    Ok(())
}

/// The physical plan of each rule as the engine plans it (its session,
/// selective filters), to see where time goes.
pub async fn explain(dir: &Path, filter: Option<&str>, out: &mut dyn Write) -> Result<()> {
    let ctx = vigil::rules::engine::new_session();
    let definitions = RulePack::load_dir(dir)
        .map_err(anyhow::Error::new)?
        .definitions;
    vigil::rules::engine::register_definitions(&ctx, &definitions);
    for source in vigil::registry::kinds() {
        let schema = source.schema();
        let empty = datafusion::arrow::record_batch::RecordBatch::new_empty(schema.clone());
        ctx.register_table(
            source.table_name(),
            Arc::new(MemTable::try_new(schema, vec![vec![empty]])?),
        )?;
    }
    for source in vigil::registry::kinds() {
        for rule in event_rules(dir, source)?.rules {
            if filter.is_some_and(|f| !rule.meta.id.contains(f)) {
                continue;
            }
            let sql = vigil::rules::engine::expanded_sql(&ctx, &definitions, &rule)?;
            let plan = vigil::rules::conjunction::selective_filters(
                ctx.sql(&sql).await?.create_physical_plan().await?,
                &Arc::default(),
            )?;
            writeln!(
                out,
                "== {}\n{}",
                rule.meta.id,
                datafusion::physical_plan::displayable(plan.as_ref()).indent(true)
            )?;
        }
    }
    Ok(())
}

/// `vigil-bench sigma`: the Sigma rules imported by `vigil rules import
/// sigma` against hand-written rules with the same conditions
/// (benchmarks/sigma-handwritten/), on the same generated audit events,
/// `runs` times each, alternated. Both sets must alert on the same events
/// (rule ids `sigma.<id>` and `hand.<id>`). docs/sigma.md has the numbers.
pub async fn sigma(
    imported: &Path,
    handwritten: &Path,
    definitions_dir: &Path,
    events: usize,
    batch: usize,
    runs: usize,
    out: &mut dyn Write,
) -> Result<()> {
    let definitions = RulePack::load_dir(definitions_dir)
        .map_err(anyhow::Error::new)?
        .definitions;
    let load = |dir: &Path| -> Result<RuleSet> {
        let mut rules = vigil::rules::load_dir(dir).map_err(anyhow::Error::new)?;
        rules.retain(|r| r.meta.source == SourceKind::K8sAudit && r.meta.mode == RuleMode::Event);
        rules.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
        Ok(RuleSet {
            rules,
            definitions: definitions.clone(),
        })
    };
    let (sigma, hand) = (load(imported)?, load(handwritten)?);
    anyhow::ensure!(
        sigma.rules.len() == hand.rules.len(),
        "{} imported rules, {} hand-written",
        sigma.rules.len(),
        hand.rules.len()
    );
    let (_, messages) = generate(audit_config(1, 200), events);
    let (_, warmup) = generate(audit_config(2, 200), batch.min(events));
    writeln!(
        out,
        "input: {} audit events; {} rules each; batch {batch}",
        messages.len(),
        sigma.rules.len()
    )?;
    let strip = |set: BTreeSet<(String, String)>, prefix: &str| -> BTreeSet<(String, String)> {
        set.into_iter()
            .map(|(r, e)| (r.trim_start_matches(prefix).to_string(), e))
            .collect()
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    // Per rule (id without its prefix): total ms over all runs, imported and hand-written.
    let mut by_rule: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for run in 0..runs {
        for (name, set, rates) in [
            ("imported", &sigma, &mut a),
            ("hand-written", &hand, &mut b),
        ] {
            let (rate, alerted, _, per_rule) = vigil_engine(
                set.clone(),
                CorrelationSettings::default(),
                PlanOptions::default(),
                &warmup,
                &messages,
                batch,
            )
            .await?;
            // The rules' own time (vigil_rule_evaluation_seconds), decoding excluded.
            let rule_ms: f64 = per_rule.iter().map(|(_, s)| s * 1e3).sum();
            for (id, secs) in &per_rule {
                let key = id.trim_start_matches("sigma.").trim_start_matches("hand.");
                let slot = by_rule.entry(key.to_string()).or_default();
                if name == "imported" {
                    slot.0 += secs * 1e3;
                } else {
                    slot.1 += secs * 1e3;
                }
            }
            writeln!(
                out,
                "run {run} {name:<13} {rate} {} alerts, rules {rule_ms:.0} ms",
                alerted.len()
            )?;
            rates.push((
                rate.events_per_s(),
                rule_ms,
                strip(
                    alerted,
                    if name == "imported" {
                        "sigma."
                    } else {
                        "hand."
                    },
                ),
            ));
        }
        anyhow::ensure!(
            a[run].2 == b[run].2,
            "imported and hand-written rules alert on different events"
        );
    }
    type Run = (f64, f64, BTreeSet<(String, String)>);
    let mean = |v: &[Run], f: fn(&Run) -> f64| v.iter().map(f).sum::<f64>() / v.len().max(1) as f64;
    writeln!(
        out,
        "mean: imported {:.0} events/s, hand-written {:.0} events/s, ratio {:.3}; rules alone {:.0} ms vs {:.0} ms (same alerts)",
        mean(&a, |r| r.0),
        mean(&b, |r| r.0),
        mean(&a, |r| r.0) / mean(&b, |r| r.0),
        mean(&a, |r| r.1),
        mean(&b, |r| r.1),
    )?;
    let mut diffs: Vec<(String, f64, f64)> = by_rule
        .into_iter()
        .map(|(id, (i, h))| (id, i / runs.max(1) as f64, h / runs.max(1) as f64))
        .collect();
    diffs.sort_by(|x, y| (y.1 - y.2).total_cmp(&(x.1 - x.2)));
    for (id, i, h) in diffs.iter().take(4) {
        writeln!(
            out,
            "  rule {id}: imported {i:.1} ms, hand-written {h:.1} ms"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod inlined_tests {
    use super::*;

    /// The inlined pack compiles without lists or macros and raises the
    /// same alerts as the pack as shipped.
    #[tokio::test]
    async fn the_inlined_pack_is_the_pack() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql-rules");
        let shipped = event_rules(&dir, SourceKind::K8sAudit).unwrap();
        let written_out = inlined(&shipped).unwrap();
        assert!(
            written_out.definitions.lists.is_empty() && written_out.definitions.macros.is_empty()
        );
        assert!(written_out
            .rules
            .iter()
            .all(|r| !r.sql().contains("in_list(") && !r.sql().contains("request_succeeded()")));
        let (events, messages) = generate(audit_config(3, 50), 4_000);
        let alerts = |set: RuleSet| {
            let messages = &messages;
            async move {
                vigil_engine(
                    set,
                    CorrelationSettings::default(),
                    PlanOptions::default(),
                    &[],
                    messages,
                    1000,
                )
                .await
                .unwrap()
                .1
            }
        };
        let a = alerts(shipped.clone()).await;
        let b = alerts(written_out).await;
        assert_eq!(a, b);
        assert_eq!(a, expected(&events, &shipped.rules));
    }
}
