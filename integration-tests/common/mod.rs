//! Test harness for the integration tests: a real Kafka-compatible broker
//! process (tansu), topics, producing and reading records, and the `vigil`
//! binary as a child process.
//!
//! The broker: if `VIGIL_TEST_BROKERS` is set (as `.ci/run` does) the tests
//! use that broker; otherwise each test binary starts its own tansu process
//! on a free localhost port (`tansu` on PATH or in ~/.cargo/bin; install it
//! with `scripts/bootstrap.sh --broker`). Every test uses topics and a
//! consumer group with a unique suffix, so tests share a broker safely.

#![allow(dead_code)]

pub mod attack;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn shared_data(rel: &str) -> PathBuf {
    repo().join("../shared/data").join(rel)
}

/// A broker the tests can use.
pub struct Broker {
    pub addr: String,
    _child: Option<ChildGuard>,
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU") {
        return PathBuf::from(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("tansu");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/tansu");
    if home.is_file() {
        return home;
    }
    panic!("the integration tests need a Kafka broker: set VIGIL_TEST_BROKERS, or install tansu with `scripts/bootstrap.sh --broker`");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Make the process `cmd` starts end with the thread that starts it: the
/// kernel sends it SIGKILL when that thread ends (Linux's parent-death
/// signal), so it cannot outlive a test binary that panics or is killed.
pub fn end_with_starting_thread(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls: prctl,
    // getppid and _exit.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        })
    }
}

/// The shared broker of this test binary. When the binary starts one, it
/// is started from a thread that lives as long as the binary, so the
/// broker ends with the binary (see [`end_with_starting_thread`]), however
/// the binary ends: statics are never dropped.
pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        if let Ok(addr) = std::env::var("VIGIL_TEST_BROKERS") {
            wait_for_broker(&addr);
            return Broker { addr, _child: None };
        }
        let port = free_port();
        let (started, child) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            started
                .send(start_tansu(port, &format!("127.0.0.1:{port}")))
                .unwrap();
            loop {
                std::thread::park();
            }
        });
        let child = child.recv().expect("the broker thread started tansu");
        let addr = format!("127.0.0.1:{port}");
        let broker = Broker {
            addr: addr.clone(),
            _child: Some(ChildGuard(child)),
        };
        wait_for_broker(&addr);
        broker
    })
}

/// A tansu broker with in-memory storage on `127.0.0.1:port`, advertising
/// `advertised` (`host:port`) and logging to the temporary directory; it
/// ends with the calling thread.
fn start_tansu(port: u16, advertised: &str) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let log =
        std::fs::File::create(std::env::temp_dir().join(format!("tansu-{port}.log"))).unwrap();
    end_with_starting_thread(&mut Command::new(tansu_binary()))
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &format!("tcp://{advertised}"),
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("starting tansu")
}

