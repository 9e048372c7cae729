//! Hot reload of the rule set while `vigil run` runs.
//!
//! A reload is triggered by SIGHUP or by a change of a rule, macro, list,
//! lookup table, overrides or exceptions file under `rules.dir` or an
//! overlay (or of `rules.exceptions`), debounced:
//! the reload starts once the files have been quiet for [`DEBOUNCE`]. The
//! whole new set is loaded and compiled first (every rule planned, the
//! exceptions checked); if anything fails, the error is logged, the
//! `rule_reload_failures` counter goes up and the running set stays. A set
//! that compiles is handed to the [`crate::detect::Detector`], which swaps
//! it in between two batches (never during one) and carries the state of
//! unchanged correlation rules (see `RuleEngine::carry_state_from`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::correlate::CorrelationSettings;
use crate::metrics::Metrics;
use crate::rules::{self, Layers, RuleEngine};

/// Quiet time after a file change before reloading (editors and `git
/// checkout` write several files in a burst).
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// Where a rule set comes from.
#[derive(Debug, Clone)]
pub struct RuleSource {
    /// The pack, its overlays and its exceptions file.
    pub layers: Layers,
    pub correlation: CorrelationSettings,
}

impl RuleSource {
    /// Load and compile the set (every problem reported).
    pub async fn load(&self) -> Result<RuleEngine, rules::RuleErrors> {
        rules::load_rule_set(&self.layers, self.correlation.clone()).await
    }

    /// Whether a change of `path` can change the rule set: a rule or macro
    /// (`.sql`), a list, overrides or exceptions file (`.toml`), a lookup
    /// table (`.csv`), or the configured exceptions file.
    fn is_relevant(&self, path: &Path) -> bool {
        if let Some(e) = &self.layers.exceptions {
            // notify reports absolute paths; the setting may be relative.
            if path == e || (e.file_name().is_some() && path.file_name() == e.file_name()) {
                return true;
            }
        }
        path.extension()
            .is_some_and(|x| x == "sql" || x == "toml" || x == "csv")
    }
}

