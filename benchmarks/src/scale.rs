//! `vigil-bench scale`: correlation scaled out through the broker
//! (`correlation.placement = "repartition"`), checked against one instance.
//!
//! 1. Generated events of every source (audit, Falco, Tetragon) go to
//!    source topics of `partitions` partitions, each event to a partition
//!    drawn at random: no topic is keyed by any rule's correlation key.
//! 2. `instances` processes of the `vigil` binary run in one consumer group.
//!    The events are produced in three parts: the first before the start;
//!    the second after one instance is killed (SIGKILL), which is started
//!    again once its session has expired; the third after a new instance
//!    is added.
//!    Last, one "clock" event per source partition, two hours of event
//!    time later, moves every partition's event time past the longest
//!    window and suppression period, so that they close in both runs.
//! 3. When every instance has read its partitions to the end and the
//!    alerts topic has been quiet for a while, every alert on it is
//!    compared with the alerts one in-process detector raises over the
//!    same events in order, clock events included (the single-instance
//!    replay; like a running instance, it does not close what the clock
//!    events leave open).
//!
//! While it runs, each instance's metrics are sampled: the forwarded events
//! its second stage took (`vigil_repartition_received_total` less
//! `vigil_repartition_redelivered_total`, the records it read again and
//! dropped as already taken; summed over an instance's lives) and its
//! correlation state (retained events plus
//! aggregation rows, the peak). The repartition lag is the broker's: the
//! end offsets of the repartition topic minus the second stage's committed
//! offsets, summed over partitions (it includes rows held for open
//! windows), the peak.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::broker::{create_topics, end_with_this_thread};
use vigil::config::Settings;
use vigil::detect::Detector;
use vigil::gen::{GenConfig, GeneratedEvent, Generator, Rng};
use vigil::metrics::Metrics;
use vigil::source::{Origin, RawMessage, SourceKind};

#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// Use this broker instead of starting tansu.
    pub brokers: Option<String>,
    pub instances: usize,
    pub events: usize,
    pub seed: u64,
    pub rules: PathBuf,
    /// Partitions of each source topic.
    pub partitions: i32,
    /// Partitions of the repartition topic.
    pub repartitions: i32,
    /// One injected attack every this many events.
    pub attack_every: u64,
    /// The `vigil` binary; default: the one beside `vigil-bench`.
    pub vigil: Option<PathBuf>,
    /// Give up waiting for the instances after this long.
    pub timeout: Duration,
}

/// The instances' correlation. The idle timeout is longer than the
/// session timeout and the rebalance after it: the partitions of a killed
/// instance are read by no one until its session expires and the group
/// has moved them, and must hold the watermark meanwhile
/// (docs/operations.md#scaling). With 15 s, the kill's rebalance on the
/// loaded 2-core machine outlasted it in some runs (129-137 late events).
const CORRELATION: &str = "[correlation]\nplacement = \"repartition\"\nallowed_lateness_ms = 5000\nidle_timeout_ms = 30000\n";
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// The alerts topic must stay unchanged this long at the end.
const QUIET: Duration = Duration::from_secs(15);

pub async fn run(opts: &ScaleOptions, out: &mut dyn Write) -> Result<()> {
    if opts.instances == 0 {
        bail!("--instances must be at least 1");
    }
    let vigil = vigil_binary(opts.vigil.as_deref())?;
    let (_tansu, brokers) = crate::broker::broker(opts.brokers.as_deref())?;
    let started_tansu = opts.brokers.is_none();
    let tag = format!("scale-{}", std::process::id());
    let topics = ScaleTopics::new(&tag);
    topics.create(&brokers, opts).await?;
    let dir = std::env::temp_dir().join(format!("vigil-bench-{tag}"));
    std::fs::create_dir_all(&dir)?;
    let config = topics.write_config(&dir, &brokers, &opts.rules)?;
    writeln!(
        out,
        "broker {brokers}; {} instances; source topics of {} partitions, repartition topic of {}; logs in {}",
        opts.instances,
        opts.partitions,
        opts.repartitions,
        dir.display()
    )?;

    let events = generate(opts);
    let clock = clock_events(opts, &events);
    let expected = single_instance_alerts(&opts.rules, &events, &clock).await?;
    writeln!(
        out,
        "{} events; the single-instance replay raises {} alerts ({} of correlation rules)",
        events.len(),
        expected.ids.len(),
        expected.correlation
    )?;

    let producer = Producer::new(&brokers, started_tansu, opts)?;
    let mut fleet = Fleet::new(vigil, config, dir.clone(), instance_env(started_tansu));
    let mut watch = Watch::new(&brokers, &topics)?;
    let started = Instant::now();
    let run = Run {
        opts,
        topics: &topics,
        producer: &producer,
        started,
    };
    run.drive(&mut fleet, &mut watch, thirds(&events), &clock, out)
        .await?;
    let elapsed = started.elapsed();
    fleet.sample();
    fleet.stop_all();

    std::fs::write(dir.join("expected-alerts.jsonl"), &expected.json)?;
    let got = read_alert_ids(&brokers, &topics.alerts, &dir.join("alerts.jsonl"))?;
    let [dead_letter, late, ..] = &topics.others;
    writeln!(
        out,
        "dead letters {}, late events {}",
        watch.records(dead_letter)?,
        watch.records(late)?
    )?;
    for late in read_records(&brokers, late, 3)? {
        let origin = &late["origin"];
        writeln!(out, "  late: {} ({origin})", late["reason"])?;
    }
    let report = Report::new(&expected.ids, &got, &fleet, watch.max_lag);
    report.write(out, opts.instances, elapsed)?;
    Ok(())
}

