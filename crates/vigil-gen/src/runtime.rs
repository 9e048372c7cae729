//! Background runtime events: Falco notices and Tetragon process events,
//! shaped on Falco's JSON output and Tetragon's export format.
//!
//! Benign by construction: Falco notices are below critical priority and
//! carry neither container-escape (T1611) nor shell tags; Tetragon
//! executions are application binaries (no shells, network tools, package
//! managers or cluster clients) started from their image's own paths.

use base64::Engine;
use serde_json::{json, Value};

use crate::{rfc3339_nanos, Built, Cluster, PodRef, Rng};

fn built(key: String, event_id: String, value: &Value) -> Built {
    Built {
        key,
        event_id,
        payload: serde_json::to_vec(value).expect("JSON values serialize"),
    }
}

// --- Falco ---------------------------------------------------------------

/// A Falco JSON alert for `pod`.
#[allow(clippy::too_many_arguments)]
fn falco_alert(
    rng: &mut Rng,
    pod: &PodRef,
    time_ns: i64,
    rule: &str,
    priority: &str,
    tags: &[&str],
    message: &str,
    cmdline: &str,
    user: &str,
) -> Built {
    let uuid = rng.uuid();
    let time = rfc3339_nanos(time_ns);
    let container_id = rng.hex(12);
    let image = format!("ghcr.io/acme/{}", pod.app);
    let output = format!(
        "{time}: {priority} {message} (user={user} user_loginuid=-1 process={} proc_exepath={} parent=containerd-shim command={cmdline} terminal=0 container_id={container_id} container_image={image} container_image_tag=v1.4.2 container_name={} k8s_ns={} k8s_pod_name={})",
        cmdline.split(' ').next().unwrap_or(""),
        cmdline.split(' ').next().unwrap_or(""),
        pod.app,
        pod.namespace,
        pod.name
    );
    let value = json!({
        "uuid": uuid,
        "hostname": pod.node,
        "output": output,
        "priority": priority,
        "rule": rule,
        "source": "syscall",
        "tags": tags,
        "time": time,
        "output_fields": {
            "container.id": container_id,
            "container.image.repository": image,
            "container.image.tag": "v1.4.2",
            "container.name": pod.app,
            "evt.time": time_ns,
            "evt.type": "execve",
            "k8s.ns.name": pod.namespace,
            "k8s.pod.name": pod.name,
            "proc.cmdline": cmdline,
            "proc.exepath": cmdline.split(' ').next().unwrap_or(""),
            "proc.name": cmdline.split(' ').next().unwrap_or("").rsplit('/').next().unwrap_or(""),
            "proc.pname": "containerd-shim",
            "proc.tty": 0,
            "user.loginuid": -1,
            "user.name": user
        }
    });
    built(pod.name.clone(), uuid, &value)
}

const FALCO_NOTICES: [(&str, &str, &[&str], &str, &str); 4] = [
    (
        "Contact K8S API Server From Container",
        "Notice",
        &["container", "k8s", "network", "mitre_discovery", "T1565"],
        "Unexpected connection to K8s API Server from container",
        "/app/server --config /etc/app/config.yaml",
    ),
    (
        "Read sensitive file untrusted",
        "Warning",
        &["filesystem", "mitre_credential_access", "T1555"],
        "Sensitive file opened for reading by non-trusted program",
        "/usr/local/bin/node /app/index.js",
    ),
    (
        "Launch Ingress Remote File Copy Tools in Container",
        "Notice",
        &[
            "container",
            "network",
            "process",
            "mitre_command_and_control",
            "TA0011",
        ],
        "Ingress remote file copy tool launched in container",
        "/usr/bin/python3 /app/sync.py --pull",
    ),
    (
        "Clear Log Activities",
        "Warning",
        &["host", "filesystem", "mitre_defense_evasion", "T1070"],
        "Log files were tampered",
        "/usr/sbin/logrotate /etc/logrotate.conf",
    ),
];

pub(crate) fn falco_background(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let pod = cluster.pod(rng);
    let (rule, priority, tags, message, cmdline) = *rng.pick(&FALCO_NOTICES);
    falco_alert(
        rng, &pod, time_ns, rule, priority, tags, message, cmdline, "app",
    )
}

pub(crate) fn attack_falco_shell(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let pod = cluster.pod(rng);
    falco_alert(
        rng,
        &pod,
        time_ns,
        "Terminal shell in container",
        "Notice",
        &["container", "shell", "mitre_execution", "T1059"],
        "A shell was spawned in a container with an attached terminal",
        "/bin/bash -i",
        "root",
    )
}