/// Start watching for reload triggers. Compiled rule sets arrive on the
/// returned channel (give it to `Detector::with_reloads`). Runs until the
/// receiver is dropped.
pub fn spawn(
    source: RuleSource,
    metrics: Arc<Metrics>,
) -> anyhow::Result<mpsc::UnboundedReceiver<RuleEngine>> {
    let (engines_tx, engines_rx) = mpsc::unbounded_channel();
    let (trigger_tx, mut trigger_rx) = mpsc::unbounded_channel::<&'static str>();

    // File changes (notify runs its own thread).
    let watched = source.clone();
    let file_tx = trigger_tx.clone();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(event) => {
                // A new directory (an overlay's `lists/`) may have files
                // written into it before its own watch is in place: reload
                // on its creation too.
                let new_dir = matches!(
                    event.kind,
                    notify::EventKind::Create(notify::event::CreateKind::Folder)
                );
                if new_dir
                    || (!matches!(event.kind, notify::EventKind::Access(_))
                        && event.paths.iter().any(|p| watched.is_relevant(p)))
                {
                    let _ = file_tx.send("file change");
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching the rules directory"),
        })?;
    use notify::Watcher as _;
    for dir in source.layers.dirs() {
        watcher
            .watch(dir, notify::RecursiveMode::Recursive)
            .map_err(|e| anyhow::anyhow!("watching {}: {e}", dir.display()))?;
    }
    if let Some(e) = &source.layers.exceptions {
        if !e.starts_with(&source.layers.base) {
            // Watch the directory, not the file: editors replace files by
            // renaming, which would end a watch on the file itself.
            let parent = e
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            watcher
                .watch(parent, notify::RecursiveMode::NonRecursive)
                .map_err(|err| anyhow::anyhow!("watching {}: {err}", parent.display()))?;
        }
    }

    // SIGHUP.
    #[cfg(unix)]
    {
        let hup_tx = trigger_tx.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if hup_tx.send("SIGHUP").is_err() {
                    break;
                }
            }
        });
    }
    drop(trigger_tx);

    tokio::spawn(async move {
        let _watcher = watcher; // dropped (unwatched) when this task ends
        while let Some(mut reason) = trigger_rx.recv().await {
            // Debounce: wait until no trigger came for DEBOUNCE.
            loop {
                match tokio::time::timeout(DEBOUNCE, trigger_rx.recv()).await {
                    Ok(Some(r)) => {
                        if r == "SIGHUP" {
                            reason = r;
                        }
                    }
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            tracing::info!(trigger = reason, dir = %source.layers.base.display(), overlays = ?source.layers.overlays, "reloading rules");
            match source.load().await {
                Ok(engine) => {
                    tracing::info!(
                        rules = engine.rules().count(),
                        "new rule set compiled; it takes over at the next batch"
                    );
                    if engines_tx.send(engine).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    metrics.rule_reload_failed();
                    tracing::error!(error = %e, "rule reload failed: the running rules stay in place");
                }
            }
        }
    });
    Ok(engines_rx)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::detect::Detector;
    use crate::rules::parse_rule;
    use crate::source::{Origin, RawMessage, SourceKind};

    const T0: i64 = 1_699_999_800; // a multiple of 60 s

    fn correlation(id: &str, min: u32) -> String {
        format!(
            "-- id: {id}\n-- title: {id}\n-- severity: high\n-- description: test\n-- mitre: T1110\n-- source: k8s_audit\n-- author: test\n-- based_on: vigil:test\n-- mode: correlation\n-- window: 1m\n\
             SELECT user_info.username AS username, count(*) AS denied, tumble_end(event_time, INTERVAL '1 minute') AS window_end \
             FROM k8s_audit WHERE response_status.code = 403 \
             GROUP BY user_info.username, tumble_end(event_time, INTERVAL '1 minute') HAVING count(*) >= {min}\n"
        )
    }

    fn per_event(id: &str, verb: &str) -> String {
        format!(
            "-- id: {id}\n-- title: {id}\n-- severity: low\n-- description: test\n-- mitre: T1609\n-- source: k8s_audit\n-- author: test\n-- based_on: vigil:test\n\
             SELECT user_info.username AS username FROM k8s_audit WHERE verb = '{verb}'\n"
        )
    }

    async fn engine(files: &[(&str, String)]) -> RuleEngine {
        let rules = files
            .iter()
            .map(|(id, text)| parse_rule(&PathBuf::from(format!("{id}.sql")), text).unwrap())
            .collect::<Vec<_>>();
        let settings = CorrelationSettings {
            allowed_lateness_ms: 0,
            ..Default::default()
        };
        RuleEngine::compile_with(rules, settings)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn event(n: u32, verb: &str, code: i32, secs: i64) -> RawMessage {
        let t = chrono::DateTime::from_timestamp(T0 + secs, 0)
            .unwrap()
            .to_rfc3339();
        let payload = json!({
            "kind": "Event", "auditID": format!("e{n}"), "stage": "ResponseComplete", "verb": verb,
            "user": {"username": "alice"}, "objectRef": {"resource": "pods", "namespace": "ns"},
            "responseStatus": {"code": code}, "requestReceivedTimestamp": t
        });
        RawMessage {
            source: SourceKind::K8sAudit,
            payload: payload.to_string().into_bytes(),
            origin: Origin::Kafka {
                topic: "audit".into(),
                partition: 0,
                offset: n as i64,
            },
            timestamp_ms: None,
            state_only: false,
        }
    }

    fn fired(alerts: &[crate::alert::Alert], rule: &str) -> Vec<i64> {
        alerts
            .iter()
            .filter(|a| a.rule_id == rule)
            .map(|a| a.fields["denied"].as_i64().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_swap_keeps_unchanged_correlation_state_and_starts_changed_rules_at_the_reload_point()
    {
        let old = engine(&[
            ("t.keep", correlation("t.keep", 3)),
            ("t.change", correlation("t.change", 3)),
        ])
        .await;
        let metrics = Arc::new(Metrics::default());
        let mut d = Detector::new(old, Default::default(), metrics.clone());
        // Window [0, 60): three refusals; 61 closes it: both rules emit it.
        let out = d
            .process(vec![
                event(1, "get", 403, 10),
                event(2, "get", 403, 11),
                event(3, "get", 403, 12),
            ])
            .await;
        assert!(out.alerts.is_empty());
        let out = d.process(vec![event(4, "get", 200, 61)]).await;
        assert_eq!(
            (fired(&out.alerts, "t.keep"), fired(&out.alerts, "t.change")),
            (vec![3], vec![3])
        );
        // Window [60, 120): two refusals before the reload.
        d.process(vec![event(5, "get", 403, 70), event(6, "get", 403, 71)])
            .await;

        // Reload: t.keep unchanged, t.change changed (threshold 2), a new per-event rule.
        let new = engine(&[
            ("t.keep", correlation("t.keep", 3)),
            ("t.change", correlation("t.change", 2)),
            ("t.delete", per_event("t.delete", "delete")),
        ])
        .await;
        d.swap_engine(new);
        assert_eq!(metrics.rule_reloads(true), 1);

        // One more refusal, a delete, then 125 closes [60, 120).
        let out = d
            .process(vec![event(7, "get", 403, 72), event(8, "delete", 200, 73)])
            .await;
        assert_eq!(
            out.alerts
                .iter()
                .filter(|a| a.rule_id == "t.delete")
                .count(),
            1,
            "the new rule runs"
        );
        let out = d.process(vec![event(9, "get", 200, 125)]).await;
        // t.keep counts the two refusals retained before the reload: its state was kept.
        assert_eq!(fired(&out.alerts, "t.keep"), vec![3]);
        // The changed rule is incremental: its aggregation state starts empty
        // at the reload, so [60, 120) holds only the refusal after it (1 < 2),
        // and it never re-emits [0, 60), which closed before the reload.
        assert!(
            fired(&out.alerts, "t.change").is_empty(),
            "{:?}",
            out.alerts
        );
        let rest = d.finish().await;
        assert!(
            fired(&rest.alerts, "t.keep").is_empty() && fired(&rest.alerts, "t.change").is_empty(),
            "{:?}",
            rest.alerts
        );
    }

    /// Wait for `cond`, polling; panics after a generous deadline (this is
    /// a liveness bound for a file-system watcher, not a speed assertion).
    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..600 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gave up waiting for {what}");
    }

    /// A list in an overlay: a malformed list keeps the running set; a
    /// valid change is swapped in between batches.
    #[tokio::test]
    async fn list_changes_in_an_overlay_reload_the_set() {
        let pack = tempfile::tempdir().unwrap();
        let site = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(pack.path().join("lists")).unwrap();
        std::fs::write(
            pack.path().join("lists/verbs.toml"),
            "[watched_verbs]\ndescription = \"verbs to report\"\nitems = [\"delete\"]\n",
        )
        .unwrap();
        std::fs::write(
            pack.path().join("r.sql"),
            per_event("t.r", "x").replace("verb = 'x'", "in_list(verb, 'watched_verbs')"),
        )
        .unwrap();
        let source = RuleSource {
            layers: Layers {
                overlays: vec![site.path().to_path_buf()],
                ..Layers::dir(pack.path())
            },
            correlation: Default::default(),
        };
        let metrics = Arc::new(Metrics::default());
        let mut reloads = spawn(source.clone(), metrics.clone()).unwrap();
        let mut d = Detector::new(
            source.load().await.unwrap(),
            Default::default(),
            metrics.clone(),
        );

        std::fs::create_dir_all(site.path().join("lists")).unwrap();
        let site_list = site.path().join("lists/site.toml");
        std::fs::write(&site_list, "[watched_verbs]\nappend = [\"patch\", \"\"]\n").unwrap();
        eventually("the reload failure", || metrics.rule_reloads(false) >= 1).await;
        assert!(
            reloads.try_recv().is_err(),
            "an invalid list must not be handed over"
        );

        std::fs::write(&site_list, "[watched_verbs]\nappend = [\"patch\"]\n").unwrap();
        let engine = tokio::time::timeout(Duration::from_secs(30), reloads.recv())
            .await
            .expect("a reload")
            .unwrap();
        let before = d.process(vec![event(1, "patch", 200, 1)]).await;
        assert!(
            before.alerts.is_empty(),
            "the running set does not watch patch"
        );
        d.swap_engine(engine);
        let after = d
            .process(vec![event(2, "patch", 200, 2), event(3, "delete", 200, 3)])
            .await;
        assert_eq!(
            after.alerts.len(),
            2,
            "the reloaded list watches patch and delete"
        );
    }

    #[tokio::test]
    async fn file_changes_reload_a_valid_set_and_keep_the_running_set_on_an_invalid_one() {
        let dir = tempfile::tempdir().unwrap();
        let rule_path = dir.path().join("r.sql");
        std::fs::write(&rule_path, per_event("t.r", "delete")).unwrap();
        let source = RuleSource {
            layers: Layers::dir(dir.path()),
            correlation: Default::default(),
        };
        let metrics = Arc::new(Metrics::default());
        let mut reloads = spawn(source.clone(), metrics.clone()).unwrap();

        // An invalid set: counted, logged, nothing handed over.
        std::fs::write(
            &rule_path,
            per_event("t.r", "delete").replace("FROM k8s_audit", "FROM nowhere"),
        )
        .unwrap();
        eventually("the reload failure", || metrics.rule_reloads(false) >= 1).await;
        assert!(
            reloads.try_recv().is_err(),
            "an invalid set must not be handed over"
        );

        // A valid changed set: handed over.
        std::fs::write(&rule_path, per_event("t.r", "patch")).unwrap();
        let engine = tokio::time::timeout(Duration::from_secs(30), reloads.recv())
            .await
            .expect("a reload")
            .unwrap();
        let mut d = Detector::new(
            source.load().await.unwrap(),
            Default::default(),
            metrics.clone(),
        );
        d.swap_engine(engine);
        let out = d
            .process(vec![event(1, "delete", 200, 1), event(2, "patch", 200, 2)])
            .await;
        let events: Vec<&str> = out
            .alerts
            .iter()
            .map(|a| a.events[0].event_id.as_str())
            .collect();
        assert_eq!(
            events,
            vec!["e2/ResponseComplete"],
            "the reloaded rule matches patch, not delete"
        );
    }

    #[test]
    fn only_rule_set_files_trigger_reloads() {
        let s = RuleSource {
            layers: Layers {
                exceptions: Some("conf/allow.yaml".into()),
                ..Layers::dir(Path::new("rules"))
            },
            correlation: Default::default(),
        };
        assert!(s.is_relevant(Path::new("/x/rules/k8s/a.sql")));
        assert!(s.is_relevant(Path::new("/x/rules/exceptions.toml")));
        assert!(s.is_relevant(Path::new("/x/site/lists/registries.toml")));
        assert!(s.is_relevant(Path::new("/x/site/lookups/owners.csv")));
        assert!(s.is_relevant(Path::new("/abs/conf/allow.yaml")));
        assert!(!s.is_relevant(Path::new("/x/rules/k8s/a.tests.jsonl")));
        assert!(!s.is_relevant(Path::new("/x/rules/k8s/.a.sql.swp")));
    }
}
