//! `[routing]` and `[[outputs]]` in the configuration (docs/outputs.md).
//!
//! Every struct refuses unknown keys, and [`validate`] checks what the
//! types alone cannot, naming the key at fault (`outputs[1].webhook.secret`),
//! so a misconfigured output stops `vigil run` at start instead of
//! dead-lettering every alert later.

use serde::Deserialize;

use super::filter::Filter;
use super::kafka_route::TopicTemplate;
use super::OutputsError;

/// `[routing]`: the outputs' consumer and the enrichment before routing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSettings {
    /// The outputs' consumer group on the alerts topic; `""`:
    /// `<kafka.group_id>-outputs`. Its own group, so a slow endpoint never
    /// holds back detection.
    #[serde(default)]
    pub group_id: String,
    /// Where a new outputs group starts reading the alerts topic.
    #[serde(default)]
    pub start: StartAt,
    /// Alerts read and delivered together (one Alertmanager request, one
    /// offset commit).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// The cluster's name: the `cluster` label and enrichment field; `""`:
    /// none.
    #[serde(default)]
    pub cluster: String,
    /// A lookup table of the rule pack (`lookups/<name>.csv`, keyed by
    /// namespace) whose `team` column names the namespace's owning team;
    /// `""`: no team enrichment.
    #[serde(default)]
    pub team_lookup: String,
}

/// Where a new consumer group starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// Only alerts produced after the group first joins (no flood of old
    /// alerts on the first deployment).
    #[default]
    Latest,
    /// Every alert the topic still holds.
    Earliest,
}

impl StartAt {
    /// librdkafka's `auto.offset.reset` value.
    pub fn offset_reset(self) -> &'static str {
        match self {
            StartAt::Latest => "latest",
            StartAt::Earliest => "earliest",
        }
    }
}

fn default_max_batch() -> usize {
    500
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            group_id: String::new(),
            start: StartAt::default(),
            max_batch: default_max_batch(),
            cluster: String::new(),
            team_lookup: String::new(),
        }
    }
}

impl RoutingSettings {
    /// The outputs' consumer group.
    pub fn group(&self, kafka_group: &str) -> String {
        if self.group_id.is_empty() {
            format!("{kafka_group}-outputs")
        } else {
            self.group_id.clone()
        }
    }
}

/// One `[[outputs]]` entry: a name, what it takes, how it retries, and
/// exactly one endpoint table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSettings {
    /// Names the output in metrics (`output` label), logs and dead letters.
    pub name: String,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub retry: RetrySettings,
    #[serde(default)]
    pub alertmanager: Option<AlertmanagerSettings>,
    #[serde(default)]
    pub webhook: Option<WebhookSettings>,
    #[serde(default)]
    pub kafka: Option<KafkaRouteSettings>,
}

/// Retries of one delivery: `max_attempts` in all, waiting
/// `initial_backoff_ms` after the first failure, doubling up to
/// `max_backoff_ms`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Time limit of one HTTP request (Alertmanager, webhook).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_max_attempts() -> u32 {
    5
}
fn default_initial_backoff_ms() -> u64 {
    500
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_timeout_ms() -> u64 {
    10_000
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: default_max_attempts(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

/// `[outputs.alertmanager]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerSettings {
    /// Alertmanager's base URL (`http://alertmanager:9093`); alerts are
    /// posted to `<url>/api/v2/alerts`.
    pub url: String,
    /// `endsAt` is the alert's detection time plus this: Alertmanager
    /// resolves the alert then unless it is sent again.
    #[serde(default = "default_resolve_after_s")]
    pub resolve_after_s: u64,
}

fn default_resolve_after_s() -> u64 {
    3600
}

/// `[outputs.webhook]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub url: String,
    /// The HMAC-SHA256 key, as text. Prefer `secret_env`.
    #[serde(default)]
    pub secret: Option<String>,
    /// The environment variable holding the key (read at start).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The header carrying `sha256=<hex HMAC of the body>`.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
}

fn default_signature_header() -> String {
    "X-Vigil-Signature".into()
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_env", &self.secret_env)
            .field("signature_header", &self.signature_header)
            .finish()
    }
}

/// `[outputs.kafka]`: alerts copied to a topic chosen per alert.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaRouteSettings {
    /// The topic, with `{severity}` and/or `{team}` replaced per alert:
    /// `vigil-alerts-{severity}`, `alerts-team-{team}`.
    pub topic: String,
    /// The `{team}` of an alert no team owns.
    #[serde(default = "default_unowned_team")]
    pub unowned_team: String,
}

