use std::path::{Path, PathBuf};

use super::*;
use crate::decode::{decode, DecodeLimits};
use crate::rules::parse_rule;
use crate::source::Origin;

const HEADER: &str = "-- id: t.rule\n-- title: T\n-- severity: low\n-- description: d\n-- mitre: T1609\n-- source: k8s_audit\n-- author: test\n-- based_on: vigil:test\n";

fn rule(sql: &str) -> Rule {
    rule_with_header(HEADER, sql)
}

fn rule_with_header(header: &str, sql: &str) -> Rule {
    parse_rule(&PathBuf::from("test.sql"), &format!("{header}{sql}")).unwrap()
}

async fn compile_err(sql: &str) -> String {
    match RuleEngine::compile(vec![rule(sql)]).await {
        Ok(_) => panic!("{sql} compiled"),
        Err(e) => e.to_string(),
    }
}

fn audit(lines: &[&str]) -> (DecodedBatch, Vec<RawMessage>) {
    audit_at(0, lines)
}

/// [`audit`], the messages at offsets from `first_offset` on.
fn audit_at(first_offset: i64, lines: &[&str]) -> (DecodedBatch, Vec<RawMessage>) {
    let messages: Vec<RawMessage> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| RawMessage {
            source: SourceKind::K8sAudit,
            payload: l.as_bytes().to_vec(),
            origin: Origin::Kafka {
                topic: "audit".into(),
                partition: 0,
                offset: first_offset + i as i64,
            },
            timestamp_ms: None,
            state_only: false,
        })
        .collect();
    (
        decode(
            SourceKind::K8sAudit,
            &messages,
            DecodeLimits::default(),
            crate::detect::now_ns(),
        ),
        messages,
    )
}

const GET_SECRET: &str = r#"{"kind":"Event","auditID":"id-1","stage":"ResponseComplete","verb":"get","user":{"username":"bob"},"objectRef":{"resource":"secrets","namespace":"ns","name":"s"},"requestReceivedTimestamp":"2024-01-01T00:00:00Z"}"#;
const LIST_PODS: &str =
    r#"{"kind":"Event","verb":"list","user":{"username":"carol"},"objectRef":{"resource":"pods"}}"#;

#[tokio::test]
async fn rejects_statements_that_are_not_a_select() {
    for sql in [
        "CREATE TABLE x (a INT)",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "COPY k8s_audit TO '/tmp/x.csv'",
        "INSERT INTO k8s_audit SELECT * FROM k8s_audit",
        "SET datafusion.execution.batch_size = 1",
        "DROP TABLE k8s_audit",
        "EXPLAIN SELECT verb FROM k8s_audit",
    ] {
        let e = compile_err(sql).await;
        assert!(
            e.contains("test.sql") && (e.contains("SELECT") || e.contains("syntax")),
            "{sql}: {e}"
        );
    }
    let e = compile_err("SELECT verb FROM k8s_audit; SELECT verb FROM k8s_audit").await;
    assert!(e.contains("exactly one SELECT"), "{e}");
}

#[tokio::test]
async fn rejects_reading_other_tables_files_or_functions() {
    let e = compile_err("SELECT rule FROM falco").await;
    assert!(e.contains("reads table \"falco\""), "{e}");
    let e = compile_err("SELECT * FROM '/etc/passwd'").await;
    assert!(e.contains("planning failed"), "{e}");
    let e = compile_err("SELECT * FROM generate_series(1, 3)").await;
    assert!(e.contains("reads table \"generate_series()\""), "{e}");
    let e = compile_err("SELECT 1").await;
    assert!(e.contains("reads no table"), "{e}");
}

#[tokio::test]
async fn rejects_grouping_in_event_rules_and_reports_lines() {
    let e = compile_err("SELECT verb, count(*) FROM k8s_audit GROUP BY verb").await;
    assert!(e.contains("cannot GROUP BY"), "{e}");
    // The header is 8 lines; the syntax error is on line 10 of the file.
    let e = compile_err("SELECT verb\nFROM k8s_audit WHERE verb = = 'get'").await;
    assert!(e.contains("test.sql:10:"), "{e}");
    let e = compile_err("SELECT no_such_column FROM k8s_audit").await;
    assert!(e.contains("no_such_column"), "{e}");
}