/// The schedule of a run: instances started, killed, restarted and added
/// while the stream is produced.
struct Run<'a> {
    opts: &'a ScaleOptions,
    topics: &'a ScaleTopics,
    producer: &'a Producer,
    started: Instant,
}

impl Run<'_> {
    async fn drive(
        &self,
        fleet: &mut Fleet,
        watch: &mut Watch,
        parts: [&[GeneratedEvent]; 3],
        clock: &[GeneratedEvent],
        out: &mut dyn Write,
    ) -> Result<()> {
        let (opts, topics, limit) = (self.opts, self.topics, self.opts.timeout);
        self.producer.send(topics, parts[0]).await?;
        for i in 0..opts.instances {
            fleet.start(&format!("i{i}"))?;
        }
        let half_of_first = parts[0].len() as f64 / 2.0;
        watch
            .until(fleet, limit, |w| w.consumed >= half_of_first)
            .await?;
        fleet.kill("i0");
        self.say(out, "killed i0")?;
        self.producer.send(topics, parts[1]).await?;
        watch.sleep(fleet, SESSION_TIMEOUT).await;
        fleet.start("i0")?;
        let half_of_second = (parts[0].len() + parts[1].len() / 2) as f64;
        watch
            .until(fleet, limit, |w| w.consumed >= half_of_second)
            .await?;
        let added = format!("i{}", opts.instances);
        fleet.start(&added)?;
        self.say(out, &format!("added {added}"))?;
        self.producer.send(topics, parts[2]).await?;
        self.producer.send_clock(topics, clock).await?;
        let total = parts.iter().map(|p| p.len()).sum::<usize>() + clock.len();
        watch
            .until(fleet, limit, |w| {
                w.consumed >= total as f64 && w.fetch_lag == 0.0 && w.alerts_quiet >= QUIET
            })
            .await
    }

    fn say(&self, out: &mut dyn Write, what: &str) -> Result<()> {
        writeln!(
            out,
            "{what} at {:.1} s",
            self.started.elapsed().as_secs_f64()
        )?;
        Ok(())
    }
}

/// The `vigil` binary: `given`, or the one beside this executable.
fn vigil_binary(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("vigil-bench has no directory")?
            .join("vigil"),
    };
    if !path.is_file() {
        bail!(
            "no vigil binary at {}: build it (cargo build --release -p vigil) or pass --vigil",
            path.display()
        );
    }
    Ok(path)
}

/// Topic names of one run.
struct ScaleTopics {
    group: String,
    sources: Vec<(SourceKind, String)>,
    alerts: String,
    repartition: String,
    /// Dead letters, late events, checkpoints, state (one partition each).
    others: [String; 4],
}

impl ScaleTopics {
    fn new(tag: &str) -> Self {
        let t = |what: &str| format!("bench-{tag}-{what}");
        ScaleTopics {
            group: format!("bench-{tag}"),
            sources: vigil::gen::GENERATED
                .iter()
                .map(|s| (*s, t(s.table_name())))
                .collect(),
            alerts: t("alerts"),
            repartition: t("repartition"),
            others: [t("dead-letter"), t("late"), t("checkpoints"), t("state")],
        }
    }

