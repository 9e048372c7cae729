//! Correlation keys: derived from each rule shape, coarser where part of a
//! key cannot be traced, declared where none can, and refused where a node
//! combines rows of different keys.

use std::path::PathBuf;

use super::tests::{header, SEQUENCE, THRESHOLD};
use crate::rules::{parse_rule, RuleEngine};

/// The key `rules validate` prints for a rule, or the compile error.
async fn key_of(sql: &str, extra: &str) -> Result<String, String> {
    let rule = parse_rule(
        &PathBuf::from("t.sql"),
        &format!(
            "{}{extra}{sql}",
            header("t.key", "k8s_audit", "-- window: 10m\n")
        ),
    )
    .map_err(|e| format!("{e:?}"))?;
    let engine = RuleEngine::compile(vec![rule])
        .await
        .map_err(|e| e.to_string())?;
    Ok(engine.correlator().keys()[0].1.to_string())
}

const USERNAME: &str = "k8s_audit: user_info.username";

#[tokio::test]
async fn a_grouping_keys_by_its_groups_without_the_window() {
    assert_eq!(key_of(THRESHOLD, "").await.unwrap(), USERNAME);
}

#[tokio::test]
async fn a_sequence_keys_by_its_join_equality() {
    assert_eq!(key_of(SEQUENCE, "").await.unwrap(), USERNAME);
}

#[tokio::test]
async fn a_cross_source_join_keys_each_table_by_its_side() {
    let sql = "SELECT e.object_ref.name AS pod, r.event_type AS what, e.event_time AS window_end \
       FROM k8s_audit e JOIN tetragon r \
         ON r.process.pod.namespace = e.object_ref.namespace AND r.process.pod.name = e.object_ref.name \
        AND r.event_time >= e.event_time AND r.event_time <= e.event_time + INTERVAL '2 minutes'";
    assert_eq!(
        key_of(sql, "").await.unwrap(),
        "k8s_audit: object_ref.namespace, object_ref.name; tetragon: process.pod.namespace, process.pod.name"
    );
}

#[tokio::test]
async fn a_window_function_keys_by_its_partition_and_an_unnested_part_is_left_out() {
    let sql = "SELECT username, n, window_end FROM ( \
       SELECT *, user_info.username AS username, event_time AS window_end, \
              count(*) OVER (PARTITION BY user_info.username, group_name ORDER BY event_time \
                             RANGE BETWEEN INTERVAL '60 seconds' PRECEDING AND CURRENT ROW) AS n \
       FROM (SELECT *, unnest(user_info.groups) AS group_name FROM k8s_audit) g) s WHERE n >= 3";
    assert_eq!(key_of(sql, "").await.unwrap(), USERNAME);
}

#[tokio::test]
async fn a_rule_without_a_key_is_refused_unless_it_declares_one() {
    // A cluster-wide count: every event meets every other.
    let global =
        "SELECT count(*) AS denied, tumble_end(event_time, INTERVAL '1 minute') AS window_end \
       FROM k8s_audit WHERE response_status.code = 403 \
       GROUP BY tumble_end(event_time, INTERVAL '1 minute') HAVING count(*) >= 100";
    let e = key_of(global, "").await.unwrap_err();
    assert!(
        e.contains("the rule has no correlation key") && e.contains("-- key:"),
        "{e}"
    );
    assert_eq!(
        key_of(
            global,
            "-- key: k8s_audit: object_ref.namespace, coalesce(verb, 'x')\n"
        )
        .await
        .unwrap(),
        "k8s_audit: object_ref.namespace, coalesce(verb, 'x')"
    );
    let e = key_of(global, "-- key: dns: query\n").await.unwrap_err();
    assert!(e.contains("invalid -- key: unknown source \"dns\""), "{e}");
    let e = key_of(global, "-- key: k8s_audit: no_such_column\n")
        .await
        .unwrap_err();
    assert!(e.contains("invalid -- key: no_such_column"), "{e}");
}

#[tokio::test]
async fn a_self_join_on_different_columns_has_no_key() {
    // Who reads a secret named like a user: an event's key would differ
    // by the side it plays.
    let sql = "SELECT a.user_info.username AS username, b.event_time AS window_end \
       FROM k8s_audit a JOIN k8s_audit b ON a.user_info.username = b.object_ref.name \
        AND b.event_time > a.event_time AND b.event_time <= a.event_time + INTERVAL '10 minutes'";
    let e = key_of(sql, "").await.unwrap_err();
    assert!(
        e.contains("the two sides of its join on k8s_audit take different keys"),
        "{e}"
    );
}