#[tokio::test]
async fn plans_once_and_evaluates_each_batch() {
    let mut engine = RuleEngine::compile(vec![rule(
        "SELECT user_info.username AS username, object_ref.name AS secret FROM k8s_audit WHERE object_ref.resource = 'secrets'",
    )])
    .await
    .unwrap();
    let (batch, messages) = audit(&[LIST_PODS, GET_SECRET]);
    let (alerts, failures) = engine.evaluate(&batch, &messages, 7).await;
    assert!(failures.is_empty());
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a.rule_id, "t.rule");
    assert_eq!(a.fields.get("username").unwrap(), "bob");
    assert_eq!(a.fields.get("secret").unwrap(), "s");
    assert!(!a.fields.contains_key("__row"));
    assert_eq!(a.events[0].event_id, "id-1/ResponseComplete");
    assert_eq!(
        a.events[0].origin,
        Origin::Kafka {
            topic: "audit".into(),
            partition: 0,
            offset: 1
        }
    );
    assert_eq!(a.event_time, "2024-01-01T00:00:00Z");

    // Same compiled plan, next batch: only the new batch's rows are seen.
    let (batch, messages) = audit(&[LIST_PODS, LIST_PODS, LIST_PODS]);
    let (alerts, _) = engine.evaluate(&batch, &messages, 8).await;
    assert!(alerts.is_empty());
    let (batch, messages) = audit(&[GET_SECRET, LIST_PODS, GET_SECRET]);
    let (alerts2, _) = engine.evaluate(&batch, &messages, 9).await;
    assert_eq!(alerts2.len(), 2);
    // Deterministic ids: same rule, same event -> same alert id, whenever detected.
    assert_eq!(alerts2[0].alert_id, a.alert_id);
    assert_eq!(alerts2[0].alert_id, alerts2[1].alert_id);
}

/// Shared conditions hold the columns they were computed on; once a batch
/// is done with, the engine must let go of them, or each batch stays in
/// memory while the next is decoded.
#[tokio::test]
async fn a_batch_done_with_is_let_go() {
    let mut engine = RuleEngine::compile(vec![rule(
        "SELECT object_ref.name AS name FROM k8s_audit WHERE verb = 'get' AND object_ref.resource = 'secrets'",
    )])
    .await
    .unwrap();
    let (batch, messages) = audit(&[LIST_PODS, GET_SECRET]);
    let verb = batch.batch.column_by_name("verb").unwrap().clone();
    let (alerts, failures) = engine.evaluate(&batch, &messages, 7).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    drop(batch);
    assert!(
        Arc::strong_count(&verb) > 1,
        "the shared condition on verb holds the column until the batch ends"
    );
    engine.end_batch();
    assert_eq!(
        Arc::strong_count(&verb),
        1,
        "only this test holds the column"
    );
}

/// Joins keep their build side in the plan node: re-executing the compiled
/// plan must not join the new batch against an earlier batch's rows.
#[tokio::test]
async fn joins_see_only_the_current_batch_on_every_execution() {
    let mut engine = RuleEngine::compile(vec![rule(
        "SELECT user_info.username AS username FROM k8s_audit WHERE object_ref.resource = 'secrets' \
         AND user_info.username IN (SELECT user_info.username FROM k8s_audit WHERE verb = 'list')",
    )])
    .await
    .unwrap();
    let bob_lists = LIST_PODS.replace("carol", "bob");
    // carol lists, bob reads a secret: bob did not list, no alert.
    let (batch, messages) = audit(&[LIST_PODS, GET_SECRET]);
    let (alerts, failures) = engine.evaluate(&batch, &messages, 1).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(alerts.is_empty(), "{alerts:?}");
    // Next batch: bob lists and reads a secret.
    let (batch, messages) = audit(&[&bob_lists, GET_SECRET]);
    let (alerts, _) = engine.evaluate(&batch, &messages, 2).await;
    assert_eq!(alerts.len(), 1, "the join must use this batch's build side");
    // And the batch after: carol's list from batch 1 is gone again.
    let (batch, messages) = audit(&[LIST_PODS, GET_SECRET]);
    let (alerts, _) = engine.evaluate(&batch, &messages, 3).await;
    assert!(alerts.is_empty(), "{alerts:?}");
}