    async fn create(&self, brokers: &str, opts: &ScaleOptions) -> Result<()> {
        let mut all: Vec<(&str, i32)> = self
            .sources
            .iter()
            .map(|(_, t)| (t.as_str(), opts.partitions))
            .collect();
        all.push((&self.alerts, 1));
        all.push((&self.repartition, opts.repartitions));
        all.extend(self.others.iter().map(|t| (t.as_str(), 1)));
        create_topics(brokers, &all).await
    }

    fn topic_of(&self, source: SourceKind) -> &str {
        self.sources
            .iter()
            .find(|(s, _)| *s == source)
            .map(|(_, t)| t.as_str())
            .expect("a generated source has a topic")
    }

    fn write_config(&self, dir: &Path, brokers: &str, rules: &Path) -> Result<PathBuf> {
        let rules = std::fs::canonicalize(rules)
            .with_context(|| format!("rules directory {}", rules.display()))?;
        let sources: String = self
            .sources
            .iter()
            .map(|(s, t)| format!("{} = \"{t}\"\n", s.table_name()))
            .collect();
        let [dead_letter, late, checkpoints, state] = &self.others;
        let text = format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{}\"\n\n[topics]\n{sources}alerts = \"{}\"\ndead_letter = \"{dead_letter}\"\nlate_events = \"{late}\"\ncheckpoints = \"{checkpoints}\"\nstate = \"{state}\"\nrepartition = \"{}\"\n\n[batch]\nmax_events = 1000\nmax_wait_ms = 200\n\n[rules]\ndir = \"{}\"\nreload = false\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n{CORRELATION}",
            self.group,
            self.alerts,
            self.repartition,
            rules.display()
        );
        let path = dir.join("vigil.toml");
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// Event time between the starts of the three parts of the stream.
const PART_GAP_NS: i64 = 30 * 60 * 1_000_000_000;

/// The stream, in three parts [`PART_GAP_NS`] apart in event time: between
/// parts the instances go quiet for several seconds, and a quiet stream's
/// event time advances with the wall clock (`correlate::watermark`), so a
/// part must not start where the previous one ended.
fn generate(opts: &ScaleOptions) -> Vec<GeneratedEvent> {
    let per_part = opts.events / 3;
    (0..3u64)
        .flat_map(|k| {
            let n = if k == 2 {
                opts.events - 2 * per_part
            } else {
                per_part
            };
            Generator::new(GenConfig {
                seed: opts.seed.wrapping_add(k),
                attack_every: opts.attack_every,
                start_ns: vigil::gen::DEFAULT_START_NS + k as i64 * PART_GAP_NS,
                ..GenConfig::default()
            })
            .take(n)
        })
        .collect()
}

/// One benign event per source and partition, two hours of event time
/// after the stream (past every window and suppression period of the
/// pack): event `k` of a source is for partition `k`.
fn clock_events(opts: &ScaleOptions, events: &[GeneratedEvent]) -> Vec<GeneratedEvent> {
    const TWO_HOURS_NS: i64 = 2 * 3600 * 1_000_000_000;
    let last = events.iter().map(|e| e.event_time_ns).max().unwrap_or(0);
    let mut per_source: BTreeMap<SourceKind, usize> = BTreeMap::new();
    Generator::new(GenConfig {
        seed: opts.seed.wrapping_add(1),
        start_ns: last + TWO_HOURS_NS,
        attack_every: 0,
        ..GenConfig::default()
    })
    .filter(|e| {
        let n = per_source.entry(e.source).or_default();
        *n += 1;
        *n <= opts.partitions as usize
    })
    .take(vigil::gen::GENERATED.len() * opts.partitions as usize)
    .collect()
}

/// The stream's three parts (see [`generate`]).
fn thirds(events: &[GeneratedEvent]) -> [&[GeneratedEvent]; 3] {
    let third = events.len() / 3;
    debug_assert!(
        events.len() < 3 || events[third].event_time_ns - events[0].event_time_ns >= PART_GAP_NS
    );
    let (a, rest) = events.split_at(third);
    let (b, c) = rest.split_at(third);
    [a, b, c]
}

/// What one instance replaying every event in order raises.
struct Expected {
    /// Alert id -> rule.
    ids: BTreeMap<String, String>,
    correlation: usize,
    /// The alerts as JSON lines (saved beside the instances' logs).
    json: String,
}

async fn single_instance_alerts(
    rules: &Path,
    events: &[GeneratedEvent],
    clock: &[GeneratedEvent],
) -> Result<Expected> {
    let mut settings = Settings::default();
    settings.rules.dir = rules.to_path_buf();
    settings.correlation.allowed_lateness_ms = 5000;
    let engine = vigil::rules::load_rule_set(&settings.rules.layers(), settings.correlation)
        .await
        .map_err(anyhow::Error::new)
        .with_context(|| format!("loading rules from {}", rules.display()))?;
    let correlating: BTreeSet<String> = engine
        .correlator()
        .rules()
        .map(|r| r.meta.id.clone())
        .collect();
    let mut detector = Detector::new(
        engine,
        settings.limits.decode_limits(),
        Arc::new(Metrics::default()),
    );
    let messages = replay_messages(events.iter().chain(clock));
    let mut alerts = Vec::new();
    for chunk in messages.chunks(1000) {
        let out = detector.process(chunk.to_vec()).await;
        if !out.dead_letters.is_empty() {
            bail!("the replay dead-lettered: {:?}", out.dead_letters[0]);
        }
        alerts.extend(out.alerts);
    }
    // What a quiet stream closes: the watermark passes the clock events'
    // time (the instances' idle partitions do the same).
    alerts.extend(detector.tick().await.alerts);
    let json = alerts.iter().map(|a| a.to_json() + "\n").collect();
    Ok(Expected {
        json,
        correlation: alerts
            .iter()
            .filter(|a| correlating.contains(&a.rule_id))
            .count(),
        ids: alerts
            .into_iter()
            .map(|a| (a.alert_id, a.rule_id))
            .collect(),
    })
}

/// The events as one partition per source would deliver them, numbered in
/// order.
fn replay_messages<'a>(events: impl Iterator<Item = &'a GeneratedEvent>) -> Vec<RawMessage> {
    let mut offsets: BTreeMap<SourceKind, i64> = BTreeMap::new();
    events
        .map(|e| {
            let offset = offsets.entry(e.source).or_default();
            *offset += 1;
            RawMessage {
                origin: Origin::Kafka {
                    topic: e.source.table_name().into(),
                    partition: 0,
                    offset: *offset - 1,
                },
                ..e.raw_message()
            }
        })
        .collect()
}