fn default_unowned_team() -> String {
    "unowned".into()
}

/// The endpoint of a validated output.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Alertmanager {
        /// `<url>/api/v2/alerts`.
        alerts_url: reqwest::Url,
        resolve_after: std::time::Duration,
    },
    Webhook {
        url: reqwest::Url,
        secret: Vec<u8>,
        signature_header: reqwest::header::HeaderName,
    },
    Kafka {
        topic: TopicTemplate,
        unowned_team: String,
    },
}

fn invalid(key: String, why: impl Into<String>) -> OutputsError {
    OutputsError::Config {
        key,
        why: why.into(),
    }
}

/// Check every output and resolve its endpoint; `env` reads environment
/// variables (`secret_env`).
pub fn validate(
    outputs: &[OutputSettings],
    routing: &RoutingSettings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Endpoint>, OutputsError> {
    if routing.max_batch == 0 || routing.max_batch > 100_000 {
        return Err(invalid(
            "routing.max_batch".into(),
            format!("must be between 1 and 100000, got {}", routing.max_batch),
        ));
    }
    let mut endpoints = Vec::new();
    for (i, output) in outputs.iter().enumerate() {
        let at = format!("outputs[{i}]");
        if output.name.is_empty()
            || !output
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(invalid(
                format!("{at}.name"),
                format!("{:?}: use letters, digits, '.', '_' and '-'", output.name),
            ));
        }
        if outputs[..i].iter().any(|o| o.name == output.name) {
            return Err(invalid(
                format!("{at}.name"),
                format!("{:?} is used by two outputs", output.name),
            ));
        }
        validate_retry(&output.retry, &at)?;
        endpoints.push(endpoint(output, &at, &env)?);
    }
    Ok(endpoints)
}

fn validate_retry(retry: &RetrySettings, at: &str) -> Result<(), OutputsError> {
    if retry.max_attempts == 0 {
        return Err(invalid(
            format!("{at}.retry.max_attempts"),
            "must be at least 1",
        ));
    }
    if retry.timeout_ms == 0 {
        return Err(invalid(
            format!("{at}.retry.timeout_ms"),
            "must be at least 1",
        ));
    }
    if retry.max_backoff_ms < retry.initial_backoff_ms {
        return Err(invalid(
            format!("{at}.retry.max_backoff_ms"),
            "must be at least retry.initial_backoff_ms",
        ));
    }
    Ok(())
}