fn wait_for_broker(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .unwrap();
    while Instant::now() < deadline {
        if consumer
            .fetch_metadata(None, Duration::from_secs(2))
            .is_ok()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("broker at {addr} did not answer within 60 s");
}

/// A unique suffix for topic and group names.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn create_topics(addr: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

pub fn producer(addr: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .create()
        .unwrap()
}

/// Produce each payload to `partition` of `topic`, in order.
pub async fn produce(addr: &str, topic: &str, partition: i32, payloads: &[Vec<u8>]) {
    let p = producer(addr);
    for payload in payloads {
        p.send(
            FutureRecord::<(), _>::to(topic)
                .partition(partition)
                .payload(payload),
            Timeout::After(Duration::from_secs(30)),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
    }
}

/// Non-empty lines of a file, as payloads.
pub fn lines(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// Read partition 0 of `topic` from the beginning until `want` records were
/// read or `timeout` passed; then keep reading for `settle` to catch extras.
/// Transient consumer errors (a connection cut by a [`TcpProxy`]) are
/// logged and reading goes on.
pub fn read_topic(
    addr: &str,
    topic: &str,
    want: usize,
    timeout: Duration,
    settle: Duration,
) -> Vec<(i64, String)> {
    read_topic_until(addr, topic, timeout, settle, |read| read.len() >= want)
}

/// [`read_topic`] until `done` says the records read so far are enough.
pub fn read_topic_until(
    addr: &str,
    topic: &str,
    timeout: Duration,
    settle: Duration,
    done: impl Fn(&[(i64, String)]) -> bool,
) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&list).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut settle_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if settle_until.is_none() && done(&out) {
            settle_until = Some(now + settle);
        }
        if settle_until.is_some_and(|s| now >= s) || now >= deadline {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push((
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(e)) => eprintln!("reading {topic}: {e} (retrying)"),
            None => {}
        }
    }
    out
}

/// The shipped pack's per-event rules. End-to-end comparisons with an
/// offline evaluation cover them only: through Kafka a correlation window
/// closes when the watermark passes it (or on the idle tick), and events
/// without a time of their own take the broker timestamp, so correlation
/// alerts differ from a file replay by design (they are tested by their
/// cases, the correlate tests and crash_consistency.rs). First-seen rules
/// are left out too: what they raise depends on what earlier runs saw (the
/// state topic), which an offline evaluation of one input does not know
/// (they are tested by their cases and first_seen_state.rs).
pub fn event_rules() -> vigil::rules::RuleSet {
    let mut set = vigil::rules::RulePack::load_dir(&repo().join("sql-rules"))
        .unwrap()
        .rule_set();
    set.rules.retain(|r| {
        r.meta.mode != vigil::rules::RuleMode::Correlation && r.meta.first_seen.is_none()
    });
    set
}

/// The alerts the per-event rules raise offline (the library, as `vigil
/// replay` runs it) over `inputs`, each stream numbered from line 1.
pub struct OfflineAlerts {
    /// Raised while the input flows: what a Kafka stream raises too.
    pub stream: Vec<vigil::alert::Alert>,
    /// Raised only at the end of input: the summaries of suppression
    /// periods still open. A Kafka stream has no end; it closes them when
    /// its watermark passes them, up to a period after the last event.
    pub at_end: Vec<vigil::alert::Alert>,
}

pub async fn offline_event_alerts(
    inputs: &[(vigil::source::SourceKind, &[Vec<u8>])],
) -> OfflineAlerts {
    use vigil::source::{Origin, RawMessage};
    let engine = vigil::rules::RuleEngine::compile(event_rules())
        .await
        .unwrap();
    let mut detector = vigil::detect::Detector::new(
        engine,
        Default::default(),
        std::sync::Arc::new(vigil::metrics::Metrics::default()),
    );
    let mut stream = Vec::new();
    for (source, payloads) in inputs {
        let messages = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| RawMessage {
                source: *source,
                payload: p.clone(),
                origin: Origin::File {
                    path: "offline".into(),
                    line: i as u64 + 1,
                },
                timestamp_ms: None,
                state_only: false,
            })
            .collect();
        stream.extend(detector.process(messages).await.alerts);
    }
    let at_end = detector.finish().await.alerts;
    OfflineAlerts { stream, at_end }
}

/// The committed offset of `group` on partition 0 of `topic`.
pub fn committed_offset(addr: &str, group: &str, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, 0);
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    committed
        .find_partition(topic, 0)
        .and_then(|p| p.offset().to_raw())
        .filter(|o| *o >= 0)
}

/// The latest checkpoint of `group`.
pub fn latest_checkpoint(addr: &str, topic: &str, group: &str) -> Option<vigil::kafka::Checkpoint> {
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", addr);
    vigil::kafka::checkpoint::read_latest(&base, topic, group, 1000).unwrap()
}

/// A running `vigil` process; killed on drop.
pub struct Vigil {
    child: Child,
    pub log: PathBuf,
}

