//! Kafka topics by severity or by team: each alert's enriched JSON copied
//! to the topic its template names, keyed by `alert_id` (a compacted topic
//! keeps one record per alert; consumers deduplicate on the key).

use super::enrich::Routed;
use super::retry::{with_retries, AttemptError, DeliveryError};
use super::settings::RetrySettings;
use crate::kafka::{KafkaSink, OutRecord};

/// A Kafka output: where its records go.
pub struct KafkaRoute {
    pub sink: KafkaSink,
    pub topic: TopicTemplate,
    /// The `{team}` of an alert no team owns.
    pub unowned_team: String,
}

impl KafkaRoute {
    /// `r` produced to its topic, with retries.
    pub async fn send(
        &self,
        r: &Routed,
        retry: &RetrySettings,
        on_retry: impl FnMut(&AttemptError),
    ) -> Result<(), DeliveryError> {
        let team = r.enrichment.team.as_deref().unwrap_or(&self.unowned_team);
        let record = OutRecord::new(
            self.topic.render(r.alert.severity.as_str(), team),
            r.alert.alert_id.clone(),
            r.to_json(),
        );
        let attempt = || async {
            self.sink
                .deliver(std::slice::from_ref(&record), 1)
                .await
                .map_err(|e| AttemptError::retryable(e.to_string()))
        };
        with_retries(retry, attempt, on_retry).await
    }
}

/// A topic name with `{severity}` and `{team}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Severity,
    Team,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{0:?} has neither {{severity}} nor {{team}}: every alert would go to one topic")]
    NoPlaceholder(String),
    #[error("{template:?}: unknown placeholder {{{name}}}: expected {{severity}} or {{team}}")]
    UnknownPlaceholder { template: String, name: String },
    #[error("{0:?}: an unclosed '{{'")]
    Unclosed(String),
    #[error("{template:?}: {c:?} is not allowed in a topic name (letters, digits, '.', '_', '-')")]
    BadCharacter { template: String, c: char },
}

impl TopicTemplate {
    pub fn parse(template: &str) -> Result<TopicTemplate, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            push_text(&mut parts, &rest[..open], template)?;
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| TemplateError::Unclosed(template.into()))?;
            parts.push(match &rest[open + 1..open + close] {
                "severity" => Part::Severity,
                "team" => Part::Team,
                other => {
                    return Err(TemplateError::UnknownPlaceholder {
                        template: template.into(),
                        name: other.into(),
                    })
                }
            });
            rest = &rest[open + close + 1..];
        }
        push_text(&mut parts, rest, template)?;
        if !parts
            .iter()
            .any(|p| matches!(p, Part::Severity | Part::Team))
        {
            return Err(TemplateError::NoPlaceholder(template.into()));
        }
        Ok(TopicTemplate(parts))
    }

    /// The topic of an alert of `severity` owned by `team`. Characters a
    /// topic name cannot hold are written `_`.
    pub fn render(&self, severity: &str, team: &str) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Severity => severity.to_string(),
                Part::Team => team.chars().map(topic_char).collect(),
            })
            .collect()
    }
}

fn topic_char(c: char) -> char {
    if c.is_ascii_alphanumeric() || "._-".contains(c) {
        c
    } else {
        '_'
    }
}

fn push_text(parts: &mut Vec<Part>, text: &str, template: &str) -> Result<(), TemplateError> {
    if let Some(c) = text.chars().find(|c| topic_char(*c) != *c) {
        return Err(TemplateError::BadCharacter {
            template: template.into(),
            c,
        });
    }
    if !text.is_empty() {
        parts.push(Part::Text(text.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_severity_and_team_and_refuses_bad_templates() {
        let t = TopicTemplate::parse("alerts-{team}-{severity}").unwrap();
        assert_eq!(t.render("high", "payments sre"), "alerts-payments_sre-high");
        assert!(matches!(
            TopicTemplate::parse("alerts"),
            Err(TemplateError::NoPlaceholder(_))
        ));
        assert!(matches!(
            TopicTemplate::parse("alerts-{rule}"),
            Err(TemplateError::UnknownPlaceholder { .. })
        ));
        assert!(matches!(
            TopicTemplate::parse("alerts-{team"),
            Err(TemplateError::Unclosed(_))
        ));
        assert!(matches!(
            TopicTemplate::parse("alerts/{team}"),
            Err(TemplateError::BadCharacter { .. })
        ));
    }
}