fn endpoint(
    output: &OutputSettings,
    at: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Endpoint, OutputsError> {
    match (&output.alertmanager, &output.webhook, &output.kafka) {
        (Some(am), None, None) => alertmanager_endpoint(am, at),
        (None, Some(hook), None) => webhook_endpoint(hook, at, env),
        (None, None, Some(kafka)) => Ok(Endpoint::Kafka {
            topic: TopicTemplate::parse(&kafka.topic)
                .map_err(|e| invalid(format!("{at}.kafka.topic"), e.to_string()))?,
            unowned_team: kafka.unowned_team.clone(),
        }),
        _ => Err(invalid(
            at.to_string(),
            "set exactly one of [outputs.alertmanager], [outputs.webhook], [outputs.kafka]",
        )),
    }
}

/// An `http` or `https` URL with a host, and no query or fragment.
fn http_url(text: &str, key: String) -> Result<reqwest::Url, OutputsError> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| invalid(key.clone(), format!("{text:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            key,
            format!("{text:?}: expected an http:// or https:// URL with a host"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(key, format!("{text:?}: no query or fragment")));
    }
    Ok(url)
}

fn alertmanager_endpoint(am: &AlertmanagerSettings, at: &str) -> Result<Endpoint, OutputsError> {
    let key = format!("{at}.alertmanager.url");
    let url = http_url(&am.url, key.clone())?;
    if url.path().contains("/api/") {
        return Err(invalid(
            key,
            format!(
                "{:?}: give Alertmanager's base URL (http://host:9093), not an API path",
                am.url
            ),
        ));
    }
    let base = url.as_str().trim_end_matches('/');
    let alerts_url = reqwest::Url::parse(&format!("{base}/api/v2/alerts"))
        .map_err(|e| invalid(key, e.to_string()))?;
    if am.resolve_after_s == 0 {
        return Err(invalid(
            format!("{at}.alertmanager.resolve_after_s"),
            "must be at least 1",
        ));
    }
    Ok(Endpoint::Alertmanager {
        alerts_url,
        resolve_after: std::time::Duration::from_secs(am.resolve_after_s),
    })
}

fn webhook_endpoint(
    hook: &WebhookSettings,
    at: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Endpoint, OutputsError> {
    let url = http_url(&hook.url, format!("{at}.webhook.url"))?;
    let secret = match (&hook.secret, &hook.secret_env) {
        (Some(secret), None) => secret.clone(),
        (None, Some(var)) => env(var).unwrap_or_default(),
        (Some(_), Some(_)) => {
            return Err(invalid(
                format!("{at}.webhook.secret"),
                "set secret or secret_env, not both",
            ))
        }
        (None, None) => String::new(),
    };
    if secret.is_empty() {
        let which = match &hook.secret_env {
            Some(var) => format!("the environment variable {var:?} (secret_env) is unset or empty"),
            None => "missing: set secret_env (or secret) to the HMAC key".into(),
        };
        return Err(invalid(format!("{at}.webhook.secret"), which));
    }
    let signature_header =
        reqwest::header::HeaderName::from_bytes(hook.signature_header.as_bytes()).map_err(|e| {
            invalid(
                format!("{at}.webhook.signature_header"),
                format!("{:?}: {e}", hook.signature_header),
            )
        })?;
    Ok(Endpoint::Webhook {
        url,
        secret: secret.into_bytes(),
        signature_header,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(toml_text: &str) -> Vec<OutputSettings> {
        #[derive(Deserialize)]
        struct File {
            outputs: Vec<OutputSettings>,
        }
        toml::from_str::<File>(toml_text).unwrap().outputs
    }

    fn refusal(toml_text: &str, env: &[(&str, &str)]) -> String {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        validate(&outputs(toml_text), &RoutingSettings::default(), |var| {
            env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone())
        })
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn valid_outputs_resolve_their_endpoints() {
        let list = outputs(
            r#"
[[outputs]]
name = "am"
alertmanager = { url = "https://am.example.com:9093/prefix/" }
[[outputs]]
name = "hook"
webhook = { url = "https://hooks.example.com/x", secret_env = "KEY" }
[[outputs]]
name = "by-severity"
kafka = { topic = "alerts-{severity}" }
"#,
        );
        let endpoints = validate(&list, &RoutingSettings::default(), |_| Some("k".into())).unwrap();
        match &endpoints[0] {
            Endpoint::Alertmanager { alerts_url, .. } => assert_eq!(
                alerts_url.as_str(),
                "https://am.example.com:9093/prefix/api/v2/alerts"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(&endpoints[1], Endpoint::Webhook { secret, .. } if secret == b"k"));
        assert!(matches!(&endpoints[2], Endpoint::Kafka { .. }));
    }

    #[test]
    fn what_cannot_work_is_refused_naming_the_key() {
        for (text, env, expected) in [
            (
                "[[outputs]]\nname = \"a\"\nalertmanager = { url = \"http://am:9093/api/v2/alerts\" }",
                vec![],
                "outputs[0].alertmanager.url",
            ),
            (
                "[[outputs]]\nname = \"a\"\nalertmanager = { url = \"ftp://am\" }",
                vec![],
                "outputs[0].alertmanager.url",
            ),
            (
                "[[outputs]]\nname = \"h\"\nwebhook = { url = \"https://h/x\", secret_env = \"K\" }",
                vec![("K", "")],
                "outputs[0].webhook.secret: the environment variable \"K\" (secret_env) is unset or empty",
            ),
            (
                "[[outputs]]\nname = \"k\"\nkafka = { topic = \"alerts\" }",
                vec![],
                "outputs[0].kafka.topic",
            ),
            (
                "[[outputs]]\nname = \"x\"\n[[outputs]]\nname = \"x\"\nkafka = { topic = \"a-{team}\" }",
                vec![],
                "outputs[0]: set exactly one of",
            ),
            (
                "[[outputs]]\nname = \"x\"\nkafka = { topic = \"a-{team}\" }\n[[outputs]]\nname = \"x\"\nkafka = { topic = \"b-{team}\" }",
                vec![],
                "outputs[1].name: \"x\" is used by two outputs",
            ),
            (
                "[[outputs]]\nname = \"x\"\nretry = { max_attempts = 0 }\nkafka = { topic = \"a-{team}\" }",
                vec![],
                "outputs[0].retry.max_attempts",
            ),
        ] {
            let e = refusal(text, &env);
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn the_webhook_secret_is_not_printed() {
        let list = outputs(
            "[[outputs]]\nname = \"h\"\nwebhook = { url = \"https://h/x\", secret = \"hunter2\" }",
        );
        let printed = format!("{list:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }
}