impl Vigil {
    /// Start `vigil run --config <config>`. Its HTTP server listens on a
    /// free localhost port ([`Vigil::http_addr`]): tests run in parallel.
    pub fn start(config: &Path, log: PathBuf) -> Vigil {
        Self::start_with_env(config, log, &[])
    }

    /// [`Vigil::start`] with extra environment variables (e.g.
    /// `VIGIL__KAFKA__DELIVERY`). The log file is appended to, so restarts
    /// can share one log.
    pub fn start_with_env(config: &Path, log: PathBuf, env: &[(&str, &str)]) -> Vigil {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        // Started from the test's thread, which owns it: it ends with the
        // test, also when the test binary is killed.
        let child = end_with_starting_thread(&mut Command::new(env!("CARGO_BIN_EXE_vigil")))
            .args(["run", "--config"])
            .arg(config)
            .current_dir(repo())
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .env("VIGIL__HTTP__LISTEN", "127.0.0.1:0")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(env.iter().copied())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("starting vigil");
        Vigil { child, log }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.terminate_within(Duration::from_secs(60))
    }

    /// SIGTERM, then wait at most `limit` for the process to exit.
    pub fn terminate_within(mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "vigil did not stop within {limit:?} of SIGTERM; log: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of the HTTP server (metrics, health), from the JSON log
    /// line Vigil writes when it is listening. Waits up to 60 s.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for line in self.log_text().lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("HTTP server listening"))
                {
                    return v["fields"]["addr"].as_str().unwrap().parse().unwrap();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "vigil did not report its HTTP address; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `GET path` on `addr`: (status, body). Plain HTTP/1.1, one request.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: vigil\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `name` (with its labels, exactly as exposed) in
/// Prometheus text, if present.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
}

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write a vigil configuration file for this test's topics.
pub struct Topics {
    pub audit: String,
    pub falco: String,
    pub tetragon: String,
    pub alerts: String,
    pub dead_letter: String,
    pub late_events: String,
    pub checkpoints: String,
    /// The state topic (first-seen rules' changelog).
    pub state: String,
    pub group: String,
}

impl Topics {
    pub fn new(name: &str) -> Topics {
        Topics {
            audit: unique(&format!("{name}-audit")),
            falco: unique(&format!("{name}-falco")),
            tetragon: unique(&format!("{name}-tetragon")),
            alerts: unique(&format!("{name}-alerts")),
            dead_letter: unique(&format!("{name}-dlq")),
            late_events: unique(&format!("{name}-late")),
            checkpoints: unique(&format!("{name}-checkpoints")),
            state: unique(&format!("{name}-state")),
            group: unique(&format!("{name}-group")),
        }
    }

    pub async fn create(&self, addr: &str) {
        create_topics(
            addr,
            &[
                (&self.audit, 1),
                (&self.falco, 1),
                (&self.tetragon, 1),
                (&self.alerts, 1),
                (&self.dead_letter, 1),
                (&self.late_events, 1),
                (&self.checkpoints, 1),
                (&self.state, 2),
            ],
        )
        .await;
    }

    pub fn write_config(&self, dir: &Path, addr: &str) -> PathBuf {
        self.write_config_with(dir, addr, &repo().join("sql-rules"), "")
    }

    /// A configuration with a given rules directory and extra TOML.
    pub fn write_config_with(&self, dir: &Path, addr: &str, rules: &Path, extra: &str) -> PathBuf {
        let path = dir.join("vigil.toml");
        let text = format!(
            "[kafka]\nbrokers = \"{addr}\"\ngroup_id = \"{}\"\n\n[topics]\nk8s_audit = \"{}\"\nfalco = \"{}\"\ntetragon = \"{}\"\nalerts = \"{}\"\ndead_letter = \"{}\"\nlate_events = \"{}\"\ncheckpoints = \"{}\"\nstate = \"{}\"\n\n[batch]\nmax_events = 100\nmax_wait_ms = 200\n\n[rules]\ndir = \"{}\"\n{extra}",
            self.group,
            self.audit,
            self.falco,
            self.tetragon,
            self.alerts,
            self.dead_letter,
            self.late_events,
            self.checkpoints,
            self.state,
            rules.display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Vigil {
    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// How the process ended, once it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

/// A tansu broker of its own (not the shared one), listening on
/// `127.0.0.1:listen_port` and advertising `advertised` (`host:port`) to
/// clients: so every connection a client makes after bootstrapping goes to
/// the advertised address (a [`TcpProxy`] in front of the broker).
pub struct DedicatedBroker {
    _child: ChildGuard,
    pub listen_addr: String,
}

impl DedicatedBroker {
    /// Started from the test's thread: it ends with the test, also when the
    /// test binary is killed.
    pub fn start(listen_port: u16, advertised: &str) -> DedicatedBroker {
        DedicatedBroker {
            _child: ChildGuard(start_tansu(listen_port, advertised)),
            listen_addr: format!("127.0.0.1:{listen_port}"),
        }
    }

    /// Suspend the broker process (SIGSTOP): its connections stay open and
    /// take requests, but nothing is answered.
    pub fn freeze(&self) {
        let pid = self._child.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success());
    }
}

/// An unused localhost port.
pub fn unused_port() -> u16 {
    free_port()
}

/// Wait until a broker answers metadata requests at `addr` (60 s at most).
pub fn await_broker(addr: &str) {
    wait_for_broker(addr)
}

/// A TCP proxy in front of a broker, to simulate outages: [`TcpProxy::cut`]
/// drops every open connection and stops listening (connections are
/// refused), [`TcpProxy::restore`] listens again on the same port.
pub struct TcpProxy {
    pub addr: String,
    state: std::sync::Arc<ProxyState>,
}

struct ProxyState {
    down: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
    connections: std::sync::Mutex<Vec<std::net::TcpStream>>,
}

impl TcpProxy {
    /// Listen on `127.0.0.1:port` and forward every connection to `upstream`.
    pub fn start(port: u16, upstream: &str) -> TcpProxy {
        use std::sync::atomic::Ordering;
        let state = std::sync::Arc::new(ProxyState {
            down: Default::default(),
            stop: Default::default(),
            connections: Default::default(),
        });
        let addr = format!("127.0.0.1:{port}");
        let upstream = upstream.to_string();
        let st = state.clone();
        let listen = addr.clone();
        std::thread::spawn(move || {
            let mut listener: Option<TcpListener> = None;
            while !st.stop.load(Ordering::SeqCst) {
                if st.down.load(Ordering::SeqCst) {
                    listener = None; // closed: connections are refused
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                if listener.is_none() {
                    match TcpListener::bind(&listen) {
                        Ok(l) => {
                            l.set_nonblocking(true).unwrap();
                            listener = Some(l);
                        }
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                    }
                }
                match listener.as_ref().unwrap().accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                            continue;
                        };
                        {
                            let mut conns = st.connections.lock().unwrap();
                            conns.push(client.try_clone().unwrap());
                            conns.push(server.try_clone().unwrap());
                        }
                        if st.down.load(Ordering::SeqCst) {
                            // Cut while this one was being accepted.
                            let _ = client.shutdown(std::net::Shutdown::Both);
                            let _ = server.shutdown(std::net::Shutdown::Both);
                            continue;
                        }
                        for (mut from, mut to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                                let _ = from.shutdown(std::net::Shutdown::Both);
                            });
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TcpProxy { addr, state }
    }

    /// Drop every connection and refuse new ones.
    pub fn cut(&self) {
        use std::sync::atomic::Ordering;
        self.state.down.store(true, Ordering::SeqCst);
        for c in self.state.connections.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Accept connections again.
    pub fn restore(&self) {
        self.state
            .down
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.state
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The payloads of [`read_topic`].
pub fn read_payloads(
    addr: &str,
    topic: &str,
    want: usize,
    timeout: Duration,
    settle: Duration,
) -> Vec<String> {
    read_topic(addr, topic, want, timeout, settle)
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}