#[tokio::test]
async fn select_star_hides_internal_columns_and_events_without_id_get_content_ids() {
    let mut engine = RuleEngine::compile(vec![rule("SELECT * FROM k8s_audit WHERE verb = 'list'")])
        .await
        .unwrap();
    let (batch, messages) = audit(&[LIST_PODS, GET_SECRET]);
    let (alerts, _) = engine.evaluate(&batch, &messages, 0).await;
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].fields.contains_key("verb"));
    assert!(!alerts[0].fields.contains_key("__row"));
    assert!(alerts[0].events[0].event_id.starts_with("sha256:"));
}

#[tokio::test]
async fn json_functions_are_available() {
    let pod = r#"{"kind":"Event","verb":"create","objectRef":{"resource":"pods"},"requestObject":{"spec":{"hostNetwork":true,"containers":[{"name":"a"},{"name":"b","securityContext":{"privileged":true}}]}}}"#;
    let mut engine = RuleEngine::compile(vec![rule(
        "SELECT json_get_bool(request_object, 'spec', 'hostNetwork') AS host_network, \
                json_path_values(request_object, '$.spec.containers[*].name') AS names \
         FROM k8s_audit \
         WHERE array_has(json_path_values(request_object, '$..securityContext.privileged'), 'true') \
           AND json_path_exists(request_object, '$.spec.containers[?@.name == \"b\"]')",
    )])
    .await
    .unwrap();
    let (batch, messages) = audit(&[pod, LIST_PODS]);
    let (alerts, failures) = engine.evaluate(&batch, &messages, 0).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].fields["host_network"], true);
    assert_eq!(alerts[0].fields["names"], serde_json::json!(["a", "b"]));
}

/// The JSONPath functions share parsed documents between the batches that
/// ask about them; the engine starts a new batch before evaluating one, so
/// a document a whole batch did not ask about is let go (kept, they
/// made memory grow with every distinct document of a long stream). The
/// evaluation runs on this thread (a current-thread test runtime), whose
/// cache is the one counted. Another test starting a batch meanwhile only
/// lets go sooner.
#[tokio::test]
async fn documents_no_batch_asks_about_any_more_are_let_go() {
    let pod = |name: &str| {
        format!(
            r#"{{"kind":"Event","verb":"create","objectRef":{{"resource":"pods"}},"requestObject":{{"spec":{{"containers":[{{"name":"{name}"}}]}}}}}}"#
        )
    };
    let mut engine = RuleEngine::compile(vec![rule(
        "SELECT verb FROM k8s_audit WHERE json_path_exists(request_object, '$.spec.containers[?@.name == \"b\"]')",
    )])
    .await
    .unwrap();
    for (name, alerts_expected) in [("a", 0), ("b", 1), ("b", 1)] {
        let (batch, messages) = audit(&[&pod(name)]);
        let (alerts, failures) = engine.evaluate(&batch, &messages, 0).await;
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(alerts.len(), alerts_expected);
    }
    assert_eq!(
        crate::functions::parsed::cached_documents(),
        1,
        "only the document the last batch asked about is held"
    );
}

#[tokio::test]
async fn a_rule_failing_at_run_time_is_reported_not_dropped() {
    let mut engine = RuleEngine::compile(vec![
        rule("SELECT verb FROM k8s_audit WHERE CAST(verb AS INT) = 1"),
        rule_with_header(
            &HEADER.replace("t.rule", "t.other"),
            "SELECT verb FROM k8s_audit WHERE verb = 'get'",
        ),
    ])
    .await
    .unwrap();
    let (batch, messages) = audit(&[GET_SECRET]);
    let (alerts, failures) = engine.evaluate(&batch, &messages, 0).await;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].rule_id, "t.rule");
    // The other rule still ran.
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].rule_id, "t.other");
}

