//! End to end through a broker, all in one run against the same broker:
//!
//! 1. produce `events` generated audit events to a fresh source topic;
//! 2. **broker ceiling**: a bare rdkafka consumer (same settings as Vigil's
//!    source) drains the topic; rate from its first to its last message;
//! 3. **Vigil**: the real pipeline (`pipeline::run`, every shipped rule)
//!    consumes the same topic in its own group, evaluates, produces alerts
//!    and commits; rate from its first consumed message to the commit that
//!    covers the last one;
//! 4. **latency**: on fresh topics, events are produced at half of the
//!    Vigil rate just measured, and each alert's latency is the time from
//!    handing its triggering event to the producer to reading the alert
//!    from the alerts topic. The events are generated before the run, so
//!    that building their JSON does not share the CPU with the broker and
//!    Vigil while latency is measured (`taskset -c 0` pins all three).
//!
//! Without `--brokers`, a tansu broker (in-memory storage) is started on a
//! free port for the run and stopped after it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::{percentile, Rate};
use crate::broker::create_topics;
use vigil::config::Settings;
use vigil::config::TopicSettings;
use vigil::detect::Detector;
use vigil::gen::produce::{load_producer, produce};
use vigil::gen::{GenConfig, Generator};
use vigil::metrics::Metrics;
use vigil::rules::{RuleEngine, RulePack};
use vigil::source::SourceKind;

#[derive(Debug, Clone)]
pub struct E2eOptions {
    /// Use this broker instead of starting tansu.
    pub brokers: Option<String>,
    pub events: usize,
    pub seed: u64,
    pub rules: PathBuf,
    pub partitions: i32,
    /// How long to produce at half load for the latency measurement.
    pub latency_secs: u64,
    /// One attack every this many events in the latency run.
    pub latency_attack_every: u64,
    /// `batch.max_events` and `batch.max_wait_ms` of the pipeline.
    pub batch: usize,
    pub max_wait_ms: u64,
    /// librdkafka `fetch.wait.max.ms` of every consumer (Vigil's through
    /// `kafka.properties`); `None`: Vigil's default
    /// ([`vigil::kafka::FETCH_WAIT_MAX_MS`]).
    pub fetch_wait_ms: Option<u64>,
}

impl Default for E2eOptions {
    fn default() -> Self {
        E2eOptions {
            brokers: None,
            events: 100_000,
            seed: 1,
            rules: "sql-rules".into(),
            partitions: 1,
            latency_secs: 30,
            latency_attack_every: 100,
            batch: 5000,
            max_wait_ms: 500,
            fetch_wait_ms: None,
        }
    }
}

/// Topic names of one run.
struct Topics {
    source: String,
    alerts: String,
    dead_letter: String,
    late: String,
    checkpoints: String,
    state: String,
}

impl Topics {
    fn new(tag: &str) -> Self {
        let t = |what: &str| format!("bench-{tag}-{what}");
        Topics {
            source: t("k8s-audit"),
            alerts: t("alerts"),
            dead_letter: t("dead-letter"),
            late: t("late"),
            checkpoints: t("checkpoints"),
            state: t("state"),
        }
    }

    async fn create(&self, addr: &str, partitions: i32) -> Result<()> {
        create_topics(
            addr,
            &[
                (&self.source, partitions),
                (&self.alerts, 1),
                (&self.dead_letter, 1),
                (&self.late, 1),
                (&self.checkpoints, 1),
                (&self.state, 1),
            ],
        )
        .await
    }

    fn settings(&self, brokers: &str, group: &str, opts: &E2eOptions) -> Settings {
        let mut s = Settings::default();
        s.kafka.brokers = Some(brokers.into());
        s.kafka.group_id = group.into();
        s.topics = self.source_topics();
        s.topics.alerts = self.alerts.clone();
        s.topics.dead_letter = self.dead_letter.clone();
        s.topics.late_events = self.late.clone();
        s.topics.checkpoints = self.checkpoints.clone();
        s.topics.state = self.state.clone();
        s.batch.max_events = opts.batch;
        s.batch.max_wait_ms = opts.max_wait_ms;
        if let Some(ms) = opts.fetch_wait_ms {
            s.kafka
                .properties
                .insert("fetch.wait.max.ms".into(), ms.to_string());
        }
        s
    }

