//! Lists, macros, lookup tables and overlays, end to end: files in layer
//! directories, loaded, compiled and evaluated over audit events.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::detect::Detector;
use crate::observe::NoMetrics;
use crate::rules::{load_rule_set, Layers, RulePack, Severity};
use crate::source::{Origin, RawMessage, SourceKind};

/// A layer directory with the given files (paths relative to it).
fn layer(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = d.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    d
}

fn rule(id: &str, select: &str) -> String {
    format!("-- id: {id}\n-- title: t\n-- severity: medium\n-- description: t\n-- mitre: T1609\n-- source: k8s_audit\n-- author: test\n-- based_on: vigil:test\n{select}\n")
}

const USERS: &str = r#"[trusted_users]
description = "users that may exec"
items = ["alice", "ci-*"]

[cluster_networks]
description = "node and pod networks"
items = ["10.0.0.0/8", "192.168.0.0/16"]
"#;

const SUCCEEDED: &str = "-- macro: succeeded\n-- description: the request was not refused\nCOALESCE(response_status.code, 200) < 400\n";

const EXEC: &str = "-- macro: exec_by\n-- description: an exec by the user\n-- params: who\nobject_ref.subresource = 'exec' AND user_info.username = who AND succeeded()\n";

fn event(n: usize, user: &str, ip: &str, code: i32) -> RawMessage {
    let text = format!(
        r#"{{"kind":"Event","auditID":"a{n}","stage":"ResponseComplete","verb":"create","user":{{"username":"{user}"}},"sourceIPs":["{ip}"],"objectRef":{{"resource":"pods","subresource":"exec","namespace":"prod","name":"p"}},"responseStatus":{{"code":{code}}},"requestReceivedTimestamp":"2024-05-01T10:00:0{n}Z"}}"#
    );
    RawMessage {
        source: SourceKind::K8sAudit,
        payload: text.into_bytes(),
        origin: Origin::File {
            path: "x".into(),
            line: n as u64,
        },
        timestamp_ms: None,
        state_only: false,
    }
}