/// `n` distinct audit events (distinct ids and URIs).
fn many_events(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"kind":"Event","auditID":"bulk-{i}","stage":"ResponseComplete","verb":"get","requestURI":"/api/v1/pods/p{i}","user":{{"username":"u{i}"}},"requestReceivedTimestamp":"2024-01-01T00:00:00Z"}}"#
            )
        })
        .collect()
}

#[tokio::test]
async fn a_rule_over_its_time_budget_is_cancelled_and_the_others_still_run() {
    // A triple self cross join: 300 events make 27 million candidate rows,
    // far beyond the budget; every row is filtered out, so the plan never
    // returns a batch on its own before it is cancelled.
    let slow = rule(
        "SELECT a.* FROM k8s_audit a CROSS JOIN k8s_audit b CROSS JOIN k8s_audit c \
         WHERE length(concat(a.request_uri, b.request_uri, c.request_uri)) < 0",
    );
    let fast = rule_with_header(
        &HEADER.replace("t.rule", "t.fast"),
        "SELECT verb FROM k8s_audit WHERE verb = 'get'",
    );
    let mut engine = RuleEngine::compile(vec![slow, fast]).await.unwrap();
    engine.set_time_budget(Duration::from_millis(50));
    let lines = many_events(300);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (batch, messages) = audit(&refs);
    let (alerts, failures) = engine.evaluate(&batch, &messages, 0).await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].rule_id, "t.rule");
    assert!(failures[0].timed_out);
    assert!(
        failures[0]
            .error
            .contains("exceeded its time budget of 50 ms"),
        "{}",
        failures[0].error
    );
    assert_eq!(alerts.len(), 300, "the other rule still ran on every event");
    assert!(alerts.iter().all(|a| a.rule_id == "t.fast"));

    // The budget is per evaluation: the next batch runs both rules afresh,
    // and a small batch fits the slow rule's budget.
    let (batch, messages) = audit(&[GET_SECRET, LIST_PODS]);
    let (alerts, failures) = engine.evaluate(&batch, &messages, 0).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(alerts.len(), 1);
}

#[tokio::test]
async fn a_failing_rule_is_not_reported_as_a_timeout() {
    let mut engine = RuleEngine::compile(vec![rule(
        "SELECT verb FROM k8s_audit WHERE CAST(verb AS INT) = 1",
    )])
    .await
    .unwrap();
    let (batch, messages) = audit(&[GET_SECRET]);
    let (_, failures) = engine.evaluate(&batch, &messages, 0).await;
    assert_eq!(failures.len(), 1);
    assert!(!failures[0].timed_out);
    assert!(
        !failures[0].error.contains("time budget"),
        "{}",
        failures[0].error
    );
}

#[tokio::test]
async fn a_join_rule_joins_each_batch_with_itself_not_with_the_first_batch() {
    // Join operators cache their build side inside the plan; the engine
    // must not carry it from one batch to the next.
    let join = rule(
        "SELECT a.* FROM k8s_audit a JOIN k8s_audit b ON a.audit_id = b.audit_id \
         WHERE a.stage = 'ResponseComplete' AND b.verb = 'get'",
    );
    let mut engine = RuleEngine::compile(vec![join]).await.unwrap();
    let first = many_events(3);
    let (batch, messages) = audit(&first.iter().map(String::as_str).collect::<Vec<_>>());
    let (alerts, failures) = engine.evaluate(&batch, &messages, 0).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(alerts.len(), 3);
    let (batch, messages) = audit(&[GET_SECRET]);
    let (alerts, failures) = engine.evaluate(&batch, &messages, 0).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        alerts.len(),
        1,
        "the second batch's event joins with itself"
    );
    assert_eq!(alerts[0].events[0].event_id, "id-1/ResponseComplete");
}