pub(crate) fn attack_falco_release_agent(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let pod = cluster.pod(rng);
    falco_alert(
        rng,
        &pod,
        time_ns,
        "Detect release_agent File Container Escapes",
        "Critical",
        &[
            "container",
            "process",
            "mitre_privilege_escalation",
            "T1611",
        ],
        "Detect an attempt to exploit a container escape using release_agent file",
        "/bin/sh -c echo /cmd > /tmp/cgrp/release_agent",
        "root",
    )
}

// --- Tetragon ------------------------------------------------------------

fn exec_id(rng: &mut Rng, node: &str) -> String {
    let raw = format!("{node}:{}:{}", rng.below(1 << 50), rng.below(4_000_000));
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// A Tetragon `process` object for a process in `pod`.
fn process(
    rng: &mut Rng,
    pod: &PodRef,
    time_ns: i64,
    binary: &str,
    arguments: &str,
    exec_id: &str,
    parent_exec_id: &str,
) -> Value {
    let container_id = rng.hex(64);
    json!({
        "exec_id": exec_id,
        "pid": 1000 + rng.below(4_000_000),
        "uid": 10001,
        "cwd": "/app",
        "binary": binary,
        "arguments": arguments,
        "flags": "execve clone",
        "start_time": rfc3339_nanos(time_ns - 1_000_000),
        "auid": 4294967295u64,
        "pod": {
            "namespace": pod.namespace,
            "name": pod.name,
            "container": {
                "id": format!("containerd://{container_id}"),
                "name": pod.app,
                "image": {
                    "id": format!("ghcr.io/acme/{}@sha256:{}", pod.app, rng.hex(64)),
                    "name": format!("ghcr.io/acme/{}:v1.4.2", pod.app)
                },
                "start_time": "2026-01-01T00:00:00Z",
                "pid": 7 + rng.below(200)
            },
            "pod_labels": {"app": pod.app, "pod-template-hash": rng.hex(10)},
            "workload": pod.app,
            "workload_kind": "Deployment"
        },
        "docker": &container_id[..31],
        "parent_exec_id": parent_exec_id,
        "refcnt": 1,
        "tid": 1000 + rng.below(4_000_000)
    })
}

fn tetragon_event(
    rng: &mut Rng,
    pod: &PodRef,
    time_ns: i64,
    kind: &str,
    binary: &str,
    arguments: &str,
    parent_binary: &str,
) -> Built {
    let own = exec_id(rng, &pod.node);
    let parent_id = exec_id(rng, &pod.node);
    let grandparent = exec_id(rng, &pod.node);
    let time = rfc3339_nanos(time_ns);
    let mut body = json!({
        "process": process(rng, pod, time_ns, binary, arguments, &own, &parent_id),
        "parent": process(rng, pod, time_ns - 5_000_000_000, parent_binary, "", &parent_id, &grandparent),
    });
    if kind == "process_exit" {
        body["signal"] = json!("SIGTERM");
        body["status"] = json!(0);
        body["time"] = json!(time);
    }
    let value = json!({kind: body, "node_name": pod.node, "time": time});
    built(pod.name.clone(), format!("{own}/{kind}/{time}"), &value)
}

const APP_BINARIES: [(&str, &str); 5] = [
    ("/app/server", "--config /etc/app/config.yaml"),
    ("/usr/local/bin/node", "/app/index.js"),
    ("/usr/bin/java", "-XX:MaxRAMPercentage=75 -jar /app/app.jar"),
    ("/usr/local/bin/python3", "/app/worker.py --queue default"),
    ("/app/healthcheck", "--port 8080"),
];

pub(crate) fn tetragon_background(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let pod = cluster.pod(rng);
    let (binary, args) = *rng.pick(&APP_BINARIES);
    let kind = if rng.below(2) == 0 {
        "process_exec"
    } else {
        "process_exit"
    };
    tetragon_event(
        rng,
        &pod,
        time_ns,
        kind,
        binary,
        args,
        "/usr/bin/containerd-shim-runc-v2",
    )
}

pub(crate) fn attack_tetragon_miner(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let pod = cluster.pod(rng);
    tetragon_event(
        rng,
        &pod,
        time_ns,
        "process_exec",
        "/usr/local/bin/xmrig",
        "-o stratum+tcp://pool.supportxmr.com:3333 -u 44AFFq5kSiGBoZ --donate-level 1",
        "/app/server",
    )
}

pub(crate) fn attack_tetragon_nsenter(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let pod = cluster.pod(rng);
    tetragon_event(
        rng,
        &pod,
        time_ns,
        "process_exec",
        "/usr/bin/nsenter",
        "-t 1 -m -u -n -i -p -- /usr/bin/id",
        "/app/server",
    )
}
