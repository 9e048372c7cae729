//! The broker a benchmark runs against: a tansu process it starts on a
//! free port (stopped when dropped), or one given with `--brokers`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// A tansu broker process this benchmark started; killed on drop.
pub struct Tansu(Child);

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tansu_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("TANSU") {
        return Ok(p.into());
    }
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/tansu");
    if home.is_file() {
        return Ok(home);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("tansu").is_file() {
            return Ok(dir.join("tansu"));
        }
    }
    bail!("no tansu binary (TANSU, ~/.cargo/bin/tansu or PATH): install it with scripts/bootstrap.sh --broker, or pass --brokers")
}

pub fn start_tansu() -> Result<(Tansu, String)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("tcp://127.0.0.1:{port}");
    let log_path = std::env::temp_dir().join(format!("vigil-bench-tansu-{port}.log"));
    let log = std::fs::File::create(&log_path)?;
    let child = end_with_this_thread(&mut Command::new(tansu_binary()?))
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting tansu")?;
    Ok((Tansu(child), format!("127.0.0.1:{port}")))
}

pub fn wait_for_broker(addr: &str) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if consumer
            .fetch_metadata(None, Duration::from_secs(2))
            .is_ok()
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("broker at {addr} did not answer within 60 s")
}

pub async fn create_topics(addr: &str, topics: &[(&str, i32)]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
        .collect();
    for r in admin.create_topics(&new, &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

/// Make the process `cmd` starts end with the thread that starts it (the
/// kernel's parent-death signal), so that a benchmark that panics or is
/// killed leaves no broker or instance behind.
pub fn end_with_this_thread(cmd: &mut Command) -> &mut Command {
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

/// The broker to use: `given`, or a tansu started for the run (and stopped
/// when the returned guard is dropped). Waits until it answers.
pub fn broker(given: Option<&str>) -> Result<(Option<Tansu>, String)> {
    let (tansu, addr) = match given {
        Some(b) => (None, b.to_string()),
        None => {
            let (t, addr) = start_tansu()?;
            (Some(t), addr)
        }
    };
    wait_for_broker(&addr)?;
    Ok((tansu, addr))
}