/// The (rule, user) of every alert the layers' rules raise on the events.
async fn alerts(layers: &Layers, events: Vec<RawMessage>) -> Vec<(String, String)> {
    let engine = load_rule_set(layers, Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut detector = Detector::new(engine, Default::default(), Arc::new(NoMetrics));
    let mut out = detector.process(events).await.alerts;
    out.extend(detector.finish().await.alerts);
    let mut found: Vec<(String, String)> = out
        .iter()
        .map(|a| {
            (
                a.rule_id.clone(),
                a.fields["username"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    found.sort();
    found
}

async fn load_error(layers: &Layers) -> String {
    match load_rule_set(layers, Default::default()).await {
        Ok(_) => panic!("the set loaded"),
        Err(e) => e.to_string(),
    }
}

fn dir_layers(d: &tempfile::TempDir) -> Layers {
    Layers::dir(d.path())
}

fn file(d: &tempfile::TempDir, rel: &str) -> PathBuf {
    d.path().join(rel)
}

#[tokio::test]
async fn lists_macros_and_lookups_are_used_by_name() {
    let d = layer(&[
        ("lists/users.toml", USERS),
        ("macros/succeeded.sql", SUCCEEDED),
        ("macros/exec_by.sql", EXEC),
        ("lookups/owners.csv", "username,team\nbob,payments\n"),
        (
            "k8s/untrusted_exec.sql",
            &rule(
                "t.untrusted_exec",
                "SELECT user_info.username AS username, lookup('owners', 'team', user_info.username) AS team FROM k8s_audit \
                 WHERE object_ref.subresource = 'exec' AND succeeded() AND NOT in_list(user_info.username, 'trusted_users')",
            ),
        ),
        (
            "k8s/exec_by_bob.sql",
            &rule("t.exec_by_bob", "SELECT user_info.username AS username FROM k8s_audit WHERE exec_by('bob')"),
        ),
        (
            "k8s/off_network.sql",
            &rule(
                "t.off_network",
                "SELECT user_info.username AS username FROM k8s_audit \
                 WHERE NOT cidr_contains(list('cluster_networks'), source_ips[1]) AND ip_is_public(source_ips[1])",
            ),
        ),
    ]);
    let events = vec![
        event(1, "alice", "10.1.1.1", 201),
        event(2, "ci-runner-7", "10.1.1.2", 201),
        event(3, "bob", "203.0.113.9", 201),
        event(4, "bob", "8.8.8.8", 403),
        event(5, "mallory", "192.168.3.3", 201),
    ];
    let found = alerts(&dir_layers(&d), events).await;
    let expect = |r: &str, u: &str| (r.to_string(), u.to_string());
    assert_eq!(
        found,
        vec![
            expect("t.exec_by_bob", "bob"),
            // 8.8.8.8 is public and outside the list; 203.0.113.9 is
            // documentation space, so not public
            expect("t.off_network", "bob"),
            expect("t.untrusted_exec", "bob"),
            expect("t.untrusted_exec", "mallory"),
        ]
    );
}

#[tokio::test]
async fn a_lookup_gives_the_value_of_the_key_or_null() {
    let d = layer(&[
        ("lookups/owners.csv", "username,team\nbob,payments\n"),
        (
            "r.sql",
            &rule(
                "t.r",
                "SELECT user_info.username AS username, lookup('owners', 'team', user_info.username) AS team FROM k8s_audit",
            ),
        ),
    ]);
    let engine = load_rule_set(&dir_layers(&d), Default::default())
        .await
        .unwrap();
    let mut detector = Detector::new(engine, Default::default(), Arc::new(NoMetrics));
    let out = detector
        .process(vec![
            event(1, "bob", "10.0.0.1", 200),
            event(2, "eve", "10.0.0.1", 200),
        ])
        .await
        .alerts;
    let teams: Vec<(String, serde_json::Value)> = out
        .iter()
        .map(|a| {
            (
                a.fields["username"].as_str().unwrap().to_string(),
                a.fields["team"].clone(),
            )
        })
        .collect();
    assert_eq!(
        teams,
        vec![
            ("bob".into(), serde_json::json!("payments")),
            ("eve".into(), serde_json::Value::Null)
        ]
    );
}

#[tokio::test]
async fn unknown_names_are_refused_at_the_line_that_uses_them() {
    let text = rule(
        "t.r",
        "SELECT verb FROM k8s_audit\nWHERE in_list(verb, 'nope')",
    );
    let d = layer(&[("r.sql", &text)]);
    let err = load_error(&dir_layers(&d)).await;
    assert!(
        err.contains(&format!(
            "{}:10: unknown list \"nope\"",
            file(&d, "r.sql").display()
        )),
        "{err}"
    );

    let text = rule("t.r", "SELECT verb FROM k8s_audit\nWHERE is_admin(verb)");
    let d = layer(&[("r.sql", &text)]);
    let err = load_error(&dir_layers(&d)).await;
    assert!(
        err.contains(&format!(
            "{}:10: unknown function or macro \"is_admin\"",
            file(&d, "r.sql").display()
        )),
        "{err}"
    );

    let text = rule(
        "t.r",
        "SELECT lookup('owners', 'team', verb) AS t FROM k8s_audit",
    );
    let d = layer(&[
        ("lookups/owners.csv", "username,team\nbob,payments\n"),
        ("r.sql", &text),
    ]);
    let ok = load_rule_set(&dir_layers(&d), Default::default()).await;
    assert!(ok.is_ok());
    let text = rule(
        "t.r",
        "SELECT lookup('owners', 'channel', verb) AS t FROM k8s_audit",
    );
    let d = layer(&[
        ("lookups/owners.csv", "username,team\nbob,payments\n"),
        ("r.sql", &text),
    ]);
    let err = load_error(&dir_layers(&d)).await;
    assert!(
        err.contains("lookup table \"owners\" has no value column \"channel\" (its columns: team)"),
        "{err}"
    );

    let text = rule("t.r", "SELECT verb FROM k8s_audit WHERE exec_by()");
    let d = layer(&[
        ("macros/succeeded.sql", SUCCEEDED),
        ("macros/exec_by.sql", EXEC),
        ("r.sql", &text),
    ]);
    let err = load_error(&dir_layers(&d)).await;
    assert!(
        err.contains("exec_by(...) takes 1 argument(s), not 0"),
        "{err}"
    );
}

#[tokio::test]
async fn a_macro_that_refers_to_itself_is_refused_at_its_file() {
    let a = "-- macro: a\n-- description: calls b\nb() AND verb = 'get'\n";
    let b = "-- macro: b\n-- description: calls a\nverb = 'list' OR a()\n";
    let d = layer(&[
        ("macros/a.sql", a),
        ("macros/b.sql", b),
        ("r.sql", &rule("t.r", "SELECT verb FROM k8s_audit")),
    ]);
    let err = load_error(&dir_layers(&d)).await;
    assert!(
        err.contains(&format!(
            "{}:1: macro \"a\" refers to itself: a -> b -> a",
            file(&d, "macros/a.sql").display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_definition_files_are_refused_with_file_and_line() {
    let cases: [(&str, &str, &str); 7] = [
        (
            "lists/l.toml",
            "[ok]\ndescription = \"d\"\nitems = [\"a\",\n  \"\"]\n",
            "l.toml:4: empty list item",
        ),
        (
            "lists/l.toml",
            "[ok]\ndescription = \"d\"\nitems = [\"a\", \"a\"]\n",
            "l.toml:3: list item \"a\" is given twice",
        ),
        (
            "lists/l.toml",
            "[ok]\ndescription = \"d\"\nitems = \"a\"\n",
            "l.toml:3: invalid list file",
        ),
        (
            "lists/l.toml",
            "[Bad-Name]\ndescription = \"d\"\nitems = [\"a\"]\n",
            "l.toml:1: invalid list name",
        ),
        (
            "lookups/t.csv",
            "key,team\na,x\nb\n",
            "t.csv:3: invalid CSV row",
        ),
        (
            "lookups/t.csv",
            "key,team\na,x\na,y\n",
            "t.csv:3: key \"a\" is also on line 2",
        ),
        (
            "macros/m.sql",
            "-- macro: m\n-- description: d\nverb = = 'x'\n",
            "m.sql:3: SQL syntax error in the macro body",
        ),
    ];
    for (path, text, expected) in cases {
        let d = layer(&[
            (path, text),
            ("r.sql", &rule("t.r", "SELECT verb FROM k8s_audit")),
        ]);
        let err = load_error(&dir_layers(&d)).await;
        assert!(
            err.contains(expected),
            "{path}: expected {expected:?} in:\n{err}"
        );
    }
}

#[tokio::test]
async fn a_malformed_network_is_refused_at_its_list_line() {
    let lists =
        "[nets]\ndescription = \"d\"\nitems = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/40\",\n]\n";
    let d = layer(&[
        ("lists/nets.toml", lists),
        (
            "r.sql",
            &rule(
                "t.r",
                "SELECT verb FROM k8s_audit WHERE cidr_contains(list('nets'), source_ips[1])",
            ),
        ),
    ]);
    let err = load_error(&dir_layers(&d)).await;
    assert!(
        err.contains(&format!(
            "{}:5: invalid network \"10.0.0.0/40\"",
            file(&d, "lists/nets.toml").display()
        )),
        "{err}"
    );
}

/// The shipped layer of the overlay tests: two rules using a list and a
/// macro.
fn shipped() -> tempfile::TempDir {
    layer(&[
        ("lists/users.toml", USERS),
        ("macros/succeeded.sql", SUCCEEDED),
        (
            "k8s/untrusted_exec.sql",
            &rule(
                "t.untrusted_exec",
                "SELECT user_info.username AS username FROM k8s_audit \
                 WHERE object_ref.subresource = 'exec' AND succeeded() AND NOT in_list(user_info.username, 'trusted_users')",
            ),
        ),
        ("k8s/any_exec.sql", &rule("t.any_exec", "SELECT user_info.username AS username FROM k8s_audit WHERE succeeded()")),
    ])
}

fn with_overlays(base: &tempfile::TempDir, overlays: &[&tempfile::TempDir]) -> Layers {
    Layers {
        overlays: overlays.iter().map(|o| o.path().to_path_buf()).collect(),
        ..Layers::dir(base.path())
    }
}

#[tokio::test]
async fn an_overlay_changes_lists_macros_and_rules_without_editing_the_pack() {
    let base = shipped();
    let events = || {
        vec![
            event(1, "alice", "10.0.0.1", 201),
            event(2, "bob", "10.0.0.1", 201),
            event(3, "eve", "10.0.0.1", 403),
        ]
    };
    let before = alerts(&Layers::dir(base.path()), events()).await;
    assert_eq!(
        before
            .iter()
            .filter(|(r, _)| r == "t.untrusted_exec")
            .count(),
        1,
        "{before:?}"
    );

    let site = layer(&[
        // bob joins the trusted users, alice leaves them
        ("lists/site.toml", "[trusted_users]\nappend = [\"bob\"]\nremove = [\"alice\"]\n"),
        // refused requests count as well at this site
        ("macros/succeeded.sql", "-- macro: succeeded\n-- description: any response\nTRUE\n"),
        ("overrides.toml", "[rule.\"t.any_exec\"]\nenabled = false\n\n[rule.\"t.untrusted_exec\"]\nseverity = \"critical\"\n"),
        ("k8s/site_rule.sql", &rule("t.site", "SELECT user_info.username AS username FROM k8s_audit WHERE user_info.username = 'eve'")),
    ]);
    let layers = with_overlays(&base, &[&site]);
    let after = alerts(&layers, events()).await;
    let expect = |r: &str, u: &str| (r.to_string(), u.to_string());
    assert_eq!(
        after,
        vec![
            expect("t.site", "eve"),
            expect("t.untrusted_exec", "alice"),
            expect("t.untrusted_exec", "eve")
        ]
    );
    let pack = RulePack::load(&layers).unwrap();
    let rule = pack
        .rules
        .iter()
        .find(|r| r.meta.id == "t.untrusted_exec")
        .unwrap();
    assert_eq!(rule.meta.severity, Severity::Critical);
    assert_eq!(pack.disabled.len(), 1);
    let described = super::describe(&pack.definitions);
    let site_list = site.path().join("lists/site.toml");
    assert!(
        described.contains(&format!(
            "list trusted_users (2 items): {}:1; 1 appended by {}:1; 1 removed by {}:1",
            base.path().join("lists/users.toml").display(),
            site_list.display(),
            site_list.display()
        )),
        "{described}"
    );
    assert!(
        described.contains(&format!(
            "macro succeeded(): replaced by {}:1",
            site.path().join("macros/succeeded.sql").display()
        )),
        "{described}"
    );
    // a later overlay replaces the list whole
    let later = layer(&[("lists/x.toml", "[trusted_users]\nitems = [\"eve\"]\n")]);
    let pack = RulePack::load(&with_overlays(&base, &[&site, &later])).unwrap();
    let values: Vec<&str> = pack.definitions.lists["trusted_users"]
        .items
        .iter()
        .map(|i| i.value.as_str())
        .collect();
    assert_eq!(values, ["eve"]);
}

#[tokio::test]
async fn overlay_mistakes_are_refused_with_file_and_line() {
    let base = shipped();
    let cases: [(&str, &str, &str); 5] = [
        (
            "overrides.toml",
            "[rule.\"t.any_exec\"]\nenabled = false\n\n[rule.\"t.nope\"]\nenabled = false\n",
            "overrides.toml:4: overrides name rule \"t.nope\", which no layer defines",
        ),
        (
            "overrides.toml",
            "[rule.\"t.any_exec\"]\nseverity = \"urgent\"\n",
            "overrides.toml:2: invalid severity \"urgent\"",
        ),
        (
            "overrides.toml",
            "[rule.\"t.any_exec\"]\nmuted = true\n",
            "overrides.toml:2: invalid overrides file",
        ),
        (
            "lists/x.toml",
            "[no_such_list]\nappend = [\"x\"]\n",
            "x.toml:1: list \"no_such_list\" is not defined by an earlier layer",
        ),
        (
            "k8s/dup.sql",
            &rule("t.any_exec", "SELECT verb FROM k8s_audit"),
            "rule id \"t.any_exec\" is also used by",
        ),
    ];
    for (path, text, expected) in cases {
        let site = layer(&[(path, text)]);
        let err = load_error(&with_overlays(&base, &[&site])).await;
        assert!(
            err.contains(expected),
            "{path}: expected {expected:?} in:\n{err}"
        );
    }
}

#[tokio::test]
async fn exceptions_of_every_layer_apply() {
    let base = shipped();
    let site = layer(&[(
        "exceptions.toml",
        "[[exception]]\nrule = \"t.untrusted_exec\"\nfield = \"username\"\nvalues = [\"bob\"]\ncomment = \"bob is on call\"\n",
    )]);
    let found = alerts(
        &with_overlays(&base, &[&site]),
        vec![
            event(1, "bob", "10.0.0.1", 201),
            event(2, "eve", "10.0.0.1", 201),
        ],
    )
    .await;
    assert!(
        !found.contains(&("t.untrusted_exec".into(), "bob".into())),
        "{found:?}"
    );
    assert!(
        found.contains(&("t.untrusted_exec".into(), "eve".into())),
        "{found:?}"
    );
}

#[test]
fn macros_are_not_rules() {
    let d = layer(&[
        ("macros/succeeded.sql", SUCCEEDED),
        ("r.sql", &rule("t.r", "SELECT verb FROM k8s_audit")),
    ]);
    let rules = crate::rules::load_dir(d.path()).unwrap();
    assert_eq!(rules.len(), 1);
    assert!(Path::new(&rules[0].path).ends_with("r.sql"));
}

/// A macro of thousands of alternatives (a long allow-list written out)
/// is balanced when parsed: a rule calling it, negated, plans on the 2 MiB
/// test thread and matches only the users it does not list.
#[tokio::test]
async fn a_macro_of_thousands_of_alternatives_plans_and_matches() {
    let known: Vec<String> = (0..3000)
        .map(|i| format!("user_info.username = 'svc-{i}'"))
        .chain(["user_info.username LIKE 'ali%'".to_string()])
        .collect();
    let body = format!(
        "-- macro: known_user\n-- description: the allow-list\n{}\n",
        known.join("\n  OR ")
    );
    let d = layer(&[
        ("macros/known_user.sql", &body),
        (
            "k8s/unknown_user_exec.sql",
            &rule(
                "t.unknown_user_exec",
                "SELECT user_info.username AS username FROM k8s_audit WHERE NOT known_user()",
            ),
        ),
    ]);
    let events = vec![
        event(1, "alice", "10.1.1.1", 201),
        event(2, "svc-2999", "10.1.1.2", 201),
        event(3, "mallory", "10.1.1.3", 201),
    ];
    let found = alerts(&dir_layers(&d), events).await;
    assert_eq!(
        found,
        vec![("t.unknown_user_exec".to_string(), "mallory".to_string())]
    );
}