#[tokio::test]
async fn a_grouping_over_a_join_on_other_keys_is_refused() {
    // Joined by user, then counted per namespace across users.
    let sql = "SELECT b.object_ref.namespace AS namespace, count(*) AS n, max(b.event_time) AS window_end \
       FROM k8s_audit a JOIN k8s_audit b ON a.user_info.username = b.user_info.username \
        AND b.event_time > a.event_time AND b.event_time <= a.event_time + INTERVAL '10 minutes' \
       GROUP BY b.object_ref.namespace, tumble_end(b.event_time, INTERVAL '5 minutes')";
    let e = key_of(sql, "").await.unwrap_err();
    assert!(e.contains("combines rows of different keys"), "{e}");
}

/// One decoded batch of `source` from JSON lines.
fn batch(
    source: crate::source::SourceKind,
    lines: &[&str],
) -> datafusion::arrow::record_batch::RecordBatch {
    use crate::source::{Origin, RawMessage};
    let messages: Vec<RawMessage> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| RawMessage {
            source,
            payload: l.as_bytes().to_vec(),
            origin: Origin::File {
                path: "t".into(),
                line: i as u64 + 1,
            },
            timestamp_ms: None,
            state_only: false,
        })
        .collect();
    let decoded = crate::decode::decode(
        source,
        &messages,
        crate::decode::DecodeLimits::default(),
        crate::detect::now_ns(),
    );
    assert!(decoded.failures.is_empty(), "{:?}", decoded.failures);
    decoded.batch
}

#[tokio::test]
async fn both_tables_of_a_cross_source_rule_encode_one_pod_to_the_same_key_bytes() {
    use crate::source::SourceKind;
    let sql = "SELECT e.object_ref.name AS pod, e.event_time AS window_end \
       FROM k8s_audit e JOIN tetragon r \
         ON r.process.pod.namespace = e.object_ref.namespace AND r.process.pod.name = e.object_ref.name \
        AND r.event_time >= e.event_time AND r.event_time <= e.event_time + INTERVAL '2 minutes'";
    let rule = parse_rule(
        &PathBuf::from("t.sql"),
        &format!("{}{sql}", header("t.key", "k8s_audit", "-- window: 10m\n")),
    )
    .unwrap();
    let engine = RuleEngine::compile(vec![rule]).await.unwrap();
    let key = engine.correlator().keys()[0].1.clone();
    let audit = |ns: &str, pod: &str| {
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"{ns}{pod}","stage":"ResponseComplete","verb":"create","user":{{"username":"u"}},"objectRef":{{"resource":"pods","subresource":"exec","namespace":"{ns}","name":"{pod}"}},"responseStatus":{{"code":101}},"requestReceivedTimestamp":"2025-06-01T00:00:00Z"}}"#
        )
    };
    let tetragon = |ns: &str, pod: &str| {
        format!(
            r#"{{"process_exec":{{"process":{{"exec_id":"x","pid":1,"binary":"/bin/sh","pod":{{"namespace":"{ns}","name":"{pod}"}}}}}},"node_name":"n","time":"2025-06-01T00:00:01Z"}}"#
        )
    };
    let audit_keys = key
        .encoder(SourceKind::K8sAudit)
        .unwrap()
        .unwrap()
        .encode(&batch(
            SourceKind::K8sAudit,
            &[
                &audit("prod", "web"),
                &audit("prod", "db"),
                &audit("prodw", "eb"),
            ],
        ))
        .unwrap();
    let runtime_keys = key
        .encoder(SourceKind::Tetragon)
        .unwrap()
        .unwrap()
        .encode(&batch(SourceKind::Tetragon, &[&tetragon("prod", "web")]))
        .unwrap();
    assert_eq!(
        audit_keys[0], runtime_keys[0],
        "the same pod, from either table"
    );
    assert_ne!(audit_keys[0], audit_keys[1], "another pod");
    assert_ne!(
        audit_keys[0], audit_keys[2],
        "values are delimited: prod/web is not prodw/eb"
    );
    assert!(key.encoder(SourceKind::Falco).unwrap().is_none());
}

/// Every shipped correlation rule has a key (covering every table it
/// reads: checked at compile), and it encodes a row of each (the
/// registry's example event).
#[tokio::test]
async fn every_shipped_correlation_rule_keys_every_table_it_reads() {
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sql-rules");
    let engine = RuleEngine::compile(crate::rules::RulePack::load_dir(&rules).unwrap().rule_set())
        .await
        .unwrap();
    let keys = engine.correlator().keys();
    assert!(keys.len() >= 10, "{} correlation rules", keys.len());
    for (id, key) in keys {
        for (source, exprs) in &key.per_source {
            let example = vigil_sources::registry::expect(*source).example;
            let encoded = key
                .encoder(*source)
                .unwrap()
                .unwrap()
                .encode(&batch(*source, &[example]))
                .unwrap_or_else(|e| panic!("{id} on {source}: {e}"));
            assert_eq!(encoded.len(), 1);
            assert!(!exprs.is_empty(), "{id}");
        }
    }
}