/// A per-event rule that folds pod creations per namespace for ten minutes.
fn folding_rule() -> Rule {
    let header = HEADER.replace(
        "-- author: test\n",
        "-- author: test\n-- suppress: 10m\n-- suppress_key: namespace\n",
    );
    rule_with_header(
        &header,
        "SELECT object_ref.namespace AS namespace, object_ref.name AS name FROM k8s_audit WHERE verb = 'create'",
    )
}

/// The creation of pod `p<i>` in `ns`, `minute` minutes into 2024.
fn create(i: u32, ns: &str, minute: u32) -> String {
    format!(
        r#"{{"kind":"Event","auditID":"c{i}","stage":"ResponseComplete","verb":"create","objectRef":{{"resource":"pods","namespace":"{ns}","name":"p{i}"}},"requestReceivedTimestamp":"2024-01-01T00:{minute:02}:00Z"}}"#
    )
}

/// A per-event rule with `-- suppress`: the first alert of a key at once,
/// the rest of the period folded into a summary that names their events;
/// another key is not folded with it.
#[tokio::test]
async fn a_suppressed_event_rule_folds_repeats_into_a_summary() {
    let r = folding_rule();
    let mut engine = RuleEngine::compile(vec![r]).await.unwrap();
    let first = [
        create(1, "web", 0),
        create(2, "web", 1),
        create(3, "api", 1),
    ];
    let (batch, messages) = audit(&first.iter().map(String::as_str).collect::<Vec<_>>());
    let (alerts, failures) = engine.evaluate(&batch, &messages, 0).await;
    assert!(failures.is_empty(), "{failures:?}");
    let names: Vec<&str> = alerts
        .iter()
        .map(|a| a.fields["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["p1", "p3"], "p2 is folded into web's period");

    // A later batch past web's period: its summary comes out, naming p2.
    let later = [create(4, "web", 3), create(5, "db", 12)];
    let (batch, messages) = audit(&later.iter().map(String::as_str).collect::<Vec<_>>());
    let (alerts, _) = engine.evaluate(&batch, &messages, 0).await;
    let summaries: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.suppressed_count.is_some())
        .collect();
    assert_eq!(summaries.len(), 1, "{alerts:?}");
    assert_eq!(summaries[0].suppressed_count, Some(2), "p2 and p4");
    let named: Vec<&str> = summaries[0]
        .events
        .iter()
        .map(|e| e.event_id.as_str())
        .collect();
    assert_eq!(named, ["c2/ResponseComplete", "c4/ResponseComplete"]);
    assert!(alerts
        .iter()
        .any(|a| a.fields["name"] == "p5" && a.suppressed_count.is_none()));
    assert!(engine.finish_folds().is_empty(), "nothing else was folded");
}

/// Open suppression periods hold the commit offset at their first event,
/// and re-reading from there rebuilds them: the summary an uninterrupted
/// run emits comes out after a restart too, and no first alert again.
#[tokio::test]
async fn a_restart_rebuilds_suppression_periods_from_the_held_offsets() {
    let r = folding_rule();
    let first: Vec<String> = vec![create(1, "web", 0), create(2, "web", 1)];
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let later = create(3, "db", 30);
    let (first_batch, first_messages) = audit_at(10, &first);
    let (later_batch, later_messages) = audit_at(12, &[later.as_str()]);

    let mut uninterrupted = RuleEngine::compile(vec![r.clone()]).await.unwrap();
    uninterrupted
        .evaluate(&first_batch, &first_messages, 0)
        .await;
    assert_eq!(
        uninterrupted.retained_offsets(),
        [(("audit".to_string(), 0), 10)].into(),
        "web's open period holds the offset of its first event"
    );
    let (expected, _) = uninterrupted
        .evaluate(&later_batch, &later_messages, 0)
        .await;
    assert!(
        expected.iter().any(|a| a.suppressed_count == Some(1)),
        "{expected:?}"
    );
    assert_eq!(
        uninterrupted.retained_offsets(),
        [(("audit".to_string(), 0), 12)].into(),
        "only db's period is open"
    );

    let mut restarted = RuleEngine::compile(vec![r.clone()]).await.unwrap();
    restarted.rebuild_folds(&first_batch, &first_messages).await;
    assert_eq!(
        restarted.retained_offsets(),
        [(("audit".to_string(), 0), 10)].into()
    );
    let (got, _) = restarted.evaluate(&later_batch, &later_messages, 0).await;
    let ids = |a: &[Alert]| a.iter().map(|a| a.alert_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&got), ids(&expected));

    // Without the rebuild, the summary is lost.
    let mut forgetful = RuleEngine::compile(vec![r]).await.unwrap();
    let (lost, _) = forgetful.evaluate(&later_batch, &later_messages, 0).await;
    assert!(lost.iter().all(|a| a.suppressed_count.is_none()));
}