/// The environment of every instance. With the tansu this benchmark
/// starts, one record per produced batch: tansu 0.6 delivers nothing to a
/// consumer that starts inside a batch of several records
/// (docs/reliability.md#tansu-fetching-from-inside-a-batch).
fn instance_env(tansu: bool) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "RUST_LOG".into(),
            "info,librdkafka=warn,rdkafka=warn".into(),
        ),
        (
            "VIGIL__KAFKA__PROPERTIES__SESSION_TIMEOUT_MS".into(),
            SESSION_TIMEOUT.as_millis().to_string(),
        ),
        (
            "VIGIL__KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS".into(),
            "500".into(),
        ),
    ];
    if tansu {
        env.push((
            "VIGIL__KAFKA__PROPERTIES__BATCH_NUM_MESSAGES".into(),
            "1".into(),
        ));
    }
    env
}

/// Produces events to their source topic, each to a random partition.
struct Producer {
    producer: FutureProducer,
    rng: std::sync::Mutex<Rng>,
    partitions: i32,
}

impl Producer {
    fn new(brokers: &str, tansu: bool, opts: &ScaleOptions) -> Result<Producer> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .set("acks", "all");
        if tansu {
            config.set("batch.num.messages", "1");
        }
        Ok(Producer {
            producer: config.create()?,
            rng: std::sync::Mutex::new(Rng::new(opts.seed ^ 0x5ca1e)),
            partitions: opts.partitions,
        })
    }

    async fn send(&self, topics: &ScaleTopics, events: &[GeneratedEvent]) -> Result<()> {
        let mut pending = Vec::with_capacity(events.len());
        for e in events {
            let partition = self
                .rng
                .lock()
                .expect("not poisoned")
                .below(self.partitions as u64) as i32;
            let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(topics.topic_of(e.source))
                .partition(partition)
                .payload(&e.payload);
            pending.push(self.producer.send_result(record).map_err(|(e, _)| e)?);
        }
        for delivery in pending {
            delivery
                .await
                .context("producer dropped a delivery")?
                .map_err(|(e, _)| e)
                .context("producing an event")?;
        }
        Ok(())
    }
}

