//! Prometheus Alertmanager, API v2: every alert of a batch that the
//! output takes, in one `POST /api/v2/alerts`.
//!
//! Alertmanager identifies an alert by its label set, so resending an
//! alert (a redelivery, the same `alert_id`) updates the same Alertmanager
//! alert: delivery is idempotent. Alerts of one rule with equal labels
//! (same namespace, team) are one Alertmanager alert whose annotations are
//! the latest's; routing, grouping, inhibition and silences stay
//! Alertmanager's.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use super::enrich::Routed;
use super::retry::{self, with_retries, AttemptError, DeliveryError};
use super::settings::RetrySettings;

/// An Alertmanager output's endpoint.
pub struct Alertmanager {
    pub client: reqwest::Client,
    /// `<url>/api/v2/alerts`.
    pub alerts_url: reqwest::Url,
    pub resolve_after: Duration,
}

impl Alertmanager {
    /// Post `alerts` in one request, with retries.
    pub async fn send(
        &self,
        alerts: &[&Routed],
        retry: &RetrySettings,
        on_retry: impl FnMut(&AttemptError),
    ) -> Result<(), DeliveryError> {
        let body = body(alerts, self.resolve_after);
        let attempt = || retry::post(self.client.post(self.alerts_url.clone()), body.clone());
        with_retries(retry, attempt, on_retry).await
    }
}

/// One element of the `postableAlerts` body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: Map<String, Value>,
    pub annotations: Map<String, Value>,
    pub starts_at: String,
    pub ends_at: String,
}

/// The Alertmanager alert of `routed`: `startsAt` the event time, `endsAt`
/// the detection time plus `resolve_after` (so a redelivery sends the same
/// times).
pub fn postable(routed: &Routed, resolve_after: Duration) -> PostableAlert {
    let a = &routed.alert;
    let e = &routed.enrichment;
    let mut labels = Map::new();
    let mut label = |k: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            labels.insert(k.into(), Value::String(v.into()));
        }
    };
    label("alertname", Some(&a.rule_id));
    label("severity", Some(a.severity.as_str()));
    label("namespace", e.namespace.as_deref());
    label("team", e.team.as_deref());
    label("cluster", e.cluster.as_deref());
    label("mitre", Some(&a.mitre.join(",")));
    let mut annotations = Map::new();
    let mut note = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            annotations.insert(k.into(), Value::String(v));
        }
    };
    note("summary", Some(a.rule_title.clone()));
    note("description", e.rule_description.clone());
    note("runbook", e.runbook.clone());
    note("alert_id", Some(a.alert_id.clone()));
    let techniques: Vec<String> = e
        .techniques
        .iter()
        .map(|t| match &t.name {
            Some(name) => format!("{} {name}", t.id),
            None => t.id.clone(),
        })
        .collect();
    note("techniques", Some(techniques.join("; ")));
    PostableAlert {
        labels,
        annotations,
        starts_at: a.event_time.clone(),
        ends_at: ends_at(&a.event_time, &a.detected_at, resolve_after),
    }
}

/// The later of the event and detection times, plus `resolve_after`
/// (RFC 3339, UTC).
fn ends_at(event_time: &str, detected_at: &str, resolve_after: Duration) -> String {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    let latest = match (parse(event_time), parse(detected_at)) {
        (Some(e), Some(d)) => e.max(d),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => chrono::Utc::now().fixed_offset(),
    };
    let delta = chrono::Duration::from_std(resolve_after).unwrap_or(chrono::Duration::hours(1));
    (latest + delta)
        .to_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The request body for `alerts`.
pub fn body(alerts: &[&Routed], resolve_after: Duration) -> Vec<u8> {
    let alerts: Vec<PostableAlert> = alerts.iter().map(|r| postable(r, resolve_after)).collect();
    serde_json::to_vec(&alerts).expect("alerts serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::enrich::{Enrichment, Technique};

    #[test]
    fn labels_annotations_and_times() {
        let text = "-- id: k8s.pod_exec\n-- title: Exec into a pod\n-- severity: high\n-- description: d\n-- mitre: T1609\n-- source: k8s_audit\n-- author: a\n-- based_on: vigil:t\nSELECT 1";
        let (meta, _) = vigil_model::rule::parse_header(text).unwrap();
        let alert = crate::alert::Alert::new(
            &meta,
            1_700_000_100_000_000_000,
            1_700_000_000_000_000_000,
            Default::default(),
            Vec::new(),
        );
        let routed = Routed {
            raw: alert.to_json(),
            enrichment: Enrichment {
                cluster: Some("prod".into()),
                namespace: Some("payments".into()),
                team: Some("payments-sre".into()),
                rule_description: Some("A shell in a pod".into()),
                runbook: Some("https://runbooks/pod-exec".into()),
                techniques: vec![Technique {
                    id: "T1609".into(),
                    name: Some("Container Administration Command".into()),
                }],
            },
            alert,
        };
        let p = postable(&routed, Duration::from_secs(600));
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json["labels"],
            serde_json::json!({"alertname": "k8s.pod_exec", "severity": "high", "namespace": "payments",
                "team": "payments-sre", "cluster": "prod", "mitre": "T1609"})
        );
        assert_eq!(json["annotations"]["summary"], "Exec into a pod");
        assert_eq!(json["annotations"]["runbook"], "https://runbooks/pod-exec");
        assert_eq!(json["annotations"]["alert_id"], routed.alert.alert_id);
        assert_eq!(
            json["annotations"]["techniques"],
            "T1609 Container Administration Command"
        );
        assert_eq!(json["startsAt"], "2023-11-14T22:13:20Z");
        assert_eq!(json["endsAt"], "2023-11-14T22:25:00Z", "detection + 10 min");
    }
}
