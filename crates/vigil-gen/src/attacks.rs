//! The attacks the generator injects: one event each, and the shipped rules
//! (`sql-rules/`) it must trigger. `gen::tests` checks every entry against
//! the rule pack, so this table is the ground truth benchmarks count with.

use crate::{audit, runtime, Built, Cluster, Rng};
use vigil_model::source::SourceKind;

/// One kind of injected attack.
#[derive(Debug)]
pub struct Attack {
    pub name: &'static str,
    pub source: SourceKind,
    /// Rule ids that fire on the event (one alert each).
    pub rules: &'static [&'static str],
    pub(crate) build: fn(&mut Rng, &Cluster, i64) -> Built,
}

/// Every attack, in the order the generator cycles through them (those of
/// sources not generated are skipped).
pub static ATTACKS: [Attack; 9] = [
    Attack {
        name: "pod_exec_shell",
        source: SourceKind::K8sAudit,
        rules: &["k8s.exec_shell_or_tool", "k8s.pod_exec"],
        build: audit::attack_pod_exec_shell,
    },
    Attack {
        name: "privileged_pod",
        source: SourceKind::K8sAudit,
        rules: &["k8s.privileged_pod"],
        build: audit::attack_privileged_pod,
    },
    Attack {
        name: "cluster_admin_binding",
        source: SourceKind::K8sAudit,
        rules: &["k8s.clusterrolebinding_privileged"],
        build: audit::attack_cluster_admin_binding,
    },
    Attack {
        name: "secrets_dump",
        source: SourceKind::K8sAudit,
        // A cluster-wide list: k8s.secret_read leaves those to this rule.
        rules: &["k8s.secrets_dump_all_namespaces"],
        build: audit::attack_secrets_dump,
    },
    Attack {
        name: "offensive_tool",
        source: SourceKind::K8sAudit,
        rules: &["k8s.offensive_tool_user_agent"],
        build: audit::attack_offensive_tool,
    },
    Attack {
        name: "falco_terminal_shell",
        source: SourceKind::Falco,
        rules: &["falco.shell_in_container"],
        build: runtime::attack_falco_shell,
    },
    Attack {
        name: "falco_release_agent_escape",
        source: SourceKind::Falco,
        rules: &["falco.container_escape", "falco.critical_alert"],
        build: runtime::attack_falco_release_agent,
    },
    Attack {
        name: "tetragon_crypto_miner",
        source: SourceKind::Tetragon,
        rules: &["tetragon.crypto_miner"],
        build: runtime::attack_tetragon_miner,
    },
    Attack {
        name: "tetragon_nsenter_escape",
        source: SourceKind::Tetragon,
        rules: &["tetragon.container_escape_nsenter"],
        build: runtime::attack_tetragon_nsenter,
    },
];