impl Producer {
    /// Event `k` of each source to partition `k` of its topic.
    async fn send_clock(&self, topics: &ScaleTopics, clock: &[GeneratedEvent]) -> Result<()> {
        let mut next: BTreeMap<SourceKind, i32> = BTreeMap::new();
        for e in clock {
            let partition = next.entry(e.source).or_default();
            let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(topics.topic_of(e.source))
                .partition(*partition)
                .payload(&e.payload);
            *partition += 1;
            self.producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .context("producing a clock event")?;
        }
        Ok(())
    }
}

/// The `vigil` processes of the run, and what was sampled of each.
struct Fleet {
    vigil: PathBuf,
    config: PathBuf,
    dir: PathBuf,
    env: Vec<(String, String)>,
    live: BTreeMap<String, Instance>,
    seen: BTreeMap<String, Sampled>,
}

struct Instance {
    child: Child,
    log: PathBuf,
    http: Option<std::net::SocketAddr>,
    /// As last sampled, in this life: forwarded events read, source
    /// messages read, messages behind on its source partitions.
    received: f64,
    redelivered: f64,
    consumed: f64,
    fetch_lag: f64,
}

/// One instance over all its lives.
#[derive(Debug, Default, Clone, Copy)]
struct Sampled {
    lives: u32,
    /// Forwarded events and source messages read in lives that ended.
    received_before: f64,
    redelivered_before: f64,
    consumed_before: f64,
    received: f64,
    redelivered: f64,
    consumed: f64,
    state_peak: f64,
}

impl Sampled {
    /// Forwarded events taken into the lanes: read, less those read again
    /// and dropped as taken already.
    fn taken(&self) -> f64 {
        self.received - self.redelivered
    }
}

impl Fleet {
    fn new(vigil: PathBuf, config: PathBuf, dir: PathBuf, env: Vec<(String, String)>) -> Fleet {
        Fleet {
            vigil,
            config,
            dir,
            env,
            live: BTreeMap::new(),
            seen: BTreeMap::new(),
        }
    }