#[test]
fn a_replay_of_one_source_keeps_the_rules_that_name_its_table() {
    let with = |id: &str, source: &str, sql: &str| {
        let header = HEADER
            .replace("t.rule", id)
            .replace("source: k8s_audit", &format!("source: {source}"));
        rule_with_header(&header, sql)
    };
    let rules = vec![
        with("falco.only", "falco", "SELECT rule FROM falco\n"),
        with(
            "audit.join",
            "k8s_audit",
            "SELECT a.verb FROM k8s_audit a JOIN falco f ON a.verb = f.rule\n",
        ),
        with(
            "tetragon.only",
            "tetragon",
            "SELECT 1 AS one FROM tetragon\n",
        ),
        with(
            "audit.subquery",
            "k8s_audit",
            "SELECT verb FROM k8s_audit WHERE EXISTS (SELECT 1 FROM tetragon)\n",
        ),
        with(
            "audit.macro_subquery",
            "k8s_audit",
            "SELECT verb FROM k8s_audit WHERE tetragon_saw_it()\n",
        ),
        with("broken", "tetragon", "SELEC nothing\n"),
    ];
    // A table named only in a macro's body is read too.
    let mut definitions = Definitions::default();
    let body = "-- macro: tetragon_saw_it\n-- description: d\nEXISTS (SELECT 1 FROM tetragon)\n";
    let m = crate::rules::definitions::macros::parse_macro(Path::new("m.sql"), body).unwrap();
    definitions.macros.insert(m.name.clone(), m);
    let ids = |source: SourceKind| {
        rules_reading(rules.clone(), &definitions, source)
            .into_iter()
            .map(|r| r.meta.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(SourceKind::Falco),
        ["falco.only", "audit.join", "broken"]
    );
    assert_eq!(
        ids(SourceKind::K8sAudit),
        [
            "audit.join",
            "audit.subquery",
            "audit.macro_subquery",
            "broken"
        ]
    );
    assert_eq!(
        ids(SourceKind::Tetragon),
        [
            "tetragon.only",
            "audit.subquery",
            "audit.macro_subquery",
            "broken"
        ]
    );
}

/// The shipped pack's rule set.
fn shipped_rule_set() -> RuleSet {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sql-rules");
    crate::rules::RulePack::load_dir(&dir).unwrap().rule_set()
}

/// The logical plan of every per-event rule of `set`, planned in `state`,
/// by rule id.
async fn per_event_logical_plans(
    state: &datafusion::execution::SessionState,
    set: &RuleSet,
) -> Vec<(String, LogicalPlan)> {
    let is_function = |name: &str| is_known_function(state, name);
    let expander = Expander::new(&set.definitions, &is_function);
    let mut plans = Vec::new();
    for rule in set
        .rules
        .iter()
        .filter(|r| r.meta.mode != RuleMode::Correlation)
    {
        let statement = checked_statement(rule, &expander).unwrap();
        let logical = state
            .statement_to_plan(DFStatement::Statement(Box::new(statement)))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", rule.meta.id));
        plans.push((rule.meta.id.to_string(), logical));
    }
    plans
}

/// The parse that chose a rule for a replay's source is the one its
/// compilation takes; taken, it is not kept.
#[test]
fn a_rule_chosen_by_its_query_is_compiled_from_that_parse() {
    let kept = rules_reading(
        vec![
            rule("SELECT verb FROM k8s_audit WHERE verb = 'get'"),
            rule("SELEC verb FROM k8s_audit"),
        ],
        &Definitions::default(),
        SourceKind::K8sAudit,
    );
    assert_eq!(
        kept.len(),
        2,
        "a rule that does not parse is kept, to be reported"
    );
    let left = |r: &Rule| r.parsed.lock().unwrap().clone();
    let copy = kept[0].clone();
    let chosen = left(&copy).expect("the choice left its parse").unwrap();
    assert_eq!(unexpanded_query(&kept[0]).unwrap(), chosen);
    assert!(
        left(&copy).is_none(),
        "taken, by the rule or any clone of it"
    );
    // Parsed anew when nothing is left.
    assert_eq!(unexpanded_query(&copy).unwrap(), chosen);

    let error = left(&kept[1])
        .expect("a syntax error is left too")
        .unwrap_err();
    assert!(error.message.contains("SQL syntax error"), "{error}");
    assert_eq!(unexpanded_query(&kept[1]).unwrap_err(), error);
}

/// The definitions of one layer holding `files` (paths relative to it).
fn definitions_of(files: &[(&str, &str)]) -> Definitions {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let mut definitions = Definitions::default();
    definitions.apply_layer(dir.path()).unwrap();
    definitions
}

/// Macros without parameters and list tests are expanded once and cloned
/// at each further call: every rule of the shipped pack (correlation rules
/// included) gets the statement, and the set the names it used, that an
/// expansion made anew at every call gives, with each list test written
/// out and parsed with its value's text. Each value tested against a list
/// stays its own where the same list is tested again.
#[tokio::test]
async fn cached_expansions_give_every_rule_the_statement_expanded_anew() {
    let set = shipped_rule_set();
    let ctx = new_session_with(PlanOptions::default());
    let state = ctx.state();
    let is_function = |name: &str| is_known_function(&state, name);
    let cached = Expander::new(&set.definitions, &is_function);
    let anew = Expander::without_cache(&set.definitions, &is_function);
    let mut list_tests = 0;
    for rule in &set.rules {
        let expanded = |expander| single_query(rule, expander).unwrap().to_string();
        let (a, b) = (expanded(&cached), expanded(&anew));
        assert_eq!(a, b, "{}", rule.meta.id);
        list_tests += a.matches(") IN ('").count() + a.matches("glob_match").count();
    }
    // Lists are tested again and again: the cached expansions are used.
    assert!(list_tests > 2 * set.definitions.lists.len(), "{list_tests}");
    assert_eq!(cached.unused(), anew.unused());

    let defs = definitions_of(&[
        (
            "lists/l.toml",
            "[names]\ndescription = \"d\"\nitems = [\"a\", \"b\"]\n",
        ),
        (
            "macros/m.sql",
            "-- macro: named\n-- description: d\nin_list(object_ref.name, 'names')\n",
        ),
    ]);
    let expander = Expander::new(&defs, &is_function);
    let twice = rule(
        "SELECT verb FROM k8s_audit WHERE in_list(verb, 'names') AND named() \
         AND in_list(user_info.username, 'names') AND named()",
    );
    let text = single_query(&twice, &expander).unwrap().to_string();
    for value in ["verb", "user_info.username", "object_ref.name"] {
        assert!(
            text.contains(&format!("({value}) IN ('a', 'b')")),
            "{value}: {text}"
        );
    }
    assert_eq!(text.matches("(object_ref.name) IN").count(), 2, "{text}");
    assert!(
        !text.contains(super::super::definitions::expand::LIST_VALUE),
        "{text}"
    );
}

/// Every per-event rule of the shipped pack, planned with one pass of
/// DataFusion's logical optimizer, gets the physical plan three passes give
/// (aliases of common subexpressions aside): a second pass would change
/// nothing (`PlanOptions::optimizer_passes`; the correlation rules'
/// counterpart is in `correlate::compile`).
#[tokio::test]
async fn one_optimizer_pass_plans_the_per_event_rules_as_three_do() {
    let set = shipped_rule_set();
    let plans = |passes: usize| {
        let set = &set;
        async move {
            let options = PlanOptions {
                optimizer_passes: passes,
                ..PlanOptions::default()
            };
            let (ctx, _) = session(options, &set.definitions);
            let state = ctx.state();
            let mut plans = Vec::new();
            for (id, logical) in per_event_logical_plans(&state, set).await {
                let physical = state.create_physical_plan(&logical).await.unwrap();
                plans.push((id, crate::rules::engine::plan_text(physical.as_ref())));
            }
            plans
        }
    };
    let (one, three) = (plans(1).await, plans(3).await);
    assert!(one.len() > 50, "{} rules", one.len());
    crate::rules::engine::assert_same_plans(&one, &three);
}

/// Every per-event rule of the shipped pack gets from [`PhysicalPlanner`]
/// the physical plan all of DataFusion's physical optimizer rules give, and
/// most take the filter-and-projection path; a plan with an aggregate gets
/// every rule.
#[tokio::test]
async fn the_physical_planner_plans_the_per_event_rules_as_every_optimizer_rule_does() {
    use crate::rules::physical_plan::{is_filter_and_projection, PhysicalPlanner};
    let set = shipped_rule_set();
    let (ctx, _) = session(PlanOptions::default(), &set.definitions);
    let state = ctx.state();
    let planner = PhysicalPlanner::new(&state);
    let (mut full, mut planned, mut simple) = (Vec::new(), Vec::new(), 0);
    for (id, logical) in per_event_logical_plans(&state, &set).await {
        let every_rule = state.create_physical_plan(&logical).await.unwrap();
        full.push((
            id.clone(),
            crate::rules::engine::plan_text(every_rule.as_ref()),
        ));
        let physical = planner.plan(&logical).await.unwrap();
        planned.push((id, crate::rules::engine::plan_text(physical.as_ref())));
        let initial = planner.initial_plan(&logical).await.unwrap();
        simple += usize::from(is_filter_and_projection(&initial));
    }
    assert!(simple > 50, "{simple} of {} rules", full.len());
    crate::rules::engine::assert_same_plans(&planned, &full);

    let aggregate = state
        .create_logical_plan("SELECT verb, count(*) FROM k8s_audit GROUP BY verb")
        .await
        .unwrap();
    let initial = planner.initial_plan(&aggregate).await.unwrap();
    assert!(!is_filter_and_projection(&initial));
}

#[test]
fn sessions_planned_alike_share_one_configuration() {
    let options = |s: &SessionContext| s.state().config().options().clone();
    let per_event = new_session();
    let correlation = new_session_with(PlanOptions::default());
    assert!(Arc::ptr_eq(&options(&per_event), &options(&correlation)));
    let other = new_session_with(PlanOptions::DATAFUSION_DEFAULTS);
    assert!(!Arc::ptr_eq(&options(&per_event), &options(&other)));
    assert_eq!(other.state().config().options().optimizer.max_passes, 3);
}

/// A rule of thousands of alternatives (a Sigma rule's value list, say) is
/// a tree as deep as it is long. Planning it recurses once per level:
/// on the test thread's 2 MiB stack it must plan and match, not overflow.
#[tokio::test]
async fn a_rule_of_thousands_of_alternatives_plans_and_matches() {
    let alternatives: Vec<String> = (0..3000)
        .map(|i| match i % 2 {
            0 => format!("object_ref.name = 'n{i}'"),
            _ => format!("object_ref.namespace LIKE 'ns{i}-%'"),
        })
        .chain(["object_ref.name = 's'".to_string()])
        .collect();
    let sql = format!(
        "SELECT object_ref.name AS secret FROM k8s_audit WHERE {}",
        alternatives.join(" OR ")
    );
    let mut engine = RuleEngine::compile(vec![rule(&sql)]).await.unwrap();
    let (batch, messages) = audit(&[LIST_PODS, GET_SECRET]);
    let (alerts, failures) = engine.evaluate(&batch, &messages, 7).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].fields.get("secret").unwrap(), "s");
}