    /// Only the audit source, on the benchmark's topic.
    fn source_topics(&self) -> TopicSettings {
        let mut topics = TopicSettings::default();
        for (source, _) in topics.sources() {
            topics.set_source_topic(source, "");
        }
        topics.set_source_topic(SourceKind::K8sAudit, self.source.clone());
        topics
    }
}

async fn detector(rules: &Path) -> Result<(Detector, Arc<Metrics>)> {
    let rules = RulePack::load_dir(rules).map_err(anyhow::Error::new)?;
    let engine = RuleEngine::compile(rules.rule_set())
        .await
        .map_err(anyhow::Error::new)?;
    let metrics = Arc::new(Metrics::default());
    Ok((
        Detector::new(engine, Default::default(), metrics.clone()),
        metrics,
    ))
}

pub async fn run(opts: &E2eOptions, out: &mut dyn Write) -> Result<()> {
    let (_tansu, brokers) = crate::broker::broker(opts.brokers.as_deref())?;
    // Unique names: a reused broker keeps earlier runs' topics and groups.
    let tag = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let settings_base = Settings::default();
    let mut base = vigil::kafka::base_config(&settings_base.kafka, &brokers);
    // The bare consumer and the alert reader fetch as Vigil does.
    base.set(
        "fetch.queue.backoff.ms",
        vigil::kafka::FETCH_QUEUE_BACKOFF_MS,
    );
    base.set(
        "fetch.wait.max.ms",
        opts.fetch_wait_ms.map_or_else(
            || vigil::kafka::FETCH_WAIT_MAX_MS.to_string(),
            |ms| ms.to_string(),
        ),
    );
    let producer = load_producer(&base)?;
    writeln!(
        out,
        "broker: {brokers}{}; {} partition(s)",
        if opts.brokers.is_none() {
            " (tansu, memory storage, started by the benchmark)"
        } else {
            ""
        },
        opts.partitions
    )?;

    // 1. the input
    let topics = Topics::new(&format!("{tag}-tput"));
    topics.create(&brokers, opts.partitions).await?;
    let config = GenConfig {
        seed: opts.seed,
        ..GenConfig::single(SourceKind::K8sAudit)
    };
    let mut generator = Generator::new(config.clone());
    let (_never, no_stop) = watch::channel(false);
    let start = Instant::now();
    let summary = produce(
        &producer,
        &topics.source_topics(),
        &mut generator,
        opts.events as u64,
        0,
        no_stop.clone(),
        |_| {},
    )
    .await?;
    let produced = Rate {
        events: summary.events,
        bytes: summary.bytes,
        elapsed: start.elapsed(),
    };
    writeln!(out, "{:<44} {produced}", "produce (lz4, acks=all)")?;

    // 2. bare consumer
    let mut cfg = base.clone();
    cfg.set("group.id", format!("bench-{tag}-bare"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    let bare: StreamConsumer = cfg.create()?;
    bare.subscribe(&[&topics.source])?;
    let mut n = 0u64;
    let mut bytes = 0u64;
    let mut first = None;
    while n < summary.events {
        let m = tokio::time::timeout(Duration::from_secs(60), bare.recv())
            .await
            .context("bare consumer: no message for 60 s")??;
        first.get_or_insert_with(Instant::now);
        n += 1;
        bytes += m.payload().map_or(0, |p| p.len() as u64);
    }
    let bare_rate = Rate {
        events: n,
        bytes,
        elapsed: first.map_or(Duration::ZERO, |f| f.elapsed()),
    };
    drop(bare);
    writeln!(
        out,
        "{:<44} {bare_rate}",
        "broker ceiling: bare rdkafka consumer"
    )?;

    // 3. Vigil
    let group = format!("bench-{tag}-vigil");
    let settings = topics.settings(&brokers, &group, opts);
    let (det, metrics) = detector(&opts.rules).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let brokers2 = brokers.clone();
    let s2 = settings.clone();
    let metrics2 = metrics.clone();
    let pipeline = tokio::spawn(async move {
        vigil::pipeline::run(&s2, &brokers2, det, metrics2, stop_rx, Default::default()).await
    });
    // The clock starts when Vigil's first batch is decoded, which is after
    // that batch was read; the bare consumer's starts at its first message.
    // So the messages consumed by then are not counted: the rate is that
    // of the messages read after the clock started (a slight bias against
    // Vigil, rather than for it).
    let mut first: Option<(Instant, u64)> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if first.is_none() {
            let consumed = Metrics::get(&metrics.messages_consumed);
            if consumed > 0 {
                first = Some((Instant::now(), consumed));
            }
        }
        // Done when the batch holding the last message is delivered: its
        // alerts acknowledged, its checkpoint written, its commit made. The
        // committed offset itself may stay lower while correlation windows
        // still hold events, so it is not the signal.
        if first.is_some() && Metrics::get(&metrics.messages_delivered) >= summary.events {
            break;
        }
        if pipeline.is_finished() {
            let result = pipeline.await;
            bail!("the pipeline stopped before it consumed the topic: {result:?}");
        }
        if Instant::now() > deadline {
            bail!("the pipeline did not finish within 600 s");
        }
        // In-process counters: a 5 ms resolution costs nothing.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (started, consumed_before) = first.expect("the loop ends after the first batch");
    let vigil_rate = Rate {
        events: summary.events - consumed_before,
        bytes: summary.bytes * (summary.events - consumed_before) / summary.events.max(1),
        elapsed: started.elapsed(),
    };
    let _ = stop_tx.send(true);
    pipeline.await??;
    let expected = summary.expected_alerts() as u64;
    let alerts = Metrics::get(&metrics.alerts_produced);
    writeln!(
        out,
        "{:<44} {vigil_rate} {} alerts ({} expected); ratio to bare consumer {:.2}",
        "vigil pipeline, all rules",
        alerts,
        expected,
        vigil_rate.events_per_s() / bare_rate.events_per_s()
    )?;

    // 4. latency at half load
    // Half of the slowest stage: the broker must keep up with the producer
    // too, or the latency measured is the producer's backlog.
    let max = vigil_rate
        .events_per_s()
        .min(bare_rate.events_per_s())
        .min(produced.events_per_s());
    let rate = (max / 2.0).max(1.0) as u64;
    let count = rate * opts.latency_secs;
    let generated_from = vigil::detect::now_ns();
    let generation = Instant::now();
    let events: Vec<_> = Generator::new(GenConfig {
        seed: opts.seed + 1,
        attack_every: opts.latency_attack_every,
        step_ns: (1_000_000_000 / rate.max(1)) as i64,
        start_ns: generated_from,
        ..GenConfig::single(SourceKind::K8sAudit)
    })
    .take(count as usize)
    .collect();
    writeln!(
        out,
        "{:<44} {count} events, generated before it in {:.1} s",
        "latency run",
        generation.elapsed().as_secs_f64()
    )?;
    // Event times are those of generation; production starts this much
    // later (set when it starts), so an event is produced at its event
    // time plus this offset, and a window closes that much later too.
    let production_offset_ns = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let topics = Topics::new(&format!("{tag}-lat"));
    topics.create(&brokers, opts.partitions).await?;
    let group = format!("bench-{tag}-vigil-lat");
    let settings = topics.settings(&brokers, &group, opts);
    let (det, metrics) = detector(&opts.rules).await?;
    // Correlation alerts complete at their window end, not at the event
    // they name first: their delay is measured from the window end.
    let correlation: std::collections::HashSet<String> = det
        .engine()
        .correlator()
        .rules()
        .map(|r| r.meta.id.clone())
        .collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let brokers2 = brokers.clone();
    let metrics2 = metrics.clone();
    let pipeline = tokio::spawn(async move {
        vigil::pipeline::run(
            &settings,
            &brokers2,
            det,
            metrics2,
            stop_rx,
            Default::default(),
        )
        .await
    });
    // Warm up: Vigil has joined its group once it consumed these.
    let mut warm = Generator::new(GenConfig {
        seed: opts.seed + 7,
        attack_every: 0,
        ..GenConfig::single(SourceKind::K8sAudit)
    });
    produce(
        &producer,
        &topics.source_topics(),
        &mut warm,
        100,
        0,
        no_stop.clone(),
        |_| {},
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Metrics::get(&metrics.messages_consumed) < 100 {
        if Instant::now() > deadline || pipeline.is_finished() {
            bail!("vigil did not consume the warm-up events within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Default::default();
    let mut acfg = base.clone();
    acfg.set("group.id", format!("bench-{tag}-alerts"))
        .set("enable.auto.commit", "false");
    let alert_consumer: StreamConsumer = acfg.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topics.alerts, 0, Offset::Beginning)?;
    alert_consumer.assign(&tpl)?;
    let after_window_end: Arc<Mutex<Vec<Duration>>> = Default::default();
    let (sent2, lat2, after2) = (sent.clone(), latencies.clone(), after_window_end.clone());
    // The warm-up events carry the generator's fixed start time (months
    // ago): windows of theirs that close now are not the latency run's.
    let measured_from = generated_from;
    let offset = production_offset_ns.clone();
    let reader = tokio::spawn(async move {
        loop {
            let Ok(m) = alert_consumer.recv().await else {
                continue;
            };
            let at = Instant::now();
            let Some(payload) = m.payload() else { continue };
            let Ok(alert) = serde_json::from_slice::<vigil::alert::Alert>(payload) else {
                continue;
            };
            if correlation.contains(&alert.rule_id) {
                // Event time plus the production offset is the wall clock
                // of production, so the window end shifted by it is when
                // the detection became possible. Suppression summaries
                // come when the period ends: skipped.
                let end = chrono::DateTime::parse_from_rfc3339(&alert.event_time)
                    .ok()
                    .and_then(|t| t.timestamp_nanos_opt());
                let measured = end.is_some_and(|end| end >= measured_from);
                if let (Some(end), None, true) = (end, alert.suppressed_count, measured) {
                    let closed =
                        end.saturating_add(offset.load(std::sync::atomic::Ordering::Relaxed));
                    let delay = vigil::detect::now_ns().saturating_sub(closed).max(0) as u64;
                    after2
                        .lock()
                        .expect("lock")
                        .push(Duration::from_nanos(delay));
                }
                continue;
            }
            let Some(event) = alert.events.first() else {
                continue;
            };
            if let Some(t) = sent2.lock().expect("lock").get(&event.event_id) {
                lat2.lock().expect("lock").push(at - *t);
            }
        }
    });
    let sent3 = sent.clone();
    production_offset_ns.store(
        vigil::detect::now_ns() - generated_from,
        std::sync::atomic::Ordering::Relaxed,
    );
    let summary = produce(
        &producer,
        &topics.source_topics(),
        events.into_iter(),
        count,
        rate,
        no_stop.clone(),
        move |e| {
            if e.attack.is_some() {
                sent3
                    .lock()
                    .expect("lock")
                    .insert(e.event_id.clone(), Instant::now());
            }
        },
    )
    .await?;
    let expected = summary.expected_alerts();
    let deadline = Instant::now() + Duration::from_secs(60);
    while latencies.lock().expect("lock").len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reader.abort();
    let _ = stop_tx.send(true);
    pipeline.await??;
    let mut lat = latencies.lock().expect("lock").clone();
    lat.sort();
    let mut after = after_window_end.lock().expect("lock").clone();
    after.sort();
    let per_rule = super::engine::rule_cpu_seconds(&metrics);
    writeln!(
        out,
        "  rule CPU time in the latency run {}; slowest: {}",
        super::engine::join_share(&per_rule, &opts.rules)?,
        super::engine::slowest(&per_rule)
    )?;
    let per_rule = super::engine::rule_seconds(&metrics);
    writeln!(
        out,
        "  rule time by the wall clock {}",
        super::engine::join_share(&per_rule, &opts.rules)?,
    )?;
    writeln!(
        out,
        "{:<44} {} events at {rate} events/s ({} s): {} of {expected} expected per-event alerts read; latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        "latency at half load",
        summary.events,
        opts.latency_secs,
        lat.len(),
        percentile(&lat, 50.0).as_secs_f64() * 1e3,
        percentile(&lat, 99.0).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    )?;
    writeln!(
        out,
        "{:<44} {} correlation alerts read; delay after window end p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (allowed lateness {} ms)",
        "  correlation rules",
        after.len(),
        percentile(&after, 50.0).as_secs_f64() * 1e3,
        percentile(&after, 99.0).as_secs_f64() * 1e3,
        after.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        vigil::correlate::CorrelationSettings::default().allowed_lateness_ms,
    )?;
    Ok(())
}