    /// Start instance `name` (again): each life logs to a file of its own.
    fn start(&mut self, name: &str) -> Result<()> {
        let seen = self.seen.entry(name.to_string()).or_default();
        seen.lives += 1;
        let log = self.dir.join(format!("{name}-{}.log", seen.lives));
        let file = std::fs::File::create(&log)?;
        let child = end_with_this_thread(&mut Command::new(&self.vigil))
            .args(["run", "--config"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("starting {}", self.vigil.display()))?;
        let instance = Instance {
            child,
            log,
            http: None,
            received: 0.0,
            redelivered: 0.0,
            consumed: 0.0,
            fetch_lag: 0.0,
        };
        self.live.insert(name.to_string(), instance);
        Ok(())
    }

    /// SIGKILL; what it read in this life is kept.
    fn kill(&mut self, name: &str) {
        self.sample();
        if let Some(mut i) = self.live.remove(name) {
            let _ = i.child.kill();
            let _ = i.child.wait();
            let seen = self.seen.entry(name.to_string()).or_default();
            seen.received_before += i.received;
            seen.received = seen.received_before;
            seen.redelivered_before += i.redelivered;
            seen.redelivered = seen.redelivered_before;
            seen.consumed_before += i.consumed;
            seen.consumed = seen.consumed_before;
        }
    }

    /// SIGTERM to every instance, then wait for them (killed after 60 s).
    fn stop_all(&mut self) {
        for i in self.live.values() {
            let _ = Command::new("kill")
                .args(["-TERM", &i.child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for (_, mut i) in std::mem::take(&mut self.live) {
            while Instant::now() < deadline && matches!(i.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = i.child.kill();
            let _ = i.child.wait();
        }
    }

    /// Read every live instance's metrics (one that does not answer yet is
    /// skipped).
    fn sample(&mut self) {
        for (name, i) in self.live.iter_mut() {
            if i.http.is_none() {
                i.http = newest_http_addr(&i.log);
            }
            let Some(text) = i.http.and_then(|a| http_get(a, "/metrics").ok()) else {
                continue;
            };
            i.received = metric_sum(&text, "vigil_repartition_received_total");
            i.redelivered = metric_sum(&text, "vigil_repartition_redelivered_total");
            i.consumed = metric_sum(&text, "vigil_messages_consumed_total");
            i.fetch_lag = metric_sum(&text, "vigil_consumer_fetch_lag");
            let state = metric_sum(&text, "vigil_correlation_retained_events")
                + metric_sum(&text, "vigil_correlation_state_rows");
            let seen = self.seen.entry(name.clone()).or_default();
            seen.received = seen.received_before + i.received;
            seen.redelivered = seen.redelivered_before + i.redelivered;
            seen.consumed = seen.consumed_before + i.consumed;
            seen.state_peak = seen.state_peak.max(state);
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for i in self.live.values_mut() {
            let _ = i.child.kill();
            let _ = i.child.wait();
        }
    }
}

/// The HTTP address in the "HTTP server listening" line of `log`.
fn newest_http_addr(log: &Path) -> Option<std::net::SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let message = v["fields"]["message"].as_str()?;
        if !message.starts_with("HTTP server listening") {
            return None;
        }
        v["fields"]["addr"].as_str()?.parse().ok()
    })
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: vigil\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// The sum of every sample of metric `name` in Prometheus text (0 if none).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

/// Progress of the run, read from the broker, and the fleet sampled while
/// waiting.
struct Watch {
    consumer: BaseConsumer,
    correlate: BaseConsumer,
    repartition: TopicPartitionList,
    alerts: String,
    /// Source messages read by every instance in all its lives (re-reads
    /// after a rebalance count again).
    consumed: f64,
    /// Messages behind on the live instances' source partitions.
    fetch_lag: f64,
    alerts_end: i64,
    alerts_quiet: Duration,
    alerts_changed: Instant,
    max_lag: i64,
}

impl Watch {
    fn new(brokers: &str, topics: &ScaleTopics) -> Result<Watch> {
        let client = |group: &str| -> Result<BaseConsumer> {
            Ok(ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .create()?)
        };
        let metadata = client(&topics.group)?;
        let mut repartition = TopicPartitionList::new();
        for p in 0..partitions(&metadata, &topics.repartition)? {
            repartition.add_partition(&topics.repartition, p);
        }
        Ok(Watch {
            consumer: metadata,
            correlate: client(&format!("{}-correlate", topics.group))?,
            repartition,
            alerts: topics.alerts.clone(),
            consumed: 0.0,
            fetch_lag: 0.0,
            alerts_end: 0,
            alerts_quiet: Duration::ZERO,
            alerts_changed: Instant::now(),
            max_lag: 0,
        })
    }

    /// Sample every second until `done` holds; an error after `limit`.
    async fn until(
        &mut self,
        fleet: &mut Fleet,
        limit: Duration,
        done: impl Fn(&Watch) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            self.poll(fleet)?;
            if done(self) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the instances did not get there within {limit:?}: {} source messages read, {} behind; logs in {}",
                    self.consumed,
                    self.fetch_lag,
                    fleet.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn sleep(&mut self, fleet: &mut Fleet, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            let _ = self.poll(fleet);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Records on a one-partition topic.
    fn records(&self, topic: &str) -> Result<i64> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(10))?;
        Ok(high - low)
    }

    fn poll(&mut self, fleet: &mut Fleet) -> Result<()> {
        fleet.sample();
        self.consumed = fleet.seen.values().map(|s| s.consumed).sum();
        self.fetch_lag = fleet.live.values().map(|i| i.fetch_lag).sum();
        let timeout = Duration::from_secs(10);
        let committed = self
            .correlate
            .committed_offsets(self.repartition.clone(), timeout)?;
        let mut lag = 0;
        for e in self.repartition.elements() {
            let (_, end) = self
                .consumer
                .fetch_watermarks(e.topic(), e.partition(), timeout)?;
            let at = match committed
                .find_partition(e.topic(), e.partition())
                .map(|c| c.offset())
            {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            };
            lag += (end - at).max(0);
        }
        self.max_lag = self.max_lag.max(lag);
        let (_, end) = self.consumer.fetch_watermarks(&self.alerts, 0, timeout)?;
        if end != self.alerts_end {
            self.alerts_end = end;
            self.alerts_changed = Instant::now();
        }
        self.alerts_quiet = self.alerts_changed.elapsed();
        Ok(())
    }
}

fn partitions(client: &BaseConsumer, topic: &str) -> Result<i32> {
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32))
}

/// The first `n` records of a one-partition topic, as JSON.
fn read_records(brokers: &str, topic: &str, n: usize) -> Result<Vec<serde_json::Value>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-reader"))
        .create()?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&list)?;
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while records.len() < n && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            records.push(serde_json::from_slice(m?.payload().unwrap_or_default())?);
        }
    }
    Ok(records)
}

