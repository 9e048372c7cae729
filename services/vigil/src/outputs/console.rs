//! The alert console (`/console` on the HTTP server, docs/console.md): a
//! read-only view of a bounded window of recent alerts, kept by the
//! outputs' consumer after enrichment.
//!
//! The window holds at most `console.max_alerts` alerts, the oldest
//! evicted first, each once (a redelivered alert id is not added again).
//! It is this instance's: with several instances, each shows the alerts of
//! the alerts-topic partitions its outputs consumer holds. The page and
//! its script are embedded in the binary (no CDN, works offline).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};

use super::enrich::Routed;
use crate::rules::Severity;

/// The page: HTML, CSS and script in one file.
const PAGE: &str = include_str!("console.html");

/// Rows one list request returns at most.
const MAX_LIMIT: usize = 1000;

/// Bars of the counts chart at most.
const MAX_BUCKETS: usize = 200;

/// Values per facet (rules, namespaces, teams) listed at most.
const MAX_FACET_VALUES: usize = 500;

/// `[console]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Serve `/console` and keep the window (runs the outputs' consumer
    /// even without `[[outputs]]`).
    #[serde(default)]
    pub enabled: bool,
    /// Alerts kept, newest first.
    #[serde(default = "default_max_alerts")]
    pub max_alerts: usize,
}

fn default_max_alerts() -> usize {
    100_000
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            enabled: false,
            max_alerts: default_max_alerts(),
        }
    }
}

/// One alert of the window: what the list filters on, and the enriched
/// JSON for the detail view.
#[derive(Debug)]
struct Entry {
    alert_id: String,
    event_ns: i64,
    event_time: String,
    severity: Severity,
    rule_id: String,
    rule_title: String,
    namespace: Option<String>,
    team: Option<String>,
    user: Option<String>,
    json: String,
}

/// The alert fields that name the acting user, in order of preference.
const USER_FIELDS: [&str; 3] = ["username", "user_name", "user"];

impl Entry {
    fn new(r: &Routed) -> Entry {
        let a = &r.alert;
        let user = USER_FIELDS
            .iter()
            .find_map(|f| a.fields.get(*f).and_then(|v| v.as_str()))
            .map(str::to_string);
        Entry {
            alert_id: a.alert_id.clone(),
            event_ns: parse_ns(&a.event_time).unwrap_or(0),
            event_time: a.event_time.clone(),
            severity: a.severity,
            rule_id: a.rule_id.clone(),
            rule_title: a.rule_title.clone(),
            namespace: r.enrichment.namespace.clone(),
            team: r.enrichment.team.clone(),
            user,
            json: r.to_json(),
        }
    }
}

fn parse_ns(t: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
}

/// The recent alerts, bounded.
#[derive(Debug)]
pub struct AlertWindow {
    capacity: usize,
    inner: RwLock<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// Oldest first.
    alerts: VecDeque<Arc<Entry>>,
    ids: HashSet<String>,
}

impl AlertWindow {
    /// A window of at most `capacity` alerts (at least one).
    pub fn new(capacity: usize) -> AlertWindow {
        AlertWindow {
            capacity: capacity.max(1),
            inner: RwLock::new(Window::default()),
        }
    }

