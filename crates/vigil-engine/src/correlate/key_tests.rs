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