/// Every alert on the topic: id -> (rule, how many records carry it).
/// The ids of the alerts on `topic` (with their rule and how often each
/// came), every alert also written to `save`.
fn read_alert_ids(
    brokers: &str,
    topic: &str,
    save: &Path,
) -> Result<BTreeMap<String, (String, usize)>> {
    let mut saved = std::io::BufWriter::new(std::fs::File::create(save)?);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let (_, end) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&list)?;
    let mut ids = BTreeMap::new();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while read < end {
        if Instant::now() > deadline {
            bail!("read {read} of {end} alerts in 120 s");
        }
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m?;
        read = m.offset() + 1;
        let payload = m.payload().unwrap_or_default();
        saved.write_all(payload)?;
        saved.write_all(b"\n")?;
        let alert: serde_json::Value =
            serde_json::from_slice(payload).context("an alert that is not JSON")?;
        let (Some(id), Some(rule)) = (alert["alert_id"].as_str(), alert["rule_id"].as_str()) else {
            bail!("an alert without alert_id or rule_id: {alert}");
        };
        ids.entry(id.to_string()).or_insert((rule.to_string(), 0)).1 += 1;
    }
    Ok(ids)
}

/// The comparison and the per-instance figures.
struct Report {
    equal: bool,
    /// Rule -> alerts of the replay not on the topic, and the reverse.
    missing: BTreeMap<String, usize>,
    unexpected: BTreeMap<String, usize>,
    duplicates: usize,
    shares: BTreeMap<String, Sampled>,
    /// Forwarded events taken by all second stages (re-deliveries an
    /// instance dropped not counted).
    taken_total: f64,
    max_lag: i64,
}

impl Report {
    fn new(
        expected: &BTreeMap<String, String>,
        got: &BTreeMap<String, (String, usize)>,
        fleet: &Fleet,
        max_lag: i64,
    ) -> Report {
        let by_rule = |ids: &mut dyn Iterator<Item = &String>| {
            let mut rules = BTreeMap::new();
            for rule in ids {
                *rules.entry(rule.clone()).or_insert(0) += 1;
            }
            rules
        };
        let missing = by_rule(
            &mut expected
                .iter()
                .filter(|(id, _)| !got.contains_key(*id))
                .map(|(_, rule)| rule),
        );
        let unexpected = by_rule(
            &mut got
                .iter()
                .filter(|(id, _)| !expected.contains_key(*id))
                .map(|(_, (rule, _))| rule),
        );
        Report {
            equal: missing.is_empty() && unexpected.is_empty(),
            missing,
            unexpected,
            duplicates: got.values().map(|(_, n)| n - 1).sum(),
            shares: fleet.seen.clone(),
            taken_total: fleet.seen.values().map(Sampled::taken).sum(),
            max_lag,
        }
    }

    fn write(&self, out: &mut dyn Write, instances: usize, elapsed: Duration) -> Result<()> {
        writeln!(out, "ran {:.1} s", elapsed.as_secs_f64())?;
        for (name, s) in &self.shares {
            writeln!(
                out,
                "  {name}: took {:.0} forwarded events ({:.3} of all; read {:.0} records, {:.0} of them again and dropped), correlation state peak {:.0} rows",
                s.taken(),
                s.taken() / self.taken_total.max(1.0),
                s.received,
                s.redelivered,
                s.state_peak
            )?;
        }
        for (what, rules) in [("missing", &self.missing), ("unexpected", &self.unexpected)] {
            for (rule, n) in rules {
                writeln!(out, "  {what}: {n} alerts of {rule}")?;
            }
        }
        let max_share = self
            .shares
            .values()
            .map(|s| s.taken() / self.taken_total.max(1.0))
            .fold(0.0, f64::max);
        let (min_state, max_state) = self
            .shares
            .values()
            .map(|s| s.state_peak)
            .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        writeln!(
            out,
            "scale: {instances} instances, alerts equal to single-instance replay: {}, duplicates {} (same id), max share of correlated events read by one instance {max_share:.2}, state rows per instance min/max {:.0}/{max_state:.0}, repartition lag max {}",
            if self.equal { "yes" } else { "no" },
            self.duplicates,
            if min_state == f64::MAX { 0.0 } else { min_state },
            self.max_lag
        )?;
        Ok(())
    }
}