    /// Add a batch's alerts, evicting the oldest beyond the capacity; an
    /// alert id already held is not added again.
    pub fn add(&self, batch: &[Routed]) {
        let entries: Vec<Entry> = batch.iter().map(Entry::new).collect();
        let mut w = self.inner.write().expect("the window lock is not poisoned");
        for e in entries {
            if !w.ids.insert(e.alert_id.clone()) {
                continue;
            }
            w.alerts.push_back(Arc::new(e));
            while w.alerts.len() > self.capacity {
                let old = w.alerts.pop_front().expect("over capacity");
                w.ids.remove(&old.alert_id);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.inner.read().expect("not poisoned").alerts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The alerts `filter` takes, newest first (by arrival).
    fn matching(&self, filter: &ListQuery) -> Vec<Arc<Entry>> {
        let w = self.inner.read().expect("not poisoned");
        let matcher = Matcher::new(filter);
        w.alerts
            .iter()
            .rev()
            .filter(|e| matcher.takes(e))
            .cloned()
            .collect()
    }

    fn get(&self, id: &str) -> Option<Arc<Entry>> {
        let w = self.inner.read().expect("not poisoned");
        w.alerts.iter().rev().find(|e| e.alert_id == id).cloned()
    }
}

/// The filters of the list, the counts and the facets (query string).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The least severity.
    #[serde(default)]
    pub severity: Option<Severity>,
    #[serde(default)]
    pub rule: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    /// A substring of the user (case-insensitive).
    #[serde(default)]
    pub user: Option<String>,
    /// Event time bounds, RFC 3339.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    /// Free text: a substring of the alert's JSON (case-insensitive).
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub offset: Option<usize>,
    /// Bars of the counts chart.
    #[serde(default)]
    pub buckets: Option<usize>,
}

/// A [`ListQuery`] made ready to test alerts.
struct Matcher<'q> {
    q: &'q ListQuery,
    from: Option<i64>,
    to: Option<i64>,
    user: Option<String>,
    /// The free text as a case-insensitive literal pattern (the regex
    /// crate's literal search is much faster than a byte-by-byte scan).
    text: Option<regex::Regex>,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl<'q> Matcher<'q> {
    fn new(q: &'q ListQuery) -> Matcher<'q> {
        Matcher {
            q,
            from: non_empty(&q.from).and_then(parse_ns),
            to: non_empty(&q.to).and_then(parse_ns),
            user: non_empty(&q.user).map(str::to_lowercase),
            text: non_empty(&q.q).map(|t| {
                regex::RegexBuilder::new(&regex::escape(t))
                    .case_insensitive(true)
                    .build()
                    .expect("an escaped literal is a valid pattern")
            }),
        }
    }

    fn takes(&self, e: &Entry) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| {
            non_empty(want).is_none_or(|w| have.as_deref() == Some(w))
        };
        self.q.severity.is_none_or(|s| e.severity >= s)
            && non_empty(&self.q.rule).is_none_or(|r| e.rule_id == r)
            && same(&self.q.namespace, &e.namespace)
            && same(&self.q.team, &e.team)
            && self.from.is_none_or(|f| e.event_ns >= f)
            && self.to.is_none_or(|t| e.event_ns <= t)
            && self.user.as_ref().is_none_or(|u| {
                e.user
                    .as_ref()
                    .is_some_and(|have| have.to_lowercase().contains(u.as_str()))
            })
            && self.text.as_ref().is_none_or(|t| t.is_match(&e.json))
    }
}

/// One row of the list.
#[derive(Debug, Serialize)]
struct Row<'a> {
    alert_id: &'a str,
    event_time: &'a str,
    severity: Severity,
    rule_id: &'a str,
    rule_title: &'a str,
    namespace: Option<&'a str>,
    team: Option<&'a str>,
    user: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct ListPage<'a> {
    /// Alerts matching, all pages.
    total: usize,
    /// Alerts in the window.
    window: usize,
    capacity: usize,
    alerts: Vec<Row<'a>>,
}

/// Per severity, the matching alerts in each of `buckets` equal spans of
/// event time.
#[derive(Debug, Serialize, PartialEq)]
pub struct Counts {
    pub from: String,
    pub step_ms: i64,
    pub series: BTreeMap<&'static str, Vec<u64>>,
}

fn counts(alerts: &[Arc<Entry>], q: &ListQuery) -> Counts {
    let buckets = q.buckets.unwrap_or(60).clamp(1, MAX_BUCKETS);
    let from = non_empty(&q.from)
        .and_then(parse_ns)
        .or_else(|| alerts.iter().map(|e| e.event_ns).min())
        .unwrap_or(0);
    let to = non_empty(&q.to)
        .and_then(parse_ns)
        .or_else(|| alerts.iter().map(|e| e.event_ns).max())
        .unwrap_or(from);
    // At least one millisecond per bucket, and the last alert inside.
    let step = ((to - from) / buckets as i64 + 1).max(1_000_000);
    let mut series: BTreeMap<&'static str, Vec<u64>> = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ]
    .iter()
    .map(|s| (s.as_str(), vec![0; buckets]))
    .collect();
    for e in alerts {
        let i = (e.event_ns - from) / step;
        if (0..buckets as i64).contains(&i) {
            series.get_mut(e.severity.as_str()).expect("every severity")[i as usize] += 1;
        }
    }
    Counts {
        from: crate::alert::format_time_ns(from),
        step_ms: step / 1_000_000,
        series,
    }
}

/// Distinct values of the filterable fields in the window, with counts.
#[derive(Debug, Serialize)]
struct Facets {
    rules: Vec<(String, usize)>,
    namespaces: Vec<(String, usize)>,
    teams: Vec<(String, usize)>,
}

fn facets(window: &AlertWindow) -> Facets {
    let w = window.inner.read().expect("not poisoned");
    let mut rules = BTreeMap::<&str, usize>::new();
    let mut namespaces = BTreeMap::<&str, usize>::new();
    let mut teams = BTreeMap::<&str, usize>::new();
    for e in &w.alerts {
        *rules.entry(&e.rule_id).or_default() += 1;
        if let Some(n) = &e.namespace {
            *namespaces.entry(n).or_default() += 1;
        }
        if let Some(t) = &e.team {
            *teams.entry(t).or_default() += 1;
        }
    }
    let top = |m: BTreeMap<&str, usize>| {
        m.into_iter()
            .take(MAX_FACET_VALUES)
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    };
    Facets {
        rules: top(rules),
        namespaces: top(namespaces),
        teams: top(teams),
    }
}

/// The console's routes, to merge into the HTTP server's router.
pub fn router(window: Arc<AlertWindow>) -> Router {
    Router::new()
        .route("/console", get(|| async { Html(PAGE) }))
        .route("/console/api/alerts", get(list))
        .route("/console/api/alerts/{id}", get(detail))
        .route("/console/api/counts", get(count))
        .route(
            "/console/api/facets",
            get(|State(w): State<Arc<AlertWindow>>| async move { json(&facets(&w)) }),
        )
        .with_state(window)
}

async fn list(State(window): State<Arc<AlertWindow>>, Query(q): Query<ListQuery>) -> Response {
    let matching = window.matching(&q);
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(200).min(MAX_LIMIT);
    let page = ListPage {
        total: matching.len(),
        window: window.len(),
        capacity: window.capacity,
        alerts: matching
            .iter()
            .skip(offset)
            .take(limit)
            .map(|e| Row {
                alert_id: &e.alert_id,
                event_time: &e.event_time,
                severity: e.severity,
                rule_id: &e.rule_id,
                rule_title: &e.rule_title,
                namespace: e.namespace.as_deref(),
                team: e.team.as_deref(),
                user: e.user.as_deref(),
            })
            .collect(),
    };
    json(&page)
}

async fn count(State(window): State<Arc<AlertWindow>>, Query(q): Query<ListQuery>) -> Response {
    let matching = window.matching(&q);
    json(&counts(&matching, &q))
}

/// `value` as a JSON response (axum's `Json` needs a feature the server
/// does not otherwise use).
fn json(value: &impl Serialize) -> Response {
    let body = serde_json::to_string(value).expect("console responses serialize");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn detail(State(window): State<Arc<AlertWindow>>, Path(id): Path<String>) -> Response {
    match window.get(&id) {
        Some(e) => ([(header::CONTENT_TYPE, "application/json")], e.json.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such alert in the window\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Alert;
    use crate::outputs::enrich::Enrichment;

    fn routed(i: usize, severity: &str, namespace: &str, user: &str) -> Routed {
        let text = format!(
            "-- id: r.{severity}\n-- title: t\n-- severity: {severity}\n-- description: d\n-- mitre: T1609\n-- source: k8s_audit\n-- author: a\n-- based_on: vigil:t\nSELECT 1"
        );
        let (meta, _) = vigil_model::rule::parse_header(&text).unwrap();
        let fields = serde_json::json!({ "namespace": namespace, "username": user, "n": i });
        let events = vec![crate::alert::EventIdentity {
            event_id: format!("e{i}"),
            origin: crate::source::Origin::File {
                path: "f".into(),
                line: i as u64,
            },
        }];
        let t = 1_700_000_000_000_000_000 + i as i64 * 1_000_000_000;
        let alert = Alert::new(&meta, t, t, fields.as_object().unwrap().clone(), events);
        Routed {
            raw: alert.to_json(),
            enrichment: Enrichment {
                namespace: Some(namespace.into()),
                team: Some(format!("team-{namespace}")),
                ..Default::default()
            },
            alert,
        }
    }

    #[test]
    fn the_window_is_bounded_deduplicated_and_filtered() {
        let w = AlertWindow::new(3);
        let batch: Vec<Routed> = (0..5)
            .map(|i| routed(i, ["low", "high"][i % 2], ["a", "b"][i % 2], "Mallory"))
            .collect();
        w.add(&batch);
        w.add(&batch[4..]);
        assert_eq!(w.len(), 3, "bounded and deduplicated");
        let all = w.matching(&ListQuery::default());
        let lines: Vec<i64> = all.iter().map(|e| e.event_ns % 1_000_000_000_000).collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0] > lines[2], "newest first");
        let high = ListQuery {
            severity: Some(Severity::High),
            ..Default::default()
        };
        assert_eq!(w.matching(&high).len(), 1);
        let q = ListQuery {
            namespace: Some("a".into()),
            user: Some("mALL".into()),
            q: Some("\"N\":4".into()),
            ..Default::default()
        };
        let found = w.matching(&q);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].team.as_deref(), Some("team-a"));
        assert!(w.get(&found[0].alert_id).is_some());
        assert!(w.get("nope").is_none());
    }

    #[test]
    fn counts_fall_into_buckets_by_severity() {
        let w = AlertWindow::new(100);
        let batch: Vec<Routed> = (0..10)
            .map(|i| routed(i, ["low", "critical"][i % 2], "a", "u"))
            .collect();
        w.add(&batch);
        let q = ListQuery {
            buckets: Some(5),
            ..Default::default()
        };
        let c = counts(&w.matching(&q), &q);
        assert_eq!(c.series["low"].iter().sum::<u64>(), 5);
        assert_eq!(c.series["critical"].iter().sum::<u64>(), 5);
        assert_eq!(c.series["low"].len(), 5);
        assert_eq!(c.from, "2023-11-14T22:13:20Z");
    }

    /// 100,000 alerts: filters over the whole window answer (the console's
    /// sizing; no timing asserted).
    #[test]
    fn a_full_window_of_100000_alerts_is_filtered() {
        let w = AlertWindow::new(100_000);
        let batch: Vec<Routed> = (0..100_000)
            .map(|i| routed(i, ["low", "high", "medium"][i % 3], ["a", "b"][i % 2], "u"))
            .collect();
        w.add(&batch);
        assert_eq!(w.len(), 100_000);
        let q = ListQuery {
            severity: Some(Severity::High),
            namespace: Some("b".into()),
            q: Some("\"n\":99997".into()),
            ..Default::default()
        };
        assert_eq!(w.matching(&q).len(), 1);
        assert_eq!(facets(&w).rules.len(), 3);
    }
}
